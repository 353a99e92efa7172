/*
 * tok_format.c - prompt formats: the chat templates we recognise, written
 * out as C, and DeepSeek-Coder's fill-in-the-middle prompt.
 *
 * There is no Jinja engine. tokenizer_config.json's chat_template is
 * identified by its exact bytes (FNV-1a 64 hash and length); each known
 * template has a formatter below that produces the same text as
 * transformers' apply_chat_template for messages whose content is a plain
 * string. Adding a template: render a few conversations with transformers,
 * add its hash and a formatter, extend tests/tokenizer/test_parity.py.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <string.h>

#include "json.h"

#define U_USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define U_ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define U_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define U_TOOL_OUTS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" \
                          "begin\xef\xbd\x9c>"
#define U_TOOL_OUTS_END "<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" \
                        "end\xef\xbd\x9c>"
#define U_TOOL_OUT_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81output\xe2\x96\x81" \
                         "begin\xef\xbd\x9c>"
#define U_TOOL_OUT_END "<\xef\xbd\x9ctool\xe2\x96\x81output\xe2\x96\x81" \
                       "end\xef\xbd\x9c>"
#define U_FIM_BEGIN "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define U_FIM_HOLE "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>"
#define U_FIM_END "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>"

static const struct {
    uint64_t fnv;
    size_t len;
    enum tok_chat kind;
    const char *name;
} known[] = {
    /* deepseek-ai/DeepSeek-V3 tokenizer_config.json (with tool calls) */
    {0xebe3604156dc466aull, 2301, TOK_CHAT_DSV3, "deepseek-v3"},
    /* the same turns without tools, system prompts joined without
     * separator (reference model pycode-mtp-tiny) */
    {0x2ab06c67a6f2dd8eull, 650, TOK_CHAT_DSV3_PLAIN, "deepseek-v3-plain"},
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

enum tok_chat tok_chat_recognise(const char *tmpl, size_t len)
{
    uint64_t h = fnv1a(tmpl, len);
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i].fnv == h && known[i].len == len)
            return known[i].kind;
    return TOK_CHAT_UNKNOWN;
}

const char *mtpd_tok_chat_template_name(const struct mtpd_tok *tok)
{
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i].kind == tok->chat)
            return known[i].name;
    return NULL;
}

#define PUT(b, lit) tok_buf_put((b), (lit), sizeof(lit) - 1)

static int put_content(struct mtpd_tok_buf *b, const struct mtpd_tok_msg *m)
{
    return tok_buf_put(b, m->content, m->content_len);
}

/* DeepSeek-V3's template for string contents (both variants). */
static int render_dsv3(const struct mtpd_tok *tok,
                       const struct mtpd_tok_msg *msgs, size_t n, int gen,
                       int plain, struct mtpd_tok_buf *out, char *err,
                       size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r || !msgs[i].content ||
            !(strcmp(r, "system") == 0 || strcmp(r, "user") == 0 ||
              strcmp(r, "assistant") == 0 ||
              (!plain && strcmp(r, "tool") == 0)))
        {
            char q[JSON_ESC_CAP];
            return tok_err(err, errlen, MTPD_TOK_ETEMPLATE,
                           "messages[%zu]: role '%s' is not supported by the "
                           "%s chat template",
                           i, json_escz(q, sizeof q, r),
                           mtpd_tok_chat_template_name(tok));
        }
    }
    int rc = 0, first_sp = 1;
    if (tok->bos_str)
        rc |= tok_buf_put(out, tok->bos_str, strlen(tok->bos_str));
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "system") != 0)
            continue;
        if (!first_sp && !plain)
            rc |= PUT(out, "\n\n");
        rc |= put_content(out, &msgs[i]);
        first_sp = 0;
    }
    int is_tool = 0, output_first = 1;
    for (size_t i = 0; i < n; i++) {
        const struct mtpd_tok_msg *m = &msgs[i];
        if (strcmp(m->role, "user") == 0) {
            is_tool = 0;
            rc |= PUT(out, U_USER);
            rc |= put_content(out, m);
        } else if (strcmp(m->role, "assistant") == 0) {
            if (is_tool)
                rc |= PUT(out, U_TOOL_OUTS_END);
            else
                rc |= PUT(out, U_ASSISTANT);
            is_tool = 0;
            rc |= put_content(out, m);
            rc |= PUT(out, U_EOS);
        } else if (strcmp(m->role, "tool") == 0) {
            is_tool = 1;
            if (output_first)
                rc |= PUT(out, U_TOOL_OUTS_BEGIN U_TOOL_OUT_BEGIN);
            else
                rc |= PUT(out, "\n" U_TOOL_OUT_BEGIN);
            output_first = 0;
            rc |= put_content(out, m);
            rc |= PUT(out, U_TOOL_OUT_END);
        }
    }
    if (is_tool)
        rc |= PUT(out, U_TOOL_OUTS_END);
    if (gen && !is_tool)
        rc |= PUT(out, U_ASSISTANT);
    return rc ? tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory") : 0;
}

int mtpd_tok_chat_render(const struct mtpd_tok *tok,
                         const struct mtpd_tok_msg *msgs, size_t n,
                         int add_generation_prompt, struct mtpd_tok_buf *out,
                         char *err, size_t errlen)
{
    size_t n0 = out->n;
    int rc;
    switch (tok->chat) {
    case TOK_CHAT_DSV3:
    case TOK_CHAT_DSV3_PLAIN:
        rc = render_dsv3(tok, msgs, n, add_generation_prompt,
                         tok->chat == TOK_CHAT_DSV3_PLAIN, out, err, errlen);
        break;
    case TOK_CHAT_NONE:
        return tok_err(err, errlen, MTPD_TOK_ETEMPLATE,
                       "no chat_template in tokenizer_config.json");
    default:
        return tok_err(err, errlen, MTPD_TOK_ETEMPLATE,
                       "unknown chat_template in tokenizer_config.json "
                       "(known: deepseek-v3, deepseek-v3-plain; there is no "
                       "Jinja engine)");
    }
    if (rc < 0 && out->p) {
        out->n = n0;
        out->p[n0] = '\0';
    }
    return rc;
}

int mtpd_tok_chat_encode(struct mtpd_tok_enc *enc,
                         const struct mtpd_tok_msg *msgs, size_t n,
                         int add_generation_prompt, struct mtpd_tok_ids *out,
                         char *err, size_t errlen)
{
    enc->render.n = 0;
    int rc = mtpd_tok_chat_render(enc->tok, msgs, n, add_generation_prompt,
                                  &enc->render, err, errlen);
    if (rc < 0)
        return rc;
    /* apply_chat_template tokenizes with add_special_tokens=False */
    return mtpd_tok_encode(enc, enc->render.p ? enc->render.p : "",
                           enc->render.n, 0, out, err, errlen);
}

int mtpd_tok_fim_render(const struct mtpd_tok *tok, const char *prefix,
                        size_t prefix_len, const char *suffix,
                        size_t suffix_len, struct mtpd_tok_buf *out,
                        char *err, size_t errlen)
{
    static const char *const need[] = {U_FIM_BEGIN, U_FIM_HOLE, U_FIM_END};
    for (int i = 0; i < 3; i++)
        if (mtpd_tok_token_id(tok, need[i], strlen(need[i])) < 0)
            return tok_err(err, errlen, MTPD_TOK_ETEMPLATE,
                           "tokenizer has no %s token: no FIM format", need[i]);
    int rc = 0;
    size_t n0 = out->n;
    if (tok->add_bos && tok->bos_str)
        rc |= tok_buf_put(out, tok->bos_str, strlen(tok->bos_str));
    rc |= PUT(out, U_FIM_BEGIN);
    rc |= tok_buf_put(out, prefix, prefix_len);
    rc |= PUT(out, U_FIM_HOLE);
    rc |= tok_buf_put(out, suffix, suffix_len);
    rc |= PUT(out, U_FIM_END);
    if (rc) {
        if (out->p) {
            out->n = n0;
            out->p[n0] = '\0';
        }
        return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
    }
    return 0;
}

int mtpd_tok_fim_encode(struct mtpd_tok_enc *enc, const char *prefix,
                        size_t prefix_len, const char *suffix,
                        size_t suffix_len, struct mtpd_tok_ids *out,
                        char *err, size_t errlen)
{
    enc->render.n = 0;
    int rc = mtpd_tok_fim_render(enc->tok, prefix, prefix_len, suffix,
                                 suffix_len, &enc->render, err, errlen);
    if (rc < 0)
        return rc;
    return mtpd_tok_encode(enc, enc->render.p, enc->render.n, 0, out, err,
                           errlen);
}
