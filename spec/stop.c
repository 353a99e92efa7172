/*
 * stop.c - stop-string matching over streamed text (see stop.h).
 */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

int spec_stop_init(struct spec_stop *st, const char *const *strs, int n)
{
    memset(st, 0, sizeof *st);
    if (n > 0) {
        st->strs = calloc((size_t)n, sizeof *st->strs);
        st->lens = calloc((size_t)n, sizeof *st->lens);
        if (!st->strs || !st->lens) {
            spec_stop_free(st);
            return -2;
        }
    }
    for (int i = 0; i < n; i++) {
        size_t l = strlen(strs[i]);
        if (l == 0)
            continue;
        st->strs[st->n] = malloc(l + 1);
        if (!st->strs[st->n]) {
            spec_stop_free(st);
            return -2;
        }
        memcpy(st->strs[st->n], strs[i], l + 1);
        st->lens[st->n++] = l;
    }
    return 0;
}

void spec_stop_free(struct spec_stop *st)
{
    for (int i = 0; i < st->n; i++)
        free(st->strs[i]);
    free(st->strs);
    free(st->lens);
    free(st->text);
    memset(st, 0, sizeof *st);
}

/* First occurrence of needle in hay[from..len), or -1. */
static long find_from(const char *hay, size_t len, size_t from,
                      const char *needle, size_t nl)
{
    if (nl > len)
        return -1;
    for (size_t i = from; i + nl <= len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nl) == 0)
            return (long)i;
    return -1;
}

int spec_stop_feed(struct spec_stop *st, const char *piece, size_t n)
{
    if (st->matched)
        return 1;
    if (st->len + n + 1 > st->cap) {
        size_t cap = st->cap ? st->cap : 256;
        while (cap < st->len + n + 1)
            cap *= 2;
        char *t = realloc(st->text, cap);
        if (!t)
            return -2;
        st->text = t;
        st->cap = cap;
    }
    size_t old = st->len;
    memcpy(st->text + st->len, piece, n);
    st->len += n;
    st->text[st->len] = 0;
    long cut = -1;
    for (int i = 0; i < st->n; i++) {
        size_t nl = st->lens[i];
        /* a new occurrence must end inside the new bytes */
        size_t from = old >= nl - 1 ? old - (nl - 1) : 0;
        long at = find_from(st->text, st->len, from, st->strs[i], nl);
        if (at >= 0 && (cut < 0 || at < cut))
            cut = at;
    }
    if (cut >= 0) {
        st->len = (size_t)cut;
        st->text[st->len] = 0;
        if (st->released > st->len)
            st->released = st->len; /* cannot happen: held back */
        st->matched = 1;
        return 1;
    }
    return 0;
}

/* Bytes at the end of text that could begin a stop string. */
static size_t holdback(const struct spec_stop *st)
{
    size_t hb = 0;
    for (int i = 0; i < st->n; i++) {
        size_t nl = st->lens[i];
        size_t maxk = nl - 1 < st->len ? nl - 1 : st->len;
        for (size_t k = maxk; k > hb; k--)
            if (memcmp(st->text + st->len - k, st->strs[i], k) == 0) {
                hb = k;
                break;
            }
    }
    return hb;
}

/* Bytes at the end that are an incomplete UTF-8 sequence. */
static size_t utf8_partial(const char *s, size_t len)
{
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = (unsigned char)s[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking for the lead */
        size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2
                    : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

size_t spec_stop_release(struct spec_stop *st, const char **out, int final)
{
    size_t upto = st->len;
    if (!final && !st->matched) {
        size_t hb = holdback(st);
        upto = st->len - hb;
        size_t part = utf8_partial(st->text, upto);
        upto -= part;
    }
    if (upto < st->released)
        upto = st->released;
    *out = st->text ? st->text + st->released : "";
    size_t n = upto - st->released;
    st->released = upto;
    return n;
}
