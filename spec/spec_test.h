/*
 * spec_test.h - test hooks of the speculative engine. Not part of the
 * public API: only tests and the CLI's test flags (`mtpd generate
 * --check-rollback`, MTPD_SPEC_BREAK_ACCEPT) include it.
 */
#ifndef MTPD_SPEC_TEST_H
#define MTPD_SPEC_TEST_H

#include "spec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* on != 0: accept every draft (wrong on purpose, so that the
 * distribution tests can show they fail when the rule is broken). */
void spec_engine_set_break_accept(struct spec_engine *e, int on);

/*
 * Rollback self-check (--check-rollback): runs a fresh prefill of the
 * sequence's current tokens in a new cache and compares the main model's
 * last-row logits with those of one more step on the live (rolled-back)
 * cache, and the same for MTP module 0. Writes the largest absolute
 * differences into *main_diff and *mtp_diff (-1 when not compared). Does
 * not change s. MTPD_EINVAL when s is not between decode passes.
 */
int spec_seq_check_rollback(struct spec_engine *e, struct spec_seq *s,
                            double *main_diff, double *mtp_diff);

#ifdef __cplusplus
}
#endif
#endif
