/*
 * bench_stats.c - speculation counts rebuilt from STATS (bench.h says
 * how), their sums and ratios, percentiles, per-run aggregates.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

void counts_from_stats(const struct mtp_stats *s, struct spec_counts *c)
{
    memset(c, 0, sizeof *c);
    c->requests = 1;
    c->prompt_tokens = s->prompt_tokens;
    c->generated_tokens = s->generated_tokens;
    c->passes = s->verify_passes;
    c->drafts = s->drafts;
    c->drafted = s->drafted_tokens;
    c->accepted = s->accepted_tokens;
    for (int k = 0; k < s->n_k_histogram; k++)
        c->k_hist[k] = s->k_histogram[k];
    if (s->has_counts) { /* the daemon sent the counts themselves */
        for (int i = 0; i < MTP_K_MAX; i++) {
            c->drafted_at[i] = s->drafted_by_position[i];
            c->reached_at[i] = s->reached_by_position[i];
            c->accepted_at[i] = s->accepted_by_position[i];
        }
        return;
    }
    for (int i = 0; i < MTP_K_MAX; i++)
        for (int k = i + 1; k <= MTP_K_MAX; k++)
            c->drafted_at[i] += c->k_hist[k];
    for (int i = 0; i < MTP_K_MAX && i < s->n_positions; i++)
        c->accepted_at[i] =
            llround(s->acceptance_by_position[i] * (double)c->drafted_at[i]);
    for (int i = 0; i < MTP_K_MAX; i++) {
        if (i == 0) {
            c->reached_at[0] = c->drafted_at[0];
            continue;
        }
        double cond = i < s->n_positions
                          ? s->acceptance_by_position_conditional[i]
                          : 0.0;
        if (c->accepted_at[i] > 0 && cond > 0) {
            c->reached_at[i] = llround((double)c->accepted_at[i] / cond);
            continue;
        }
        int64_t hi = c->accepted_at[i - 1] < c->drafted_at[i]
                         ? c->accepted_at[i - 1]
                         : c->drafted_at[i];
        int64_t lo = c->accepted_at[i - 1] - c->k_hist[i];
        if (lo < 0)
            lo = 0;
        if (lo != hi)
            c->approx = true;
        c->reached_at[i] = hi;
    }
}

void counts_add(struct spec_counts *a, const struct spec_counts *c)
{
    a->requests += c->requests;
    a->prompt_tokens += c->prompt_tokens;
    a->generated_tokens += c->generated_tokens;
    a->passes += c->passes;
    a->drafts += c->drafts;
    a->drafted += c->drafted;
    a->accepted += c->accepted;
    for (int k = 0; k <= MTP_K_MAX; k++)
        a->k_hist[k] += c->k_hist[k];
    for (int i = 0; i < MTP_K_MAX; i++) {
        a->drafted_at[i] += c->drafted_at[i];
        a->reached_at[i] += c->reached_at[i];
        a->accepted_at[i] += c->accepted_at[i];
    }
    a->approx |= c->approx;
}

static double ratio(int64_t a, int64_t b)
{
    return b > 0 ? (double)a / (double)b : 0.0;
}

double counts_uncond(const struct spec_counts *c, int i)
{
    return ratio(c->accepted_at[i], c->drafted_at[i]);
}

double counts_cond(const struct spec_counts *c, int i)
{
    return ratio(c->accepted_at[i], c->reached_at[i]);
}

double counts_rate(const struct spec_counts *c)
{
    return ratio(c->accepted, c->drafted);
}

double counts_mean_len(const struct spec_counts *c)
{
    return c->drafts > 0 ? 1.0 + ratio(c->accepted, c->drafts) : 0.0;
}

double counts_tokens_per_pass(const struct spec_counts *c)
{
    return ratio(c->passes + c->accepted, c->passes);
}

int counts_max_pos(const struct spec_counts *c)
{
    int n = 0;
    for (int i = 0; i < MTP_K_MAX; i++)
        if (c->drafted_at[i] > 0)
            n = i + 1;
    return n;
}

int counts_hist_len(const struct spec_counts *c)
{
    int n = 1;
    for (int k = 0; k <= MTP_K_MAX; k++)
        if (c->k_hist[k])
            n = k + 1;
    return n;
}

int64_t counts_accepted_exactly(const struct spec_counts *c, int a)
{
    /* drafts with at least a accepted: all drafts for a = 0 */
    int64_t ge = a == 0 ? c->drafts : c->accepted_at[a - 1];
    int64_t ge1 = a < MTP_K_MAX ? c->accepted_at[a] : 0;
    return ge - ge1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double percentile(double *v, size_t n, double p)
{
    if (!n)
        return 0.0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1)
        rank = 1;
    return v[rank - 1];
}

void run_aggregate(struct run_agg *run, const struct req_rec *recs,
                   size_t n_recs, int run_index)
{
    size_t n_itl = 0, n = 0;
    for (size_t i = 0; i < n_recs; i++)
        if (recs[i].run == run_index)
            n_itl += (size_t)recs[i].n_itl;
    double *ttft = calloc(n_recs + 1, sizeof *ttft);
    double *lat = calloc(n_recs + 1, sizeof *lat);
    double *itl = calloc(n_itl + 1, sizeof *itl);
    memset(&run->spec, 0, sizeof run->spec);
    run->n_req = run->n_err = 0;
    run->tokens = 0;
    run->t_begin = INFINITY;
    run->t_end = 0;
    size_t k = 0;
    for (size_t i = 0; i < n_recs && ttft && lat && itl; i++) {
        const struct req_rec *r = &recs[i];
        if (r->run != run_index)
            continue;
        run->n_req++;
        if (!r->ran) {
            run->n_err++;
            continue;
        }
        if (r->t_start < run->t_begin)
            run->t_begin = r->t_start;
        if (r->t_end > run->t_end)
            run->t_end = r->t_end;
        if (r->status) {
            run->n_err++;
            continue;
        }
        run->tokens += r->n_tokens;
        counts_add(&run->spec, &r->counts);
        lat[n] = (r->t_end - r->t_start) * 1e3;
        ttft[n++] = ((r->t_first ? r->t_first : r->t_end) - r->t_start) * 1e3;
        for (int j = 0; j < r->n_itl; j++)
            itl[k++] = r->itl_ms[j];
    }
    double wall = run->t_end - run->t_begin;
    run->tok_s = wall > 0 ? (double)run->tokens / wall : 0.0;
    run->ttft_p50 = percentile(ttft, n, 50);
    run->ttft_p99 = percentile(ttft, n, 99);
    run->lat_p50 = percentile(lat, n, 50);
    run->lat_p99 = percentile(lat, n, 99);
    run->itl_p50 = percentile(itl, k, 50);
    run->itl_p99 = percentile(itl, k, 99);
    free(ttft);
    free(lat);
    free(itl);
}
