/*
 * cuda_route.h - the decision logic of the CUDA backend's MoE router and
 * speculative accept step, as small static inline functions that compile
 * both as C (host; tests/unit/test_cuda_route.c checks them against
 * model/moe.c's routing and spec/accept.c's rule) and as CUDA device code
 * (kernels/cuda/moe.cu, kernels/cuda/logits.cu use the same functions, so
 * what the CPU test pins down is what the device computes).
 *
 * Routing (moe.c's route_row, transformers' DeepseekV3TopkRouter):
 *   s = sigmoid(l) or softmax(l)                 (scores, fp32)
 *   c = s + bias for noaux_tc, else s            (the choice only)
 *   n_group > 1 and method != greedy: group score = sum of the top two c
 *     (noaux_tc) or the max c (group_limited_greedy); the topk_group best
 *     groups stay, the others' c become -inf (moe.c's fill; transformers
 *     fills 0.0, which differs only when biased scores go negative)
 *   experts: the k best c, in order (value descending, id ascending on
 *     ties, as torch.topk and moe.c); weights = s of them, finished by
 *     kroute_finish exactly as moe.c does.
 * The order "value descending, then index ascending" is a total order, so
 * a device-side tree reduction with kroute_better picks the same element
 * as the serial scan here, whatever the reduction's shape.
 *
 * Accept (spec/accept.c): draft d drawn from q is accepted iff
 * u * q(d) < p(d) (in double); the token after a rejection is drawn from
 * normalize(max(0, p - q)) (p itself if that is all zero), and after k
 * accepted drafts from p, by inverse CDF as spec_sample does.
 */
#ifndef MTPD_CUDA_ROUTE_H
#define MTPD_CUDA_ROUTE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kcuda.h"

#ifdef __CUDACC__
#define KCUDA_HD __host__ __device__ __forceinline__
#else
#define KCUDA_HD inline
#endif

enum { KROUTE_SIGMOID = 0, KROUTE_SOFTMAX = 1 };
enum { KROUTE_NOAUX_TC = 0, KROUTE_GREEDY = 1, KROUTE_GROUP_LIMITED = 2 };

/* Experts (and groups) a router may have: the device kernels keep per-lane
 * bit masks of E / 32 entries and the MoE workspace a table of this size. */
#define KROUTE_MAX_EXPERTS 1024

/* ---- routing ----------------------------------------------------------- */

/* 1 when candidate (va, ia) comes before the current best (vb, ib): larger
 * value, the lower index on ties; ib < 0 means "no best yet". */
static KCUDA_HD int kroute_better(float va, int ia, float vb, int ib)
{
    if (ia < 0)
        return 0;
    return ib < 0 || va > vb || (va == vb && ia < ib);
}

static KCUDA_HD float kroute_sigmoid(float l)
{
    return 1.0f / (1.0f + expf(-l));
}

/* Softmax scoring, as the scalar ksoftmax: e = expf(l - max) summed in
 * double, then times (float)(1 / sum). */
static KCUDA_HD float kroute_softmax_exp(float l, float mx)
{
    return expf(l - mx);
}

static KCUDA_HD float kroute_softmax_inv(double sum)
{
    return (float)(1.0 / sum);
}

/* The score used for the choice. */
static KCUDA_HD float kroute_choice(const struct kcuda_route *rt, float s,
                                    const float *bias, int e)
{
    return s + (rt->method == KROUTE_NOAUX_TC && bias ? bias[e] : 0.0f);
}

/* Whether groups limit the choice. */
static KCUDA_HD int kroute_grouped(const struct kcuda_route *rt)
{
    return rt->n_group > 1 && rt->method != KROUTE_GREEDY;
}

/* Running top two (m1 >= m2) of a group, fed one value at a time. */
static KCUDA_HD void kroute_top2(float v, float *m1, float *m2)
{
    if (v > *m1) {
        *m2 = *m1;
        *m1 = v;
    } else if (v > *m2) {
        *m2 = v;
    }
}

/* A group's score from its running top two (per = experts per group). */
static KCUDA_HD float kroute_group_score(const struct kcuda_route *rt,
                                         float m1, float m2, int per)
{
    if (rt->method == KROUTE_NOAUX_TC)
        return per >= 2 ? m1 + m2 : m1;
    return m1; /* group_limited_greedy: the max */
}

/* Turns the chosen experts' scores wt[0..k) (in choice order) into their
 * weights, in place (moe.c's arithmetic, in its order). */
static KCUDA_HD void kroute_finish(const struct kcuda_route *rt, float *wt)
{
    int K = rt->k;
    if (rt->method == KROUTE_NOAUX_TC) {
        float sum = 0.0f;
        if (rt->norm) {
            for (int j = 0; j < K; j++)
                sum += wt[j];
            sum += 1e-20f;
        }
        for (int j = 0; j < K; j++)
            wt[j] = (rt->norm ? wt[j] / sum : wt[j]) * rt->scale;
    } else if (K > 1 && rt->norm) { /* DeepSeek-V2: normalised, unscaled */
        float sum = 1e-20f;
        for (int j = 0; j < K; j++)
            sum += wt[j];
        for (int j = 0; j < K; j++)
            wt[j] /= sum;
    } else {
        for (int j = 0; j < K; j++)
            wt[j] *= rt->scale;
    }
}

/* The shape limits the kernels assume; 0 when rt is usable. */
static KCUDA_HD int kroute_check(const struct kcuda_route *rt)
{
    int E = rt->n_experts, G = rt->n_group;
    if (E <= 0 || E > KROUTE_MAX_EXPERTS || rt->k <= 0 || rt->k > E)
        return -1;
    if (G <= 0 || E % G != 0)
        return -1;
    if (kroute_grouped(rt) && (rt->topk_group <= 0 || rt->topk_group > G))
        return -1;
    if (rt->scoring != KROUTE_SIGMOID && rt->scoring != KROUTE_SOFTMAX)
        return -1;
    if (rt->method < KROUTE_NOAUX_TC || rt->method > KROUTE_GROUP_LIMITED)
        return -1;
    return 0;
}

/*
 * One row, serially: logits [E] -> idx [k], wt [k]. bias [E] or NULL
 * (rt->bias is ignored here: it is a device pointer). scratch: 2 E + G
 * floats. The device kernel (moe.cu) computes the same with a warp.
 */
static KCUDA_HD void kroute_row(const struct kcuda_route *rt,
                                const float *logits, const float *bias,
                                int32_t *idx, float *wt, float *scratch)
{
    int E = rt->n_experts, G = rt->n_group, per = E / G;
    float *s = scratch, *c = scratch + E, *gs = scratch + 2 * E;
    if (rt->scoring == KROUTE_SIGMOID) {
        for (int e = 0; e < E; e++)
            s[e] = kroute_sigmoid(logits[e]);
    } else {
        float mx = logits[0];
        for (int e = 1; e < E; e++)
            mx = logits[e] > mx ? logits[e] : mx;
        double sum = 0.0;
        for (int e = 0; e < E; e++) {
            s[e] = kroute_softmax_exp(logits[e], mx);
            sum += s[e];
        }
        float inv = kroute_softmax_inv(sum);
        for (int e = 0; e < E; e++)
            s[e] *= inv;
    }
    for (int e = 0; e < E; e++)
        c[e] = kroute_choice(rt, s[e], bias, e);
    if (kroute_grouped(rt)) {
        for (int g = 0; g < G; g++) {
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int i = 0; i < per; i++)
                kroute_top2(c[g * per + i], &m1, &m2);
            gs[g] = kroute_group_score(rt, m1, m2, per);
        }
        /* keep the topk_group best groups: mark them with NaN scores */
        for (int j = 0; j < rt->topk_group; j++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (gs[g] == gs[g] && kroute_better(gs[g], g, best < 0 ? 0.0f
                                                    : gs[best], best))
                    best = g;
            if (best < 0) /* only NaN scores left (NaN logits) */
                break;
            gs[best] = NAN;
        }
        for (int g = 0; g < G; g++)
            if (gs[g] == gs[g]) /* not kept */
                for (int i = 0; i < per; i++)
                    c[g * per + i] = -INFINITY;
    }
    for (int j = 0; j < rt->k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (c[e] == c[e] && kroute_better(c[e], e, best < 0 ? 0.0f
                                              : c[best], best))
                best = e;
        idx[j] = best; /* -1 only when every score is NaN */
        wt[j] = best >= 0 ? s[best] : 0.0f;
        if (best >= 0)
            c[best] = NAN; /* used */
    }
    kroute_finish(rt, wt);
}

/* ---- speculative accept ------------------------------------------------ */

/* Accept draft token d drawn from q given uniform u: u < p(d) / q(d),
 * written without the division (q(d) == 0: accept iff p(d) > 0). */
static KCUDA_HD int kaccept_token(double u, float p_d, float q_d)
{
    return u * (double)q_d < (double)p_d;
}

/* One entry of the residual distribution max(0, p - q), unnormalised. */
static KCUDA_HD float kaccept_residual(float p, float q)
{
    float x = p - q;
    return x > 0.0f ? x : 0.0f;
}

/* Entry i of the distribution the next token is drawn from: the residual
 * when q is given and use_res (some residual entry positive), else p. */
static KCUDA_HD float kaccept_dist(const float *p, const float *q,
                                   int use_res, int i)
{
    return use_res ? kaccept_residual(p[i], q[i]) : p[i];
}

/*
 * Serially, one sequence (the contract of kcuda_spec_accept, with u in
 * double): p [k + 1, V], q [k, V], draft [k], u [k + 1]. Draft i is tested
 * with u[i]; the next token is drawn with u[k]: the first i with
 * dist[i] > 0 where u[k] * total < the running sum, else the last nonzero
 * id (rounding), else 0 (spec_sample). out[0] = accepted, out[1] = next.
 */
static inline void kaccept_seq(const float *p, const float *q,
                               const int32_t *draft, const double *u, int k,
                               int V, int32_t out[2])
{
    int a = 0;
    while (a < k) {
        int32_t d = draft[a];
        if (d < 0 || d >= V ||
            !kaccept_token(u[a], p[(size_t)a * V + d], q[(size_t)a * V + d]))
            break;
        a++;
    }
    const float *pr = p + (size_t)a * V;
    const float *qr = a < k ? q + (size_t)a * V : NULL;
    int use_res = 0;
    for (int i = 0; qr && i < V && !use_res; i++)
        use_res = kaccept_residual(pr[i], qr[i]) > 0.0f;
    double total = 0.0;
    for (int i = 0; i < V; i++)
        total += kaccept_dist(pr, qr, use_res, i);
    double target = u[k] * total, cum = 0.0;
    int32_t next = -1, last = -1;
    for (int i = 0; i < V; i++) {
        float v = kaccept_dist(pr, qr, use_res, i);
        if (v <= 0.0f)
            continue;
        cum += v;
        last = i;
        if (target < cum) {
            next = i;
            break;
        }
    }
    out[0] = a;
    out[1] = next >= 0 ? next : last >= 0 ? last : 0;
}

#endif
