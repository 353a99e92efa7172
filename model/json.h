/*
 * json.h - a small, strict JSON (RFC 8259) DOM parser.
 *
 * Used for config.json, safetensors headers, tokenizer.json and JSON-lines
 * CLI input. The whole document is parsed into one arena owned by the
 * returned struct json_doc; every node and string lives in it and is freed
 * by json_doc_free(). Strings are decoded (escapes, \uXXXX surrogate pairs)
 * to UTF-8 and NUL-terminated; .len holds the byte length (strings may
 * contain NUL bytes).
 *
 * Objects keep their members in document order; json_get() is a linear
 * scan (fine for config files); json_index() builds nothing and is O(n).
 * Large objects (tokenizer vocabularies) should be iterated directly.
 */
#ifndef MTPD_JSON_H
#define MTPD_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum json_type {
    JSON_NULL = 0,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json {
    enum json_type type;
    size_t len;        /* STRING: bytes; ARRAY/OBJECT: number of children */
    union {
        double num;                 /* NUMBER */
        const char *str;            /* STRING (NUL-terminated) */
        struct json **items;        /* ARRAY: len children */
        struct json_member *members; /* OBJECT: len members */
    } u;
};

struct json_member {
    const char *key;
    size_t key_len;
    struct json *val;
};

struct json_doc;

/*
 * Parses len bytes. Returns the document or NULL; on NULL, err (errlen
 * bytes) holds "line L col C: what". Nesting deeper than 512 is an error.
 * Trailing non-whitespace is an error.
 */
struct json_doc *json_parse(const char *text, size_t len, char *err,
                            size_t errlen);
/* Reads and parses a whole file. err gets "cannot read" or parse errors. */
struct json_doc *json_parse_file(const char *path, char *err, size_t errlen);
void json_doc_free(struct json_doc *d);
const struct json *json_root(const struct json_doc *d);

/* Member of an object by key; NULL if v is not an object or has no key. */
const struct json *json_get(const struct json *v, const char *key);
/* Element i of an array; NULL if out of range / not an array. */
const struct json *json_at(const struct json *v, size_t i);

/* Typed accessors: return 0 and store the value, or -1 when v is NULL or
 * of another type (json_int: also -1 when not an exact integer in range). */
int json_int(const struct json *v, int64_t *out);
int json_double(const struct json *v, double *out);
int json_bool(const struct json *v, int *out);
const char *json_str(const struct json *v); /* NULL unless a string */

const char *json_type_str(enum json_type t);

/* Appends s (len bytes, UTF-8) as a JSON string literal with quotes to
 * out (capacity cap). Returns the number of bytes the literal needs (may
 * exceed cap, like snprintf); out is NUL-terminated when cap > 0. */
size_t json_escape(char *out, size_t cap, const char *s, size_t len);

/* ---- text helpers shared with the tokenizer ------------------------- */

/* Value of hex digit c (0-9a-fA-F), or -1. */
int json_hexval(int c);
/* Encodes code point cp (< 0x110000) as UTF-8 into out (4 bytes of room);
 * returns the byte length. Surrogates are encoded as-is (WTF-8). */
size_t json_utf8_put(char *out, uint32_t cp);

/* UTF-8 well-formedness (Unicode 15, table 3-7), byte by byte: the length
 * of the sequence a lead byte starts (0: it cannot lead); whether b may
 * follow lead as the second byte (rules out overlongs, surrogates and code
 * points above U+10FFFF); whether b is a continuation byte. */
static inline int json_utf8_width(unsigned char lead)
{
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead >= 0xE0 && lead <= 0xEF)
        return 3;
    if (lead >= 0xF0 && lead <= 0xF4)
        return 4;
    return 0;
}
static inline int json_utf8_second_ok(unsigned char lead, unsigned char b)
{
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
    }
}
static inline int json_utf8_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

/*
 * Input quoted in an error message (tensor names, JSON keys and strings,
 * file names), made safe to print: printable UTF-8 is copied, a backslash
 * becomes "\\", and every other byte (control characters, DEL, C1
 * controls U+0080-U+009F, bytes that are not well-formed UTF-8) becomes
 * \xNN. Writes at most cap - 1 bytes and a NUL (cap >= 8); input that does
 * not fit is cut at a character boundary and ends in "...". JSON_ESC_CAP
 * leaves room for three quotes in a 512-byte message. Returns out, so
 * the call can be an snprintf argument:
 *   char q[JSON_ESC_CAP];
 *   snprintf(err, errlen, "%s: unknown dtype", json_esc(q, sizeof q, s, n));
 */
#define JSON_ESC_CAP 128
const char *json_esc(char *out, size_t cap, const char *s, size_t len);
/* json_esc of a NUL-terminated string (NULL prints as "(null)"). */
const char *json_escz(char *out, size_t cap, const char *s);

#ifdef __cplusplus
}
#endif
#endif
