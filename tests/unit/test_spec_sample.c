/*
 * test_spec_sample.c - spec/sample.c: RNG, argmax, temperature / top-k /
 * top-p distributions and categorical sampling, against direct double
 * formulas. Run: build/spec/test_spec_sample [name].
 */
#include <math.h>
#include <stdlib.h>

#include "sample.h"
#include "unit_test.h"

static enum test_return test_rng_reproducible(void)
{
    struct spec_rng a, b, c;
    spec_rng_seed(&a, 42);
    spec_rng_seed(&b, 42);
    spec_rng_seed(&c, 43);
    int diff = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = spec_rng_next(&a), y = spec_rng_next(&b);
        CHECK(x == y, "same seed diverged at %d", i);
        diff += x != spec_rng_next(&c);
    }
    CHECK(diff > 990, "seeds 42 and 43 agree too often (%d differ)", diff);
    spec_rng_seed(&a, 0);
    double sum = 0;
    for (int i = 0; i < 200000; i++) {
        double u = spec_rng_uniform(&a);
        CHECK(u >= 0.0 && u < 1.0, "uniform out of range: %g", u);
        sum += u;
    }
    CHECK(fabs(sum / 200000 - 0.5) < 0.005, "mean %g", sum / 200000);
    return TEST_PASS;
}

static enum test_return test_argmax(void)
{
    float x[] = {1.0f, 3.0f, -2.0f, 3.0f, NAN};
    CHECK(spec_argmax(x, 5) == 1, "ties go to the lowest id");
    float y[] = {NAN, -1.0f, -0.5f};
    CHECK(spec_argmax(y, 3) == 2, "NaN is skipped");
    float z[] = {NAN, NAN};
    CHECK(spec_argmax(z, 2) == 0, "all NaN -> 0");
    return TEST_PASS;
}

/* softmax(l / T) in double */
static void ref_softmax(const float *l, int n, double t, double *out)
{
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < n; i++)
        mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < n; i++)
        s += out[i] = exp((l[i] - mx) / t);
    for (int i = 0; i < n; i++)
        out[i] /= s;
}

static void rand_logits(float *l, int n, uint64_t seed, double scale)
{
    struct spec_rng r;
    spec_rng_seed(&r, seed);
    for (int i = 0; i < n; i++)
        l[i] = (float)((spec_rng_uniform(&r) * 2 - 1) * scale);
}

static enum test_return test_probs_plain(void)
{
    enum { N = 300 };
    float l[N], p[N];
    int32_t idx[N];
    double ref[N];
    rand_logits(l, N, 1, 4.0);
    for (int ti = 0; ti < 3; ti++) {
        double t = (double[]){1.0, 0.5, 1.7}[ti];
        struct spec_sampling s = {(float)t, 0, 1.0f};
        int nz = spec_probs(&s, l, N, p, idx);
        ref_softmax(l, N, t, ref);
        CHECK(nz == N, "support %d", nz);
        for (int i = 0; i < N; i++)
            CHECK(fabs(p[i] - ref[i]) < 1e-6 + 1e-5 * ref[i],
                  "T=%g id %d: %g vs %g", t, i, p[i], ref[i]);
    }
    struct spec_sampling g = {0.0f, 0, 1.0f};
    CHECK(spec_probs(&g, l, N, p, idx) == 1, "greedy support");
    CHECK(p[spec_argmax(l, N)] == 1.0f, "greedy one-hot at the argmax");
    return TEST_PASS;
}

/* Brute-force reference of top-k then top-p: sort ids by (prob desc, id
 * asc), keep top_k, then the smallest prefix with mass >= top_p * kept. */
static const double *g_sort_p;
static int cmp_ids(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    if (g_sort_p[x] != g_sort_p[y])
        return g_sort_p[x] > g_sort_p[y] ? -1 : 1;
    return x - y;
}

static void ref_truncated(const float *l, int n, double t, int top_k,
                          double top_p, double *out)
{
    double *p = malloc(sizeof(double) * n);
    int *ids = malloc(sizeof(int) * n);
    ref_softmax(l, n, t, p);
    for (int i = 0; i < n; i++)
        ids[i] = i;
    g_sort_p = p;
    qsort(ids, n, sizeof(int), cmp_ids);
    int keep = top_k > 0 && top_k < n ? top_k : n;
    if (top_p < 1.0) {
        double tot = 0, cum = 0;
        for (int i = 0; i < keep; i++)
            tot += p[ids[i]];
        for (int i = 0; i < keep; i++) {
            cum += p[ids[i]];
            if (cum >= top_p * tot) {
                keep = i + 1;
                break;
            }
        }
    }
    double s = 0;
    for (int i = 0; i < n; i++)
        out[i] = 0;
    for (int i = 0; i < keep; i++)
        s += out[ids[i]] = p[ids[i]];
    for (int i = 0; i < n; i++)
        out[i] /= s;
    free(p);
    free(ids);
}

static enum test_return test_probs_truncated(void)
{
    static const struct {
        int n;
        double t;
        int k;
        double p;
        double scale;
    } cases[] = {
        {300, 1.0, 5, 1.0, 4.0},   {300, 0.7, 0, 0.9, 4.0},
        {300, 1.3, 40, 0.5, 4.0},  {64, 1.0, 1, 1.0, 2.0},
        {64, 1.0, 64, 0.999, 1.0}, {50000, 1.0, 0, 0.95, 8.0},
        {50000, 1.0, 0, 0.9999, 0.5}, /* flat: the prefilter falls back */
        {50000, 0.8, 100, 0.8, 8.0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = cases[c].n;
        float *l = malloc(sizeof(float) * n), *p = malloc(sizeof(float) * n);
        int32_t *idx = malloc(sizeof(int32_t) * n);
        double *ref = malloc(sizeof(double) * n);
        rand_logits(l, n, 10 + c, cases[c].scale);
        if (c == 3) /* exact ties at the top-k boundary: lower id wins */
            l[7] = l[3] = 100.0f;
        struct spec_sampling s = {(float)cases[c].t, cases[c].k,
                                  (float)cases[c].p};
        spec_probs(&s, l, n, p, idx);
        ref_truncated(l, n, cases[c].t, cases[c].k, (float)cases[c].p, ref);
        int bad = -1;
        for (int i = 0; i < n && bad < 0; i++)
            if ((p[i] > 0) != (ref[i] > 0) ||
                fabs(p[i] - ref[i]) > 1e-6 + 1e-4 * ref[i])
                bad = i;
        if (bad >= 0)
            fprintf(stderr, "  case %zu id %d: %g vs %g\n", c, bad, p[bad],
                    ref[bad]);
        free(l);
        free(p);
        free(idx);
        free(ref);
        CHECK(bad < 0, "case %zu differs from the brute-force reference", c);
    }
    return TEST_PASS;
}

static enum test_return test_sample_frequencies(void)
{
    enum { N = 12, DRAWS = 240000 };
    float p[N] = {0.3f, 0.0f, 0.1f, 0.05f, 0.2f, 0.0f,
                  0.15f, 0.1f, 0.05f, 0.03f, 0.02f, 0.0f};
    double pd[N];
    long cnt[N] = {0};
    struct spec_rng r;
    spec_rng_seed(&r, 7);
    for (int i = 0; i < N; i++)
        pd[i] = p[i];
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = spec_sample(p, N, &r);
        CHECK(t >= 0 && t < N && p[t] > 0, "drew id %d with p = 0", t);
        cnt[t]++;
    }
    int dof;
    double chi = chi_square(cnt, pd, N, DRAWS, &dof);
    CHECK(chi < chi_crit(dof), "chi2 %g > %g (dof %d)", chi, chi_crit(dof),
          dof);
    /* unnormalised input is scaled by its sum */
    float q[3] = {2.0f, 0.0f, 6.0f};
    long c3[3] = {0};
    for (int i = 0; i < 40000; i++)
        c3[spec_sample(q, 3, &r)]++;
    CHECK(c3[1] == 0 && labs(c3[2] - 30000) < 600, "%ld %ld", c3[1], c3[2]);
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"rng_reproducible", test_rng_reproducible},
        {"argmax", test_argmax},
        {"probs_plain", test_probs_plain},
        {"probs_truncated", test_probs_truncated},
        {"sample_frequencies", test_sample_frequencies},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
