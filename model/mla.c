/*
 * mla.c - Multi-head Latent Attention with the compressed KV cache and
 * weight absorption (DeepSeek-V2/V3 "absorb" mode).
 *
 * Per token the cache holds c_kv = kv_a_layernorm(kv_a(x)[:kv_lora]) and
 * k_pe = rope(kv_a(x)[kv_lora:]): kv_lora + rope floats per layer. Keys and
 * values are never materialised: for head h with kv_b rows W_UK (nope x
 * kv_lora) and W_UV (v x kv_lora),
 *   score_j = (q_nope W_UK) . c_kv_j + q_pe . k_pe_j
 *   out     = W_UV (sum_j softmax(score)_j c_kv_j)
 * which equals the textbook k_nope = W_UK c_kv, v = W_UV c_kv form.
 */
#include <math.h>
#include <string.h>

#include "model_int.h"

struct attn_job {
    struct mtpd_ctx *c;
    const struct layer_w *w;
    int kv_layer;
    int n;
};

/* One head for every row of the call: q_c = W_UK^T q_nope for all rows in
 * one matmul (written next to q_pe, so each query is one [kv_lora + rope]
 * vector matching a cache row), scores as a matvec over the cache rows,
 * softmax, the attended latent, then W_UV for all rows in one matmul.
 * Runs on one pool thread (pool NULL below). */
static void attn_head(struct attn_job *j, struct attn_scratch *s, int h)
{
    struct mtpd_ctx *c = j->c;
    const struct mtpd_model *m = c->m;
    const struct mtpd_config *cfg = &m->cfg;
    int nope = cfg->qk_nope_head_dim, rope = cfg->qk_rope_head_dim;
    int vd = cfg->v_head_dim, L = cfg->kv_lora_rank;
    int qk = nope + rope, H = cfg->num_attention_heads;
    int row_floats = L + rope, n = j->n;
    struct kmat ukt = {.dtype = KDT_F32, .rows = L, .cols = nope,
                       .data = j->w->w_ukt + (size_t)h * L * nope};
    struct kmat uv = {.dtype = KDT_F32, .rows = vd, .cols = L,
                      .data = j->w->w_uv + (size_t)h * vd * L};

    /* qc [n, L + rope] = [q_nope W_UK, q_pe] */
    kmatmul(NULL, &ukt, c->q + (size_t)h * qk, H * qk, s->qc, row_floats, n);
    for (int r = 0; r < n; r++)
        memcpy(s->qc + (size_t)r * row_floats + L,
               c->q + (size_t)r * H * qk + (size_t)h * qk + nope,
               sizeof(float) * rope);
    for (int r = 0; r < n; r++) {
        const struct row_info *ri = &c->rows[r];
        const float *cache = ri->kv->layer[j->kv_layer];
        int npos = ri->pos + 1;
        /* scores [npos] = cache rows [npos, L + rope] . query */
        struct kmat kc = {.dtype = KDT_F32, .rows = npos, .cols = row_floats,
                          .data = cache};
        kmatmul(NULL, &kc, s->qc + (size_t)r * row_floats, row_floats,
                s->scores, npos, 1);
        for (int t = 0; t < npos; t++)
            s->scores[t] *= m->softmax_scale;
        ksoftmax(s->scores, npos);
        float *oc = s->oc + (size_t)r * L;
        memset(oc, 0, sizeof(float) * L);
        for (int t = 0; t < npos; t++)
            kaxpy(oc, s->scores[t], cache + (size_t)t * row_floats, L);
    }
    /* attn[:, h*vd .. h*vd+vd) = oc [n, L] x W_UV^T */
    kmatmul(NULL, &uv, s->oc, L, c->attn + (size_t)h * vd, H * vd, n);
}

static void attn_part(void *arg, int part, int n_parts)
{
    struct attn_job *j = arg;
    int H = j->c->m->cfg.num_attention_heads;
    for (int h = part; h < H; h += n_parts)
        attn_head(j, &j->c->as[part], h);
}

int mla_block(struct mtpd_ctx *c, const struct layer_w *w, int kv_layer,
              int n)
{
    const struct mtpd_model *m = c->m;
    const struct mtpd_config *cfg = &m->cfg;
    int hid = cfg->hidden_size, H = cfg->num_attention_heads;
    int nope = cfg->qk_nope_head_dim, rope = cfg->qk_rope_head_dim;
    int qk = nope + rope, L = cfg->kv_lora_rank;
    int rc;

    /* xn [n, hid] = input_layernorm(x) */
    for (int r = 0; r < n; r++)
        wnorm(m, c->xn + (size_t)r * hid, c->x + (size_t)r * hid,
              &w->attn_norm);
    /* q [n, H * qk] */
    if (cfg->q_lora_rank > 0) {
        int ql = cfg->q_lora_rank;
        rc = kmatmul(c->pool, &w->q_a, c->xn, hid, c->qa, ql, n);
        for (int r = 0; r < n && rc == 0; r++)
            wnorm(m, c->qa + (size_t)r * ql, c->qa + (size_t)r * ql,
                  &w->q_a_norm);
        if (rc == 0)
            rc = kmatmul(c->pool, &w->q_b, c->qa, ql, c->q, H * qk, n);
    } else {
        rc = kmatmul(c->pool, &w->q, c->xn, hid, c->q, H * qk, n);
    }
    /* kva [n, L + rope] = kv_a(xn) */
    if (rc == 0)
        rc = kmatmul(c->pool, &w->kv_a, c->xn, hid, c->kva, L + rope, n);
    if (rc)
        return MTPD_EINVAL;
    /* write c_kv (normed) and k_pe (roped) into each row's cache slot, rope
     * q_pe of every head */
    for (int r = 0; r < n; r++) {
        const struct row_info *ri = &c->rows[r];
        float *slot = ri->kv->layer[kv_layer] + (size_t)ri->pos * (L + rope);
        float *src = c->kva + (size_t)r * (L + rope);
        wnorm(m, slot, src, &w->kv_a_norm);
        memcpy(slot + L, src + L, sizeof(float) * rope);
        krope(slot + L, rope, ri->pos, m->inv_freq, m->rope_mscale);
        for (int h = 0; h < H; h++)
            krope(c->q + (size_t)r * H * qk + (size_t)h * qk + nope, rope,
                  ri->pos, m->inv_freq, m->rope_mscale);
    }
    struct attn_job job = {.c = c, .w = w, .kv_layer = kv_layer, .n = n};
    int parts = c->n_attn < H ? c->n_attn : H;
    kpool_run(c->pool, attn_part, &job, parts);
    /* x += o_proj(attn) */
    rc = kmatmul(c->pool, &w->o, c->attn, H * cfg->v_head_dim, c->tmp, hid, n);
    if (rc)
        return MTPD_EINVAL;
    for (size_t i = 0; i < (size_t)n * hid; i++)
        c->x[i] += c->tmp[i];
    return 0;
}
