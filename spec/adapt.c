/*
 * adapt.c - adaptive draft length (see adapt.h for the rule).
 */
#include "adapt.h"

#define COST_FORGET 0.98   /* per sample, cost fit */
#define AT_FORGET 0.8      /* per sample at that row count, its mean */
#define AT_MIN 1.5         /* discounted samples before the mean is used */
#define ACC_FORGET 0.97    /* per observation, acceptance counts */
#define PRIOR_W 2.0        /* pseudo-observations of the prior */
#define PRIOR_ALPHA1 0.6   /* prior acceptance at position 1 */
#define PROBE_EVERY 16
#define OFF_AFTER 8        /* consecutive k = 0 choices that pause MTP */
#define OFF_AFTER_SURE 2   /* ... when k = 0 wins whatever the acceptance */
#define SURE_OTHERS 8      /* ... and other sequences bring more rows */
#define OFF_MIN_SEEN 12.0  /* ... once this many (discounted) drafts were
                            * judged: a few unlucky first passes must not
                            * turn speculation off for good */

void spec_cost_add(struct spec_cost *c, double x, double y)
{
    c->w = c->w * COST_FORGET + 1.0;
    c->sx = c->sx * COST_FORGET + x;
    c->sy = c->sy * COST_FORGET + y;
    c->sxx = c->sxx * COST_FORGET + x * x;
    c->sxy = c->sxy * COST_FORGET + x * y;
    int r = (int)x;
    if ((double)r == x && r >= 1 && r < SPEC_COST_ROWS) {
        c->n_at[r] = c->n_at[r] * AT_FORGET + 1.0;
        c->y_at[r] = c->y_at[r] * AT_FORGET + y;
    }
}

double spec_cost_eval(const struct spec_cost *c, double x)
{
    if (c->w <= 0.0)
        return -1.0;
    int r = (int)x;
    if ((double)r == x && r >= 1 && r < SPEC_COST_ROWS &&
        c->n_at[r] >= AT_MIN)
        return c->y_at[r] / c->n_at[r];
    double mx = c->sx / c->w, my = c->sy / c->w;
    double vxx = c->sxx / c->w - mx * mx;
    double b;
    if (vxx > 1e-3) {
        b = (c->sxy / c->w - mx * my) / vxx;
        if (b < 0.0)
            b = 0.0;
    } else {
        b = 0.1 * my / (1.0 + 0.1 * mx); /* prior: +10%/row of a at x=0 */
    }
    double y = my + b * (x - mx);
    return y > 0.0 ? y : 1e-9;
}

void spec_adapt_init(struct spec_adapt *a, int k_max)
{
    if (k_max < 0)
        k_max = 0;
    if (k_max > SPEC_K_MAX)
        k_max = SPEC_K_MAX;
    a->k_max = k_max;
    for (int i = 0; i < SPEC_K_MAX; i++)
        a->acc[i] = a->seen[i] = 0.0;
    a->n_pass = 0;
    a->warm = 0;
    a->zero_run = 0;
    a->off = 0;
    a->pause_left = 0;
    a->pause_len = SPEC_PAUSE_MIN;
}

void spec_adapt_observe(struct spec_adapt *a, int k, int accepted)
{
    a->n_pass++;
    for (int i = 0; i < k && i <= accepted && i < SPEC_K_MAX; i++) {
        a->seen[i] = a->seen[i] * ACC_FORGET + 1.0;
        a->acc[i] = a->acc[i] * ACC_FORGET + (i < accepted ? 1.0 : 0.0);
    }
}

double spec_adapt_alpha(const struct spec_adapt *a, int i)
{
    if (i < 1 || i > SPEC_K_MAX)
        return 0.0;
    /* the prior for position i is the estimate at i-1: later positions
     * are assumed no better than earlier ones until seen */
    double prior = i == 1 ? PRIOR_ALPHA1 : spec_adapt_alpha(a, i - 1);
    return (a->acc[i - 1] + PRIOR_W * prior) / (a->seen[i - 1] + PRIOR_W);
}

double spec_adapt_expected(const struct spec_adapt *a, int k)
{
    double e = 1.0, run = 1.0;
    for (int i = 1; i <= k; i++) {
        run *= spec_adapt_alpha(a, i);
        e += run;
    }
    return e;
}

int spec_adapt_choose(struct spec_adapt *a, const struct spec_costs *c)
{
    if (a->k_max == 0)
        return 0;
    if (a->off) {
        if (--a->pause_left > 0)
            return 0;
        /* resume: this pass refills the MTP caches (no drafts possible
         * yet); old evidence counts for a quarter, so ~a dozen new drafts
         * decide whether to pause again, for twice as long */
        a->off = 0;
        a->zero_run = 0;
        for (int i = 0; i < SPEC_K_MAX; i++) {
            a->acc[i] *= 0.25;
            a->seen[i] *= 0.25;
        }
        if (a->pause_len < SPEC_PAUSE_MAX)
            a->pause_len *= 2;
        return 0;
    }
    double best = -1.0, best_ideal = 0.0, rate0 = 0.0;
    int kbest = 0, have = spec_cost_eval(&c->main, 1) >= 0.0;
    for (int k = 0; have && k <= a->k_max; k++) {
        /* k = 0 is plain decoding: once chosen for good the MTP caches
         * are no longer kept, so it pays neither refill nor drafts */
        double o = c->others > 0 ? c->others : 0.0;
        double cost = spec_cost_eval(&c->main, o + k + 1) * (k + 1) /
                      (o + k + 1);
        if (k > 0)
            cost += c->refill_s + (k - 1) * c->step_s;
        double rate = spec_adapt_expected(a, k) / cost;
        /* the best any k > 0 could do if every draft were accepted */
        if (k == 0)
            rate0 = rate;
        else if ((k + 1) / cost > best_ideal)
            best_ideal = (k + 1) / cost;
        if (rate > best * (1.0 + 1e-9)) {
            best = rate;
            kbest = k;
        }
    }
    /* k = 0 wins even with perfect acceptance (a big shared pass, where a
     * draft row costs about a whole token's row): no acceptance evidence
     * can change that. Only in a shared pass: alone, the few timings of
     * the sweep can say so by noise (T_main(k+1) of one slow pass) and a
     * pause would cost a short request all its speculation. */
    int sure = have && c->others > SURE_OTHERS && best_ideal <= rate0;
    /* initial sweep k = 0..k_max: cost samples at every row count (k = 0
     * measures the plain decode step) and a first look at every position;
     * skipped when the pass already says "k = 0 whatever the acceptance"
     * (the engine's cost line outlives sequences: a request joining a big
     * batch) */
    if (a->warm <= a->k_max && !sure)
        return a->warm++;
    /* no timed main call yet (before the step counted mixed calls this
     * returned k_max, which a big batch paid for with k_max + 1 rows per
     * sequence): look at k = 0 and 1 until there is one */
    if (!have)
        return (int)(a->n_pass & 1);
    /* pause after OFF_AFTER_SURE such verdicts */
    if (sure) {
        a->warm = a->k_max + 1;
        if (++a->zero_run >= OFF_AFTER_SURE) {
            a->off = 1;
            a->pause_left = a->pause_len;
        }
        return 0;
    }
    if (kbest == 0 && a->seen[0] < OFF_MIN_SEEN)
        return (int)(a->n_pass & 1); /* too little evidence: keep looking */
    if (kbest == 0 && ++a->zero_run >= OFF_AFTER) {
        a->off = 1; /* speculation does not pay here: plain decoding */
        a->pause_left = a->pause_len;
        return 0;
    }
    if (kbest > 0)
        a->zero_run = 0;
    /* probes: up (the next position's acceptance), and every other time
     * down (the cost of fewer rows, which the chosen k no longer times) */
    if (a->n_pass % PROBE_EVERY == PROBE_EVERY - 1) {
        int down = (a->n_pass / PROBE_EVERY) % 2 == 1;
        if (down && kbest > 0)
            kbest--;
        else if (kbest < a->k_max)
            kbest++;
    }
    return kbest;
}
