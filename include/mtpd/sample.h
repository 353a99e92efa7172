/*
 * sample.h - seeded RNG and the token distributions speculative decoding
 * samples from: temperature, top-k, top-p over a logits row.
 *
 * Pure functions over caller buffers; nothing here allocates. The same
 * transformation (spec_probs) is applied to the main model's logits (the
 * target p) and to the MTP head's logits (the draft q), so with the same
 * settings both live on the same support rules.
 */
#ifndef MTPD_SPEC_SAMPLE_H
#define MTPD_SPEC_SAMPLE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* xoshiro256** seeded through splitmix64: one per sequence, reproducible
 * for a given seed on every platform. */
struct spec_rng {
    uint64_t s[4];
};

void spec_rng_seed(struct spec_rng *r, uint64_t seed);
uint64_t spec_rng_next(struct spec_rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double spec_rng_uniform(struct spec_rng *r);

/* Sampling settings. temperature <= 0 means greedy (argmax). top_k <= 0
 * or >= vocab: off. top_p >= 1 (or <= 0): off. */
struct spec_sampling {
    float temperature;
    int top_k;
    float top_p;
};

static inline int spec_sampling_greedy(const struct spec_sampling *s)
{
    return !(s->temperature > 0.0f);
}

/* Index of the largest value; the lowest index wins ties (numpy argmax).
 * NaN entries are never chosen unless every entry is NaN (returns 0). */
int32_t spec_argmax(const float *x, int n);

/*
 * out[0..n) = the distribution to sample from for one logits row:
 * softmax(logits / T), restricted to the top_k largest (ties broken by
 * the lower id) and then to the smallest prefix in descending order whose
 * mass reaches top_p, renormalised. Greedy settings give a one-hot at the
 * argmax. idx is caller scratch of n int32 (used only for top-k/top-p).
 * Returns the number of tokens with nonzero probability (>= 1).
 */
int spec_probs(const struct spec_sampling *s, const float *logits, int n,
               float *out, int32_t *idx);

/* Draws one id from probabilities p[0..n) (need not sum exactly to 1:
 * scaled by their sum). Consumes one spec_rng_uniform. Never returns an
 * id with p == 0 unless all are zero (then the argmax, i.e. 0). */
int32_t spec_sample(const float *p, int n, struct spec_rng *r);

#ifdef __cplusplus
}
#endif
#endif
