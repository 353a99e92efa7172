/*
 * accept.h - the acceptance rule of speculative decoding, as pure
 * functions (the verify pass in verify.c applies them row by row).
 *
 * Sampling (Leviathan et al. 2023, Chen et al. 2023): a draft token d was
 * drawn from the draft distribution q; with p the target distribution at
 * the same position, accept with probability min(1, p(d)/q(d)); on
 * rejection emit a token drawn from normalize(max(0, p - q)) and stop;
 * after k accepted drafts emit a bonus token drawn from p. Each emitted
 * token is then distributed exactly as p.
 * Greedy: accept while the draft equals the target argmax; the token after
 * the accepted prefix is the target argmax at that row.
 */
#ifndef MTPD_SPEC_ACCEPT_H
#define MTPD_SPEC_ACCEPT_H

#include <stdint.h>

#include "sample.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Returns 1 to accept draft token d (drawn from q), 0 to reject.
 * Always consumes exactly one uniform from r. break_accept != 0 accepts
 * unconditionally (a deliberately wrong rule, for tests only). */
int spec_accept_token(int32_t d, const float *p, const float *q,
                      struct spec_rng *r, int break_accept);

/* Token after a rejection: drawn from normalize(max(0, p - q)) over n ids.
 * scratch: n floats. If p <= q everywhere (possible only through
 * rounding), draws from p. Consumes one uniform. */
int32_t spec_sample_residual(const float *p, const float *q, int n,
                             float *scratch, struct spec_rng *r);

/* Greedy rule over one pass: draft[0..k), target[0..k] the target argmax
 * at each verified row. Returns the accepted count a (0..k) and sets
 * *next = target[a]. */
int spec_accept_greedy(const int32_t *draft, int k, const int32_t *target,
                       int32_t *next);

#ifdef __cplusplus
}
#endif
#endif
