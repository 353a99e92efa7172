/*
 * stats.h - counters of one generation (and sums over many) and the
 * numbers derived from them.
 *
 * Definitions (docs/spec.md has the long form):
 * - a "draft" is one verify pass that carried k >= 1 drafted tokens;
 * - unconditional acceptance at position i (1-based, vLLM's metric):
 *     drafts with at least i accepted / drafts that drafted position i;
 * - conditional acceptance at position i:
 *     drafts with at least i accepted / drafts that drafted position i and
 *     accepted positions 1..i-1 (so position i was actually judged);
 * - mean accepted length = 1 + accepted / drafts (bonus token included,
 *   as vLLM counts it);
 * - prefill tokens/s = prompt tokens / prefill seconds;
 *   decode tokens/s = tokens generated after the first / decode seconds
 *   (the first token comes out of the prefill).
 */
#ifndef MTPD_SPEC_STATS_H
#define MTPD_SPEC_STATS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPEC_K_MAX 16 /* most draft tokens in one pass */

struct spec_stats {
    int64_t prompt_tokens;
    int64_t generated_tokens; /* emitted ids (EOS not counted) */
    int64_t passes;           /* main-model decode passes (any k) */
    int64_t drafts;           /* passes with k >= 1 */
    int64_t drafted_tokens;
    int64_t accepted_tokens;
    int64_t drafted_at[SPEC_K_MAX];  /* drafts that drafted position i+1 */
    int64_t reached_at[SPEC_K_MAX];  /* ... and accepted 1..i */
    int64_t accepted_at[SPEC_K_MAX]; /* ... and accepted position i+1 */
    int64_t k_hist[SPEC_K_MAX + 1];  /* passes per k */
    int64_t pauses;   /* times draft-tokens auto paused speculation */
    /* Seconds are this sequence's share of each step's wall time (a
     * phase's time split by the rows each sequence had in it), so they
     * add up over sequences that share passes. */
    double prefill_s; /* prompt forward + MTP prefill */
    double decode_s;  /* after the prefill */
    double draft_s;   /* of decode_s: MTP drafting calls */
    double verify_s;  /* of decode_s: main-model verify calls */
    double refill_s;  /* of decode_s: MTP refill calls */
};

/* Records one pass that drafted k tokens of which the first a were
 * accepted (a <= k). k == 0 is a plain decode pass. */
void spec_stats_pass(struct spec_stats *s, int k, int a);
/* agg += s (counters and seconds). */
void spec_stats_add(struct spec_stats *agg, const struct spec_stats *s);

/* Derived numbers; 0 when undefined (no data). i is 1-based. */
double spec_stats_accept_uncond(const struct spec_stats *s, int i);
double spec_stats_accept_cond(const struct spec_stats *s, int i);
double spec_stats_accept_rate(const struct spec_stats *s); /* acc/drafted */
double spec_stats_mean_accepted_len(const struct spec_stats *s);
double spec_stats_tokens_per_pass(const struct spec_stats *s);
double spec_stats_prefill_tps(const struct spec_stats *s);
double spec_stats_decode_tps(const struct spec_stats *s);
/* Deepest position with any draft (0 if none). */
int spec_stats_max_k(const struct spec_stats *s);

/* Writes the stats as one JSON object (no trailing newline) into buf.
 * Returns the length it needed (like snprintf); truncated if >= len. */
int spec_stats_json(const struct spec_stats *s, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
