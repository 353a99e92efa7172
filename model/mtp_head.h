/*
 * mtp_head.h - read access to an MTP module's output head and to a forward
 * context's thread pool, for callers that compute draft logits themselves
 * (spec/draft_head.c: an FR-Spec style head restricted to frequent tokens,
 * run on the state mtpd_ctx_hidden() returns after an MTP call made with
 * no logits rows). Added for spec/; model.h is unchanged.
 */
#ifndef MTPD_MTP_HEAD_H
#define MTPD_MTP_HEAD_H

#include "kernels.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* shared_head.head of MTP module `module` ([vocab, hidden], owned by the
 * model; the main lm_head when the checkpoint shares it), or NULL when the
 * module is not loaded. */
const struct kmat *mtpd_mtp_head(const struct mtpd_model *m, int module);

/* The context's compute pool (owned by the context). */
struct kpool *mtpd_ctx_pool(struct mtpd_ctx *c);

#ifdef __cplusplus
}
#endif
#endif
