/*
 * tok_config.c - reads tokenizer_config.json (transformers' file): the
 * bos/eos token strings, add_bos_token / add_eos_token, and the chat
 * template, which is only recognised (tok_chat_recognise), never run.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* "bos_token": "<s>" or {"content": "<s>", ...}; NULL when absent/null. */
static const struct json *token_content(const struct json *v)
{
    if (!v || v->type == JSON_NULL)
        return NULL;
    if (v->type == JSON_OBJECT)
        v = json_get(v, "content");
    return v && v->type == JSON_STRING ? v : NULL;
}

static int set_token(struct mtpd_tok *tok, const struct json *root,
                     const char *key, char **str, int32_t *id, char *err,
                     size_t errlen)
{
    const struct json *raw = json_get(root, key);
    const struct json *v = token_content(raw);
    if (!v) {
        if (raw && raw->type != JSON_NULL)
            return tok_err(err, errlen, MTPD_TOK_EFORMAT,
                           "tokenizer_config.json: %s: expected a string or "
                           "{\"content\": ...}",
                           key);
        return 0;
    }
    *str = malloc(v->len + 1);
    if (!*str)
        return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
    memcpy(*str, v->u.str, v->len + 1);
    *id = mtpd_tok_token_id(tok, v->u.str, v->len);
    char q[JSON_ESC_CAP];
    if (*id < 0)
        return tok_err(err, errlen, MTPD_TOK_EFORMAT,
                       "tokenizer_config.json: %s '%s' is not a token of "
                       "tokenizer.json",
                       key, json_esc(q, sizeof q, v->u.str, v->len));
    return 0;
}

static int get_flag(const struct json *root, const char *key, int *out,
                    char *err, size_t errlen)
{
    const struct json *v = json_get(root, key);
    *out = 0;
    if (!v || v->type == JSON_NULL)
        return 0;
    if (json_bool(v, out) < 0)
        return tok_err(err, errlen, MTPD_TOK_EFORMAT,
                       "tokenizer_config.json: %s: expected a boolean", key);
    return 0;
}

int tok_load_config(struct mtpd_tok *tok, const char *path, char *err,
                    size_t errlen)
{
    char jerr[200];
    struct json_doc *doc = json_parse_file(path, jerr, sizeof(jerr));
    char q[JSON_ESC_CAP];
    if (!doc)
        return tok_err(err, errlen,
                       strncmp(jerr, "cannot ", 7) == 0 ? MTPD_TOK_EIO
                                                   : MTPD_TOK_EFORMAT,
                       "%s: %s", json_escz(q, sizeof q, path), jerr);
    const struct json *root = json_root(doc);
    int rc = 0;
    if (root->type != JSON_OBJECT) {
        rc = tok_err(err, errlen, MTPD_TOK_EFORMAT,
                     "%s: expected an object", json_escz(q, sizeof q, path));
        goto out;
    }
    if ((rc = set_token(tok, root, "bos_token", &tok->bos_str, &tok->bos_id,
                        err, errlen)) < 0 ||
        (rc = set_token(tok, root, "eos_token", &tok->eos_str, &tok->eos_id,
                        err, errlen)) < 0 ||
        (rc = get_flag(root, "add_bos_token", &tok->add_bos, err, errlen)) <
            0 ||
        (rc = get_flag(root, "add_eos_token", &tok->add_eos, err, errlen)) < 0)
        goto out;
    const struct json *t = json_get(root, "chat_template");
    if (t && t->type == JSON_ARRAY) { /* [{"name": ..., "template": ...}] */
        const struct json *pick = NULL;
        for (size_t i = 0; i < t->len; i++) {
            const char *name = json_str(json_get(t->u.items[i], "name"));
            if (name && strcmp(name, "default") == 0)
                pick = json_get(t->u.items[i], "template");
        }
        t = pick;
    }
    if (t && t->type == JSON_STRING)
        tok->chat = tok_chat_recognise(t->u.str, t->len);
out:
    json_doc_free(doc);
    return rc;
}
