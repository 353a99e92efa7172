/*
 * mla_split.c - decode attention split across threads by cache positions
 * (flash-decoding), for calls of one sequence with few rows and a long
 * context.
 *
 * mla.c's attention gives each thread whole heads, so every thread reads
 * the whole latent cache for half of the query pairs; at long contexts
 * attention is most of a decode or verify step (default model, context
 * 3000: about 0.8 ms of a 1.4-2 ms step). Here every thread takes a
 * contiguous share of the positions for ALL (row, head) pairs and reads
 * only that share of the cache, in tiles of split_tile positions:
 *   1. (by heads) absorbed queries qc[p] = [q_nope W_UK, q_pe], p = r*H+h
 *   2. (by positions) per tile: scores, causal mask, online softmax
 *      (running max m and sum l per pair, earlier partial outputs rescaled
 *      by exp(m_old - m_new)), o += probabilities x cache rows
 *   3. (by heads) merge the threads' (m, l, o): M = max m_t,
 *      o = sum o_t e^(m_t - M) / sum l_t e^(m_t - M), then W_UV.
 * The result equals mla.c's up to float rounding (same sums, other order).
 * Three pool runs instead of one: it pays from ~2000 positions on
 * (interleaved A/B on the default model, 2 threads: 0.92-0.97x the time
 * of a 1-row step and 0.83-0.93x of a 3-row one at 2000-3000 positions;
 * at 1000 it is even to 15% slower), hence SPLIT_MIN_CTX.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

struct split_job {
    struct mtpd_ctx *c;
    const struct layer_w *w;
    int kv_layer;
    int n;     /* rows (one sequence) */
    int npos;  /* cache positions the last row sees */
    int parts; /* position shares in phase 2 */
};

/* Phase 1: absorbed queries of heads part, part + n_parts, ... */
static void absorb_part(void *arg, int part, int n_parts)
{
    struct split_job *j = arg;
    const struct mtpd_config *cfg = &j->c->m->cfg;
    int H = cfg->num_attention_heads;
    int rf = cfg->kv_lora_rank + cfg->qk_rope_head_dim;
    for (int h = part; h < H; h += n_parts)
        mla_absorb_q(j->c, j->w, h, j->n, j->c->sp.qc + (size_t)h * rf,
                     H * rf);
}

/* Phase 2: positions [p0, p1) of share `part` for every pair. */
static void positions_part(void *arg, int part, int n_parts)
{
    struct split_job *j = arg;
    struct mtpd_ctx *c = j->c;
    const struct mtpd_config *cfg = &c->m->cfg;
    int L = cfg->kv_lora_rank, rf = L + cfg->qk_rope_head_dim;
    int H = cfg->num_attention_heads, P = j->n * H;
    int blocks = (j->npos + 15) / 16; /* shares start on 16 positions */
    int p0 = blocks * part / n_parts * 16;
    int p1 = blocks * (part + 1) / n_parts * 16;
    if (p1 > j->npos)
        p1 = j->npos;
    struct split_part *sp = &c->sp.part[part];
    for (int p = 0; p < P; p++) {
        sp->m[p] = -INFINITY;
        sp->l[p] = 0.0f;
    }
    memset(sp->o, 0, sizeof(float) * (size_t)P * L);
    const struct mtpd_kv *kv = c->rows[0].kv;
    const float scale = c->m->softmax_scale;
    const int tile = c->split_tile;
    const int pp = kv->page_pos;
    for (int t0 = p0, nt; t0 < p1; t0 += nt) {
        nt = p1 - t0 < tile ? p1 - t0 : tile;
        if (nt > pp - (t0 & (pp - 1)))
            nt = pp - (t0 & (pp - 1)); /* tiles end on page ends */
        struct kmat kc = {.dtype = kv->dtype, .rows = nt, .cols = rf,
                          .data = kv_at(kv, j->kv_layer, t0)};
        /* s [P, nt] = queries . cache rows t0 .. t0 + nt */
        kmatmul(NULL, &kc, c->sp.qc, rf, sp->s, SPLIT_TILE, P);
        for (int p = 0; p < P; p++) {
            float *s = sp->s + (size_t)p * SPLIT_TILE;
            int valid = c->rows[p / H].pos + 1 - t0; /* causal mask */
            valid = valid < 0 ? 0 : valid > nt ? nt : valid;
            if (valid == 0) {
                memset(s, 0, sizeof(float) * (size_t)nt);
                continue;
            }
            float mt = scale * s[kargmax(s, valid)];
            float mo = sp->m[p], mn = mt > mo ? mt : mo;
            if (mn > mo && mo > -INFINITY) { /* rescale what came before */
                float a = expf(mo - mn);
                sp->l[p] *= a;
                float *o = sp->o + (size_t)p * L;
                for (int i = 0; i < L; i++)
                    o[i] *= a;
            }
            sp->m[p] = mn;
            sp->l[p] += kexp_sum(s, valid, scale, mn);
            memset(s + valid, 0, sizeof(float) * (size_t)(nt - valid));
        }
        /* o [P, L] += probabilities x the tile's c_kv */
        kmatmul_pv(&kc, L, sp->s, SPLIT_TILE, sp->tmp, L, P);
        for (size_t i = 0; i < (size_t)P * L; i++)
            sp->o[i] += sp->tmp[i];
    }
}

/* Phase 3: merge the shares for heads part, part + n_parts, ..., then
 * attn[:, h*vd ..] = o W_UV^T. */
static void merge_part(void *arg, int part, int n_parts)
{
    struct split_job *j = arg;
    struct mtpd_ctx *c = j->c;
    const struct mtpd_config *cfg = &c->m->cfg;
    int L = cfg->kv_lora_rank, H = cfg->num_attention_heads;
    for (int h = part; h < H; h += n_parts) {
        for (int r = 0; r < j->n; r++) {
            int p = r * H + h;
            float M = -INFINITY;
            for (int t = 0; t < j->parts; t++)
                M = c->sp.part[t].m[p] > M ? c->sp.part[t].m[p] : M;
            float *o = c->sp.oc + (size_t)p * L;
            memset(o, 0, sizeof(float) * (size_t)L);
            double l = 0.0;
            for (int t = 0; t < j->parts; t++) {
                const struct split_part *sp = &c->sp.part[t];
                if (!(sp->m[p] > -INFINITY))
                    continue; /* no visible position in this share */
                float a = expf(sp->m[p] - M);
                l += (double)a * sp->l[p];
                kaxpy(o, a, sp->o + (size_t)p * L, L);
            }
            float inv = (float)(1.0 / l);
            for (int i = 0; i < L; i++)
                o[i] *= inv;
        }
        mla_head_out(c, j->w, h, j->n, c->sp.oc + (size_t)h * L, H * L);
    }
}

int mla_split_usable(const struct mtpd_ctx *c, int n)
{
    if (c->attn_split == 0 || c->n_attn < 2 || n > SPLIT_ROWS ||
        !c->sp.qc)
        return 0;
    for (int r = 1; r < n; r++)
        if (c->rows[r].kv != c->rows[0].kv)
            return 0; /* one sequence per call only */
    return c->attn_split == 1 || c->rows[n - 1].pos + 1 >= SPLIT_MIN_CTX;
}

void mla_split_attend(struct mtpd_ctx *c, const struct layer_w *w,
                      int kv_layer, int n)
{
    int H = c->m->cfg.num_attention_heads;
    struct split_job j = {.c = c, .w = w, .kv_layer = kv_layer, .n = n,
                          .npos = c->rows[n - 1].pos + 1,
                          .parts = c->n_attn};
    kpool_run(c->pool, absorb_part, &j, c->n_attn < H ? c->n_attn : H);
    kpool_run(c->pool, positions_part, &j, j.parts);
    kpool_run(c->pool, merge_part, &j, c->n_attn < H ? c->n_attn : H);
}
