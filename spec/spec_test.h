/*
 * spec_test.h - test hooks of the speculative engine (internal: not
 * installed). The mtpd CLI reaches them through options the tests use
 * (--check-rollback, MTPD_SPEC_BREAK_ACCEPT).
 */
#ifndef MTPD_SPEC_TEST_H
#define MTPD_SPEC_TEST_H

#include "spec.h"

/*
 * Self-check used by tests (--check-rollback): runs a fresh prefill of the
 * sequence's current tokens in a new cache and compares the main model's
 * last-row logits with those of one more step on the live (rolled-back)
 * cache, and the same for MTP module 0. Writes the largest absolute
 * differences into *main_diff and *mtp_diff. Does not change s.
 */
int spec_seq_check_rollback(struct spec_engine *e, struct spec_seq *s,
                            double *main_diff, double *mtp_diff);

/* Accept every draft from now on (wrong on purpose: the tests check that
 * they catch a broken acceptance rule). on = 0 restores the real rule. */
void spec_engine_break_accept(struct spec_engine *e, int on);

#endif
