/*
 * moe.c - the feed-forward half of a decoder block: dense SwiGLU MLP, or
 * DeepSeek-V3 MoE (router, group-limited top-k, routed + shared experts).
 *
 * Router (noaux_tc, DeepSeek-V3 / transformers DeepseekV3TopkRouter):
 *   s = sigmoid(x W_gate^T) in fp32;  b = s + e_score_correction_bias
 *   group score = sum of the top-2 b in each group; keep topk_group groups
 *   experts = top num_experts_per_tok of b over kept groups (others -inf,
 *     as DeepSeek's reference; transformers fills 0.0 - identical unless
 *     biased scores go negative)
 *   weight  = s[e] / sum s[chosen] (norm_topk_prob) * routed_scaling_factor
 * The bias steers the choice only; weights use the unbiased scores.
 * Each expert runs once per call over the rows routed to it, so its
 * weights are read once per call however many rows use it.
 */
#include <math.h>
#include <string.h>

#include "model_int.h"

/* SwiGLU MLP over n rows of in [n, hid] -> out [n, hid]. */
static int mlp(struct mtpd_ctx *c, const struct expert_w *e, const float *in,
               float *out, int n)
{
    int hid = c->m->cfg.hidden_size, inter = e->gate.rows;
    if (kmatmul(c->pool, &e->gate, in, hid, c->ff_gate, inter, n) ||
        kmatmul(c->pool, &e->up, in, hid, c->ff_up, inter, n))
        return MTPD_EINVAL;
    for (int r = 0; r < n; r++)
        kswiglu(c->ff_gate + (size_t)r * inter, c->ff_gate + (size_t)r * inter,
                c->ff_up + (size_t)r * inter, inter);
    if (kmatmul(c->pool, &e->down, c->ff_gate, inter, out, hid, n))
        return MTPD_EINVAL;
    return 0;
}

/* Picks experts for one row: writes k indices and weights. */
static void route_row(const struct mtpd_config *cfg, const float *logits,
                      const float *bias, int *idx, float *wt, float *scratch)
{
    int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    int G = cfg->n_group, per = E / G;
    float *s = scratch;          /* scores [E] */
    float *b = scratch + E;      /* selection scores [E] */
    int sigmoid = strcmp(cfg->scoring_func, "sigmoid") == 0;
    if (sigmoid) {
        for (int e = 0; e < E; e++)
            s[e] = 1.0f / (1.0f + expf(-logits[e]));
    } else {
        memcpy(s, logits, sizeof(float) * E);
        ksoftmax(s, E);
    }
    int noaux = strcmp(cfg->topk_method, "noaux_tc") == 0;
    for (int e = 0; e < E; e++)
        b[e] = s[e] + (noaux && bias ? bias[e] : 0.0f);
    int grouped = G > 1 && strcmp(cfg->topk_method, "greedy") != 0;
    if (grouped) {
        float gscore[1024];
        int gkeep[1024];
        for (int g = 0; g < G; g++) {
            const float *bg = b + g * per;
            if (noaux) { /* sum of the top two */
                float m1 = -INFINITY, m2 = -INFINITY;
                for (int i = 0; i < per; i++) {
                    if (bg[i] > m1) {
                        m2 = m1;
                        m1 = bg[i];
                    } else if (bg[i] > m2) {
                        m2 = bg[i];
                    }
                }
                gscore[g] = per >= 2 ? m1 + m2 : m1;
            } else { /* group_limited_greedy: max */
                float m1 = -INFINITY;
                for (int i = 0; i < per; i++)
                    m1 = bg[i] > m1 ? bg[i] : m1;
                gscore[g] = m1;
            }
            gkeep[g] = 0;
        }
        for (int k = 0; k < cfg->topk_group; k++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!gkeep[g] && (best < 0 || gscore[g] > gscore[best]))
                    best = g;
            gkeep[best] = 1;
        }
        for (int g = 0; g < G; g++)
            if (!gkeep[g])
                for (int i = 0; i < per; i++)
                    b[g * per + i] = -INFINITY;
    }
    /* top-K by b; ties go to the lower index, as torch.topk does */
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            if (b[e] == -INFINITY && best >= 0)
                continue;
            int used = 0;
            for (int q = 0; q < k && !used; q++)
                used = idx[q] == e;
            if (!used && (best < 0 || b[e] > b[best]))
                best = e;
        }
        idx[k] = best;
        wt[k] = s[best];
    }
    if (noaux) {
        float sum = 0;
        if (cfg->norm_topk_prob) {
            for (int k = 0; k < K; k++)
                sum += wt[k];
            sum += 1e-20f;
        }
        for (int k = 0; k < K; k++)
            wt[k] = (cfg->norm_topk_prob ? wt[k] / sum : wt[k]) *
                    cfg->routed_scaling_factor;
    } else if (K > 1 && cfg->norm_topk_prob) { /* DeepSeek-V2 */
        float sum = 1e-20f;
        for (int k = 0; k < K; k++)
            sum += wt[k];
        for (int k = 0; k < K; k++)
            wt[k] /= sum;
    } else {
        for (int k = 0; k < K; k++)
            wt[k] *= cfg->routed_scaling_factor;
    }
}

static int moe(struct mtpd_ctx *c, const struct layer_w *w, int n)
{
    const struct mtpd_config *cfg = &c->m->cfg;
    int hid = cfg->hidden_size, E = cfg->n_routed_experts;
    int K = cfg->num_experts_per_tok;
    /* router logits [n, E] in fp32 */
    if (kmatmul(c->pool, &w->router, c->xn, hid, c->router, E, n))
        return MTPD_EINVAL;
    float *scratch = c->yg; /* 2E floats; yg is free until experts run */
    for (int r = 0; r < n; r++)
        route_row(cfg, c->router + (size_t)r * E, w->router_bias,
                  c->topk_idx + (size_t)r * K, c->topk_w + (size_t)r * K,
                  scratch);
    memset(c->tmp, 0, sizeof(float) * (size_t)n * hid);
    for (int e = 0; e < E; e++) {
        int cnt = 0;
        for (int r = 0; r < n; r++)
            for (int k = 0; k < K; k++)
                if (c->topk_idx[r * K + k] == e) {
                    c->exp_rows[cnt] = r;
                    c->exp_wt[cnt] = c->topk_w[r * K + k];
                    memcpy(c->xg + (size_t)cnt * hid, c->xn + (size_t)r * hid,
                           sizeof(float) * hid);
                    cnt++;
                }
        if (!cnt)
            continue;
        if (mlp(c, &w->experts[e], c->xg, c->yg, cnt))
            return MTPD_EINVAL;
        for (int i = 0; i < cnt; i++)
            kaxpy(c->tmp + (size_t)c->exp_rows[i] * hid, c->exp_wt[i],
                  c->yg + (size_t)i * hid, hid);
    }
    if (w->has_shared) {
        if (mlp(c, &w->shared, c->xn, c->yg, n))
            return MTPD_EINVAL;
        for (size_t i = 0; i < (size_t)n * hid; i++)
            c->tmp[i] += c->yg[i];
    }
    return 0;
}

int ffn_block(struct mtpd_ctx *c, const struct layer_w *w, int n)
{
    const struct mtpd_model *m = c->m;
    int hid = m->cfg.hidden_size;
    for (int r = 0; r < n; r++)
        wnorm(m, c->xn + (size_t)r * hid, c->x + (size_t)r * hid,
              &w->ffn_norm);
    int rc = w->is_moe ? moe(c, w, n) : mlp(c, &w->dense, c->xn, c->tmp, n);
    if (rc)
        return rc;
    for (size_t i = 0; i < (size_t)n * hid; i++)
        c->x[i] += c->tmp[i];
    return 0;
}
