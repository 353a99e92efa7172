/* srv_text.c - ids -> UTF-8-safe text chunks with stop strings
 * (srv_text.h), over the tokenizer's stream decoder and spec/stop.h. */
#include <string.h>

#include "srv_text.h"

int srv_text_init(struct srv_text *t, const struct mtpd_tok *tok,
                  char *const *stops, int n_stops)
{
    memset(t, 0, sizeof *t);
    mtpd_tok_stream_init(&t->ts, tok, MTPD_TOK_SKIP_SPECIAL);
    return spec_stop_init(&t->stop, (const char *const *)stops, n_stops);
}

void srv_text_free(struct srv_text *t)
{
    spec_stop_free(&t->stop);
    mtpd_tok_buf_free(&t->piece);
}

int srv_text_push(struct srv_text *t, int32_t id)
{
    t->piece.n = 0;
    if (t->piece.p)
        t->piece.p[0] = 0;
    int rc = mtpd_tok_stream_push(&t->ts, id, &t->piece, NULL, 0);
    if (rc < 0)
        return rc;
    return spec_stop_feed(&t->stop, t->piece.p ? t->piece.p : "",
                          t->piece.n);
}

size_t srv_text_release(struct srv_text *t, const char **out, int final)
{
    if (final && !t->flushed) {
        t->flushed = 1;
        if (!t->stop.matched) {
            t->piece.n = 0;
            if (mtpd_tok_stream_finish(&t->ts, &t->piece) == 0 && t->piece.n)
                spec_stop_feed(&t->stop, t->piece.p, t->piece.n);
        }
    }
    return spec_stop_release(&t->stop, out, final);
}

const char *srv_text_all(const struct srv_text *t, size_t *len)
{
    *len = t->stop.len;
    return t->stop.text ? t->stop.text : "";
}
