/*
 * draft_head.h - an FR-Spec style draft head: the MTP module's output head
 * restricted to a subset of the vocabulary, so a draft step multiplies a
 * few hundred rows instead of vocab_size rows.
 *
 * The subset of a sequence is a fixed part shared by every sequence (the
 * most frequent tokens of a corpus, tools/draft_vocab.py; struct
 * spec_draft_head, packed once per module) plus that sequence's own
 * context tokens (struct spec_draft_ctx): every prompt and output token
 * not in the fixed part, up to a cap, appended as they are seen. Code
 * reuses its identifiers, which a corpus-wide frequency list misses: on
 * held-out code, 512 frequent ids plus the context draft about as well as
 * the whole vocabulary, while 2048 frequent ids alone lose a tenth of the
 * first-draft acceptance. The context part is per sequence so that what a
 * sequence drafts never depends on what else shares its batch.
 *
 * Exactness is unaffected: the draft distribution q is whatever the
 * restricted head gives when the draft is made (zero outside the subset
 * of that moment), the acceptance rule uses that same stored q, and
 * greedy acceptance compares with the main model's own argmax. Only the
 * acceptance rate can change.
 */
#ifndef MTPD_SPEC_DRAFT_HEAD_H
#define MTPD_SPEC_DRAFT_HEAD_H

#include <stdint.h>

#include "kernels.h"

#define SPEC_DRAFT_MODS 4 /* = MTPD_MAX_MTP (model.h), checked in engine.c */

/* The fixed part, for one module's head. */
struct spec_draft_head {
    int n;             /* ids in the subset */
    int32_t *ids;      /* [n] */
    struct kmat w;     /* [n, hidden] BF16 rows of the head, in ids order */
    uint16_t *data;    /* owned storage of w */
    unsigned char *in; /* [vocab]: 1 when the id is in ids */
    const struct kmat *head; /* the full head (not owned) */
};

/* Packs rows ids[0..n) of head (any dtype; stored as BF16). Duplicate or
 * out-of-range ids: -1; allocation: -2. */
int spec_draft_head_init(struct spec_draft_head *h, const struct kmat *head,
                         const int32_t *ids, int n);
void spec_draft_head_free(struct spec_draft_head *h);

/* out[r * n + i] = head[ids[i]] . hidden[r * ld ..], r < rows. */
int spec_draft_head_logits(const struct spec_draft_head *h, struct kpool *p,
                           const float *hidden, int ld, int rows, float *out);

/* One sequence's context ids outside the fixed part, with their head rows
 * for each of n_mod modules. */
struct spec_draft_ctx {
    int n, cap, n_mod;
    int32_t *ids;                      /* [cap] */
    unsigned char *in;                 /* [vocab] */
    uint16_t *data[SPEC_DRAFT_MODS];   /* [cap, hidden] BF16 per module */
    float *row;                        /* [hidden] scratch */
};

/* Room for cap ids (cap >= 1) for modules heads[0..n_mod). -2: no memory. */
int spec_draft_ctx_init(struct spec_draft_ctx *c,
                        const struct spec_draft_head *heads, int n_mod,
                        int cap);
void spec_draft_ctx_free(struct spec_draft_ctx *c);
/* Forgets every context id (keeps the memory). */
void spec_draft_ctx_reset(struct spec_draft_ctx *c);

/* Adds id unless it is in the fixed part, already added, or there is no
 * room. Returns 1 when added, 0 when not, -1 for a bad id. */
int spec_draft_ctx_add(struct spec_draft_ctx *c,
                       const struct spec_draft_head *heads, int32_t id);

/* out[i] = head[ids[i]] . hidden for module m's rows, i < c->n. */
int spec_draft_ctx_logits(const struct spec_draft_ctx *c, int m,
                          int hidden_size, struct kpool *p,
                          const float *hidden, float *out);

/* Full-vocabulary logits row: sub (fixed part) and csub (context part,
 * may be NULL with c NULL) at their ids, -inf elsewhere. */
void spec_draft_head_scatter(const struct spec_draft_head *h,
                             const float *sub,
                             const struct spec_draft_ctx *c,
                             const float *csub, float *full, int vocab);

#endif
