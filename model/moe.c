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
 *
 * Threading: all active experts (and the shared expert) run together as
 * one job list in two pool runs - gate+up+SwiGLU in row chunks of the
 * intermediate dimension, then down in row chunks of the hidden one - so
 * a layer costs three fork/joins (router, up, down) however many experts
 * are active, instead of three per expert. Each thread takes a contiguous
 * run of work items, so it streams each matrix's rows in order and the
 * kernels' prefetch runs on into its next chunk.
 *
 * Batch invariance: a row's output depends only on its own x, never on
 * the other rows of the call or the thread count. Routing is per row; an
 * expert's gathered rows go through kmatmul_rows, whose results do not
 * depend on how many rows it gets, where a row sits or which rows the
 * work item covers (kernels.h); and each row's output is combined in an
 * order fixed by its own routing: the shared expert's output, then the
 * routed ones weighted, in ascending expert id (a row picks distinct
 * experts, so this is its top-k set sorted, whatever its neighbours).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

#define FFN_CHUNK 32 /* weight rows per work item */

/* One expert's share of the call: cnt rows of x in, of y out. */
struct ffn_job {
    const struct expert_w *w;
    const float *x; /* [cnt, hidden] */
    float *h, *u;   /* [cnt, inter] */
    float *y;       /* [cnt, hidden] */
    int cnt, inter;
};

struct ffn_batch {
    struct ffn_job *job; /* [n_experts + 1] */
    int n_jobs;
    int hid;
    /* work items: (job, first weight row) pairs, for one phase */
    int n_items, cap_items;
    int *item_job, *item_row;
    int err; /* first kernel error of the phase (atomic), 0 if none */
};

static int imax(int a, int b) { return a > b ? a : b; }

struct ffn_batch *ffn_batch_new(const struct mtpd_config *c)
{
    struct ffn_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    int rows = imax(imax(c->intermediate_size, c->hidden_size),
                    c->moe_intermediate_size * imax(c->n_shared_experts, 1));
    int jobs = c->n_routed_experts + 1;
    b->cap_items = jobs * ((rows + FFN_CHUNK - 1) / FFN_CHUNK);
    b->job = calloc((size_t)jobs, sizeof(*b->job));
    b->item_job = calloc((size_t)b->cap_items, sizeof(int));
    b->item_row = calloc((size_t)b->cap_items, sizeof(int));
    if (!b->job || !b->item_job || !b->item_row) {
        ffn_batch_free(b);
        return NULL;
    }
    return b;
}

void ffn_batch_free(struct ffn_batch *b)
{
    if (!b)
        return;
    free(b->job);
    free(b->item_job);
    free(b->item_row);
    free(b);
}

static void build_items(struct ffn_batch *b, int up_phase)
{
    b->n_items = 0;
    for (int j = 0; j < b->n_jobs; j++) {
        int rows = up_phase ? b->job[j].inter : b->hid;
        for (int r = 0; r < rows; r += FFN_CHUNK) { /* cap_items fits all */
            b->item_job[b->n_items] = j;
            b->item_row[b->n_items++] = r;
        }
    }
}

/* Records a kernel error from a pool part (several may race). */
static void set_err(struct ffn_batch *b, int rc)
{
    int none = 0;
    __atomic_compare_exchange_n(&b->err, &none, rc, 0, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
}

/* Items it0 .. it1 - 1 of one part, merged into runs of consecutive rows
 * of one job: one kmatmul_rows call per run, not per item, because each
 * call prepares x again (int8 quantization for Q8_0 / Q4_1, pair packing
 * for BF16): per 32-row item that was ~10% of a decode step on a
 * memory-bound model. kmatmul_rows's results do not depend on the row
 * range asked (kernels.h), so the merge changes no bit. The run starting
 * at item it covers weight rows [*r0, *r1) and ends before item *rend. */
static void item_run(const struct ffn_batch *b, int it, int it1, int rows,
                     int *r0, int *r1, int *rend)
{
    int job = b->item_job[it];
    int e = it + 1;
    while (e < it1 && b->item_job[e] == job &&
           b->item_row[e] == b->item_row[e - 1] + FFN_CHUNK)
        e++;
    *r0 = b->item_row[it];
    *r1 = b->item_row[e - 1] + FFN_CHUNK < rows ? b->item_row[e - 1] + FFN_CHUNK
                                               : rows;
    *rend = e;
}

static void up_part(void *arg, int part, int n_parts)
{
    struct ffn_batch *b = arg;
    int it0, it1;
    kpool_share(b->n_items, part, n_parts, &it0, &it1);
    for (int it = it0, next; it < it1; it = next) {
        const struct ffn_job *j = &b->job[b->item_job[it]];
        int r0, r1;
        item_run(b, it, it1, j->inter, &r0, &r1, &next);
        int rc = kmatmul_rows(NULL, &j->w->gate, r0, r1, j->x, b->hid, j->h,
                              j->inter, j->cnt);
        if (rc == 0)
            rc = kmatmul_rows(NULL, &j->w->up, r0, r1, j->x, b->hid, j->u,
                              j->inter, j->cnt);
        if (rc != 0) {
            set_err(b, rc);
            continue;
        }
        for (int t = 0; t < j->cnt; t++) {
            float *h = j->h + (size_t)t * j->inter + r0;
            kswiglu(h, h, j->u + (size_t)t * j->inter + r0, r1 - r0);
        }
    }
}

static void down_part(void *arg, int part, int n_parts)
{
    struct ffn_batch *b = arg;
    int it0, it1;
    kpool_share(b->n_items, part, n_parts, &it0, &it1);
    for (int it = it0, next; it < it1; it = next) {
        const struct ffn_job *j = &b->job[b->item_job[it]];
        int r0, r1;
        item_run(b, it, it1, b->hid, &r0, &r1, &next);
        int rc = kmatmul_rows(NULL, &j->w->down, r0, r1, j->h, j->inter, j->y,
                              b->hid, j->cnt);
        if (rc != 0)
            set_err(b, rc);
    }
}

/* Runs every job of b: two pool runs. MTPD_ENOMEM when a kernel could not
 * get its scratch memory (the only way kmatmul_rows fails here). */
static int ffn_run(struct mtpd_ctx *c, struct ffn_batch *b)
{
    b->err = 0;
    build_items(b, 1);
    kpool_run(c->pool, up_part, b, kpool_parts(c->pool, b->n_items));
    if (b->err)
        return b->err == MTPD_K_ENOMEM ? MTPD_ENOMEM : MTPD_EINVAL;
    build_items(b, 0);
    kpool_run(c->pool, down_part, b, kpool_parts(c->pool, b->n_items));
    if (b->err)
        return b->err == MTPD_K_ENOMEM ? MTPD_ENOMEM : MTPD_EINVAL;
    return 0;
}

/* Appends a job; h/u/y are carved from the ctx buffers at *act / *out. */
static void add_job(struct mtpd_ctx *c, struct ffn_batch *b,
                    const struct expert_w *w, const float *x, int cnt,
                    size_t *act, size_t *out)
{
    struct ffn_job *j = &b->job[b->n_jobs++];
    j->w = w;
    j->x = x;
    j->cnt = cnt;
    j->inter = w->gate.rows;
    j->h = c->ffn_h + *act;
    j->u = c->ffn_u + *act;
    j->y = c->ffn_y + *out;
    *act += (size_t)cnt * j->inter;
    *out += (size_t)cnt * b->hid;
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

static int moe(struct mtpd_ctx *c, const struct layer_w *w, int n,
               struct ffn_batch *b)
{
    const struct mtpd_config *cfg = &c->m->cfg;
    int hid = cfg->hidden_size, E = cfg->n_routed_experts;
    int K = cfg->num_experts_per_tok;
    /* router logits [n, E] in fp32 */
    if (kmatmul(c->pool, &w->router, c->xn, hid, c->router, E, n))
        return MTPD_EINVAL;
    for (int r = 0; r < n; r++)
        route_row(cfg, c->router + (size_t)r * E, w->router_bias,
                  c->topk_idx + (size_t)r * K, c->topk_w + (size_t)r * K,
                  c->route_tmp);
    /* gather each expert's rows, side by side in ffn_x, expert order */
    b->n_jobs = 0;
    b->hid = hid;
    size_t act = 0, out = 0;
    int slot = 0;
    for (int e = 0; e < E; e++) {
        int first = slot;
        for (int r = 0; r < n; r++)
            for (int k = 0; k < K; k++)
                if (c->topk_idx[r * K + k] == e) {
                    c->ffn_rows[slot] = r;
                    c->ffn_wt[slot] = c->topk_w[r * K + k];
                    memcpy(c->ffn_x + (size_t)slot * hid,
                           c->xn + (size_t)r * hid, sizeof(float) * hid);
                    slot++;
                }
        if (slot > first)
            add_job(c, b, &w->experts[e], c->ffn_x + (size_t)first * hid,
                    slot - first, &act, &out);
    }
    if (w->has_shared)
        add_job(c, b, &w->shared, c->xn, n, &act, &out);
    int rc = ffn_run(c, b);
    if (rc)
        return rc;
    /* combine: tmp = shared + the weighted routed outputs; the slots are
     * in expert order, so each row adds its own experts in ascending id */
    if (w->has_shared)
        memcpy(c->tmp, b->job[b->n_jobs - 1].y, sizeof(float) * n * hid);
    else
        memset(c->tmp, 0, sizeof(float) * (size_t)n * hid);
    for (int s = 0; s < slot; s++)
        kaxpy(c->tmp + (size_t)c->ffn_rows[s] * hid, c->ffn_wt[s],
              c->ffn_y + (size_t)s * hid, hid);
    return 0;
}

int ffn_block(struct mtpd_ctx *c, const struct layer_w *w, int n)
{
    const struct mtpd_model *m = c->m;
    int hid = m->cfg.hidden_size;
    struct ffn_batch *b = c->ffn_batch;
    for (int r = 0; r < n; r++)
        wnorm(m, c->xn + (size_t)r * hid, c->x + (size_t)r * hid,
              &w->ffn_norm);
    if (w->is_moe) {
        int rc = moe(c, w, n, b);
        if (rc)
            return rc;
    } else {
        size_t act = 0, out = 0;
        b->n_jobs = 0;
        b->hid = hid;
        add_job(c, b, &w->dense, c->xn, n, &act, &out);
        int rc = ffn_run(c, b);
        if (rc)
            return rc;
        memcpy(c->tmp, b->job[0].y, sizeof(float) * (size_t)n * hid);
    }
    for (size_t i = 0; i < (size_t)n * hid; i++)
        c->x[i] += c->tmp[i];
    return 0;
}
