/* http_json.c - a small JSON writer for the HTTP replies (http_int.h):
 * values and keys in order, commas and string escaping done here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

void jw_init(struct jw *w)
{
    memset(w, 0, sizeof *w);
    w->first[0] = 1;
}

void jw_free(struct jw *w)
{
    free(w->p);
    w->p = NULL;
    w->n = w->cap = 0;
}

void jw_raw(struct jw *w, const char *s, size_t n)
{
    if (w->oom)
        return;
    if (w->n + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->n + n + 1)
            cap *= 2;
        char *p = realloc(w->p, cap);
        if (!p) {
            w->oom = 1;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
    w->p[w->n] = 0;
}

/* Before a value: a comma unless it is the first of its container or
 * follows its key. */
static void sep(struct jw *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (!w->first[w->depth])
        jw_raw(w, ",", 1);
    w->first[w->depth] = 0;
}

static void open_c(struct jw *w, char c)
{
    sep(w);
    jw_raw(w, &c, 1);
    if (w->depth + 1 < JW_MAX_DEPTH)
        w->depth++;
    else
        w->oom = 1; /* deeper than any reply we write */
    w->first[w->depth] = 1;
    w->close[w->depth] = c == '{' ? '}' : ']';
}

void jw_obj(struct jw *w) { open_c(w, '{'); }
void jw_arr(struct jw *w) { open_c(w, '['); }

void jw_end(struct jw *w)
{
    char c = w->depth > 0 ? w->close[w->depth] : '}';
    jw_raw(w, &c, 1);
    if (w->depth > 0)
        w->depth--;
    w->after_key = 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string literal; bytes that are not UTF-8 become U+FFFD, so the
 * reply stays valid JSON whatever the input held. */
static void put_str(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    jw_raw(w, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0';
            u[4] = hex[c >> 4], u[5] = hex[c & 15], u[6] = 0;
            esc = u;
        } else if (c >= 0x80) {
            size_t l = utf8_len((const unsigned char *)s + i, n - i);
            if (l) {
                i += l - 1;
                continue;
            }
            esc = "\\ufffd";
        }
        if (esc) {
            jw_raw(w, s + run, i - run);
            jw_raw(w, esc, strlen(esc));
            run = i + 1;
        }
    }
    jw_raw(w, s + run, n - run);
    jw_raw(w, "\"", 1);
}

void jw_key(struct jw *w, const char *k)
{
    sep(w);
    put_str(w, k, strlen(k));
    jw_raw(w, ":", 1);
    w->after_key = 1;
}

void jw_str(struct jw *w, const char *s, size_t n)
{
    sep(w);
    put_str(w, s ? s : "", s ? n : 0);
}

void jw_cstr(struct jw *w, const char *s)
{
    if (!s) {
        jw_null(w);
        return;
    }
    jw_str(w, s, strlen(s));
}

void jw_int(struct jw *w, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", v);
    sep(w);
    jw_raw(w, b, (size_t)n);
}

void jw_num(struct jw *w, double v)
{
    if (!isfinite(v)) {
        jw_null(w);
        return;
    }
    char b[40];
    int n = snprintf(b, sizeof b, "%.6g", v);
    sep(w);
    jw_raw(w, b, (size_t)n);
}

void jw_bool(struct jw *w, int v)
{
    sep(w);
    jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void jw_null(struct jw *w)
{
    sep(w);
    jw_raw(w, "null", 4);
}

void jw_json(struct jw *w, const char *json)
{
    sep(w);
    jw_raw(w, json, strlen(json));
}
