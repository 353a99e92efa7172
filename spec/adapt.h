/*
 * adapt.h - choosing the draft length k per pass ("--draft-tokens auto").
 *
 * The rule (docs/spec.md explains it): pick the k in [0, k_max] that
 * maximises expected tokens per second,
 *     E(k) / C(k),
 *     E(k) = 1 + sum_{i=1..k} prod_{j=1..i} alpha_j
 *     C(k) = T_main(k + 1) + T_refill + max(0, k - 1) * T_step
 * (C(0) = T_main(1): plain decoding pays no MTP work)
 * where alpha_j is this sequence's recent conditional acceptance at draft
 * position j (discounted counts with a prior), T_main(r) the measured time
 * of a main-model pass over r rows (a recent mean per row count, else a
 * least-squares line with forgetting; spec_cost_eval),
 * T_refill the measured MTP refill time per pass and T_step the measured
 * time of one recursive MTP draft step. The first k_max + 1 passes sweep
 * k = 0..k_max; every 16th pass tries k* + 1 or, every other time, k* - 1
 * so the estimates for the next position and the neighbouring pass costs
 * stay fresh; when k = 0 wins 8 times in a row speculation is
 * paused for the sequence (off = 1): no MTP work at all, the engine only
 * logs the main model's hidden states. That needs about a dozen judged
 * drafts first: with less evidence a k = 0 verdict alternates with k = 1
 * passes. A pause lasts pause_len passes (32, doubling up to
 * SPEC_PAUSE_MAX while speculation keeps not paying); then off = 0 again,
 * the engine catches the MTP caches up from its log in one batched call,
 * and the acceptance evidence, scaled down, is gathered afresh - text
 * that drafts badly at first (the start of an answer) can draft well
 * later.
 */
#ifndef MTPD_SPEC_ADAPT_H
#define MTPD_SPEC_ADAPT_H

#include <stdint.h>

#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Seconds as a function of rows: y ~ a + b * x fitted with exponential
 * forgetting, and a recent mean per whole row count up to
 * SPEC_COST_ROWS - 1. Shared by all sequences of an engine (hardware
 * property). */
#define SPEC_COST_ROWS (SPEC_K_MAX + 2)
struct spec_cost {
    double w, sx, sy, sxx, sxy;
    double n_at[SPEC_COST_ROWS], y_at[SPEC_COST_ROWS];
};

void spec_cost_add(struct spec_cost *c, double rows, double seconds);
/* Predicted seconds for rows; < 0 when there is no data yet. A whole row
 * count with two or more (discounted) samples of its own gets their
 * mean: a MoE pass's cost is concave in its rows (a few rows already
 * wake most experts), so a line through k = 2..4 passes put a plain
 * step at twice its cost and auto decoded slower than k = 0. Other row
 * counts read the line; with data at a single row count its slope is
 * taken as 10% of the intercept per row (a prior that is replaced as
 * soon as two row counts are seen). */
double spec_cost_eval(const struct spec_cost *c, double rows);

struct spec_adapt {
    int k_max;
    double acc[SPEC_K_MAX]; /* discounted accepted counts per position */
    double seen[SPEC_K_MAX]; /* discounted reached counts per position */
    int64_t n_pass;
    int warm;     /* passes of the initial sweep done */
    int zero_run; /* consecutive choices of k = 0 */
    int off;      /* speculation paused */
    int pause_left, pause_len; /* passes left in this pause, next pause */
};

#define SPEC_PAUSE_MIN 32
#define SPEC_PAUSE_MAX 128 /* passes: the engine logs this many hidden rows */

void spec_adapt_init(struct spec_adapt *a, int k_max);
/* Feed one pass: k drafted, first `accepted` accepted. */
void spec_adapt_observe(struct spec_adapt *a, int k, int accepted);
/* Estimated conditional acceptance at position i (1-based). */
double spec_adapt_alpha(const struct spec_adapt *a, int i);
/* E(k) above. */
double spec_adapt_expected(const struct spec_adapt *a, int k);

struct spec_costs {
    struct spec_cost main; /* main forward: rows -> seconds */
    double refill_s;       /* EMA seconds of one sequence's MTP refill
                              per pass (its share when sequences share) */
    double step_s;         /* EMA seconds of one recursive draft step, per
                              sequence */
    /* Rows other sequences bring to the main pass this sequence is about
     * to share (0: alone). With o > 0 the main term of C(k) is the
     * sequence's row share of the shared pass,
     *     T_main(o + k + 1) * (k + 1) / (o + k + 1),
     * as the stats charge it: a draft row then costs the pass's time per
     * row, not the small step from r to r + 1 rows of a lone sequence. */
    double others;
};

/* The k for the next pass. Deterministic given its inputs. */
int spec_adapt_choose(struct spec_adapt *a, const struct spec_costs *c);

#ifdef __cplusplus
}
#endif
#endif
