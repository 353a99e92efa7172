/*
 * srv_engine.h - the daemon's calls into spec/'s serving API, in one
 * place: prefix reuse (spec_seq_restart), reservations, cancel, the
 * batched step with a row budget, and the KV cost of a sequence.
 *
 * Compute thread only (except srv_kv_cost, which reads constants).
 */
#ifndef MTPD_SRV_ENGINE_H
#define MTPD_SRV_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "spec.h"

/* Starts a generation over tokens[0..n) on *seq: a new sequence when *seq
 * is NULL, else the session's sequence keeps the prefix it shares with
 * tokens (reuse = 0, for benchmarks: a new sequence every time).
 * Returns the positions reused (>= 0) or a negative MTPD_E*
 * (then *seq is as before). */
int srv_seq_begin(struct spec_engine *e, struct spec_seq **seq,
                  const struct spec_params *p, const int32_t *tokens, int n,
                  int reuse);
/* Holds KV for n positions up front: 0, MTPD_ENOMEM, MTPD_EFULL. */
int srv_seq_reserve(struct spec_seq *s, int n);
/* Asks the library to end s at the next step. Returns 1 when the next
 * step finishes it (SPEC_FINISH_CANCELLED), 0 when the caller must take
 * it out of the batch itself. */
int srv_seq_cancel(struct spec_seq *s);
/* One batched step over seqs[0..n) with a row budget (0: the engine's). */
int srv_step(struct spec_engine *e, struct spec_seq **seqs, int n,
             int max_rows);
/* The KV pool all sessions draw from, with the budget (bytes); NULL
 * when the library has none yet. 0 or a negative MTPD_E*. */
int srv_pool_new(const struct mtpd_model *m, size_t budget,
                 struct mtpd_kv_pool **out);
void srv_pool_free(struct mtpd_kv_pool *p);
/* Why s finished with SPEC_FINISH_ERROR ("" when it did not). */
const char *srv_seq_error(const struct spec_seq *s);
/* Bytes of pool memory s holds now. */
size_t srv_seq_kv_bytes(struct spec_seq *s);
/* Bytes of KV budget a sequence of n positions takes. */
size_t srv_kv_cost(const struct spec_engine *e, int n);

#endif
