/*
 * textout.c - streamed generation text with stop strings (textout.h).
 */
#include "textout.h"

#include <stdlib.h>

#include "model.h"
#include "stop.h"
#ifdef MTPD_HAVE_TOKENIZER
#include "tokenizer.h"
#endif

struct spec_textout {
    struct spec_stop stop;
    int failures;
#ifdef MTPD_HAVE_TOKENIZER
    const struct mtpd_tok *tok;
    struct mtpd_tok_stream ts;
    struct mtpd_tok_buf piece; /* one token's bytes */
#endif
};

int spec_textout_new(const struct mtpd_tok *tok, const char *const *stops,
                     int n_stops, struct spec_textout **out)
{
    *out = NULL;
#ifndef MTPD_HAVE_TOKENIZER
    tok = NULL;
#endif
    if (!tok && n_stops > 0)
        return MTPD_EINVAL;
    struct spec_textout *t = calloc(1, sizeof *t);
    if (!t)
        return MTPD_ENOMEM;
    if (spec_stop_init(&t->stop, stops, n_stops) < 0) {
        free(t);
        return MTPD_ENOMEM;
    }
#ifdef MTPD_HAVE_TOKENIZER
    t->tok = tok;
    if (tok)
        mtpd_tok_stream_init(&t->ts, tok, MTPD_TOK_SKIP_SPECIAL);
#endif
    *out = t;
    return MTPD_OK;
}

void spec_textout_free(struct spec_textout *t)
{
    if (!t)
        return;
    spec_stop_free(&t->stop);
#ifdef MTPD_HAVE_TOKENIZER
    mtpd_tok_buf_free(&t->piece);
#endif
    free(t);
}

#ifdef MTPD_HAVE_TOKENIZER
static int feed_piece(struct spec_textout *t)
{
    int r = spec_stop_feed(&t->stop, t->piece.p ? t->piece.p : "",
                           t->piece.n);
    if (r < 0) {
        t->failures++;
        return MTPD_ENOMEM;
    }
    return r;
}
#endif

int spec_textout_push(struct spec_textout *t, int32_t id)
{
#ifdef MTPD_HAVE_TOKENIZER
    if (!t->tok)
        return 0;
    if (t->stop.matched)
        return 1;
    t->piece.n = 0;
    if (mtpd_tok_stream_push(&t->ts, id, &t->piece, NULL, 0) < 0) {
        t->failures++;
        return MTPD_EFORMAT;
    }
    return feed_piece(t);
#else
    (void)t;
    (void)id;
    return 0;
#endif
}

int spec_textout_finish(struct spec_textout *t)
{
#ifdef MTPD_HAVE_TOKENIZER
    if (!t->tok || t->stop.matched)
        return 0;
    t->piece.n = 0;
    mtpd_tok_stream_finish(&t->ts, &t->piece);
    return t->piece.n ? feed_piece(t) : 0;
#else
    (void)t;
    return 0;
#endif
}

size_t spec_textout_release(struct spec_textout *t, const char **out,
                            int final)
{
    return spec_stop_release(&t->stop, out, final);
}

const char *spec_textout_text(const struct spec_textout *t, size_t *len)
{
#ifdef MTPD_HAVE_TOKENIZER
    if (t->tok) {
        *len = t->stop.len;
        return t->stop.text ? t->stop.text : "";
    }
#endif
    *len = 0;
    return NULL;
}

int spec_textout_matched(const struct spec_textout *t)
{
    return t->stop.matched;
}

int spec_textout_failures(const struct spec_textout *t)
{
    return t->failures;
}
