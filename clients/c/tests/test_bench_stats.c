/*
 * test_bench_stats.c - mtpc bench's counts rebuilt from per-request STATS
 * (clients/c/mtpc/bench.h) against the true counts of random requests:
 * random passes (k drafted, a accepted) make a request; its STATS ratios
 * are computed as the daemon does (spec/stats.h definitions); summing the
 * rebuilt counts must give the true sums: exactly when they say so,
 * within the documented bounds otherwise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../../tests/unit/unit_test.h"
#include "../mtpc/bench.h"

struct truth {
    int64_t k_hist[MTP_K_MAX + 1];
    int64_t drafted_at[MTP_K_MAX], reached_at[MTP_K_MAX];
    int64_t accepted_at[MTP_K_MAX];
    int64_t passes, drafts, drafted, accepted;
};

static void pass(struct truth *t, int k, int a)
{
    t->passes++;
    t->k_hist[k]++;
    if (!k)
        return;
    t->drafts++;
    t->drafted += k;
    t->accepted += a;
    for (int i = 0; i < k; i++) {
        t->drafted_at[i]++;
        if (i <= a)
            t->reached_at[i]++;
        if (i < a)
            t->accepted_at[i]++;
    }
}

static double ratio(int64_t a, int64_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

/* The STATS the daemon would send for t. */
static void to_stats(const struct truth *t, struct mtp_stats *s)
{
    memset(s, 0, sizeof *s);
    s->verify_passes = t->passes;
    s->drafts = t->drafts;
    s->drafted_tokens = t->drafted;
    s->accepted_tokens = t->accepted;
    for (int i = 0; i < MTP_K_MAX; i++)
        if (t->drafted_at[i])
            s->n_positions = i + 1;
    for (int i = 0; i < s->n_positions; i++) {
        s->acceptance_by_position[i] =
            ratio(t->accepted_at[i], t->drafted_at[i]);
        s->acceptance_by_position_conditional[i] =
            ratio(t->accepted_at[i], t->reached_at[i]);
    }
    s->n_k_histogram = 1;
    for (int k = 0; k <= MTP_K_MAX; k++)
        if (t->k_hist[k])
            s->n_k_histogram = k + 1;
    memcpy(s->k_histogram, t->k_hist, sizeof t->k_hist);
}

static void truth_add(struct truth *a, const struct truth *t)
{
    a->passes += t->passes;
    a->drafts += t->drafts;
    a->drafted += t->drafted;
    a->accepted += t->accepted;
    for (int k = 0; k <= MTP_K_MAX; k++)
        a->k_hist[k] += t->k_hist[k];
    for (int i = 0; i < MTP_K_MAX; i++) {
        a->drafted_at[i] += t->drafted_at[i];
        a->reached_at[i] += t->reached_at[i];
        a->accepted_at[i] += t->accepted_at[i];
    }
}

/* Requests with draft lengths from kset (fixed K, or mixed as auto and
 * the last passes of a request do); accepted counts random. */
static enum test_return check(const int *kset, int nk, unsigned seed,
                              bool want_exact)
{
    srand(seed);
    struct truth all = {0};
    struct spec_counts sum = {0};
    for (int r = 0; r < 40; r++) {
        struct truth t = {0};
        int n = 1 + rand() % 30;
        for (int p = 0; p < n; p++) {
            int k = kset[rand() % nk];
            int a = 0;
            while (a < k && rand() % 100 < 65)
                a++;
            pass(&t, k, a);
        }
        struct mtp_stats s;
        to_stats(&t, &s);
        struct spec_counts c;
        counts_from_stats(&s, &c);
        CHECK(c.drafts == t.drafts && c.accepted == t.accepted &&
                  c.passes == t.passes,
              "totals of request %d", r);
        for (int i = 0; i < MTP_K_MAX; i++) {
            CHECK(c.drafted_at[i] == t.drafted_at[i] &&
                      c.accepted_at[i] == t.accepted_at[i],
                  "request %d position %d: drafted %lld/%lld accepted "
                  "%lld/%lld",
                  r, i + 1, (long long)c.drafted_at[i],
                  (long long)t.drafted_at[i], (long long)c.accepted_at[i],
                  (long long)t.accepted_at[i]);
            /* reached: exact unless flagged, never below the truth's
             * lower bound nor above its upper one */
            if (!c.approx)
                CHECK(c.reached_at[i] == t.reached_at[i],
                      "request %d position %d reached %lld, true %lld", r,
                      i + 1, (long long)c.reached_at[i],
                      (long long)t.reached_at[i]);
            CHECK(c.reached_at[i] >= c.accepted_at[i] &&
                      c.reached_at[i] <= c.drafted_at[i],
                  "reached out of range");
        }
        counts_add(&sum, &c);
        truth_add(&all, &t);
    }
    CHECK(!want_exact || !sum.approx, "a fixed draft length is exact");
    for (int i = 0; i < MTP_K_MAX; i++) {
        CHECK(counts_uncond(&sum, i) == ratio(all.accepted_at[i],
                                              all.drafted_at[i]),
              "unconditional %d", i + 1);
        if (!sum.approx)
            CHECK(counts_cond(&sum, i) == ratio(all.accepted_at[i],
                                                all.reached_at[i]),
                  "conditional %d", i + 1);
    }
    CHECK(counts_rate(&sum) == ratio(all.accepted, all.drafted), "rate");
    int64_t h = 0;
    for (int a = 0; a <= MTP_K_MAX; a++)
        h += counts_accepted_exactly(&sum, a);
    CHECK(h == all.drafts, "accepted-length histogram sums to the drafts");
    return TEST_PASS;
}

static enum test_return test_fixed_k(void)
{
    const int k4[] = {4}, k1[] = {1}, k0[] = {0, 3};
    for (unsigned s = 1; s <= 20; s++) {
        if (check(k4, 1, s, true) != TEST_PASS ||
            check(k1, 1, s, true) != TEST_PASS)
            return TEST_FAIL;
    }
    /* plain passes (k = 0) between drafts of one length stay exact */
    return check(k0, 2, 7, true);
}

static enum test_return test_mixed_k(void)
{
    const int mixed[] = {1, 2, 3, 5}, tail[] = {3, 3, 3, 3, 3, 3, 1};
    for (unsigned s = 1; s <= 20; s++)
        if (check(mixed, 4, s, false) != TEST_PASS ||
            check(tail, 7, s, false) != TEST_PASS)
            return TEST_FAIL;
    return TEST_PASS;
}

static enum test_return test_counts_sent(void)
{
    /* counts in STATS are used as they are */
    struct truth t = {0};
    pass(&t, 3, 1);
    pass(&t, 1, 1);
    pass(&t, 2, 0);
    struct mtp_stats s;
    to_stats(&t, &s);
    s.has_counts = true;
    memcpy(s.drafted_by_position, t.drafted_at, sizeof t.drafted_at);
    memcpy(s.reached_by_position, t.reached_at, sizeof t.reached_at);
    memcpy(s.accepted_by_position, t.accepted_at, sizeof t.accepted_at);
    struct spec_counts c;
    counts_from_stats(&s, &c);
    CHECK(!c.approx && c.reached_at[1] == t.reached_at[1] &&
              c.reached_at[1] == 1,
          "reached %lld", (long long)c.reached_at[1]);
    return TEST_PASS;
}

static enum test_return test_percentile(void)
{
    double v[] = {5, 1, 4, 2, 3, 10, 9, 8, 7, 6};
    CHECK(percentile(v, 10, 50) == 5 && percentile(v, 10, 99) == 10 &&
              percentile(v, 10, 10) == 1 && percentile(v, 0, 50) == 0,
          "nearest rank");
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"fixed_k", test_fixed_k},
        {"mixed_k", test_mixed_k},
        {"counts_sent", test_counts_sent},
        {"percentile", test_percentile},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
