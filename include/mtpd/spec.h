/*
 * spec.h - speculative decoding with the model's MTP modules.
 *
 * A struct spec_engine wraps one model and one forward context (scratch,
 * thread pool). A struct spec_seq is one generation: it owns its KV cache
 * (main model + every MTP module), its RNG, its draft state and stats.
 *
 * spec_step() advances any number of sequences by one scheduling step:
 * a sequence still in its prompt gets its next prefill chunk; a sequence
 * that is generating gets one pass of
 *   draft k tokens (MTP) -> verify k+1 rows in ONE main forward shared by
 *   all sequences -> accept (greedy or rejection sampling) -> truncate the
 *   caches -> refill the MTP caches with exact entries (one MTP call per
 *   module for all sequences), whose last row drafts the next token.
 * Sequences in the same call may have different lengths and different k.
 * Greedy output is identical to plain decoding; sampled output has exactly
 * the main model's (tempered, truncated) distribution. docs/spec.md
 * describes the cache alignment and the adaptive-k rule.
 *
 * Threads: an engine and its sequences are used by one thread at a time
 * (spec_seq_cancel excepted).
 * Errors: negative MTPD_E* codes from model.h.
 */
#ifndef MTPD_SPEC_H
#define MTPD_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sample.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SPEC_K_AUTO (-1)

enum spec_finish {
    SPEC_RUNNING = 0,
    SPEC_FINISH_STOP,    /* EOS or a stop string / callback */
    SPEC_FINISH_LENGTH,  /* max_tokens reached */
    SPEC_FINISH_CONTEXT, /* the model's context / the sequence's capacity
                            is full */
    SPEC_FINISH_ERROR,   /* this sequence could not go on (see
                            spec_seq_error): e.g. its KV pool is out of
                            budget (MTPD_ENOMEM) */
    SPEC_FINISH_CANCELLED, /* spec_seq_cancel() */
};
/* "stop", "length", "context", "error", "cancelled", "running". */
const char *spec_finish_str(enum spec_finish f);

struct spec_seq;

/*
 * Called once per token about to be emitted, in order. Return
 *   SPEC_TOK_CONTINUE  emit it and go on,
 *   SPEC_TOK_STOP      emit it, then finish ("stop"),
 *   SPEC_TOK_DROP      do not emit it, finish ("stop") (e.g. the token
 *                      completed a stop string).
 * Tokens after a stop in the same pass are never emitted or reported.
 */
enum { SPEC_TOK_CONTINUE = 0, SPEC_TOK_STOP = 1, SPEC_TOK_DROP = 2 };
/* on_token runs on the thread that calls spec_step (the compute thread of
 * a server): it must not block. */
typedef int (*spec_token_fn)(void *ud, struct spec_seq *s, int32_t tok);

struct spec_params {
    struct spec_sampling sampling; /* temperature <= 0: greedy */
    uint64_t seed;
    int draft_tokens;  /* k: 0 = no speculation, 1..SPEC_K_MAX, SPEC_K_AUTO */
    int max_tokens;    /* most tokens to generate (>= 1) */
    int eos_id;        /* -1: none; ends generation, not emitted */
    int kv_capacity;   /* cache positions (prompt + output); 0 or more
                          than the model's max_position_embeddings: that */
    int auto_k_max;    /* largest k auto may choose (0: 4) */
    spec_token_fn on_token; /* may be NULL */
    void *ud;
};

/* Defaults: greedy, k = 1 if the model has MTP else 0 is decided later,
 * max_tokens 256, eos from the model config. */
void spec_params_default(struct spec_params *p, const struct mtpd_model *m);

struct spec_engine_opts {
    int n_threads;    /* compute threads (>= 1) */
    int max_rows;     /* rows per forward call (0: 256) */
    /* FR-Spec style draft head: the MTP head restricted to these ids (the
     * most frequent tokens) plus up to n_draft_ctx ids seen in prompts and
     * outputs. NULL / 0: the full vocabulary. Exactness does not depend on
     * the choice (see draft_head.h). */
    const int32_t *draft_vocab;
    int n_draft_vocab;
    int n_draft_ctx;
    /* Sequences draw their KV caches from this pool (not owned; it must
     * outlive the engine's sequences). NULL: the engine makes its own
     * unlimited pool. */
    struct mtpd_kv_pool *kv_pool;
};

struct spec_engine;

/* Creates the forward context. Returns 0 or a negative MTPD_E*. */
int spec_engine_new(const struct mtpd_model *m,
                    const struct spec_engine_opts *o,
                    struct spec_engine **out);
void spec_engine_free(struct spec_engine *e);
/* MTP modules the engine can draft with (0: plain decoding only). */
int spec_engine_n_mtp(const struct spec_engine *e);
const struct mtpd_model *spec_engine_model(const struct spec_engine *e);
/* The engine's forward context (e.g. for mtpd_ctx_set_attn_split). */
struct mtpd_ctx *spec_engine_ctx(struct spec_engine *e);
/* How often the compute threads fell back to one thread because the
 * machine was busy (kernels.h, kpool_run): (fallbacks, runs done alone,
 * all runs). */
void spec_engine_pool_stats(const struct spec_engine *e, long *fallbacks,
                            long *solo_runs, long *runs);

/*
 * A new sequence over prompt[0..n_prompt) (copied, n_prompt >= 1). k is
 * clamped to SPEC_K_MAX and set to 0 when the model has no MTP module
 * (spec_seq_notice() then says so). MTPD_EINVAL on bad params or a token
 * out of range, MTPD_EFULL if the prompt is longer than the capacity
 * (kv_capacity clamped to the model's context). The KV cache comes from
 * the engine's pool and takes pages only as it grows.
 */
int spec_seq_new(struct spec_engine *e, const struct spec_params *p,
                 const int32_t *prompt, int n_prompt, struct spec_seq **out);
void spec_seq_free(struct spec_seq *s);

/* Bytes of KV pool a sequence holding n positions takes (main + MTP). */
size_t spec_engine_kv_cost(const struct spec_engine *e, int n_positions);
struct mtpd_kv_pool *spec_engine_kv_pool(struct spec_engine *e);
/* Holds pool pages for n_positions positions up front (mtpd_kv_reserve),
 * so that the generation cannot run out of budget halfway: MTPD_ENOMEM
 * (nothing taken) or MTPD_EFULL (over the sequence's capacity). */
int spec_seq_reserve(struct spec_seq *s, int n_positions);

/*
 * Starts a new generation on an existing sequence (multi-turn, prefix
 * reuse): the cached positions that tokens[0..n) share with the sequence's
 * history (prompt + output so far) are kept, the rest are truncated, and
 * the remaining tokens become the new prompt, prefilled by the next steps.
 * At least the last token is always recomputed (its logits are needed).
 * p replaces the parameters (sampling, seed, k, max_tokens, on_token...);
 * output, finish and per-generation stats start again. The sequence may be
 * finished or not yet started, not in the middle of a step. Returns the
 * number of positions reused (>= 0), or MTPD_EINVAL / MTPD_EFULL /
 * MTPD_ENOMEM (then the sequence is unchanged).
 */
int spec_seq_restart(struct spec_seq *s, const struct spec_params *p,
                     const int32_t *tokens, int n);
/* The history the caches hold or will hold: prompt + emitted output. */
const int32_t *spec_seq_tokens(const struct spec_seq *s, int *n);

/* Finishes s with SPEC_FINISH_CANCELLED at the next spec_step (it takes no
 * more rows). Safe to call from any thread. */
void spec_seq_cancel(struct spec_seq *s);

/*
 * Advances every unfinished sequence of seqs[0..n) by one step (finished
 * ones are skipped). Failures are per sequence: a sequence that cannot go
 * on (context full, pool out of budget, a bad token) finishes alone with
 * its own reason and message (spec_seq_error); the others go on. Returns
 * 0, or a negative code only for an engine-wide failure (then every
 * sequence of the failed call is finished with SPEC_FINISH_ERROR and its
 * caches are as before the step).
 */
int spec_step(struct spec_engine *e, struct spec_seq **seqs, int n);

/* spec_step with a row budget for this step (0: the engine's max_rows;
 * at most that). Sequences that had work but got no row this step are
 * flagged in deferred[i] (may be NULL) and counted in *n_deferred (may be
 * NULL); decoding sequences are served before prompt chunks, in order. */
int spec_step_ex(struct spec_engine *e, struct spec_seq **seqs, int n,
                 int max_rows, unsigned char *deferred, int *n_deferred);

/* Runs one sequence to completion (spec_step in a loop). */
int spec_generate(struct spec_engine *e, struct spec_seq *s);

enum spec_finish spec_seq_finish(const struct spec_seq *s);
/* Why the sequence finished with SPEC_FINISH_ERROR (one line; "" when it
 * did not), and its MTPD_E* code (0 when none). */
const char *spec_seq_error(const struct spec_seq *s);
int spec_seq_error_code(const struct spec_seq *s);
/* Generated ids so far (EOS excluded), valid until the next step. */
const int32_t *spec_seq_output(const struct spec_seq *s, int *n);
const struct spec_stats *spec_seq_stats(const struct spec_seq *s);
/* The k of the last decode pass; with a != NULL also its accepted count. */
int spec_seq_last_k(const struct spec_seq *s);
int spec_seq_last_pass(const struct spec_seq *s, int *k, int *a);
/* One line for the user (e.g. "model has no MTP module: plain decoding"),
 * or NULL. */
const char *spec_seq_notice(const struct spec_seq *s);
struct mtpd_kv *spec_seq_kv(struct spec_seq *s);
/* Per-pass trace (k, accepted) of the last trace_cap passes when tracing
 * is enabled with spec_seq_trace(s, cap) before the first step. */
int spec_seq_trace(struct spec_seq *s, int cap);
int spec_seq_trace_get(const struct spec_seq *s, const int32_t **k,
                       const int32_t **accepted);

/* Test hooks (rollback self-check, a broken acceptance rule) are in
 * spec_test.h, which is not installed. */

#ifdef __cplusplus
}
#endif
#endif
