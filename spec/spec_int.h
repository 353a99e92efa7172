/*
 * spec_int.h - engine and sequence internals shared by the spec/ files.
 * Not a public header: daemon/ and tests use spec.h.
 *
 * Sequence state between passes ("decode state"):
 *   toks[0..n_toks)  prompt + generated ids; toks[n_toks-1] is the pending
 *                    token x_L, emitted but not yet run through the model
 *   main cache len   L = n_toks - 1
 *   MTP module m     exact rows 0..L-1 (len L): row q takes token
 *                    x_{q+1} with the main hidden h_q (m = 0) or module
 *                    m-1's output at row q-1 (zeros at q = 0)
 *   stash[i]         module i's output hidden at its last exact row
 *   mtp_logits       module 0's logits at row L-1: the draft of x_{L+1}
 * During a pass the drafts d_1..d_k sit in toks[L+1..L+k].
 */
#ifndef MTPD_SPEC_INT_H
#define MTPD_SPEC_INT_H

#include <stdatomic.h>

#include "adapt.h"
#include "draft_head.h"
#include "spec.h"

/* One sequence's part of an MTP call. */
struct spec_slot {
    int seq;    /* index into the caller's sequence array */
    int row;    /* first output row in the call */
    int p0;     /* position of that row */
    int n;      /* rows */
    int logits; /* last row's logits are the next d_1 */
};

struct spec_engine {
    const struct mtpd_model *m;
    struct mtpd_ctx *ctx;
    int vocab, hidden, n_mtp, max_rows;
    int break_accept; /* spec_test.h */
    struct mtpd_kv_pool *pool;     /* where sequences' caches come from */
    struct mtpd_kv_pool *own_pool; /* owned when the options gave none */
    struct spec_costs costs;
    /* scratch, sized once */
    float *hin;   /* max_rows * hidden: packed MTP input hidden states */
    float *hout;  /* max_rows * hidden: previous MTP call's output rows */
    float *pbuf;  /* vocab: target distribution of one row */
    float *rbuf;  /* vocab: residual distribution */
    int32_t *ibuf; /* vocab: index scratch for top-k/top-p */
    struct mtpd_seq *mseq;      /* max_rows */
    struct mtpd_mtp_seq *qseq;  /* max_rows */
    struct spec_seq **act;      /* max_rows: sequences in the current call */
    int *rbase;                 /* max_rows: first output row per call seq */
    int *r_p0, *r_off, *r_n;    /* max_rows: refill bookkeeping per seq */
    struct spec_slot *slots;    /* max_rows + MTPD_MAX_MTP */
    /* restricted draft head (n_sub > 0): the fixed part, one packed copy
     * per module, and room for n_ctx context ids per sequence */
    int n_sub, n_ctx;
    struct spec_draft_head dh[MTPD_MAX_MTP];
    float *sub;    /* [max_rows + MTPD_MAX_MTP, n_sub] subset logits */
    float *csub;   /* [max_rows + MTPD_MAX_MTP, n_ctx] context-id logits */
    float *gather; /* [max_rows + MTPD_MAX_MTP, hidden] rows to project */
    float *lbuf;   /* vocab: one scattered draft logits row */
    int *rowidx;   /* [max_rows + MTPD_MAX_MTP] */
    int *rowseq;   /* [max_rows + MTPD_MAX_MTP]: sequence of each rowidx */
    int catchup;   /* the last refill caught a paused sequence up */
    double *tshare; /* [3 * max_rows]: a step's time shares (stats) */
};

/* Phases of a step whose wall time is shared out by rows (stats). */
enum { SPEC_PH_DRAFT, SPEC_PH_MAIN, SPEC_PH_REFILL, SPEC_PH_N };

struct spec_seq {
    struct spec_engine *e;
    struct spec_params p;
    struct mtpd_kv *kv;
    int cap;        /* KV positions: at most the model's context */
    int32_t *toks;  /* toks_cap: grows with the sequence */
    int toks_cap;
    int n_toks;
    int n_prompt;
    int32_t *out;   /* generated ids (out_cap >= max_tokens) */
    int n_out, out_cap;
    int q_cap;      /* draft distributions q holds (rows of vocab) */
    int reserve;    /* positions held up front (spec_seq_reserve) */
    atomic_int cancel; /* spec_seq_cancel: the only field another thread
                        * touches */
    int k_cfg;      /* fixed k or SPEC_K_AUTO */
    int k_max;      /* most drafts one pass may carry */
    int n_mod;      /* MTP modules this sequence uses (0: none) */
    int use_mtp;    /* keep MTP caches in sync */
    /* auto's pause (adapt.h): while paused the main model's hidden rows of
     * the new positions hlog_base.. are logged, so that on resuming the
     * MTP caches catch up in one refill */
    int paused;
    float *hlog;    /* [hlog_cap, hidden], allocated at the first pause */
    int hlog_base, hlog_n, hlog_cap;
    struct spec_rng rng;
    struct spec_stats st;
    struct spec_adapt ad;
    enum spec_finish fin;
    int err;        /* MTPD_E* of a SPEC_FINISH_ERROR, else 0 */
    char errmsg[160];
    /* draft state */
    float *mtp_logits;  /* vocab */
    int mtp_logits_pos; /* row of mtp_logits, -1: none */
    float *stash;       /* n_mod * hidden */
    int stash_pos[MTPD_MAX_MTP];
    int mtp_exact[MTPD_MAX_MTP]; /* exact cache len before the draft */
    float *q;           /* k_max * vocab: draft distributions (sampling) */
    float *dhid;        /* hidden: recursion input (last draft row) */
    struct spec_draft_ctx dctx; /* context ids of the draft head (cap 0:
                                 * none) */
    int k;              /* drafts in the current pass */
    /* per-pass bookkeeping */
    int last_k, last_a;
    int rows_at;        /* first output row of this seq in the last call */
    int main_len_before;
    int ph_rows[SPEC_PH_N]; /* rows this sequence had in each phase of the
                             * current step (its share of the time) */
    /* tracing */
    int32_t *trace_k, *trace_a;
    int trace_cap, trace_n;
    char notice[160];
};

double spec_now(void);

/* Decode-state helpers. */
static inline int spec_seq_decoding(const struct spec_seq *s)
{
    return s->n_toks > s->n_prompt; /* the first token has been drawn */
}

/* Checks p and derives what a sequence needs from it: the k setting, the
 * MTP modules used. Returns 0 or MTPD_EINVAL. */
int spec_seq_plan(const struct spec_engine *e, const struct spec_params *p,
                  int *k_cfg, int *k_max, int *n_mod);
/* Grows s's buffers for parameters p with n_mod MTP modules and k_max
 * drafts; nothing of s changes on failure (MTPD_ENOMEM). */
int spec_seq_buffers(struct spec_seq *s, const struct spec_params *p,
                     int n_mod, int k_max);
/* Applies p (with spec_seq_plan's results) and starts a new generation
 * over toks[0..n) (already in s->toks): output, stats, RNG, adaptive k,
 * notice, finish state. The caches are the caller's business. */
void spec_seq_start(struct spec_seq *s, const struct spec_params *p, int n,
                    int k_cfg, int k_max, int n_mod);
/* Makes room for n ids in s->toks (MTPD_ENOMEM, s unchanged). */
int spec_seq_toks(struct spec_seq *s, int n);
/* The sequence capacity params p ask for on engine e. */
int spec_seq_cap(const struct spec_engine *e, const struct spec_params *p);

/* After a finish: caches and toks hold prompt + output, the last emitted
 * token pending (as between passes), and pages the last pass held for its
 * drafts go back to the pool. */
void spec_seq_settle(struct spec_seq *s);
/* Holds pool pages for positions [0, n) of s and at least what
 * spec_seq_reserve asked for (lowering the hold gives pages back). */
int spec_seq_hold(struct spec_seq *s, int n);

/* Emits one token through EOS / callback / max_tokens. Returns 1 if the
 * sequence may go on, 0 if it finished (tok emitted or not, see spec.h). */
int spec_emit(struct spec_seq *s, int32_t tok);

/* draft.c: the draft phase of a pass (d_2..d_k; d_1 from mtp_logits) and
 * the refill of exact MTP entries after the main forward. */
int spec_draft(struct spec_engine *e, struct spec_seq **seqs, int n);
int spec_refill(struct spec_engine *e, struct spec_seq **seqs, int n);
/* Stops all MTP work for s for good (no more drafts, caches left as they
 * are); used when a pause cannot be resumed. */
void spec_mtp_drop(struct spec_seq *s);
/* Truncate every MTP module of s to its exact length. */
void spec_mtp_rollback(struct spec_seq *s);
/* Distribution (sampling) or argmax (greedy) of a draft row: fills
 * q (vocab) and returns the drawn token. */
int32_t spec_draft_token(struct spec_engine *e, struct spec_seq *s,
                         const float *logits, float *q);

/* verify.c: acceptance for one sequence whose k+1 verify rows start at
 * output row s->rows_at; appends the accepted tokens and the next token to
 * toks, emits them, and updates stats. Returns the accepted count. */
int spec_verify_accept(struct spec_engine *e, struct spec_seq *s);
/* First token after the prompt, from the prefill's last row. */
void spec_first_token(struct spec_engine *e, struct spec_seq *s,
                      const float *logits);

#endif
