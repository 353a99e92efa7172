/*
 * draft_vocab.h - reading the draft-vocabulary file of the restricted
 * draft head (spec_engine_opts.draft_vocab): token ids, most frequent
 * first, separated by whitespace or commas; '#' starts a comment. The
 * default model ships one as DIR/draft_vocab.txt (tools/draft_vocab.py
 * writes it).
 */
#ifndef MTPD_SPEC_DRAFT_VOCAB_H
#define MTPD_SPEC_DRAFT_VOCAB_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reads the first max (>= 1) ids of the file at path into *out (the
 * caller frees it). Returns the count (>= 1), or MTPD_EIO when the file
 * cannot be opened, MTPD_EFORMAT when it holds no id (or a number too big
 * for an id), MTPD_ENOMEM, MTPD_EINVAL. */
int spec_draft_vocab_read(const char *path, int max, int32_t **out);

#ifdef __cplusplus
}
#endif
#endif
