/*
 * test_spec_accept.c - spec/accept.c: the greedy rule, and that
 * speculative rejection sampling emits exactly the target distribution p
 * whatever the draft distribution q is (chi-square over many trials) --
 * and that the same test FAILS with the deliberately broken rule
 * (break_accept: drafts always accepted). Run:
 * build/spec/test_spec_accept [name].
 */
#include <math.h>

#include "accept.h"
#include "unit_test.h"

static enum test_return test_greedy_rule(void)
{
    int32_t next;
    int32_t d[4] = {5, 6, 7, 8};
    int32_t t1[5] = {5, 6, 7, 8, 9};
    CHECK(spec_accept_greedy(d, 4, t1, &next) == 4 && next == 9, "all");
    int32_t t2[5] = {5, 6, 1, 8, 9};
    CHECK(spec_accept_greedy(d, 4, t2, &next) == 2 && next == 1, "two");
    int32_t t3[5] = {4, 6, 7, 8, 9};
    CHECK(spec_accept_greedy(d, 4, t3, &next) == 0 && next == 4, "none");
    CHECK(spec_accept_greedy(d, 0, t3, &next) == 0 && next == 4, "k = 0");
    return TEST_PASS;
}

/* One speculative position: draw x ~ q, accept with min(1, p/q) else draw
 * from the residual. Returns the chi-square statistic of the emitted
 * tokens against p and sets *crit. */
static double one_position_chi(const float *p, const float *q, int n,
                               long trials, int break_accept, double *crit,
                               double *acc_rate)
{
    struct spec_rng r;
    spec_rng_seed(&r, 1234);
    long cnt[64] = {0}, acc = 0;
    float scratch[64];
    double pd[64];
    for (int i = 0; i < n; i++)
        pd[i] = p[i];
    for (long t = 0; t < trials; t++) {
        int32_t x = spec_sample(q, n, &r);
        if (spec_accept_token(x, p, q, &r, break_accept)) {
            acc++;
        } else {
            x = spec_sample_residual(p, q, n, scratch, &r);
        }
        cnt[x]++;
    }
    int dof;
    double chi = chi_square(cnt, pd, n, trials, &dof);
    *crit = chi_crit(dof);
    *acc_rate = (double)acc / (double)trials;
    return chi;
}

static void normalise(float *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    for (int i = 0; i < n; i++)
        v[i] = (float)(v[i] / s);
}

static enum test_return test_rejection_sampling_exact(void)
{
    enum { N = 16 };
    struct spec_rng r;
    spec_rng_seed(&r, 99);
    for (int c = 0; c < 4; c++) {
        float p[N], q[N];
        for (int i = 0; i < N; i++) {
            p[i] = (float)pow(spec_rng_uniform(&r), 2.0);
            q[i] = (float)pow(spec_rng_uniform(&r), 2.0);
        }
        if (c == 1)
            p[3] = 0.0f; /* target excludes an id the draft proposes */
        if (c == 2)
            q[5] = 0.0f; /* draft never proposes an id the target has */
        if (c == 3)
            for (int i = 0; i < N; i++)
                q[i] = p[i] * (i % 2 ? 1.2f : 0.8f); /* close to p */
        normalise(p, N);
        normalise(q, N);
        double crit, acc;
        double chi = one_position_chi(p, q, N, 200000, 0, &crit, &acc);
        CHECK(chi < crit, "case %d: chi2 %g >= %g (acceptance %.3f)", c, chi,
              crit, acc);
        /* the acceptance rate must be sum_x min(p(x), q(x)) */
        double want = 0;
        for (int i = 0; i < N; i++)
            want += p[i] < q[i] ? p[i] : q[i];
        CHECK(fabs(acc - want) < 0.005, "case %d: acceptance %.4f, "
              "expected %.4f", c, acc, want);
        /* the deliberately wrong rule emits q, not p: the test notices */
        double chib = one_position_chi(p, q, N, 200000, 1, &crit, &acc);
        CHECK(chib > crit, "case %d: broken rule not detected (chi2 %g < %g)",
              c, chib, crit);
    }
    return TEST_PASS;
}

static enum test_return test_identical_p_q(void)
{
    /* p == q: everything accepted, the residual is never needed */
    float p[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    struct spec_rng r;
    spec_rng_seed(&r, 5);
    for (int i = 0; i < 10000; i++) {
        int32_t x = spec_sample(p, 4, &r);
        CHECK(spec_accept_token(x, p, p, &r, 0), "rejected x = %d", x);
    }
    /* residual of p <= q everywhere falls back to p */
    float sc[4];
    int32_t x = spec_sample_residual(p, p, 4, sc, &r);
    CHECK(x >= 0 && x < 4, "residual fallback id %d", x);
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"greedy_rule", test_greedy_rule},
        {"rejection_sampling_exact", test_rejection_sampling_exact},
        {"identical_p_q", test_identical_p_q},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
