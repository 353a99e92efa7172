/*
 * test_spec_stats.c - spec/stats.c counters and derived rates, spec/adapt.c
 * (cost fit, acceptance estimate, choice of k) and spec/stop.c (stop
 * strings across token boundaries, what may be shown). Run:
 * build/spec/test_spec_stats [name].
 */
#include <math.h>
#include <stdlib.h>

#include "adapt.h"
#include "unit_test.h"
#include "stats.h"
#include "stop.h"

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

static enum test_return test_stats_rates(void)
{
    struct spec_stats s = {0};
    spec_stats_pass(&s, 3, 3);
    spec_stats_pass(&s, 3, 1);
    spec_stats_pass(&s, 3, 0);
    spec_stats_pass(&s, 0, 0);
    spec_stats_pass(&s, 2, 2);
    CHECK(s.passes == 5 && s.drafts == 4, "passes %lld drafts %lld",
          (long long)s.passes, (long long)s.drafts);
    CHECK(s.drafted_tokens == 11 && s.accepted_tokens == 6, "tokens");
    /* position 1: drafted 4, accepted 3 (3,1,2-passes), reached 4 */
    CHECK(NEAR(spec_stats_accept_uncond(&s, 1), 3.0 / 4), "uncond 1");
    CHECK(NEAR(spec_stats_accept_cond(&s, 1), 3.0 / 4), "cond 1");
    /* position 2: drafted 4, accepted 2, reached 3 (a >= 1) */
    CHECK(NEAR(spec_stats_accept_uncond(&s, 2), 2.0 / 4), "uncond 2");
    CHECK(NEAR(spec_stats_accept_cond(&s, 2), 2.0 / 3), "cond 2");
    /* position 3: drafted 3 (k = 3 passes), accepted 1, reached 1 */
    CHECK(NEAR(spec_stats_accept_uncond(&s, 3), 1.0 / 3), "uncond 3");
    CHECK(NEAR(spec_stats_accept_cond(&s, 3), 1.0), "cond 3");
    CHECK(NEAR(spec_stats_mean_accepted_len(&s), 1.0 + 6.0 / 4), "mean len");
    CHECK(spec_stats_max_k(&s) == 3, "max k");
    CHECK(s.k_hist[0] == 1 && s.k_hist[2] == 1 && s.k_hist[3] == 3, "hist");
    s.generated_tokens = 11;
    s.decode_s = 2.0;
    s.prompt_tokens = 50;
    s.prefill_s = 0.5;
    CHECK(NEAR(spec_stats_decode_tps(&s), 5.0), "decode tps");
    CHECK(NEAR(spec_stats_prefill_tps(&s), 100.0), "prefill tps");
    struct spec_stats agg = {0};
    spec_stats_add(&agg, &s);
    spec_stats_add(&agg, &s);
    CHECK(agg.accepted_at[0] == 6 && agg.passes == 10, "add");
    char buf[2048];
    int n = spec_stats_json(&s, buf, sizeof buf);
    CHECK(n > 0 && (size_t)n < sizeof buf, "json length %d", n);
    CHECK(strstr(buf, "\"acceptance_by_position\": [0.750000, 0.500000, "
                      "0.333333]") != NULL, "json: %s", buf);
    CHECK(strstr(buf, "\"acceptance_by_position_conditional\": [0.750000, "
                      "0.666667, 1.000000]") != NULL, "json: %s", buf);
    char small[16];
    int n2 = spec_stats_json(&s, small, sizeof small);
    CHECK(n2 == n && strlen(small) == sizeof small - 1, "truncation");
    return TEST_PASS;
}

static enum test_return test_cost_fit(void)
{
    struct spec_cost c = {0};
    CHECK(spec_cost_eval(&c, 1) < 0, "no data");
    spec_cost_add(&c, 1, 0.010);
    CHECK(fabs(spec_cost_eval(&c, 1) - 0.010) < 1e-12, "one point");
    CHECK(spec_cost_eval(&c, 3) > 0.010, "prior slope > 0");
    for (int i = 0; i < 50; i++)
        for (int r = 1; r <= 5; r++)
            spec_cost_add(&c, r, 0.010 + 0.002 * r);
    CHECK(fabs(spec_cost_eval(&c, 4) - 0.018) < 1e-6, "line: %g",
          spec_cost_eval(&c, 4));
    return TEST_PASS;
}

/* A MoE pass: the cost is concave in the rows (a few rows wake most of
 * the experts). Mostly k = 2..4 passes, now and then a plain one: the
 * line through them would put the plain pass near 0.6 ms; the per-row
 * means keep it at its own 0.32 ms, and auto then decodes plainly when
 * the drafts are accepted too rarely to pay for 2.3x the pass. */
static enum test_return test_cost_concave(void)
{
    static const double ms[6] = {0, 0.32, 0.62, 0.75, 0.80, 0.85};
    struct spec_costs c = {0};
    for (int i = 0; i < 200; i++) {
        int r = i % 16 == 15 ? 1 : 3 + i % 3;
        spec_cost_add(&c.main, r, ms[r] * 1e-3);
    }
    CHECK(fabs(spec_cost_eval(&c.main, 1) - 0.32e-3) < 1e-9, "plain %g",
          spec_cost_eval(&c.main, 1));
    CHECK(fabs(spec_cost_eval(&c.main, 4) - 0.80e-3) < 1e-9, "4 rows");
    CHECK(spec_cost_eval(&c.main, 2) > 0.32e-3, "2 rows from the line");
    c.refill_s = 0.02e-3;
    c.step_s = 0.03e-3;
    struct spec_adapt ad;
    spec_adapt_init(&ad, 4);
    ad.warm = 5;
    for (int i = 0; i < 200; i++) /* conditional acceptance 0.5 */
        spec_adapt_observe(&ad, 4, i % 2 ? 1 : 0);
    int k = spec_adapt_choose(&ad, &c);
    CHECK(k == 0, "k = %d (E(2)/C(3) < 1/C(1) at alpha 0.5)", k);
    return TEST_PASS;
}

static struct spec_costs costs_line(double a, double b, double refill,
                                    double step)
{
    struct spec_costs c = {0};
    for (int i = 0; i < 40; i++)
        for (int r = 1; r <= 9; r++)
            spec_cost_add(&c.main, r, a + b * r);
    c.refill_s = refill;
    c.step_s = step;
    return c;
}

static enum test_return test_adapt_choice(void)
{
    struct spec_adapt ad;
    /* cheap verify and draft, drafts always accepted: take the most */
    struct spec_costs cheap = costs_line(0.010, 0.0002, 0.0005, 0.0005);
    spec_adapt_init(&ad, 6);
    for (int i = 0; i <= 6; i++) /* the initial sweep 0..k_max */
        CHECK(spec_adapt_choose(&ad, &cheap) == i, "sweep");
    for (int i = 0; i < 60; i++)
        spec_adapt_observe(&ad, 6, 6);
    CHECK(spec_adapt_alpha(&ad, 1) > 0.95, "alpha %g",
          spec_adapt_alpha(&ad, 1));
    int k = spec_adapt_choose(&ad, &cheap);
    CHECK(k == 6, "k = %d with full acceptance", k);
    /* nothing ever accepted and a row costs 20% of a pass: plain decoding
     * (with rows nearly free even 4% acceptance would pay for k = 1) */
    struct spec_costs dear = costs_line(0.010, 0.002, 0.0005, 0.0005);
    spec_adapt_init(&ad, 6);
    ad.warm = 7;
    for (int i = 0; i < 60; i++)
        spec_adapt_observe(&ad, 3, 0);
    k = spec_adapt_choose(&ad, &dear);
    CHECK(k == 0, "k = %d with zero acceptance", k);
    for (int i = 0; i < 7; i++)
        spec_adapt_choose(&ad, &dear);
    CHECK(ad.off == 1, "speculation paused after 8 zero choices");
    /* a pause of SPEC_PAUSE_MIN passes at k = 0, whatever the costs; the
     * last of them resumes (off = 0, old evidence scaled down) */
    for (int i = 0; i < SPEC_PAUSE_MIN; i++)
        CHECK(spec_adapt_choose(&ad, &cheap) == 0 && (ad.off == 1) ==
                  (i < SPEC_PAUSE_MIN - 1),
              "pass %d of the pause: off %d", i, ad.off);
    CHECK(ad.seen[0] < 10.0 && ad.pause_len == 2 * SPEC_PAUSE_MIN,
          "seen %g, next pause %d", ad.seen[0], ad.pause_len);
    /* acceptance is still zero: paused again, for twice as long */
    for (int i = 0; i < 60 && !ad.off; i++)
        spec_adapt_observe(&ad, spec_adapt_choose(&ad, &dear), 0);
    CHECK(ad.off == 1 && ad.pause_left == 2 * SPEC_PAUSE_MIN,
          "off %d, pause %d", ad.off, ad.pause_left);
    /* the same verdict from only the sweep's few drafts: not off, k = 1
     * every other pass to learn more */
    spec_adapt_init(&ad, 4);
    for (int i = 0; i <= 4; i++) {
        int kk = spec_adapt_choose(&ad, &dear);
        spec_adapt_observe(&ad, kk, 0);
    }
    int ones = 0;
    for (int i = 0; i < 20; i++) {
        int kk = spec_adapt_choose(&ad, &dear);
        CHECK(kk <= 1, "k = %d", kk);
        ones += kk;
        spec_adapt_observe(&ad, kk, 0);
    }
    CHECK(ones >= 5 && !ad.off, "%d k=1 passes, off %d", ones, ad.off);
    for (int i = 0; i < 40 && !ad.off; i++)
        spec_adapt_observe(&ad, spec_adapt_choose(&ad, &dear), 0);
    CHECK(ad.off == 1, "paused once the evidence is in");
    /* expected tokens formula */
    spec_adapt_init(&ad, 4);
    for (int i = 0; i < 2000; i++)
        spec_adapt_observe(&ad, 2, i % 2 ? 2 : 1); /* a1 = 1, a2 = 0.5 */
    double e2 = spec_adapt_expected(&ad, 2);
    CHECK(fabs(e2 - 2.5) < 0.02, "E(2) = %g", e2);
    /* moderate acceptance, verify cost rising fast: a small k */
    struct spec_costs steep = costs_line(0.010, 0.006, 0.001, 0.002);
    spec_adapt_init(&ad, 6);
    ad.warm = 7;
    /* conditional acceptance 0.6 at every position (a geometric run):
     * rate(0) = 1/0.017, rate(1) = 1.6/0.023, rate(2) = 1.96/0.031 */
    unsigned x = 12345;
    for (int i = 0; i < 400; i++) {
        int a = 0;
        while (a < 6 && ((x = x * 1103515245u + 12345u) >> 16) % 10 < 6)
            a++;
        spec_adapt_observe(&ad, 6, a);
    }
    k = spec_adapt_choose(&ad, &steep);
    CHECK(k == 1, "k = %d with expensive rows (alpha1 %g)", k,
          spec_adapt_alpha(&ad, 1));
    /* the same acceptance with cheap rows: alone, drafting deep pays (the
     * pass's fixed cost buys more tokens); sharing a pass with 40 rows of
     * other sequences, a draft row costs the pass's time per row, and
     * 60% acceptance no longer pays for it */
    k = spec_adapt_choose(&ad, &cheap);
    CHECK(k >= 3, "k = %d alone with cheap rows", k);
    struct spec_costs shared = cheap;
    shared.others = 40;
    k = spec_adapt_choose(&ad, &shared);
    CHECK(k == 0, "k = %d sharing the pass with 40 rows", k);
    shared.others = 1; /* one more row: the fixed cost still pays */
    k = spec_adapt_choose(&ad, &shared);
    CHECK(k >= 1, "k = %d sharing the pass with 1 row", k);
    /* a big shared pass where a draft row costs as much as a token's row:
     * k = 0 wins even at perfect acceptance, so no acceptance evidence is
     * waited for and no sweep run (no draft judged yet): paused after
     * two such passes */
    struct spec_costs big = costs_line(0.001, 0.002, 0.0005, 0.0005);
    big.others = 200;
    spec_adapt_init(&ad, 4);
    CHECK(spec_adapt_choose(&ad, &big) == 0 && !ad.off, "first k = 0");
    CHECK(spec_adapt_choose(&ad, &big) == 0 && ad.off, "paused: off %d",
          ad.off);
    /* no timed main call after the sweep (every call so far untimed):
     * k = 0 or 1 while it looks, never k_max */
    struct spec_costs none = {0};
    spec_adapt_init(&ad, 4);
    for (int i = 0; i <= 4; i++)
        CHECK(spec_adapt_choose(&ad, &none) == i, "sweep without costs");
    for (int i = 0; i < 6; i++) {
        k = spec_adapt_choose(&ad, &none);
        CHECK(k <= 1, "k = %d without cost data", k);
        spec_adapt_observe(&ad, k, k);
    }
    return TEST_PASS;
}

static enum test_return test_stop_strings(void)
{
    const char *stops[] = {"\n\n", "STOP", ""};
    struct spec_stop st;
    CHECK(spec_stop_init(&st, stops, 3) == 0 && st.n == 2, "init");
    const char *out;
    CHECK(spec_stop_feed(&st, "hello", 5) == 0, "no match");
    size_t n = spec_stop_release(&st, &out, 0);
    CHECK(n == 5 && !memcmp(out, "hello", 5), "released %zu", n);
    CHECK(spec_stop_feed(&st, " S", 2) == 0, "partial");
    n = spec_stop_release(&st, &out, 0);
    CHECK(n == 1 && out[0] == ' ', "holds back 'S' (%zu)", n);
    CHECK(spec_stop_feed(&st, "TO", 2) == 0, "still partial");
    CHECK(spec_stop_release(&st, &out, 0) == 0, "holds back 'STO'");
    CHECK(spec_stop_feed(&st, "Pped", 4) == 1, "match across tokens");
    n = spec_stop_release(&st, &out, 1);
    CHECK(n == 0 && st.len == 6 && !memcmp(st.text, "hello ", 6),
          "cut at the stop string: '%s'", st.text);
    CHECK(spec_stop_feed(&st, "more", 4) == 1, "ignored after match");
    spec_stop_free(&st);

    CHECK(spec_stop_init(&st, stops, 2) == 0, "init 2");
    CHECK(spec_stop_feed(&st, "a\n", 2) == 0, "a newline");
    n = spec_stop_release(&st, &out, 0);
    CHECK(n == 1, "newline held back (%zu)", n);
    CHECK(spec_stop_feed(&st, "b", 1) == 0, "no stop");
    n = spec_stop_release(&st, &out, 0);
    CHECK(n == 2 && !memcmp(out, "\nb", 2), "released after b");
    /* a UTF-8 character split over two tokens is never shown half */
    CHECK(spec_stop_feed(&st, "\xc3", 1) == 0, "lead byte");
    CHECK(spec_stop_release(&st, &out, 0) == 0, "partial char held");
    CHECK(spec_stop_feed(&st, "\xa9", 1) == 0, "cont byte");
    n = spec_stop_release(&st, &out, 0);
    CHECK(n == 2, "char released whole (%zu)", n);
    spec_stop_free(&st);
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"stats_rates", test_stats_rates},
        {"cost_fit", test_cost_fit},
    {"cost_concave", test_cost_concave},
        {"adapt_choice", test_adapt_choice},
        {"stop_strings", test_stop_strings},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
