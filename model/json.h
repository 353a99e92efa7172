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

#ifdef __cplusplus
}
#endif
#endif
