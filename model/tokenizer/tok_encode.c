/*
 * tok_encode.c - the encoder state and the encode pipeline:
 * UTF-8 check -> added tokens -> pre-tokenizer -> BPE -> post-processor.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS (1u << 16)
#define CACHE_ARENA (4u << 20)

struct mtpd_tok_enc *mtpd_tok_enc_new(const struct mtpd_tok *tok)
{
    struct mtpd_tok_enc *enc = calloc(1, sizeof(*enc));
    if (!enc)
        return NULL;
    enc->tok = tok;
    enc->md = pcre2_match_data_create(1, NULL);
    enc->mctx = pcre2_match_context_create(NULL);
    enc->jstack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!enc->md || !enc->mctx || !enc->jstack ||
        tok_cache_init(&enc->cache, CACHE_SLOTS, CACHE_ARENA) < 0) {
        mtpd_tok_enc_free(enc);
        return NULL;
    }
    pcre2_jit_stack_assign(enc->mctx, NULL, enc->jstack);
    return enc;
}

void mtpd_tok_enc_free(struct mtpd_tok_enc *enc)
{
    if (!enc)
        return;
    pcre2_match_data_free(enc->md);
    pcre2_match_context_free(enc->mctx);
    pcre2_jit_stack_free(enc->jstack);
    for (int i = 0; i <= TOK_MAX_STAGES; i++)
        free(enc->spans[i].v);
    for (int i = 0; i < TOK_MAX_STAGES; i++)
        free(enc->pfx[i].p);
    free(enc->seg1.v);
    free(enc->seg2.v);
    free(enc->sym_id);
    free(enc->sym_prev);
    free(enc->sym_next);
    free(enc->sym_len);
    free(enc->heap);
    tok_cache_free(&enc->cache);
    mtpd_tok_buf_free(&enc->render);
    free(enc);
}

static int push1(struct mtpd_tok_ids *out, int32_t id)
{
    return tok_ids_push(out, &id, 1);
}

int mtpd_tok_encode(struct mtpd_tok_enc *enc, const char *text, size_t len,
                    unsigned flags, struct mtpd_tok_ids *out, char *err,
                    size_t errlen)
{
    const struct mtpd_tok *tok = enc->tok;
    size_t n0 = out->n, bad;
    int rc = 0;
    if (!text && len)
        return tok_err(err, errlen, MTPD_TOK_EINVAL, "NULL text");
    if (len >= UINT32_MAX)
        return tok_err(err, errlen, MTPD_TOK_EINVAL,
                       "text of %zu bytes is too long (4 GiB max)", len);
    if (tok_utf8_check(text, len, &bad) < 0)
        return tok_err(err, errlen, MTPD_TOK_EUTF8,
                       "input is not valid UTF-8 (byte offset %zu)", bad);
    int use_config = (flags & MTPD_TOK_ADD_BOS) != 0;
    int use_post = !use_config && (flags & MTPD_TOK_ADD_SPECIAL);
    if (use_config && tok->add_bos && tok->bos_id >= 0)
        rc |= push1(out, tok->bos_id);
    if (use_post && tok->n_post_pre)
        rc |= tok_ids_push(out, tok->post_pre, tok->n_post_pre);
    if (rc < 0)
        goto nomem;

    rc = tok_added_split(enc, text, len,
                         !(flags & MTPD_TOK_NO_PARSE_SPECIAL));
    for (size_t i = 0; rc == 0 && i < enc->seg2.n; i++) {
        const struct tok_seg g = enc->seg2.v[i];
        if (g.id >= 0) {
            rc = push1(out, g.id) < 0 ? MTPD_TOK_ENOMEM : 0;
            if (rc < 0)
                snprintf(enc->err, sizeof(enc->err), "out of memory");
        }
        else if (tok->n_stages == 0)
            rc = tok_bpe_word(enc, text + g.s, g.e - g.s, out);
        else
            rc = tok_pretok_run(enc, 0, text + g.s, g.e - g.s, out);
    }
    if (rc < 0) {
        out->n = n0;
        return tok_err(err, errlen, rc, "%s", enc->err);
    }

    if (use_post && tok->n_post_post)
        rc |= tok_ids_push(out, tok->post_post, tok->n_post_post);
    if (use_config && tok->add_eos && tok->eos_id >= 0)
        rc |= push1(out, tok->eos_id);
    if (rc < 0)
        goto nomem;
    return 0;
nomem:
    out->n = n0;
    return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
}
