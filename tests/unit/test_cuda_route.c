/*
 * test_cuda_route.c - the CUDA backend's routing and accept logic
 * (kernels/cuda_route.h), run on the CPU: the header's routing must give
 * the experts and weights model/moe.c gives (a reference written here
 * from moe.c / transformers' DeepseekV3TopkRouter: sort-based, -inf fill,
 * ties to the lower index), and its accept rule the accepted count and
 * next token spec/accept.c gives for the same uniforms. Always built (no
 * GPU needed); the device kernels use these same functions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "accept.h"
#include "cuda_route.h"
#include "kernels.h"
#include "unit_test.h"

/* ---- reference router ------------------------------------------------- */

static const float *g_key; /* qsort context: the values being ordered */

/* value descending, index ascending (torch.topk / moe.c tie order) */
static int by_value_desc(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (g_key[i] > g_key[j])
        return -1;
    if (g_key[i] < g_key[j])
        return 1;
    return i < j ? -1 : i > j;
}

static void ref_route(const struct kcuda_route *rt, const float *logits,
                      const float *bias, int32_t *idx, float *wt)
{
    int E = rt->n_experts, G = rt->n_group, per = E / G, K = rt->k;
    float s[KROUTE_MAX_EXPERTS], c[KROUTE_MAX_EXPERTS], gs[KROUTE_MAX_EXPERTS];
    int ord[KROUTE_MAX_EXPERTS];
    if (rt->scoring == KROUTE_SIGMOID) {
        for (int e = 0; e < E; e++)
            s[e] = 1.0f / (1.0f + expf(-logits[e]));
    } else {
        memcpy(s, logits, sizeof(float) * E);
        ksoftmax(s, E); /* scalar path (main sets it), as moe.c calls */
    }
    int noaux = rt->method == KROUTE_NOAUX_TC;
    for (int e = 0; e < E; e++)
        c[e] = s[e] + (noaux && bias ? bias[e] : 0.0f);
    if (G > 1 && rt->method != KROUTE_GREEDY) {
        for (int g = 0; g < G; g++) {
            for (int i = 0; i < per; i++)
                ord[i] = g * per + i;
            g_key = c;
            qsort(ord, per, sizeof(int), by_value_desc);
            gs[g] = noaux && per >= 2 ? c[ord[0]] + c[ord[1]] : c[ord[0]];
        }
        for (int g = 0; g < G; g++)
            ord[g] = g;
        g_key = gs;
        qsort(ord, G, sizeof(int), by_value_desc);
        int keep[KROUTE_MAX_EXPERTS] = {0};
        for (int j = 0; j < rt->topk_group; j++)
            keep[ord[j]] = 1;
        for (int e = 0; e < E; e++)
            if (!keep[e / per])
                c[e] = -INFINITY;
    }
    for (int e = 0; e < E; e++)
        ord[e] = e;
    g_key = c;
    qsort(ord, E, sizeof(int), by_value_desc);
    for (int j = 0; j < K; j++) {
        idx[j] = ord[j];
        wt[j] = s[ord[j]];
    }
    /* moe.c's weights */
    if (noaux) {
        float sum = 0;
        if (rt->norm) {
            for (int j = 0; j < K; j++)
                sum += wt[j];
            sum += 1e-20f;
        }
        for (int j = 0; j < K; j++)
            wt[j] = (rt->norm ? wt[j] / sum : wt[j]) * rt->scale;
    } else if (K > 1 && rt->norm) {
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

/* ---- random inputs ---------------------------------------------------- */

static uint64_t rs = 0x243f6a8885a308d3ULL;

static double urand(void) /* [0, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) * 0x1.0p-53;
}

static int irand(int n) { return (int)(urand() * n); }

/* coarse != 0: values on a grid of quarters, so that ties happen */
static float vrand(float lo, float hi, int coarse)
{
    float v = lo + (float)urand() * (hi - lo);
    return coarse ? roundf(v * 4.0f) / 4.0f : v;
}

/* One routing config against the reference over many rows; returns the
 * number of rows that differ (ids exactly, weights bitwise). */
static int route_case(const struct kcuda_route *rt, int rows, int coarse,
                      int with_bias, int *n_ties)
{
    int E = rt->n_experts, K = rt->k, bad = 0;
    static float logits[KROUTE_MAX_EXPERTS], bias[KROUTE_MAX_EXPERTS];
    static float scratch[3 * KROUTE_MAX_EXPERTS];
    int32_t i1[KROUTE_MAX_EXPERTS], i2[KROUTE_MAX_EXPERTS];
    float w1[KROUTE_MAX_EXPERTS], w2[KROUTE_MAX_EXPERTS];
    for (int r = 0; r < rows; r++) {
        for (int e = 0; e < E; e++) {
            logits[e] = vrand(-4.0f, 4.0f, coarse);
            bias[e] = vrand(-0.5f, 0.5f, coarse);
        }
        const float *b = with_bias ? bias : NULL;
        kroute_row(rt, logits, b, i1, w1, scratch);
        ref_route(rt, logits, b, i2, w2);
        int tie = 0;
        for (int j = 0; j < K; j++)
            for (int l = j + 1; l < K; l++)
                tie |= w1[j] == w1[l];
        *n_ties += tie;
        if (memcmp(i1, i2, sizeof(int32_t) * K) != 0 ||
            memcmp(w1, w2, sizeof(float) * K) != 0) {
            if (bad == 0) {
                fprintf(stderr, "  E=%d G=%d tg=%d k=%d sc=%d m=%d norm=%d"
                        " row %d:", E, rt->n_group, rt->topk_group, K,
                        rt->scoring, rt->method, rt->norm, r);
                for (int j = 0; j < K; j++)
                    fprintf(stderr, " %d/%d %.9g/%.9g", i1[j], i2[j],
                            (double)w1[j], (double)w2[j]);
                fputc('\n', stderr);
            }
            bad++;
        }
    }
    return bad;
}

static enum test_return test_route_vs_reference(void)
{
    /* (E, G, topk_group, k) shapes: DeepSeek-V3, the golden checkpoints,
     * n_group 1, one expert per group, k beyond the kept groups (-inf
     * fill decides), and the kernel's limit */
    static const int shapes[][4] = {
        {256, 8, 4, 8}, {8, 4, 2, 3}, {6, 3, 2, 2}, {4, 1, 1, 2},
        {64, 1, 1, 6},  {16, 16, 4, 4}, {16, 4, 1, 6}, {32, 4, 2, 1},
        {160, 8, 3, 6}, {1024, 32, 8, 8},
    };
    int cases = 0, ties = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int scoring = 0; scoring < 2; scoring++)
            for (int method = 0; method < 3; method++)
                for (int v = 0; v < 4; v++) {
                    struct kcuda_route rt = {
                        .n_experts = shapes[si][0],
                        .n_group = shapes[si][1],
                        .topk_group = shapes[si][2],
                        .k = shapes[si][3],
                        .scoring = scoring,
                        .method = method,
                        .norm = v & 1,
                        .scale = 2.5f,
                    };
                    CHECK(kroute_check(&rt) == 0, "shape %zu", si);
                    int rows = rt.n_experts > 256 ? 20 : 200;
                    int bad = route_case(&rt, rows, v >> 1, v & 1, &ties);
                    CHECK(bad == 0, "%d of %d rows differ", bad, rows);
                    cases++;
                }
    /* the reference must have been tested on ties, not only on distinct
     * scores (coarse logits make them) */
    CHECK(ties > 100, "only %d rows with tied weights", ties);
    printf("  %d router configs, %d rows with ties\n", cases, ties);
    return TEST_PASS;
}

static enum test_return test_route_check(void)
{
    struct kcuda_route rt = {.n_experts = 8, .k = 2, .n_group = 3,
                             .topk_group = 1, .scale = 1.0f};
    CHECK(kroute_check(&rt) != 0, "E %% G != 0 accepted");
    rt.n_group = 4;
    rt.topk_group = 5;
    CHECK(kroute_check(&rt) != 0, "topk_group > G accepted");
    rt.topk_group = 2;
    rt.k = 9;
    CHECK(kroute_check(&rt) != 0, "k > E accepted");
    rt.k = 2;
    rt.n_experts = KROUTE_MAX_EXPERTS + 4;
    CHECK(kroute_check(&rt) != 0, "too many experts accepted");
    rt.n_experts = 8;
    CHECK(kroute_check(&rt) == 0, "a good config refused");
    return TEST_PASS;
}

/* ---- accept rule --------------------------------------------------------- */

/* A random distribution over V ids; sparse != 0 zeroes most of them (a
 * truncated top-k / top-p distribution). */
static void rand_dist(float *p, int V, int sparse)
{
    double s = 0.0;
    for (int i = 0; i < V; i++) {
        double x = urand();
        p[i] = sparse && urand() < 0.8 ? 0.0f : (float)(x * x * x);
        s += p[i];
    }
    if (s == 0.0) {
        p[irand(V)] = 1.0f;
        s = 1.0;
    }
    for (int i = 0; i < V; i++)
        p[i] = (float)(p[i] / s);
}

static enum test_return test_accept_vs_spec(void)
{
    enum { VMAX = 300, KMAX = 6, TRIALS = 4000 };
    static float p[(KMAX + 1) * VMAX], q[KMAX * VMAX], scratch[VMAX];
    struct spec_rng r;
    spec_rng_seed(&r, 7);
    long hist[KMAX + 1] = {0};
    int residual_rows = 0;
    for (int t = 0; t < TRIALS; t++) {
        int V = 1 + irand(VMAX), k = irand(KMAX + 1);
        int sparse = irand(2), close = irand(3) == 0;
        for (int i = 0; i <= k; i++)
            rand_dist(p + (size_t)i * V, V, sparse);
        for (int i = 0; i < k; i++) {
            if (close) /* q near p: long accepted runs */
                memcpy(q + (size_t)i * V, p + (size_t)i * V,
                       sizeof(float) * V);
            else
                rand_dist(q + (size_t)i * V, V, irand(2));
            if (close && V > 1) { /* perturb one entry */
                int j = irand(V);
                q[(size_t)i * V + j] *= 1.5f;
            }
        }
        int32_t draft[KMAX];
        for (int i = 0; i < k; i++)
            draft[i] = spec_sample(q + (size_t)i * V, V, &r);
        if (k > 0 && irand(8) == 0) /* a draft q gives probability 0 */
            q[draft[0]] = 0.0f;
        /* the CPU rule as verify.c applies it, drawing from a copy of the
         * stream; the draws replayed as the device's uniforms */
        struct spec_rng cpu = r, replay = r;
        int a = 0;
        int32_t next;
        for (;;) {
            const float *pa = p + (size_t)a * V;
            if (a == k) {
                next = spec_sample(pa, V, &cpu);
                break;
            }
            const float *qa = q + (size_t)a * V;
            if (!spec_accept_token(draft[a], pa, qa, &cpu, 0)) {
                next = spec_sample_residual(pa, qa, V, scratch, &cpu);
                residual_rows++;
                break;
            }
            a++;
        }
        double u[KMAX + 1];
        for (int i = 0; i <= k; i++)
            u[i] = urand(); /* entries the rule must not look at */
        for (int i = 0; i <= a && i < k; i++)
            u[i] = spec_rng_uniform(&replay);
        u[k] = spec_rng_uniform(&replay);
        r = cpu;
        int32_t out[2];
        kaccept_seq(p, q, draft, u, k, V, out);
        CHECK(out[0] == a && out[1] == next,
              "trial %d (V %d k %d): accepted %d next %d, spec/accept.c %d"
              " %d", t, V, k, out[0], out[1], a, next);
        hist[a]++;
    }
    /* not vacuous: rejections at the first draft and runs of several */
    CHECK(residual_rows > TRIALS / 4 && hist[0] > 0 && hist[3] > 0,
          "residual %d, a=0 %ld, a=3 %ld", residual_rows, hist[0], hist[3]);
    return TEST_PASS;
}

static enum test_return test_accept_edges(void)
{
    /* all accepted: the bonus token from p[k] with u[k] */
    float p[2 * 3] = {0.5f, 0.5f, 0.0f, 0.2f, 0.3f, 0.5f};
    float q[3] = {0.5f, 0.5f, 0.0f};
    int32_t d[1] = {0}, out[2];
    double u[2] = {0.999, 0.75}; /* 0.999 * 0.5 < 0.5: accepted */
    kaccept_seq(p, q, d, u, 1, 3, out);
    CHECK(out[0] == 1 && out[1] == 2, "bonus from p[1]: %d %d", out[0],
          out[1]);
    /* p <= q everywhere at the rejected row (rounding): drawn from p */
    float q1[3] = {0.5f, 0.6f, 0.0f};
    d[0] = 1;
    u[0] = 0.9; /* 0.9 * 0.6 >= 0.5: rejected */
    kaccept_seq(p, q1, d, u, 1, 3, out);
    CHECK(out[0] == 0 && out[1] == 1, "no residual: %d %d", out[0], out[1]);
    d[0] = 0;
    float q2[3] = {0.9f, 0.1f, 0.0f}; /* residual (0, 0.4, 0) */
    u[0] = 0.9; /* 0.9 * 0.9 >= 0.5: rejected */
    kaccept_seq(p, q2, d, u, 1, 3, out);
    CHECK(out[0] == 0 && out[1] == 1, "residual: %d %d", out[0], out[1]);
    /* q(d) == 0: accepted iff p(d) > 0 */
    float q3[3] = {0.0f, 1.0f, 0.0f};
    kaccept_seq(p, q3, d, u, 1, 3, out);
    CHECK(out[0] == 1, "q(d) = 0, p(d) > 0 must accept");
    d[0] = 2;
    kaccept_seq(p, q3, d, u, 1, 3, out);
    CHECK(out[0] == 0 && out[1] == 0, "p(d) = 0 must reject: %d %d",
          out[0], out[1]);
    /* a draft id out of range is a rejection, not a read outside p */
    d[0] = 7;
    kaccept_seq(p, q, d, u, 1, 3, out);
    CHECK(out[0] == 0, "bad draft id accepted");
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    kisa_set(KISA_SCALAR); /* the reference's ksoftmax: moe.c's scalar */
    static const struct test_case tests[] = {
        {"route_vs_reference", test_route_vs_reference},
        {"route_check", test_route_check},
        {"accept_vs_spec", test_accept_vs_spec},
        {"accept_edges", test_accept_edges},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
