/*
 * tok_decode.c - ids -> text, all at once or one id at a time.
 *
 * Each id's decoder output is precomputed at load (dec_off/dec_len): for
 * the ByteLevel decoder the token's characters mapped back to bytes (or
 * the token text itself when it is not written in the byte-level
 * alphabet, e.g. "<｜User｜>"), for no decoder the token text, joined
 * with spaces as HF does. ByteLevel output goes through the lossy UTF-8
 * decoder, which the streaming decoder runs incrementally.
 */
#include "tok_internal.h"

#include <string.h>

static int check_id(const struct mtpd_tok *tok, int32_t id, size_t pos,
                    char *err, size_t errlen)
{
    if (id < 0 || id >= tok->n_ids || tok->tok_len[id] == TOK_NOLEN)
        return tok_err(err, errlen, MTPD_TOK_ERANGE,
                       "id %ld at position %zu is not in the vocabulary "
                       "(%ld ids)",
                       (long)id, pos, (long)tok->n_ids);
    return 0;
}

void mtpd_tok_stream_init(struct mtpd_tok_stream *s,
                          const struct mtpd_tok *tok, unsigned flags)
{
    memset(s, 0, sizeof(*s));
    s->tok = tok;
    s->flags = flags;
}

static int stream_push(struct mtpd_tok_stream *s, int32_t id,
                       struct mtpd_tok_buf *out)
{
    const struct mtpd_tok *tok = s->tok;
    if ((s->flags & MTPD_TOK_SKIP_SPECIAL) && tok->special[id])
        return 0;
    const char *d = tok->decb.p + tok->dec_off[id];
    size_t n = tok->dec_len[id];
    if (tok->decoder == TOK_DEC_BYTELEVEL)
        return tok_utf8_lossy_feed(s->pend, &s->npend, d, n, out);
    if (s->n_tokens++ && tok_buf_put(out, " ", 1) < 0)
        return -1;
    return tok_buf_put(out, d, n);
}

int mtpd_tok_stream_push(struct mtpd_tok_stream *s, int32_t id,
                         struct mtpd_tok_buf *out, char *err, size_t errlen)
{
    int rc = check_id(s->tok, id, 0, err, errlen);
    if (rc < 0)
        return rc;
    if (stream_push(s, id, out) < 0)
        return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
    return 0;
}

int mtpd_tok_stream_finish(struct mtpd_tok_stream *s,
                           struct mtpd_tok_buf *out)
{
    if (tok_utf8_lossy_flush(s->pend, &s->npend, out) < 0)
        return MTPD_TOK_ENOMEM;
    return 0;
}

int mtpd_tok_decode(const struct mtpd_tok *tok, const int32_t *ids, size_t n,
                    unsigned flags, struct mtpd_tok_buf *out, char *err,
                    size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_id(tok, ids[i], i, err, errlen);
        if (rc < 0)
            return rc;
    }
    size_t n0 = out->n;
    struct mtpd_tok_stream s;
    mtpd_tok_stream_init(&s, tok, flags);
    for (size_t i = 0; i < n; i++)
        if (stream_push(&s, ids[i], out) < 0)
            goto nomem;
    if (mtpd_tok_stream_finish(&s, out) < 0)
        goto nomem;
    return 0;
nomem:
    out->n = n0;
    if (out->p)
        out->p[n0] = '\0';
    return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
}
