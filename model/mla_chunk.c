/*
 * mla_chunk.c - the unit both attention paths are built from: one chunk
 * of cache pages for a group of query pairs, and the merge of chunks.
 *
 * Batch invariance: a row's attention must have the same bits whatever
 * else shares the call and whichever path (by heads, mla.c; by positions,
 * mla_split.c) runs it. So neither path sums in an order of its own: the
 * cache is cut into chunks of whole pages at fixed positions (a ctx
 * setting, not a function of the threads or the rows), each chunk gives
 * per pair (max m_c, sum l_c, unnormalised o_c) computed by the same code
 * from the same page-sized matmuls, and the chunks are merged in order
 * c = 0, 1, 2, ... by attn_merge. mla.c merges as it goes; mla_split.c
 * computes chunks on several threads, stores them and merges them in the
 * same order. What this relies on from the kernels (kernels.h, once the
 * batch-invariant kernels are in): kmatmul and kmatmul_pv give each row
 * the same bits whatever the number of rows in the call and whatever
 * range of weight rows (here: cache positions of a page) is asked.
 */
#include <math.h>
#include <string.h>

#include "model_int.h"

int attn_chunk_pos(const struct mtpd_ctx *c, const struct mtpd_kv *kv)
{
    int pages = c->attn_chunk / kv->page_pos;
    return (pages > 1 ? pages : 1) * kv->page_pos;
}

int attn_chunk(const struct mtpd_ctx *c, const struct mtpd_kv *kv, int layer,
               int ch, const float *qc, int ldq, int np, const int *vis,
               struct chunk_scratch *cs, float *m, float *l, float *o,
               int ldo)
{
    const int L = c->m->cfg.kv_lora_rank, pp = kv->page_pos;
    const int cp = attn_chunk_pos(c, kv), t0 = ch * cp;
    const float scale = c->m->softmax_scale;
    int maxvis = 0; /* positions of the chunk the furthest pair sees */
    for (int p = 0; p < np; p++) {
        int v = vis[p] - t0;
        v = v < 0 ? 0 : v > cp ? cp : v;
        maxvis = v > maxvis ? v : maxvis;
    }
    int npg = (maxvis + pp - 1) / pp, rc = 0;
    /* s [np, maxvis] = queries . cache rows, page by page. A page is
     * marked resident: it was just written or is read again for the
     * values below, and the row stream (one row at a time, meant for
     * weights streamed from memory) left a one-token score on short cache
     * rows waiting on a single FMA chain per row (the kernels' results do
     * not depend on it) */
    for (int g = 0; g < npg && rc == 0; g++) {
        struct kmat kc = {.dtype = kv->dtype, .cols = kv->row,
                          .rows = maxvis - g * pp < pp ? maxvis - g * pp : pp,
                          .data = kv_page(kv, layer, t0 / pp + g),
                          .resident = 1};
        rc = kmatmul(NULL, &kc, qc, ldq, cs->s + (size_t)g * pp,
                     ATTN_CHUNK_MAX, np);
    }
    if (rc)
        return rc == MTPD_K_ENOMEM ? MTPD_ENOMEM : MTPD_EINVAL;
    for (int p = 0; p < np; p++) {
        float *s = cs->s + (size_t)p * ATTN_CHUNK_MAX;
        int v = vis[p] - t0; /* causal mask */
        v = v < 0 ? 0 : v > cp ? cp : v;
        if (v == 0) {
            m[p] = -INFINITY;
            l[p] = 0.0f;
        } else {
            int top = kargmax(s, v); /* -1: all NaN, and so is the row */
            m[p] = top < 0 ? 0.0f : scale * s[top];
            l[p] = kexp_sum(s, v, scale, m[p]);
        }
        memset(s + v, 0, sizeof(float) * (size_t)(maxvis - v));
    }
    /* o [np, L] = probabilities x the pages' c_kv, pages summed in order */
    for (int g = 0; g < npg && rc == 0; g++) {
        int rows = maxvis - g * pp < pp ? maxvis - g * pp : pp;
        struct kmat kc = {.dtype = kv->dtype, .rows = rows, .cols = kv->row,
                          .data = kv_page(kv, layer, t0 / pp + g),
                          .resident = 1};
        const float *x = cs->s + (size_t)g * pp;
        if (g == 0) {
            rc = kmatmul_pv(&kc, L, x, ATTN_CHUNK_MAX, o, ldo, np);
            continue;
        }
        rc = kmatmul_pv(&kc, L, x, ATTN_CHUNK_MAX, cs->tmp, L, np);
        for (int p = 0; p < np && rc == 0; p++)
            kaxpy(o + (size_t)p * ldo, 1.0f, cs->tmp + (size_t)p * L, L);
    }
    return rc ? MTPD_EINVAL : 0;
}

void attn_merge(float *m, float *l, float *o, float mc, float lc,
                const float *oc, int L)
{
    if (!(mc > -INFINITY))
        return; /* the pair sees nothing of this chunk */
    if (!(*m > -INFINITY)) {
        *m = mc;
        *l = lc;
        memcpy(o, oc, sizeof(float) * (size_t)L);
        return;
    }
    float mn = mc > *m ? mc : *m;
    float a = expf(*m - mn), b = expf(mc - mn);
    *l = *l * a + lc * b;
    for (int i = 0; i < L; i++)
        o[i] = o[i] * a + oc[i] * b;
    *m = mn;
}

void attn_normalize(float *o, float l, int L)
{
    float inv = 1.0f / l;
    for (int i = 0; i < L; i++)
        o[i] *= inv;
}
