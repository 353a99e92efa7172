/*
 * stop.h - stop strings over streamed token text.
 *
 * The generator feeds the decoded bytes of every token it is about to
 * emit; the matcher says when a stop string has appeared and how much of
 * the text is safe to show (text that cannot turn out to be the start of
 * a stop string, and never half a UTF-8 character). On a match the text is
 * cut where the stop string begins and nothing after it is released.
 */
#ifndef MTPD_SPEC_STOP_H
#define MTPD_SPEC_STOP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct spec_stop {
    char **strs; /* owned copies */
    size_t *lens;
    int n;
    char *text; /* everything fed so far (cut at a match) */
    size_t len, cap;
    size_t released; /* bytes handed out by spec_stop_release */
    int matched;
};

/* Copies the n stop strings (empty ones are ignored). 0 or MTPD-style
 * negative (-2) on allocation failure. */
int spec_stop_init(struct spec_stop *st, const char *const *strs, int n);
void spec_stop_free(struct spec_stop *st);

/* Appends one token's bytes. Returns 1 if a stop string now occurs (the
 * text is cut at its first occurrence), 0 if not, -2 on allocation
 * failure. After a match further feeds are ignored and return 1. */
int spec_stop_feed(struct spec_stop *st, const char *piece, size_t n);

/* Text that may be shown now, from the previous release on; final != 0
 * releases everything (end of generation). Returns its length and sets
 * *out (valid until the next feed). */
size_t spec_stop_release(struct spec_stop *st, const char **out, int final);

#ifdef __cplusplus
}
#endif
#endif
