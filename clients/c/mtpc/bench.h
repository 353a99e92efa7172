/*
 * bench.h - `mtpc bench`: per-request records, the speculation counters
 * rebuilt from each request's STATS, aggregates and the report.
 *
 * STATS carries acceptance as ratios; summing requests needs the counts
 * behind them. From k_histogram (passes per draft length k) and the
 * per-position ratios we rebuild, per request:
 *   drafted_at[i]  = drafts that drafted position i+1 = sum_{k>i} k_hist[k]
 *   accepted_at[i] = drafted_at[i] * unconditional[i]   (exact, rounded)
 *   reached_at[i]  = accepted_at[i] / conditional[i]     when that is > 0,
 * else bounded by the drafts that accepted position i:
 *   accepted_at[i-1] - k_hist[i] <= reached_at[i] <= accepted_at[i-1];
 * equal bounds make it exact (always so with one draft length); otherwise
 * the upper bound is used and the numbers are marked approximate.
 */
#ifndef MTPC_BENCH_H
#define MTPC_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "mtp_client.h"

/* Speculation counters that add up across requests. */
struct spec_counts {
    int64_t requests, prompt_tokens, generated_tokens;
    int64_t passes, drafts, drafted, accepted;
    int64_t k_hist[MTP_K_MAX + 1];
    int64_t drafted_at[MTP_K_MAX], reached_at[MTP_K_MAX];
    int64_t accepted_at[MTP_K_MAX];
    bool approx; /* some reached_at only bounded (see above) */
};

void counts_from_stats(const struct mtp_stats *s, struct spec_counts *c);
void counts_add(struct spec_counts *agg, const struct spec_counts *c);
/* Derived numbers, 0 when undefined; i is 0-based. */
double counts_uncond(const struct spec_counts *c, int i);
double counts_cond(const struct spec_counts *c, int i);
double counts_rate(const struct spec_counts *c);
double counts_mean_len(const struct spec_counts *c);
double counts_tokens_per_pass(const struct spec_counts *c);
/* Deepest drafted position (0 if none), last nonzero k_hist + 1. */
int counts_max_pos(const struct spec_counts *c);
int counts_hist_len(const struct spec_counts *c);
/* Drafts that accepted exactly a tokens, a in 0..MTP_K_MAX. */
int64_t counts_accepted_exactly(const struct spec_counts *c, int a);

/* One request. Times are seconds since the bench started. */
struct req_rec {
    int run;          /* index into the runs */
    int prompt;       /* index into the prompts */
    bool ran;         /* sent (else: interrupted or no connection left) */
    double t_start, t_first, t_end;
    int64_t n_tokens; /* generated ids */
    float *itl_ms;    /* per token after the first (owned) */
    int n_itl, cap_itl;
    char finish_reason[16];
    int status;       /* 0 or enum mtp_status */
    char error[300];
    struct mtp_stats stats;
    struct spec_counts counts;
};

/* One pass over the prompts at one concurrency and draft setting. */
struct run_agg {
    int concurrency;
    bool baseline;    /* draft_tokens 0 (--compare) */
    int draft_tokens; /* as sent: 0..16, MTP_DRAFT_AUTO, MTP_DRAFT_DEFAULT */
    int n_req, n_err;
    double t_begin, t_end;
    int64_t tokens;
    double tok_s;
    double ttft_p50, ttft_p99, itl_p50, itl_p99, lat_p50, lat_p99;
    double speedup; /* tok_s over the baseline's at the same concurrency */
    struct spec_counts spec;
};

/* p-th percentile (0..100, nearest rank) of v (sorted in place). */
double percentile(double *v, size_t n, double p);
/* Fills the run's aggregates from its records. */
void run_aggregate(struct run_agg *run, const struct req_rec *recs,
                   size_t n_recs, int run_index);

struct bench_cfg {
    const char *prompts_file;
    int n_prompts, n_requests;
    int concurrency[16], n_conc;
    int draft_tokens;
    double temperature;
    int max_tokens;
    int64_t seed;
    bool compare, ignore_eos;
    const char *out_dir;
};

/* Reads the prompts file (prompts.c): returns the count (-1 after a
 * message), *prompts pointing into *buf; the caller frees both. */
int load_prompts(const char *path, char **buf, char ***prompts);

/* The report (bench_report.c); total is over the speculative runs. */
void report_table(FILE *f, const struct bench_cfg *cfg,
                  const struct run_agg *runs, int n_runs,
                  const struct spec_counts *total);
/* results.json; total: every request (what the daemon's `stats` sums),
 * spec_total: the speculative runs only (without --compare's baseline).
 * daemon_stats_json may be NULL. Returns 0 or -1. */
int report_json(FILE *f, const struct bench_cfg *cfg,
                const struct run_agg *runs, int n_runs,
                const struct spec_counts *total,
                const struct spec_counts *spec_total,
                const struct req_rec *recs,
                size_t n_recs, const char *model, const char *daemon_stats);
/* PNG charts in dir with gnuplot; prints what it did on stderr. */
int report_charts(const char *dir, const struct bench_cfg *cfg,
                  const struct run_agg *runs, int n_runs,
                  const struct spec_counts *total);

#endif
