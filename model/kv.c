/*
 * kv.c - one sequence's latent KV cache (see model.h, model_int.h).
 *
 * Layout per layer: cap rows of (kv_lora_rank + qk_rope_head_dim) fp32
 * (or BF16, mtpd_load_opts.kv_bf16), c_kv first, then the roped k_pe. Main layers come first, then one layer
 * per MTP module. Lengths are kept per part (main, each MTP module) so the
 * speculative engine can roll each back on its own.
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

struct mtpd_kv *mtpd_kv_new(const struct mtpd_model *m, int max_tokens)
{
    const struct mtpd_config *c = &m->cfg;
    if (max_tokens < 1)
        return NULL;
    struct mtpd_kv *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return NULL;
    kv->m = m;
    kv->cap = max_tokens;
    kv->row = c->kv_lora_rank + c->qk_rope_head_dim;
    kv->dtype = m->kv_dtype;
    kv->n_layers_total = c->num_hidden_layers + m->n_mtp;
    kv->layer = calloc((size_t)kv->n_layers_total, sizeof(*kv->layer));
    if (!kv->layer) {
        free(kv);
        return NULL;
    }
    for (int i = 0; i < kv->n_layers_total; i++) {
        /* rows beyond the length are never read: no need to zero; 64-byte
         * aligned so the attention kernels' row loads do not split lines */
        size_t bytes = kdtype_size(kv->dtype) * (size_t)kv->row * max_tokens;
        kv->layer[i] = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!kv->layer[i]) {
            mtpd_kv_free(kv);
            return NULL;
        }
    }
    return kv;
}

void mtpd_kv_free(struct mtpd_kv *kv)
{
    if (!kv)
        return;
    if (kv->layer)
        for (int i = 0; i < kv->n_layers_total; i++)
            free(kv->layer[i]);
    free(kv->layer);
    free(kv);
}

int mtpd_kv_capacity(const struct mtpd_kv *kv) { return kv->cap; }

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
    return 0;
}
