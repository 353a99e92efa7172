/*
 * textout.h - the text of a generation as it streams: each emitted token
 * is decoded incrementally (the tokenizer's stream decoder, special tokens
 * skipped), fed to the stop-string matcher (stop.h), and what is safe to
 * show is released: never half a UTF-8 character, never a tail that could
 * still become a stop string. `mtpd generate` and the daemon's sessions
 * both use it from their on_token callback (so on the compute thread).
 *
 *   spec_textout_new(tok, stops, n, &t);
 *   on each token:  r = spec_textout_push(t, id);  (1: a stop string
 *                   appeared, return SPEC_TOK_STOP)
 *                   n = spec_textout_release(t, &p, 0);  show p[0..n)
 *   at the end:     spec_textout_finish(t); spec_textout_release(t, &p, 1);
 */
#ifndef MTPD_SPEC_TEXTOUT_H
#define MTPD_SPEC_TEXTOUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mtpd_tok;
struct spec_textout;

/* tok (not owned, may be NULL: then there is no text and pushes do
 * nothing) and n_stops stop strings (copied; empty ones ignored).
 * MTPD_ENOMEM, or MTPD_EINVAL for stop strings without a tokenizer. */
int spec_textout_new(const struct mtpd_tok *tok, const char *const *stops,
                     int n_stops, struct spec_textout **out);
void spec_textout_free(struct spec_textout *t);

/* Decodes token id and appends its text. Returns 1 when a stop string now
 * occurs (the text is cut where it begins; later pushes are ignored and
 * return 1), 0 when not, or a negative MTPD_E*: MTPD_EFORMAT when the id
 * could not be decoded (its text is skipped, the stream goes on),
 * MTPD_ENOMEM. */
int spec_textout_push(struct spec_textout *t, int32_t id);
/* End of generation: flushes bytes the decoder held back (an incomplete
 * character at the end) unless a stop string matched. */
int spec_textout_finish(struct spec_textout *t);
/* Text that may be shown now, from the previous release on; final != 0
 * releases everything. Returns its length; *out is valid until the next
 * push. */
size_t spec_textout_release(struct spec_textout *t, const char **out,
                            int final);
/* All text so far (cut at a stop string); NULL without a tokenizer. */
const char *spec_textout_text(const struct spec_textout *t, size_t *len);
/* 1 when a stop string ended the text. */
int spec_textout_matched(const struct spec_textout *t);
/* Tokens whose text could not be decoded or stored (skipped). */
int spec_textout_failures(const struct spec_textout *t);

#ifdef __cplusplus
}
#endif
#endif
