/* TEMPORARY stand-in for the KV pool API of model.h until the kvpool
 * branch is merged (then this file goes). Unlimited, no pages. */
#include "model.h"

#include <stdlib.h>

struct mtpd_kv_pool {
    const struct mtpd_model *m;
};

int mtpd_kv_pool_new(const struct mtpd_model *m,
                     const struct mtpd_kv_pool_opts *o,
                     struct mtpd_kv_pool **out)
{
    (void)o;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return MTPD_ENOMEM;
    (*out)->m = m;
    return 0;
}

void mtpd_kv_pool_free(struct mtpd_kv_pool *p) { free(p); }

size_t mtpd_kv_pool_cost(const struct mtpd_kv_pool *p, int n)
{
    return (size_t)n * mtpd_kv_bytes_per_token(p->m);
}

int mtpd_kv_new_in(struct mtpd_kv_pool *p, int max_positions,
                   struct mtpd_kv **out)
{
    *out = mtpd_kv_new(p->m, max_positions);
    return *out ? 0 : MTPD_ENOMEM;
}

int mtpd_kv_reserve(struct mtpd_kv *kv, int n)
{
    return n > mtpd_kv_capacity(kv) ? MTPD_EFULL : 0;
}
