/*
 * json.c - strict JSON parser into an arena (see json.h).
 *
 * Two passes would avoid reallocations, but one recursive-descent pass with
 * a chunked arena is simpler: nodes are bump-allocated, arrays and objects
 * collect children on a temporary growable stack and are copied into the
 * arena once their length is known.
 */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 512
#define ARENA_CHUNK (1u << 20)

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    char data[];
};

struct json_doc {
    struct arena_chunk *chunks;
    struct json *root;
};

struct parser {
    const char *p, *end, *start;
    struct json_doc *doc;
    char *err;
    size_t errlen;
    int failed;
    /* scratch stack shared by all nesting levels */
    void **stack;
    size_t sp, scap;
};

static void *arena_alloc(struct json_doc *d, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = d->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = d->chunks;
        d->chunks = c;
    }
    void *r = c->data + c->used;
    c->used += n;
    return r;
}

static void fail(struct parser *ps, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = 1;
    if (!ps->err || ps->errlen == 0)
        return;
    int line = 1, col = 1;
    for (const char *q = ps->start; q < ps->p && q < ps->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    int n = snprintf(ps->err, ps->errlen, "line %d col %d: ", line, col);
    if (n < 0 || (size_t)n >= ps->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
    va_end(ap);
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int push(struct parser *ps, void *v)
{
    if (ps->sp == ps->scap) {
        size_t nc = ps->scap ? ps->scap * 2 : 256;
        void **ns = realloc(ps->stack, nc * sizeof(*ns));
        if (!ns) {
            fail(ps, "out of memory");
            return -1;
        }
        ps->stack = ns;
        ps->scap = nc;
    }
    ps->stack[ps->sp++] = v;
    return 0;
}

int json_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(struct parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4) {
        fail(ps, "truncated \\u escape");
        return -1;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = json_hexval((unsigned char)ps->p[i]);
        if (h < 0) {
            fail(ps, "bad \\u escape");
            return -1;
        }
        v = v * 16 + (unsigned)h;
    }
    ps->p += 4;
    *out = v;
    return 0;
}

size_t json_utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string literal at ps->p (which is '"'); the decoded bytes go to
 * the arena. Decoded output is never longer than the literal. */
static const char *parse_string(struct parser *ps, size_t *len_out)
{
    ps->p++; /* opening quote */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end) {
        fail(ps, "unterminated string");
        return NULL;
    }
    char *out = arena_alloc(ps->doc, (size_t)(q - ps->p) + 1);
    if (!out) {
        fail(ps, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            fail(ps, "control character in string");
            return NULL;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            ps->p++;
            continue;
        }
        ps->p++;
        if (ps->p >= ps->end) {
            fail(ps, "unterminated escape");
            return NULL;
        }
        char e = *ps->p++;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_hex4(ps, &cp) < 0)
                return NULL;
            if (cp >= 0xD800 && cp <= 0xDBFF && ps->end - ps->p >= 6 &&
                ps->p[0] == '\\' && ps->p[1] == 'u') {
                const char *save = ps->p;
                unsigned lo;
                ps->p += 2;
                if (read_hex4(ps, &lo) < 0)
                    return NULL;
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    ps->p = save; /* lone high surrogate, next escape separate */
            }
            /* lone surrogates are encoded as-is (WTF-8), like Python's json
             * would keep them; they never occur in valid tokenizer files */
            n += json_utf8_put(out + n, cp);
            break;
        }
        default:
            char q[8];
            fail(ps, "bad escape '\\%s'", json_esc(q, sizeof q, &e, 1));
            return NULL;
        }
    }
    ps->p++; /* closing quote */
    out[n] = '\0';
    *len_out = n;
    return out;
}

static struct json *new_node(struct parser *ps, enum json_type t)
{
    struct json *v = arena_alloc(ps->doc, sizeof(*v));
    if (!v) {
        fail(ps, "out of memory");
        return NULL;
    }
    memset(v, 0, sizeof(*v));
    v->type = t;
    return v;
}

static struct json *parse_value(struct parser *ps, int depth);

static struct json *parse_number(struct parser *ps)
{
    const char *s = ps->p;
    const char *q = s;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || !(*q >= '0' && *q <= '9')) {
        fail(ps, "bad number");
        return NULL;
    }
    if (*q == '0') {
        q++;
    } else {
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || !(*q >= '0' && *q <= '9')) {
            fail(ps, "bad number");
            return NULL;
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || !(*q >= '0' && *q <= '9')) {
            fail(ps, "bad number");
            return NULL;
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    char buf[64];
    size_t n = (size_t)(q - s);
    if (n >= sizeof(buf)) {
        /* very long literal: strtod needs NUL-termination; copy to heap */
        char *tmp = malloc(n + 1);
        if (!tmp) {
            fail(ps, "out of memory");
            return NULL;
        }
        memcpy(tmp, s, n);
        tmp[n] = 0;
        struct json *v = new_node(ps, JSON_NUMBER);
        if (v)
            v->u.num = strtod(tmp, NULL);
        free(tmp);
        ps->p = q;
        return v;
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    struct json *v = new_node(ps, JSON_NUMBER);
    if (!v)
        return NULL;
    v->u.num = strtod(buf, NULL);
    ps->p = q;
    return v;
}

static struct json *parse_array(struct parser *ps, int depth)
{
    ps->p++;
    size_t base = ps->sp;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return new_node(ps, JSON_ARRAY);
    }
    for (;;) {
        struct json *item = parse_value(ps, depth + 1);
        if (!item || push(ps, item) < 0)
            return NULL;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            break;
        }
        fail(ps, "expected ',' or ']' in array");
        return NULL;
    }
    struct json *v = new_node(ps, JSON_ARRAY);
    if (!v)
        return NULL;
    v->len = ps->sp - base;
    v->u.items = arena_alloc(ps->doc, v->len * sizeof(struct json *));
    if (!v->u.items) {
        fail(ps, "out of memory");
        return NULL;
    }
    memcpy(v->u.items, ps->stack + base, v->len * sizeof(struct json *));
    ps->sp = base;
    return v;
}

static struct json *parse_object(struct parser *ps, int depth)
{
    ps->p++;
    size_t base = ps->sp;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return new_node(ps, JSON_OBJECT);
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') {
            fail(ps, "expected string key in object");
            return NULL;
        }
        struct json_member *m = arena_alloc(ps->doc, sizeof(*m));
        if (!m) {
            fail(ps, "out of memory");
            return NULL;
        }
        m->key = parse_string(ps, &m->key_len);
        if (!m->key)
            return NULL;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') {
            fail(ps, "expected ':' after key");
            return NULL;
        }
        ps->p++;
        m->val = parse_value(ps, depth + 1);
        if (!m->val || push(ps, m) < 0)
            return NULL;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            break;
        }
        fail(ps, "expected ',' or '}' in object");
        return NULL;
    }
    struct json *v = new_node(ps, JSON_OBJECT);
    if (!v)
        return NULL;
    v->len = ps->sp - base;
    v->u.members = arena_alloc(ps->doc, v->len * sizeof(struct json_member));
    if (!v->u.members) {
        fail(ps, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < v->len; i++)
        v->u.members[i] = *(struct json_member *)ps->stack[base + i];
    ps->sp = base;
    return v;
}

static int match_word(struct parser *ps, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, w, n) == 0) {
        ps->p += n;
        return 1;
    }
    return 0;
}

static struct json *parse_value(struct parser *ps, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        fail(ps, "nesting deeper than %d", JSON_MAX_DEPTH);
        return NULL;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of input");
        return NULL;
    }
    switch (*ps->p) {
    case '{':
        return parse_object(ps, depth);
    case '[':
        return parse_array(ps, depth);
    case '"': {
        size_t n;
        const char *s = parse_string(ps, &n);
        if (!s)
            return NULL;
        struct json *v = new_node(ps, JSON_STRING);
        if (!v)
            return NULL;
        v->u.str = s;
        v->len = n;
        return v;
    }
    case 't':
        if (match_word(ps, "true"))
            return new_node(ps, JSON_TRUE);
        break;
    case 'f':
        if (match_word(ps, "false"))
            return new_node(ps, JSON_FALSE);
        break;
    case 'n':
        if (match_word(ps, "null"))
            return new_node(ps, JSON_NULL);
        break;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return parse_number(ps);
        break;
    }
    char q[8];
    fail(ps, "unexpected character '%s'", json_esc(q, sizeof q, ps->p, 1));
    return NULL;
}

struct json_doc *json_parse(const char *text, size_t len, char *err,
                            size_t errlen)
{
    struct json_doc *d = calloc(1, sizeof(*d));
    if (!d) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct parser ps = {.p = text, .end = text + len, .start = text,
                        .doc = d, .err = err, .errlen = errlen};
    d->root = parse_value(&ps, 0);
    if (d->root) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            fail(&ps, "trailing characters after JSON value");
    }
    free(ps.stack);
    if (ps.failed || !d->root) {
        if (!ps.failed)
            fail(&ps, "parse error");
        json_doc_free(d);
        return NULL;
    }
    return d;
}

struct json_doc *json_parse_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf || rerr) {
        free(buf);
        if (err && errlen)
            snprintf(err, errlen, "%s", rerr ? "read error" : "out of memory");
        return NULL;
    }
    struct json_doc *d = json_parse(buf, n, err, errlen);
    free(buf);
    return d;
}

void json_doc_free(struct json_doc *d)
{
    if (!d)
        return;
    struct arena_chunk *c = d->chunks;
    while (c) {
        struct arena_chunk *nx = c->next;
        free(c);
        c = nx;
    }
    free(d);
}

const struct json *json_root(const struct json_doc *d)
{
    return d ? d->root : NULL;
}

const struct json *json_get(const struct json *v, const char *key)
{
    if (!v || v->type != JSON_OBJECT)
        return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < v->len; i++) {
        const struct json_member *m = &v->u.members[i];
        if (m->key_len == kl && memcmp(m->key, key, kl) == 0)
            return m->val;
    }
    return NULL;
}

const struct json *json_at(const struct json *v, size_t i)
{
    if (!v || v->type != JSON_ARRAY || i >= v->len)
        return NULL;
    return v->u.items[i];
}

int json_int(const struct json *v, int64_t *out)
{
    if (!v || v->type != JSON_NUMBER)
        return -1;
    double d = v->u.num;
    if (d != d || d < -9.2e18 || d > 9.2e18 || (double)(int64_t)d != d)
        return -1;
    *out = (int64_t)d;
    return 0;
}

int json_double(const struct json *v, double *out)
{
    if (!v || v->type != JSON_NUMBER)
        return -1;
    *out = v->u.num;
    return 0;
}

int json_bool(const struct json *v, int *out)
{
    if (!v || (v->type != JSON_TRUE && v->type != JSON_FALSE))
        return -1;
    *out = v->type == JSON_TRUE;
    return 0;
}

const char *json_str(const struct json *v)
{
    return v && v->type == JSON_STRING ? v->u.str : NULL;
}

const char *json_type_str(enum json_type t)
{
    static const char *names[] = {"null", "false", "true", "number",
                                  "string", "array", "object"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

size_t json_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
#define EMIT(c)                  \
    do {                         \
        if (n + 1 < cap)         \
            out[n] = (char)(c);  \
        n++;                     \
    } while (0)
    EMIT('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            EMIT('\\');
            EMIT(c);
        } else if (c == '\n') {
            EMIT('\\');
            EMIT('n');
        } else if (c == '\r') {
            EMIT('\\');
            EMIT('r');
        } else if (c == '\t') {
            EMIT('\\');
            EMIT('t');
        } else if (c < 0x20) {
            char hex[8];
            snprintf(hex, sizeof(hex), "\\u%04x", c);
            for (int k = 0; hex[k]; k++)
                EMIT(hex[k]);
        } else {
            EMIT(c);
        }
    }
    EMIT('"');
#undef EMIT
    if (cap)
        out[n < cap ? n : cap - 1] = '\0';
    return n;
}

/* Length of the printable, well-formed UTF-8 character at s[0..n), or 0
 * when s[0] has to be escaped. */
static size_t esc_char_len(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    if (b < 0x80)
        return b >= 0x20 && b != 0x7F;
    size_t w = (size_t)json_utf8_width(b);
    if (w == 0 || w > n || !json_utf8_second_ok(b, s[1]))
        return 0;
    for (size_t k = 2; k < w; k++)
        if (!json_utf8_cont(s[k]))
            return 0;
    if (b == 0xC2 && s[1] < 0xA0) /* C1 control U+0080..U+009F */
        return 0;
    return w;
}

const char *json_esc(char *out, size_t cap, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n = 0, i = 0;
    if (cap == 0)
        return out;
    while (i < len) {
        char piece[8];
        size_t pn, w = esc_char_len(s + i, len - i);
        if (w == 1 && s[i] == '\\') {
            memcpy(piece, "\\\\", 2);
            pn = 2;
        } else if (w) {
            memcpy(piece, s + i, w);
            pn = w;
        } else {
            snprintf(piece, sizeof piece, "\\x%02X", s[i]);
            pn = 4;
            w = 1;
        }
        /* keep room for "..." unless this is the last piece */
        size_t need = pn + (i + w < len ? 3 : 0);
        if (n + need + 1 > cap) {
            if (n + 4 <= cap) {
                memcpy(out + n, "...", 3);
                n += 3;
            }
            break;
        }
        memcpy(out + n, piece, pn);
        n += pn;
        i += w;
    }
    out[n] = '\0';
    return out;
}

const char *json_escz(char *out, size_t cap, const char *s)
{
    if (!s)
        s = "(null)";
    return json_esc(out, cap, s, strlen(s));
}
