/*
 * tok_utf8.c - UTF-8 validation, code point decoding, and the lossy
 * decoder used by decode and the streaming decoder.
 *
 * The lossy decoder follows Rust's String::from_utf8_lossy (which HF
 * tokenizers' ByteLevel decoder calls): each "maximal subpart" of an
 * ill-formed sequence (Unicode 15, ch. 3 "U+FFFD substitution of maximal
 * subparts") becomes one U+FFFD, and the byte that broke the sequence is
 * decoded afresh. A truncated but so far valid sequence at the very end
 * is one U+FFFD. Both the one-shot and the streaming decode run this one
 * state machine, so they cannot disagree.
 */
#include "tok_internal.h"

#include <string.h>

#include "json.h"

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* The well-formedness rules (json_utf8_width, json_utf8_second_ok,
 * json_utf8_cont) are shared with the JSON parser's escaping (json.h). */
int tok_utf8_check(const char *str, size_t n, size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        int w = json_utf8_width(b);
        if (!w || i + (size_t)w > n || !json_utf8_second_ok(b, s[i + 1]))
            goto fail;
        for (int k = 2; k < w; k++)
            if (!json_utf8_cont(s[i + k]))
                goto fail;
        i += (size_t)w;
    }
    return 0;
fail:
    if (bad)
        *bad = i;
    return -1;
}

int tok_utf8_next(const unsigned char *s, uint32_t *cp)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b < 0xE0) {
        *cp = ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (b < 0xF0) {
        *cp = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) |
              (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

/* Whether byte b can extend the valid prefix pend[0..np). */
static inline int extends(const unsigned char *pend, int np, unsigned char b)
{
    return np == 1 ? json_utf8_second_ok(pend[0], b) : json_utf8_cont(b);
}

int tok_utf8_lossy_feed(unsigned char *pend, int *npend, const char *str,
                        size_t n, struct mtpd_tok_buf *out)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    /* 1. finish (or abandon) the held-back prefix */
    while (*npend && i < n) {
        if (!extends(pend, *npend, s[i])) {
            if (tok_buf_put(out, REPL, 3) < 0)
                return -1;
            *npend = 0; /* s[i] is decoded afresh below */
            break;
        }
        pend[(*npend)++] = s[i++];
        if (*npend == json_utf8_width(pend[0])) {
            if (tok_buf_put(out, pend, (size_t)*npend) < 0)
                return -1;
            *npend = 0;
        }
    }
    /* 2. the rest: copy valid runs in bulk */
    size_t run = i;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        int w = json_utf8_width(b);
        int k = 1;
        if (w) {
            while (k < w && i + (size_t)k < n &&
                   (k == 1 ? json_utf8_second_ok(b, s[i + 1]) : json_utf8_cont(s[i + k])))
                k++;
            if (k == w) {
                i += (size_t)w;
                continue;
            }
            if (i + (size_t)k == n) { /* valid but incomplete: hold it */
                if (tok_buf_put(out, s + run, i - run) < 0)
                    return -1;
                memcpy(pend, s + i, (size_t)k);
                *npend = k;
                return 0;
            }
        }
        /* s[i .. i+k) is a maximal invalid subpart */
        if (tok_buf_put(out, s + run, i - run) < 0 ||
            tok_buf_put(out, REPL, 3) < 0)
            return -1;
        i += (size_t)k;
        run = i;
    }
    return tok_buf_put(out, s + run, i - run);
}

int tok_utf8_lossy_flush(unsigned char *pend, int *npend,
                         struct mtpd_tok_buf *out)
{
    (void)pend;
    if (!*npend)
        return tok_buf_put(out, "", 0);
    *npend = 0;
    return tok_buf_put(out, REPL, 3);
}
