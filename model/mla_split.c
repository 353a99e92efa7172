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
    int n;      /* rows (one sequence) */
    int c0, c1; /* chunks of this round */
    int last;   /* this round ends the attention */
    int err;    /* first error of any part (atomic), 0 if none */
};

/* Phase 1: absorbed queries of heads part, part + n_parts, ... */
static void absorb_part(void *arg, int part, int n_parts)
{
    struct split_job *j = arg;
    const struct mtpd_config *cfg = &j->c->m->cfg;
    int H = cfg->num_attention_heads;
    int rf = cfg->kv_lora_rank + cfg->qk_rope_head_dim;
    int rc = 0;
    for (int h = part; h < H && rc == 0; h += n_parts)
        rc = mla_absorb_q(j->c, j->w, h, j->n, j->c->sp.qc + (size_t)h * rf,
                          H * rf);
    attn_set_err(&j->err, rc);
}

/* Phase 2: a contiguous share of the round's chunks, every pair. */
static void chunks_part(void *arg, int part, int n_parts)
{
    struct split_job *j = arg;
    struct mtpd_ctx *c = j->c;
    const struct mtpd_config *cfg = &c->m->cfg;
    int L = cfg->kv_lora_rank, rf = L + cfg->qk_rope_head_dim;
    int P = j->n * cfg->num_attention_heads, nc = j->c1 - j->c0;
    struct split_scratch *sp = &c->sp;
    int rc = 0;
    for (int k = nc * part / n_parts; k < nc * (part + 1) / n_parts && !rc;
         k++)
        rc = attn_chunk(c, c->rows[0].kv, j->kv_layer, j->c0 + k, sp->qc, rf,
                        P, sp->vis, &sp->part[part], sp->rm + (size_t)k * P,
                        sp->rl + (size_t)k * P, sp->ro + (size_t)k * P * L,
                        L);
    attn_set_err(&j->err, rc);
}

/* Phase 3: for heads part, part + n_parts, ...: fold the round's chunks
 * into the running (m, l, o) in chunk order; after the last round divide
 * by l and attn[:, h*vd ..] = o W_UV^T. */
static void merge_part(void *arg, int part, int n_parts)
{
    struct split_job *j = arg;
    struct mtpd_ctx *c = j->c;
    const struct mtpd_config *cfg = &c->m->cfg;
    int L = cfg->kv_lora_rank, H = cfg->num_attention_heads, P = j->n * H;
    struct split_scratch *sp = &c->sp;
    int rc = 0;
    for (int h = part; h < H && rc == 0; h += n_parts) {
        for (int r = 0; r < j->n; r++) {
            int p = r * H + h;
            float *o = sp->oc + (size_t)p * L;
            for (int k = 0; k < j->c1 - j->c0; k++) {
                size_t q = (size_t)k * P + p;
                attn_merge(&sp->m[p], &sp->l[p], o, sp->rm[q], sp->rl[q],
                           sp->ro + q * L, L);
            }
            if (j->last)
                attn_normalize(o, sp->l[p], L);
        }
        if (j->last)
            rc = mla_head_out(c, j->w, h, j->n, sp->oc + (size_t)h * L,
                              H * L);
    }
    attn_set_err(&j->err, rc);
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

int mla_split_attend(struct mtpd_ctx *c, const struct layer_w *w,
                     int kv_layer, int n)
{
    int H = c->m->cfg.num_attention_heads, heads = c->n_attn < H ? c->n_attn
                                                                  : H;
    struct split_scratch *sp = &c->sp;
    for (int p = 0; p < n * H; p++) {
        sp->vis[p] = c->rows[p / H].pos + 1;
        sp->m[p] = -INFINITY;
        sp->l[p] = 0.0f;
    }
    int cp = attn_chunk_pos(c, c->rows[0].kv);
    int nch = (c->rows[n - 1].pos + 1 + cp - 1) / cp;
    struct split_job j = {.c = c, .w = w, .kv_layer = kv_layer, .n = n};
    kpool_run(c->pool, absorb_part, &j, heads);
    for (j.c0 = 0; j.c0 < nch && j.err == 0; j.c0 = j.c1) {
        j.c1 = nch - j.c0 < sp->n_round ? nch : j.c0 + sp->n_round;
        j.last = j.c1 == nch;
        kpool_run(c->pool, chunks_part, &j,
                  c->n_attn < j.c1 - j.c0 ? c->n_attn : j.c1 - j.c0);
        if (j.err == 0)
            kpool_run(c->pool, merge_part, &j, heads);
    }
    return j.err;
}
