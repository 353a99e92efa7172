/*
 * tok_bpe.c - byte-pair merging of one pre-tokenized word.
 *
 * Same algorithm as tokenizers' Word::merge_all, so ties and stale queue
 * entries resolve identically: symbols form a doubly linked list; a
 * min-heap holds candidate merges keyed by (rank, left position); popping
 * an entry whose pair no longer exists (left symbol merged away, or the
 * pair now builds a different token) skips it. Each merge pushes at most
 * two new candidates, so a word of n symbols costs O(n log n) - a 100 kB
 * word without spaces takes milliseconds, not seconds.
 *
 * Initial symbols: in byte-level mode one per byte (byte_id table, no
 * string lookups); otherwise one per UTF-8 character looked up in the
 * vocabulary. Characters missing from the vocabulary go through
 * byte_fallback / unk exactly as BPE::merge_word does (including its
 * quirk of emitting fallback bytes before a pending unk).
 *
 * Words up to TOK_CACHE_MAX_WORD bytes are memoised in the encoder's
 * cache (HF caches words shorter than 256 bytes too).
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static int grow_syms(struct mtpd_tok_enc *enc, size_t n)
{
    if (n <= enc->sym_cap)
        return 0;
    size_t cap = enc->sym_cap ? enc->sym_cap : 256;
    while (cap < n)
        cap *= 2;
    int32_t *a = realloc(enc->sym_id, cap * sizeof(*a));
    if (a)
        enc->sym_id = a;
    int32_t *b = realloc(enc->sym_prev, cap * sizeof(*b));
    if (b)
        enc->sym_prev = b;
    int32_t *c = realloc(enc->sym_next, cap * sizeof(*c));
    if (c)
        enc->sym_next = c;
    uint32_t *d = realloc(enc->sym_len, cap * sizeof(*d));
    if (d)
        enc->sym_len = d;
    if (!a || !b || !c || !d)
        return -1;
    enc->sym_cap = cap;
    return 0;
}

static int heap_push(struct mtpd_tok_enc *enc, size_t *hn, uint64_t key,
                     int32_t new_id)
{
    if (*hn == enc->heap_cap) {
        size_t cap = enc->heap_cap ? enc->heap_cap * 2 : 256;
        struct tok_heap_ent *h = realloc(enc->heap, cap * sizeof(*h));
        if (!h)
            return -1;
        enc->heap = h;
        enc->heap_cap = cap;
    }
    struct tok_heap_ent *h = enc->heap;
    size_t i = (*hn)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent].key <= key)
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = (struct tok_heap_ent){key, new_id};
    return 0;
}

static struct tok_heap_ent heap_pop(struct mtpd_tok_enc *enc, size_t *hn)
{
    struct tok_heap_ent *h = enc->heap;
    struct tok_heap_ent top = h[0], last = h[--(*hn)];
    size_t n = *hn, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1].key < h[c].key)
            c++;
        if (last.key <= h[c].key)
            break;
        h[i] = h[c];
        i = c;
    }
    if (n)
        h[i] = last;
    return top;
}

static inline const struct tok_u64slot *pair(const struct mtpd_tok *tok,
                                              int32_t a, int32_t b)
{
    return tok_u64map_find(&tok->merges,
                           ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
}

/* Appends one initial symbol. */
static inline void sym_add(struct mtpd_tok_enc *enc, size_t *m, int32_t id,
                           uint32_t len)
{
    enc->sym_id[*m] = id;
    enc->sym_len[*m] = len;
    (*m)++;
}

/* Builds the initial symbols of w into enc->sym_*; returns their count. */
static size_t initial_symbols(struct mtpd_tok_enc *enc, const char *w,
                              size_t n)
{
    const struct mtpd_tok *tok = enc->tok;
    size_t m = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    size_t i = 0;
    while (i < n) {
        size_t clen;
        int32_t id;
        char bl[4]; /* the symbol's text as the vocabulary writes it */
        const char *sym;
        size_t symlen;
        if (tok->byte_level) {
            clen = 1;
            id = tok->byte_id[(unsigned char)w[i]];
            symlen = (size_t)json_utf8_put(bl,
                                          tok_bl_byte_to_cp((unsigned char)w[i]));
            sym = bl;
        } else {
            unsigned char b = (unsigned char)w[i];
            clen = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
            id = tok_strmap_get(&tok->vocab, &tok->strs, w + i, clen);
            sym = w + i;
            symlen = clen;
        }
        i += clen;
        if (id >= 0) {
            if (unk >= 0) {
                sym_add(enc, &m, unk, unk_len);
                unk = -1;
            }
            sym_add(enc, &m, id, (uint32_t)clen);
            continue;
        }
        if (tok->byte_fallback) {
            size_t k;
            for (k = 0; k < symlen; k++)
                if (tok->fallback_id[(unsigned char)sym[k]] < 0)
                    break;
            if (k == symlen) {
                for (k = 0; k < symlen; k++)
                    sym_add(enc, &m, tok->fallback_id[(unsigned char)sym[k]],
                            1);
                continue;
            }
        }
        if (tok->unk_id >= 0) {
            if (unk >= 0 && tok->fuse_unk) {
                unk_len += (uint32_t)clen;
            } else {
                if (unk >= 0)
                    sym_add(enc, &m, unk, unk_len);
                unk = tok->unk_id;
                unk_len = (uint32_t)clen;
            }
        }
        /* no unk token: the character is dropped, as in HF */
    }
    if (unk >= 0)
        sym_add(enc, &m, unk, unk_len);
    for (size_t k = 0; k < m; k++) {
        enc->sym_prev[k] = (int32_t)k - 1;
        enc->sym_next[k] = k + 1 < m ? (int32_t)k + 1 : -1;
    }
    return m;
}

/* Runs the merges over enc->sym_* (m symbols). 0 or -1 (no memory). */
static int merge_all(struct mtpd_tok_enc *enc, size_t m)
{
    const struct mtpd_tok *tok = enc->tok;
    int32_t *id = enc->sym_id, *prev = enc->sym_prev, *next = enc->sym_next;
    uint32_t *len = enc->sym_len;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < m; i++) {
        const struct tok_u64slot *s = pair(tok, id[i], id[i + 1]);
        if (s && heap_push(enc, &hn, (s->val & 0xFFFFFFFF00000000ull) | i,
                           (int32_t)(uint32_t)s->val) < 0)
            return -1;
    }
    while (hn) {
        struct tok_heap_ent top = heap_pop(enc, &hn);
        uint32_t pos = (uint32_t)top.key;
        if (len[pos] == 0 || next[pos] < 0)
            continue;
        int32_t r = next[pos];
        const struct tok_u64slot *s = pair(tok, id[pos], id[r]);
        if (!s || (int32_t)(uint32_t)s->val != top.new_id)
            continue; /* stale entry */
        id[pos] = top.new_id;
        len[pos] += len[r];
        next[pos] = next[r];
        len[r] = 0;
        if (next[r] >= 0)
            prev[next[r]] = (int32_t)pos;
        if (prev[pos] >= 0) {
            int32_t p = prev[pos];
            s = pair(tok, id[p], id[pos]);
            if (s && heap_push(enc, &hn,
                               (s->val & 0xFFFFFFFF00000000ull) | (uint32_t)p,
                               (int32_t)(uint32_t)s->val) < 0)
                return -1;
        }
        if (next[pos] >= 0) {
            s = pair(tok, id[pos], id[next[pos]]);
            if (s && heap_push(enc, &hn,
                               (s->val & 0xFFFFFFFF00000000ull) | pos,
                               (int32_t)(uint32_t)s->val) < 0)
                return -1;
        }
    }
    return 0;
}

int tok_bpe_word(struct mtpd_tok_enc *enc, const char *w, size_t n,
                 struct mtpd_tok_ids *out)
{
    const struct mtpd_tok *tok = enc->tok;
    if (n == 0)
        return 0;
    if (tok->ignore_merges) {
        int32_t whole = tok->byte_level
                            ? tok_strmap_get(&tok->rawvocab, &tok->rawstrs, w, n)
                            : tok_strmap_get(&tok->vocab, &tok->strs, w, n);
        if (whole >= 0)
            return tok_ids_push(out, &whole, 1) < 0 ? MTPD_TOK_ENOMEM : 0;
    }
    if (n == 1 && tok->byte_level && tok->byte_id[(unsigned char)w[0]] >= 0)
        return tok_ids_push(out, &tok->byte_id[(unsigned char)w[0]], 1) < 0
                   ? MTPD_TOK_ENOMEM
                   : 0;
    uint64_t h = 0;
    if (n <= TOK_CACHE_MAX_WORD) {
        size_t k;
        h = tok_hash(w, n);
        const int32_t *hit = tok_cache_get(&enc->cache, w, n, h, &k);
        if (hit)
            return tok_ids_push(out, hit, k) < 0 ? MTPD_TOK_ENOMEM : 0;
    }
    /* at most 4 symbols per input byte (byte_fallback of a 2-byte char
     * needs 2; unk needs 1) */
    if (grow_syms(enc, 2 * n + 2) < 0)
        goto nomem;
    size_t m = initial_symbols(enc, w, n);
    if (m > 1 && merge_all(enc, m) < 0)
        goto nomem;
    size_t start = out->n;
    for (int32_t i = m ? 0 : -1; i >= 0; i = enc->sym_next[i])
        if (tok_ids_push(out, &enc->sym_id[i], 1) < 0)
            goto nomem;
    if (n <= TOK_CACHE_MAX_WORD)
        tok_cache_put(&enc->cache, w, n, h, out->v + start, out->n - start);
    return 0;
nomem:
    snprintf(enc->err, sizeof(enc->err), "out of memory");
    return MTPD_TOK_ENOMEM;
}
