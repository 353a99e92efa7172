/*
 * tok_map.c - the tokenizer's small containers: a growable byte store, a
 * string -> id hash map, a uint64 -> uint64 hash map for merges, the
 * bounded word cache, output buffers and the error helper.
 *
 * All maps are open addressing with linear probing at load <= 1/2. Keys
 * of the string map are offsets into a caller-owned tok_bytes, so the
 * store can grow (realloc) without invalidating the map.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tok_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *mtpd_tok_err_str(int err)
{
    switch (err) {
    case MTPD_TOK_OK: return "ok";
    case MTPD_TOK_EINVAL: return "invalid argument";
    case MTPD_TOK_ENOMEM: return "out of memory";
    case MTPD_TOK_EIO: return "cannot read file";
    case MTPD_TOK_EFORMAT: return "malformed tokenizer file";
    case MTPD_TOK_EUNSUPPORTED: return "unsupported tokenizer feature";
    case MTPD_TOK_EUTF8: return "invalid UTF-8";
    case MTPD_TOK_ERANGE: return "id out of range";
    case MTPD_TOK_ETEMPLATE: return "chat/FIM format error";
    }
    return "unknown error";
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

int64_t tok_bytes_add(struct tok_bytes *b, const void *s, size_t len)
{
    if (b->n + len + 1 > UINT32_MAX)
        return -1;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    int64_t off = (int64_t)b->n;
    if (len)
        memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0'; /* keeps the last string NUL-terminated */
    return off;
}

static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A fast multiply-xorshift hash; never returns 0 (0 marks empty slots). */
uint64_t tok_hash(const void *s, size_t len)
{
    const unsigned char *p = s;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        h = (h ^ rd64(p)) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t t = 0;
    memcpy(&t, p, len);
    h = (h ^ t) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h ? h : 1;
}

int tok_strmap_init(struct tok_strmap *m, size_t expect)
{
    m->cap = pow2_at_least(expect * 2 + 2);
    m->n = 0;
    m->slots = calloc(m->cap, sizeof(*m->slots));
    return m->slots ? 0 : -1;
}

void tok_strmap_free(struct tok_strmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static int strmap_grow(struct tok_strmap *m)
{
    size_t cap = m->cap * 2;
    struct tok_strslot *s = calloc(cap, sizeof(*s));
    if (!s)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].hash)
            continue;
        size_t j = m->slots[i].hash & (cap - 1);
        while (s[j].hash)
            j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    return 0;
}

int tok_strmap_put(struct tok_strmap *m, const struct tok_bytes *store,
                   uint32_t off, uint32_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) < 0)
        return -1;
    const char *key = store->p + off;
    uint64_t h = tok_hash(key, len);
    size_t mask = m->cap - 1, i = h & mask;
    while (m->slots[i].hash) {
        struct tok_strslot *s = &m->slots[i];
        if (s->hash == h && s->len == len &&
            memcmp(store->p + s->off, key, len) == 0) {
            s->val = val; /* later entries win, as in a Rust HashMap */
            return 0;
        }
        i = (i + 1) & mask;
    }
    m->slots[i] = (struct tok_strslot){h, off, len, val};
    m->n++;
    return 0;
}

int32_t tok_strmap_get(const struct tok_strmap *m,
                       const struct tok_bytes *store, const char *key,
                       size_t len)
{
    if (!m->cap)
        return -1;
    uint64_t h = tok_hash(key, len);
    size_t mask = m->cap - 1, i = h & mask;
    while (m->slots[i].hash) {
        const struct tok_strslot *s = &m->slots[i];
        if (s->hash == h && s->len == len &&
            memcmp(store->p + s->off, key, len) == 0)
            return s->val;
        i = (i + 1) & mask;
    }
    return -1;
}

int tok_u64map_init(struct tok_u64map *m, size_t expect)
{
    m->cap = pow2_at_least(expect * 2 + 2);
    m->n = 0;
    unsigned lg = 0;
    while (((size_t)1 << lg) < m->cap)
        lg++;
    m->shift = 64 - lg;
    m->slots = malloc(m->cap * sizeof(*m->slots));
    if (!m->slots)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        m->slots[i].key = UINT64_MAX;
    return 0;
}

void tok_u64map_free(struct tok_u64map *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static void u64_insert(struct tok_u64slot *slots, size_t cap, unsigned shift,
                       uint64_t key, uint64_t val, size_t *n)
{
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> shift);
    while (slots[i].key != UINT64_MAX && slots[i].key != key)
        i = (i + 1) & (cap - 1);
    if (slots[i].key == UINT64_MAX)
        (*n)++;
    slots[i].key = key;
    slots[i].val = val;
}

int tok_u64map_put(struct tok_u64map *m, uint64_t key, uint64_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct tok_u64map g;
        if (tok_u64map_init(&g, m->cap) < 0)
            return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key != UINT64_MAX)
                u64_insert(g.slots, g.cap, g.shift, m->slots[i].key,
                           m->slots[i].val, &g.n);
        free(m->slots);
        *m = g;
    }
    u64_insert(m->slots, m->cap, m->shift, key, val, &m->n);
    return 0;
}

int tok_cache_init(struct tok_cache *c, size_t slots, size_t arena_bytes)
{
    memset(c, 0, sizeof(*c));
    c->cap = pow2_at_least(slots);
    c->slots = calloc(c->cap, sizeof(*c->slots));
    c->arena = malloc(arena_bytes);
    c->acap = arena_bytes;
    if (!c->slots || !c->arena) {
        tok_cache_free(c);
        return -1;
    }
    return 0;
}

void tok_cache_free(struct tok_cache *c)
{
    free(c->slots);
    free(c->arena);
    memset(c, 0, sizeof(*c));
}

const int32_t *tok_cache_get(const struct tok_cache *c, const char *w,
                             size_t len, uint64_t h, size_t *n)
{
    size_t mask = c->cap - 1, i = h & mask;
    while (c->slots[i].hash) {
        const struct tok_cslot *s = &c->slots[i];
        if (s->hash == h && s->klen == len &&
            memcmp(c->arena + s->off, w, len) == 0) {
            *n = s->nids;
            return (const int32_t *)(void *)(c->arena + s->off +
                                             ((len + 3) & ~(size_t)3));
        }
        i = (i + 1) & mask;
    }
    return NULL;
}

void tok_cache_put(struct tok_cache *c, const char *w, size_t len, uint64_t h,
                   const int32_t *ids, size_t n)
{
    if (len > TOK_CACHE_MAX_WORD || n > UINT16_MAX)
        return;
    size_t need = ((len + 3) & ~(size_t)3) + n * sizeof(int32_t);
    if (need > c->acap)
        return;
    if ((c->n + 1) * 2 > c->cap || c->used + need > c->acap) {
        /* full: start over (cheaper than an eviction policy, and the hot
         * words come back within a few lines of text) */
        memset(c->slots, 0, c->cap * sizeof(*c->slots));
        c->n = 0;
        c->used = 0;
    }
    size_t mask = c->cap - 1, i = h & mask;
    while (c->slots[i].hash)
        i = (i + 1) & mask;
    memcpy(c->arena + c->used, w, len);
    memcpy(c->arena + c->used + ((len + 3) & ~(size_t)3), ids,
           n * sizeof(int32_t));
    c->slots[i] = (struct tok_cslot){h, (uint32_t)c->used, (uint16_t)len,
                                     (uint16_t)n};
    c->used += need;
    c->n++;
}

int tok_ids_push(struct mtpd_tok_ids *a, const int32_t *v, size_t n)
{
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 64;
        while (cap < a->n + n)
            cap *= 2;
        int32_t *p = realloc(a->v, cap * sizeof(*p));
        if (!p)
            return -1;
        a->v = p;
        a->cap = cap;
    }
    if (n) /* v may be NULL then (an empty output), and memcpy's may not */
        memcpy(a->v + a->n, v, n * sizeof(*v));
    a->n += n;
    return 0;
}

int tok_buf_put(struct mtpd_tok_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

void mtpd_tok_ids_free(struct mtpd_tok_ids *a)
{
    free(a->v);
    memset(a, 0, sizeof(*a));
}

void mtpd_tok_buf_free(struct mtpd_tok_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

int tok_spans_push(struct tok_spanvec *sv, uint32_t s, uint32_t e,
                   uint32_t m)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 64;
        struct tok_span *v = realloc(sv->v, cap * sizeof(*v));
        if (!v)
            return -1;
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = (struct tok_span){s, e, m};
    return 0;
}

int tok_segs_push(struct tok_segvec *sv, uint32_t s, uint32_t e, int32_t id)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 64;
        struct tok_seg *v = realloc(sv->v, cap * sizeof(*v));
        if (!v)
            return -1;
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = (struct tok_seg){s, e, id};
    return 0;
}

int mtpd_tok_ids_append(struct mtpd_tok_ids *a, const int32_t *v, size_t n)
{
    return tok_ids_push(a, v, n) < 0 ? MTPD_TOK_ENOMEM : 0;
}

int mtpd_tok_buf_append(struct mtpd_tok_buf *b, const void *s, size_t n)
{
    return tok_buf_put(b, s, n) < 0 ? MTPD_TOK_ENOMEM : 0;
}

int mtpd_tok_utf8_valid(const char *s, size_t n)
{
    return tok_utf8_check(s, n, NULL) == 0;
}
