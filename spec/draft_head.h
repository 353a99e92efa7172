/*
 * draft_head.h - an FR-Spec style draft head: the MTP module's output head
 * restricted to a fixed subset of the vocabulary (the most frequent
 * tokens), packed once so a draft step multiplies n_sub rows instead of
 * vocab_size rows.
 *
 * Exactness is unaffected: the draft distribution q is whatever the
 * restricted head gives (zero outside the subset), the acceptance rule
 * uses that same q, and greedy acceptance compares with the main model's
 * own argmax. Only the acceptance rate can change (when the main model's
 * token is outside the subset).
 */
#ifndef MTPD_SPEC_DRAFT_HEAD_H
#define MTPD_SPEC_DRAFT_HEAD_H

#include <stdint.h>

#include "kernels.h"

struct spec_draft_head {
    int n;          /* ids in the subset */
    int32_t *ids;   /* [n] */
    struct kmat w;  /* [n, hidden] BF16 rows of the head, in ids order */
    uint16_t *data; /* owned storage of w */
};

/* Packs rows ids[0..n) of head (any dtype; stored as BF16). Duplicate or
 * out-of-range ids: MTPD_EINVAL (-1); allocation: -2. */
int spec_draft_head_init(struct spec_draft_head *h, const struct kmat *head,
                         const int32_t *ids, int n);
void spec_draft_head_free(struct spec_draft_head *h);

/* out[r * n + i] = head[ids[i]] . hidden[r * ld ..], r < rows. */
int spec_draft_head_logits(const struct spec_draft_head *h, struct kpool *p,
                           const float *hidden, int ld, int rows, float *out);

/* Scatters one row of subset logits into a full-vocabulary row: -inf
 * outside the subset. */
void spec_draft_head_scatter(const struct spec_draft_head *h,
                             const float *sub, float *full, int vocab);

#endif
