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
 * The queries of several heads and of all rows of one sequence share
 * their reads of the cache, which is paged (kv.c) and read in fixed chunks
 * of whole pages (mla_chunk.c), so a row's result does not depend on what
 * else is in the call nor on whether mla_split.c runs it instead.
 */
#include <math.h>
#include <string.h>

#include "model_int.h"

struct attn_job {
    struct mtpd_ctx *c;
    const struct layer_w *w;
    int kv_layer;
    int n;
    int err; /* first error of any part (atomic), 0 if none */
};

void attn_set_err(int *err, int rc)
{
    int none = 0;
    if (rc)
        __atomic_compare_exchange_n(err, &none, rc, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED);
}

/*
 * Attended latents for query pairs [p0, p1) of the heads being done
 * (pair p = row p / nh, head p % nh; all rows of one sequence, so one
 * cache; p1 - p0 <= ATTN_ROWS): chunk by chunk up to the last row's
 * position (mla_chunk.c), each chunk's pages read once for all of them,
 * merged in chunk order, then divided by the softmax sum.
 */
static int attn_pairs(struct attn_job *j, struct attn_scratch *s, int nh,
                      int p0, int p1)
{
    struct mtpd_ctx *c = j->c;
    const int L = c->m->cfg.kv_lora_rank;
    const int rf = L + c->m->cfg.qk_rope_head_dim, np = p1 - p0;
    const struct mtpd_kv *kv = c->rows[p0 / nh].kv;
    for (int p = 0; p < np; p++) {
        s->vis[p] = c->rows[(p0 + p) / nh].pos + 1;
        s->m[p] = -INFINITY;
        s->l[p] = 0.0f;
    }
    float *o = s->oc + (size_t)p0 * rf;
    int cp = attn_chunk_pos(c, kv), npos = s->vis[np - 1];
    for (int ch = 0; ch * cp < npos; ch++) {
        int rc = attn_chunk(c, kv, j->kv_layer, ch, s->qc + (size_t)p0 * rf,
                            rf, np, s->vis, &s->cs, s->mc, s->lc, s->o, L);
        if (rc)
            return rc;
        for (int p = 0; p < np; p++)
            attn_merge(&s->m[p], &s->l[p], o + (size_t)p * rf, s->mc[p],
                       s->lc[p], s->o + (size_t)p * L, L);
    }
    for (int p = 0; p < np; p++)
        attn_normalize(o + (size_t)p * rf, s->l[p], L);
    return 0;
}

/* W_UK (part 0: nope rows) or W_UV (part 1: v rows) of head h: its rows
 * of the dense kv_b (absorb.c), kv_lora columns each. */
static struct kmat head_rows(const struct mtpd_config *cfg,
                             const struct kmat *kvb, int h, int part)
{
    int nope = cfg->qk_nope_head_dim, vd = cfg->v_head_dim;
    int L = cfg->kv_lora_rank;
    size_t r0 = (size_t)h * (nope + vd) + (part ? (size_t)nope : 0);
    struct kmat k = {.dtype = kvb->dtype, .rows = part ? vd : nope,
                     .cols = L,
                     .data = (const char *)kvb->data +
                             r0 * L * kdtype_size(kvb->dtype),
                     .resident = kvb->resident,
                     .act_bf16 = kvb->act_bf16};
    if (kvb->dtype == KDT_F8_E4M3) { /* r0 is on a block (absorb.c) */
        k.blk = kvb->blk;
        k.scale = kvb->scale + r0 / (size_t)kvb->blk *
                                   (size_t)((L + kvb->blk - 1) / kvb->blk);
    }
    if (kvb->dtype == KDT_Q8_0) /* a scale per row and 32 columns */
        k.qd = kvb->qd + r0 * (size_t)(L / KQ_BLK);
    return k;
}

int mla_absorb_q(struct mtpd_ctx *c, const struct layer_w *w, int h, int n,
                 float *dst, int ld)
{
    const struct mtpd_config *cfg = &c->m->cfg;
    int nope = cfg->qk_nope_head_dim, rope = cfg->qk_rope_head_dim;
    int qk = nope + rope, H = cfg->num_attention_heads;
    int L = cfg->kv_lora_rank;
    struct kmat uk = head_rows(cfg, &w->kv_bd, h, 0);
    if (kmatmul_pv(&uk, L, c->q + (size_t)h * qk, H * qk, dst, ld, n))
        return MTPD_EINVAL;
    for (int r = 0; r < n; r++)
        memcpy(dst + (size_t)r * ld + L,
               c->q + (size_t)r * H * qk + (size_t)h * qk + nope,
               sizeof(float) * rope);
    return 0;
}

int mla_head_out(struct mtpd_ctx *c, const struct layer_w *w, int h, int n,
                 const float *oc, int ld)
{
    const struct mtpd_config *cfg = &c->m->cfg;
    int vd = cfg->v_head_dim, H = cfg->num_attention_heads;
    struct kmat uv = head_rows(cfg, &w->kv_bd, h, 1);
    int rc = kmatmul(NULL, &uv, oc, ld, c->attn + (size_t)h * vd, H * vd, n);
    return rc == MTPD_K_ENOMEM ? MTPD_ENOMEM : rc ? MTPD_EINVAL : 0;
}

/* Heads hs[0..nh) for every row of the call: q_c = q_nope W_UK per head
 * (kmatmul_pv, all rows; next to q_pe, so each query is one
 * [kv_lora + rope] vector matching a cache row), attention for all
 * (row, head) pairs of a sequence in blocks of ATTN_ROWS, which read the
 * cache once per block instead of once per head, then W_UV per head.
 * W_UK and W_UV are the head's rows of kv_b (absorb.c). qc and oc hold
 * pair p = r * nh + hl at p * (kv_lora + rope). Runs on one pool thread. */
static void attn_heads(struct attn_job *j, struct attn_scratch *s,
                       const int *hs, int nh)
{
    struct mtpd_ctx *c = j->c;
    const struct mtpd_config *cfg = &c->m->cfg;
    int rf = cfg->kv_lora_rank + cfg->qk_rope_head_dim, n = j->n;

    int rc = 0;
    for (int hl = 0; hl < nh && rc == 0; hl++)
        rc = mla_absorb_q(c, j->w, hs[hl], n, s->qc + (size_t)hl * rf,
                          nh * rf);
    for (int r0 = 0, r1; r0 < n && rc == 0; r0 = r1) { /* one sequence */
        for (r1 = r0 + 1; r1 < n && c->rows[r1].kv == c->rows[r0].kv; r1++)
            ;
        for (int p = r0 * nh; p < r1 * nh && rc == 0; p += ATTN_ROWS)
            rc = attn_pairs(j, s, nh, p,
                            r1 * nh - p < ATTN_ROWS ? r1 * nh
                                                    : p + ATTN_ROWS);
    }
    for (int hl = 0; hl < nh && rc == 0; hl++)
        rc = mla_head_out(c, j->w, hs[hl], n, s->oc + (size_t)hl * rf,
                          nh * rf);
    attn_set_err(&j->err, rc);
}

/* Part `part` takes heads part, part + n_parts, ..., in groups that fit
 * the ATTN_PAIRS(c) query pairs of its scratch. */
static void attn_part(void *arg, int part, int n_parts)
{
    struct attn_job *j = arg;
    int H = j->c->m->cfg.num_attention_heads;
    int hs[ATTN_HEADS_MAX], nh = 0;
    int cap = ATTN_PAIRS(j->c) / j->n;
    if (cap > ATTN_HEADS_MAX)
        cap = ATTN_HEADS_MAX;
    for (int h = part; h < H; h += n_parts) {
        hs[nh++] = h;
        if (nh == cap || h + n_parts >= H) {
            attn_heads(j, &j->c->as[part], hs, nh);
            nh = 0;
        }
    }
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
        float *src = c->kva + (size_t)r * (L + rope); /* made in place */
        wnorm(m, src, src, &w->kv_a_norm);
        krope_cs(c->rope_cs, rope, ri->pos, m->inv_freq, m->rope_mscale);
        krope_apply(src + L, rope, c->rope_cs);
        void *slot = kv_at(ri->kv, kv_layer, ri->pos);
        if (ri->kv->dtype == KDT_BF16)
            for (int i = 0; i < L + rope; i++)
                ((uint16_t *)slot)[i] = kf32_to_bf16(src[i]);
        else
            memcpy(slot, src, sizeof(float) * (size_t)(L + rope));
        for (int h = 0; h < H; h++)
            krope_apply(c->q + (size_t)r * H * qk + (size_t)h * qk + nope,
                        rope, c->rope_cs);
    }
    if (mla_split_usable(c, n)) {
        rc = mla_split_attend(c, w, kv_layer, n);
    } else {
        struct attn_job job = {.c = c, .w = w, .kv_layer = kv_layer, .n = n};
        int parts = c->n_attn < H ? c->n_attn : H;
        kpool_run(c->pool, attn_part, &job, parts);
        rc = job.err;
    }
    if (rc)
        return rc;
    /* x += o_proj(attn) */
    rc = kmatmul(c->pool, &w->o, c->attn, H * cfg->v_head_dim, c->tmp, hid, n);
    if (rc)
        return MTPD_EINVAL;
    for (size_t i = 0; i < (size_t)n * hid; i++)
        c->x[i] += c->tmp[i];
    return 0;
}
