/*
 * kv.c - the paged latent KV cache: pools of pages with a byte budget, and
 * one sequence's cache as a page table over them (see model.h,
 * model_int.h).
 *
 * A page holds page_pos positions of every layer (main layers, then one
 * per MTP module), each layer's rows contiguous, so attention reads one
 * page of one layer as a plain [page_pos, kv_lora + rope] matrix. Lengths
 * are kept per part (main, each MTP module) so the speculative engine can
 * roll each back on its own; a cache holds the pages its longest part or
 * its reservation needs, and gives the rest back to its pool's free list.
 */
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

size_t mtpd_kv_bytes_per_token(const struct mtpd_model *m)
{
    const struct mtpd_config *c = &m->cfg;
    return kdtype_size(m->kv_dtype) *
           (size_t)(c->kv_lora_rank + c->qk_rope_head_dim) *
           (size_t)(c->num_hidden_layers + m->n_mtp);
}

/* ---- pool ------------------------------------------------------------ */

/* A new zeroed page (64-byte aligned so attention's row loads do not
 * split lines; zeroed so rows never written read as finite numbers): host
 * memory, or the device's when the model is on a GPU. */
static void *page_alloc(struct mtpd_kv_pool *p)
{
    size_t bytes = (p->page_bytes + 63) & ~(size_t)63;
    if (p->pg.alloc)
        return p->pg.alloc(p->pg.ud, bytes);
    void *pg = aligned_alloc(64, bytes);
    if (pg)
        memset(pg, 0, bytes);
    return pg;
}

static void page_free(struct mtpd_kv_pool *p, void *pg)
{
    if (p->pg.free)
        p->pg.free(p->pg.ud, pg);
    else
        free(pg);
}

int mtpd_kv_pool_new(const struct mtpd_model *m,
                     const struct mtpd_kv_pool_opts *o,
                     struct mtpd_kv_pool **out)
{
    static const struct mtpd_kv_pool_opts dflt = {0};
    if (!out)
        return MTPD_EINVAL;
    *out = NULL;
    if (!m)
        return MTPD_EINVAL;
    if (!o)
        o = &dflt;
    int pp = o->page_positions ? o->page_positions : MTPD_KV_PAGE_DEFAULT;
    if (pp < 1 || pp > KV_PAGE_MAX || (pp & (pp - 1)))
        return MTPD_EINVAL;
    enum kdtype dt;
    switch (o->dtype) {
    case MTPD_KV_DEFAULT: dt = m->kv_dtype; break;
    case MTPD_KV_F32: dt = KDT_F32; break;
    case MTPD_KV_BF16: dt = KDT_BF16; break;
    default: return MTPD_EINVAL;
    }
    struct mtpd_kv_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return MTPD_ENOMEM;
    const struct mtpd_config *c = &m->cfg;
    p->m = m;
    p->budget = o->budget_bytes;
    p->page_pos = pp;
    while ((1 << p->page_shift) < pp)
        p->page_shift++;
    p->dtype = dt;
    p->n_layers_total = c->num_hidden_layers + m->n_mtp;
    p->row = c->kv_lora_rank + c->qk_rope_head_dim;
    p->row_bytes = (size_t)p->row * kdtype_size(dt);
    p->layer_bytes = p->row_bytes * (size_t)pp;
    p->page_bytes = p->layer_bytes * (size_t)p->n_layers_total;
    p->pg = m->kv_pages;
    *out = p;
    return 0;
}

void mtpd_kv_pool_free(struct mtpd_kv_pool *p)
{
    if (!p)
        return;
    for (long i = 0; i < p->n_free; i++)
        page_free(p, p->free_pages[i]);
    free(p->free_pages);
    free(p);
}

void mtpd_kv_pool_get_stats(const struct mtpd_kv_pool *p,
                            struct mtpd_kv_pool_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->budget_bytes = p->budget;
    st->page_bytes = p->page_bytes;
    st->page_positions = p->page_pos;
    st->used_bytes = (size_t)p->pages_used * p->page_bytes;
    st->peak_bytes = p->peak;
    st->cached_bytes = (size_t)p->n_free * p->page_bytes;
    st->pages_used = p->pages_used;
    st->caches = p->caches;
}

/* Pages that hold n positions (page_pos is a power of two). */
static size_t pool_pages(const struct mtpd_kv_pool *p, size_t n)
{
    return (n + (size_t)p->page_pos - 1) >> p->page_shift;
}

size_t mtpd_kv_pool_cost(const struct mtpd_kv_pool *p, int n_positions)
{
    if (n_positions <= 0)
        return 0;
    return pool_pages(p, (size_t)n_positions) * p->page_bytes;
}

const char *mtpd_kv_pool_dtype(const struct mtpd_kv_pool *p)
{
    return p->dtype == KDT_BF16 ? "bf16" : "f32";
}

/* One page from the free list, or a new one within the budget; NULL when
 * the budget or memory is exhausted. */
static void *pool_take(struct mtpd_kv_pool *p)
{
    void *pg;
    if (p->n_free > 0) {
        pg = p->free_pages[--p->n_free];
    } else {
        if (p->budget &&
            (size_t)(p->pages_total + 1) > p->budget / p->page_bytes)
            return NULL;
        /* room to give every page back later without allocating */
        if (p->free_cap < p->pages_total + 1) {
            long cap = p->free_cap ? 2 * p->free_cap : 16;
            void **fp = realloc(p->free_pages, sizeof(*fp) * (size_t)cap);
            if (!fp)
                return NULL;
            p->free_pages = fp;
            p->free_cap = cap;
        }
        pg = page_alloc(p);
        if (!pg)
            return NULL;
        p->pages_total++;
    }
    p->pages_used++;
    size_t used = (size_t)p->pages_used * p->page_bytes;
    if (used > p->peak)
        p->peak = used;
    return pg;
}

static void pool_give(struct mtpd_kv_pool *p, void *pg)
{
    p->free_pages[p->n_free++] = pg; /* free_cap >= pages_total */
    p->pages_used--;
}

/* ---- one sequence's cache -------------------------------------------- */

static int kv_new(struct mtpd_kv_pool *p, int max_positions,
                  struct mtpd_kv **out)
{
    struct mtpd_kv *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return MTPD_ENOMEM;
    kv->m = p->m;
    kv->pool = p;
    kv->cap = max_positions;
    kv->n_layers_total = p->n_layers_total;
    kv->row = p->row;
    kv->dtype = p->dtype;
    kv->page_pos = p->page_pos;
    kv->page_shift = p->page_shift;
    kv->row_bytes = p->row_bytes;
    kv->layer_bytes = p->layer_bytes;
    size_t n = pool_pages(p, (size_t)max_positions);
    kv->pages = calloc(n, sizeof(*kv->pages));
    if (!kv->pages) {
        free(kv);
        return MTPD_ENOMEM;
    }
    p->caches++;
    *out = kv;
    return 0;
}

int mtpd_kv_new_in(struct mtpd_kv_pool *p, int max_positions,
                   struct mtpd_kv **out)
{
    if (!out)
        return MTPD_EINVAL;
    *out = NULL;
    if (!p || max_positions < 1 ||
        max_positions > p->m->cfg.max_position_embeddings)
        return MTPD_EINVAL;
    return kv_new(p, max_positions, out);
}

struct mtpd_kv *mtpd_kv_new(const struct mtpd_model *m, int max_tokens)
{
    struct mtpd_kv_pool *p;
    struct mtpd_kv *kv;
    if (max_tokens < 1 || mtpd_kv_pool_new(m, NULL, &p))
        return NULL;
    if (kv_new(p, max_tokens, &kv)) {
        mtpd_kv_pool_free(p);
        return NULL;
    }
    kv->own_pool = 1;
    return kv;
}

/* Gives back pages [keep, n_pages). */
static void kv_drop(struct mtpd_kv *kv, int keep)
{
    while (kv->n_pages > keep) {
        kv->n_pages--;
        pool_give(kv->pool, kv->pages[kv->n_pages]);
        kv->pages[kv->n_pages] = NULL;
    }
}

void mtpd_kv_free(struct mtpd_kv *kv)
{
    if (!kv)
        return;
    kv_drop(kv, 0);
    kv->pool->caches--;
    if (kv->own_pool)
        mtpd_kv_pool_free(kv->pool);
    free(kv->pages);
    free(kv);
}

int kv_grow(struct mtpd_kv *kv, int n_pos)
{
    int want = (n_pos + kv->page_pos - 1) >> kv->page_shift, had = kv->n_pages;
    while (kv->n_pages < want) {
        void *pg = pool_take(kv->pool);
        if (!pg) {
            kv_drop(kv, had);
            return MTPD_ENOMEM;
        }
        kv->pages[kv->n_pages++] = pg;
    }
    return 0;
}

void kv_fit(struct mtpd_kv *kv)
{
    int need = kv->reserved > kv->len_main ? kv->reserved : kv->len_main;
    for (int i = 0; i < kv->m->n_mtp; i++)
        need = kv->len_mtp[i] > need ? kv->len_mtp[i] : need;
    kv_drop(kv, (need + kv->page_pos - 1) >> kv->page_shift);
}

int mtpd_kv_capacity(const struct mtpd_kv *kv) { return kv->cap; }

int mtpd_kv_reserve(struct mtpd_kv *kv, int n_positions)
{
    if (!kv || n_positions < 0)
        return MTPD_EINVAL;
    if (n_positions > kv->cap)
        return MTPD_EFULL;
    int rc = kv_grow(kv, n_positions);
    if (rc)
        return rc;
    kv->reserved = n_positions;
    kv_fit(kv); /* a smaller reservation gives back what nothing needs */
    return 0;
}

size_t mtpd_kv_bytes(const struct mtpd_kv *kv)
{
    return (size_t)kv->n_pages * kv->pool->page_bytes;
}

int mtpd_kv_len(const struct mtpd_kv *kv, int module)
{
    if (module < 0)
        return kv->len_main;
    if (module >= kv->m->n_mtp)
        return MTPD_ENOMTP;
    return kv->len_mtp[module];
}

int mtpd_kv_truncate(struct mtpd_kv *kv, int module, int n)
{
    int *len = module < 0 ? &kv->len_main
               : module < kv->m->n_mtp ? &kv->len_mtp[module] : NULL;
    if (!len)
        return MTPD_ENOMTP;
    if (n < 0 || n > *len)
        return MTPD_EINVAL;
    *len = n;
    kv_fit(kv);
    return 0;
}
