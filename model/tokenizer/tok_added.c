/*
 * tok_added.c - added tokens: the byte trie and the two-pass split.
 *
 * tokenizers' AddedVocabulary::extract_and_normalize: pass 1 finds the
 * tokens with normalized == false in the raw text; pass 2 finds the
 * normalized == true tokens inside each remaining gap (after the
 * normalizer, which is the identity for the tokenizers we accept). Each
 * pass is an Aho-Corasick LeftmostLongest scan: the earliest start wins,
 * then the longest token starting there; scanning resumes after it. A
 * byte trie walked from each candidate start (filtered by a first-byte
 * table) gives exactly that. single_word / lstrip / rstrip and
 * encode_special_tokens are applied per match as find_matches does.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t trie_node(struct tok_trie *t, unsigned char byte)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct tok_trie_node *v = realloc(t->nodes, cap * sizeof(*v));
        if (!v)
            return -1;
        t->nodes = v;
        t->cap = cap;
    }
    t->nodes[t->n] = (struct tok_trie_node){-1, -1, -1, byte};
    return (int32_t)t->n++;
}

int tok_trie_add(struct tok_trie *t, const char *s, size_t len,
                 int32_t added_index)
{
    if (!t->nodes) {
        for (int i = 0; i < 256; i++)
            t->root[i] = -1;
        t->empty = 1;
        if (trie_node(t, 0) < 0) /* root (unused except as a marker) */
            return -1;
    }
    if (len == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    int32_t cur = t->root[p[0]];
    if (cur < 0) {
        cur = trie_node(t, p[0]);
        if (cur < 0)
            return -1;
        t->root[p[0]] = cur;
    }
    for (size_t i = 1; i < len; i++) {
        int32_t c = t->nodes[cur].child;
        while (c >= 0 && t->nodes[c].byte != p[i])
            c = t->nodes[c].sibling;
        if (c < 0) {
            c = trie_node(t, p[i]);
            if (c < 0)
                return -1;
            t->nodes[c].sibling = t->nodes[cur].child;
            t->nodes[cur].child = c;
        }
        cur = c;
    }
    t->nodes[cur].added = added_index;
    t->empty = 0;
    return 0;
}

void tok_trie_free(struct tok_trie *t)
{
    free(t->nodes);
    memset(t, 0, sizeof(*t));
}

/* Longest token starting at s[0..n): its added index and length, or -1. */
static int32_t trie_longest(const struct tok_trie *t, const unsigned char *s,
                            size_t n, size_t *len)
{
    int32_t cur = t->root[s[0]], best = -1;
    size_t i = 1;
    while (cur >= 0) {
        if (t->nodes[cur].added >= 0) {
            best = t->nodes[cur].added;
            *len = i;
        }
        if (i == n)
            break;
        int32_t c = t->nodes[cur].child;
        while (c >= 0 && t->nodes[c].byte != s[i])
            c = t->nodes[c].sibling;
        cur = c;
        i++;
    }
    return best;
}

/* Unicode White_Space (Rust's char::is_whitespace / regex \s). */
static int is_ws(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 ||
           c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Whether the code point at s is a word character (Rust regex \w). */
static int is_word(struct mtpd_tok_enc *enc, const char *s, int clen)
{
    int rc = pcre2_match(enc->tok->word_re, (PCRE2_SPTR)s, (size_t)clen, 0,
                         PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, enc->md,
                         enc->mctx);
    return rc > 0;
}

/* Start of the last character of s[0..n) (n > 0). */
static size_t last_char(const char *s, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

/* Appends the splits of sentence s[0..n) (at offset base of the text) to
 * out: tokens of trie t, and gaps with id -1. */
static int find_matches(struct mtpd_tok_enc *enc, const struct tok_trie *t,
                        const char *s, size_t n, uint32_t base,
                        int parse_special, struct tok_segvec *out)
{
    const struct mtpd_tok *tok = enc->tok;
    const unsigned char *u = (const unsigned char *)s;
    size_t start_offset = 0, pos = 0;
    while (pos < n) {
        while (pos < n && t->root[u[pos]] < 0)
            pos++;
        if (pos == n)
            break;
        size_t len = 0;
        int32_t ai = trie_longest(t, u + pos, n - pos, &len);
        if (ai < 0) {
            pos++;
            continue;
        }
        size_t start = pos, stop = pos + len;
        pos = stop;
        const struct tok_added *a = &tok->added[ai];
        if (!parse_special && a->special)
            continue;
        if (a->single_word) {
            int ok_l = 1, ok_r = 1;
            if (start > 0) {
                size_t c = last_char(s, start);
                ok_l = !is_word(enc, s + c, (int)(start - c));
            }
            if (stop < n) {
                uint32_t cp;
                int cl = tok_utf8_next(u + stop, &cp);
                ok_r = !is_word(enc, s + stop, cl);
            }
            if (!ok_l || !ok_r)
                continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t c = last_char(s, ns);
                uint32_t cp;
                tok_utf8_next(u + c, &cp);
                if (!is_ws(cp))
                    break;
                ns = c;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                int cl = tok_utf8_next(u + stop, &cp);
                if (!is_ws(cp))
                    break;
                stop += (size_t)cl;
            }
        }
        if (start_offset < start &&
            tok_segs_push(out, base + (uint32_t)start_offset,
                          base + (uint32_t)start, -1) < 0)
            return -1;
        if (tok_segs_push(out, base + (uint32_t)start, base + (uint32_t)stop,
                          a->id) < 0)
            return -1;
        start_offset = stop;
    }
    if (start_offset != n &&
        tok_segs_push(out, base + (uint32_t)start_offset, base + (uint32_t)n,
                      -1) < 0)
        return -1;
    return 0;
}

int tok_added_split(struct mtpd_tok_enc *enc, const char *text, size_t len,
                    int parse_special)
{
    const struct mtpd_tok *tok = enc->tok;
    struct tok_segvec *s1 = &enc->seg1, *s2 = &enc->seg2;
    s1->n = s2->n = 0;
    if (len == 0)
        return 0;
    int rc;
    if (tok->trie_raw.empty)
        rc = tok_segs_push(s1, 0, (uint32_t)len, -1);
    else
        rc = find_matches(enc, &tok->trie_raw, text, len, 0, parse_special,
                          s1);
    if (rc < 0)
        goto nomem;
    if (tok->trie_norm.empty) {
        struct tok_segvec t = *s1; /* nothing to do: swap */
        *s1 = *s2;
        *s2 = t;
        return 0;
    }
    for (size_t i = 0; i < s1->n; i++) {
        struct tok_seg g = s1->v[i];
        if (g.id >= 0)
            rc = tok_segs_push(s2, g.s, g.e, g.id);
        else
            rc = find_matches(enc, &tok->trie_norm, text + g.s, g.e - g.s,
                              g.s, parse_special, s2);
        if (rc < 0)
            goto nomem;
    }
    return 0;
nomem:
    snprintf(enc->err, sizeof(enc->err), "out of memory");
    return MTPD_TOK_ENOMEM;
}

/* Builds both tries from tok->added and the \w matcher when needed. */
int tok_added_build(struct mtpd_tok *tok, char *err, size_t errlen)
{
    int need_word = 0;
    if (tok_trie_add(&tok->trie_raw, "", 0, -1) < 0 ||
        tok_trie_add(&tok->trie_norm, "", 0, -1) < 0)
        return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
    for (size_t i = 0; i < tok->n_added; i++) {
        const struct tok_added *a = &tok->added[i];
        struct tok_trie *t = a->normalized ? &tok->trie_norm : &tok->trie_raw;
        if (tok_trie_add(t, tok->strs.p + a->off, a->len, (int32_t)i) < 0)
            return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
        need_word |= a->single_word;
        tok->has_special |= a->special;
    }
    if (need_word) {
        size_t n = strlen(tok_rust_word_class);
        char *re = malloc(n + 3);
        if (!re)
            return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
        re[0] = '[';
        memcpy(re + 1, tok_rust_word_class, n);
        re[n + 1] = ']';
        re[n + 2] = '\0';
        tok->word_re = tok_regex_compile(re, n + 2, 0, err, errlen);
        free(re);
        if (!tok->word_re)
            return MTPD_TOK_EINVAL;
    }
    return 0;
}
