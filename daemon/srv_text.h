/*
 * srv_text.h - the text side of a streamed generation: token ids ->
 * UTF-8 text (the tokenizer's incremental decoder never cuts a
 * character) -> stop strings (spec/stop.h holds back text that could
 * still become a stop string). Used on the compute thread from the
 * token callback.
 */
#ifndef MTPD_SRV_TEXT_H
#define MTPD_SRV_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "stop.h"
#include "tokenizer.h"

struct srv_text {
    struct mtpd_tok_stream ts;
    struct mtpd_tok_buf piece;
    struct spec_stop stop;
    int flushed;
};

/* 0 or a negative code (out of memory). */
int srv_text_init(struct srv_text *t, const struct mtpd_tok *tok,
                  char *const *stops, int n_stops);
void srv_text_free(struct srv_text *t);
/* Feeds one emitted id. 1 when a stop string is now complete, 0 when
 * not, negative on failure. */
int srv_text_push(struct srv_text *t, int32_t id);
/* The text that may be shown now (since the last call); final: the
 * generation ended, release everything. Valid until the next push. */
size_t srv_text_release(struct srv_text *t, const char **out, int final);
/* The whole text (cut at a stop string). */
const char *srv_text_all(const struct srv_text *t, size_t *len);

#endif
