/*
 * stats.c - speculative decoding counters (see stats.h).
 */
#include "stats.h"

#include <stdarg.h>
#include <stdio.h>

void spec_stats_pass(struct spec_stats *s, int k, int a)
{
    if (k < 0)
        k = 0;
    if (k > SPEC_K_MAX)
        k = SPEC_K_MAX;
    if (a > k)
        a = k;
    s->passes++;
    s->k_hist[k]++;
    if (k == 0)
        return;
    s->drafts++;
    s->drafted_tokens += k;
    s->accepted_tokens += a;
    for (int i = 0; i < k; i++)
        s->drafted_at[i]++;
    /* position i+1 (0-based i) is reached when the first i were accepted */
    for (int i = 0; i < k && i <= a; i++)
        s->reached_at[i]++;
    for (int i = 0; i < a; i++)
        s->accepted_at[i]++;
}

void spec_stats_add(struct spec_stats *agg, const struct spec_stats *s)
{
    agg->prompt_tokens += s->prompt_tokens;
    agg->generated_tokens += s->generated_tokens;
    agg->passes += s->passes;
    agg->drafts += s->drafts;
    agg->drafted_tokens += s->drafted_tokens;
    agg->accepted_tokens += s->accepted_tokens;
    for (int i = 0; i < SPEC_K_MAX; i++) {
        agg->drafted_at[i] += s->drafted_at[i];
        agg->reached_at[i] += s->reached_at[i];
        agg->accepted_at[i] += s->accepted_at[i];
    }
    for (int i = 0; i <= SPEC_K_MAX; i++)
        agg->k_hist[i] += s->k_hist[i];
    agg->pauses += s->pauses;
    agg->prefill_s += s->prefill_s;
    agg->decode_s += s->decode_s;
    agg->draft_s += s->draft_s;
    agg->verify_s += s->verify_s;
    agg->refill_s += s->refill_s;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

double spec_stats_accept_uncond(const struct spec_stats *s, int i)
{
    if (i < 1 || i > SPEC_K_MAX)
        return 0.0;
    return ratio((double)s->accepted_at[i - 1], (double)s->drafted_at[i - 1]);
}

double spec_stats_accept_cond(const struct spec_stats *s, int i)
{
    if (i < 1 || i > SPEC_K_MAX)
        return 0.0;
    return ratio((double)s->accepted_at[i - 1], (double)s->reached_at[i - 1]);
}

double spec_stats_accept_rate(const struct spec_stats *s)
{
    return ratio((double)s->accepted_tokens, (double)s->drafted_tokens);
}

double spec_stats_mean_accepted_len(const struct spec_stats *s)
{
    return s->drafts > 0 ? 1.0 + ratio((double)s->accepted_tokens,
                                       (double)s->drafts)
                         : 0.0;
}

double spec_stats_tokens_per_pass(const struct spec_stats *s)
{
    /* every pass emits accepted + 1 tokens before stop conditions */
    return ratio((double)(s->passes + s->accepted_tokens), (double)s->passes);
}

double spec_stats_prefill_tps(const struct spec_stats *s)
{
    return ratio((double)s->prompt_tokens, s->prefill_s);
}

double spec_stats_decode_tps(const struct spec_stats *s)
{
    int64_t n = s->generated_tokens > 0 ? s->generated_tokens - 1 : 0;
    return ratio((double)n, s->decode_s);
}

int spec_stats_max_k(const struct spec_stats *s)
{
    int k = 0;
    for (int i = 0; i < SPEC_K_MAX; i++)
        if (s->drafted_at[i] > 0)
            k = i + 1;
    return k;
}

/* Appends with snprintf semantics: keeps counting past the end. */
static void put(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
    size_t room = *at < len ? len - *at : 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(room ? buf + *at : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        *at += (size_t)n;
}

int spec_stats_json(const struct spec_stats *s, char *buf, size_t len)
{
    size_t at = 0;
    int kmax = spec_stats_max_k(s);
    if (len)
        buf[0] = 0;
    put(buf, len, &at, "{\"prompt_tokens\": %lld", (long long)s->prompt_tokens);
    put(buf, len, &at, ", \"generated_tokens\": %lld",
        (long long)s->generated_tokens);
    put(buf, len, &at, ", \"verify_passes\": %lld", (long long)s->passes);
    put(buf, len, &at, ", \"drafts\": %lld", (long long)s->drafts);
    put(buf, len, &at, ", \"drafted_tokens\": %lld",
        (long long)s->drafted_tokens);
    put(buf, len, &at, ", \"accepted_tokens\": %lld",
        (long long)s->accepted_tokens);
    put(buf, len, &at, ", \"acceptance_rate\": %.6f",
        spec_stats_accept_rate(s));
    put(buf, len, &at, ", \"acceptance_by_position\": [");
    for (int i = 1; i <= kmax; i++)
        put(buf, len, &at, i > 1 ? ", %.6f" : "%.6f",
            spec_stats_accept_uncond(s, i));
    put(buf, len, &at, "], \"acceptance_by_position_conditional\": [");
    for (int i = 1; i <= kmax; i++)
        put(buf, len, &at, i > 1 ? ", %.6f" : "%.6f",
            spec_stats_accept_cond(s, i));
    put(buf, len, &at, "], \"mean_accepted_length\": %.6f",
        spec_stats_mean_accepted_len(s));
    put(buf, len, &at, ", \"tokens_per_pass\": %.6f",
        spec_stats_tokens_per_pass(s));
    put(buf, len, &at, ", \"k_histogram\": [");
    int khi = 0;
    for (int i = 0; i <= SPEC_K_MAX; i++)
        if (s->k_hist[i])
            khi = i;
    for (int i = 0; i <= khi; i++)
        put(buf, len, &at, i ? ", %lld" : "%lld", (long long)s->k_hist[i]);
    put(buf, len, &at, "], \"auto_pauses\": %lld", (long long)s->pauses);
    put(buf, len, &at, ", \"prefill_seconds\": %.6f", s->prefill_s);
    put(buf, len, &at, ", \"decode_seconds\": %.6f", s->decode_s);
    put(buf, len, &at, ", \"draft_seconds\": %.6f", s->draft_s);
    put(buf, len, &at, ", \"verify_seconds\": %.6f", s->verify_s);
    put(buf, len, &at, ", \"refill_seconds\": %.6f", s->refill_s);
    put(buf, len, &at, ", \"prefill_tokens_per_s\": %.3f",
        spec_stats_prefill_tps(s));
    put(buf, len, &at, ", \"decode_tokens_per_s\": %.3f}",
        spec_stats_decode_tps(s));
    return (int)at;
}
