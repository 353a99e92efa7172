/*
 * tok_api.c - tokenizer lifetime (load, free) and lookups.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reads a whole small file; NULL when missing or unreadable. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct tok_bytes b = {0};
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (tok_bytes_add(&b, chunk, k) < 0) {
            free(b.p);
            fclose(f);
            return NULL;
        }
    int bad = ferror(f);
    fclose(f);
    if (bad || !b.p) {
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

int mtpd_tok_load(struct mtpd_tok **out, const char *tokenizer_json,
                  const char *config_json, char *err, size_t errlen)
{
    *out = NULL;
    if (!tokenizer_json)
        return tok_err(err, errlen, MTPD_TOK_EINVAL, "no tokenizer.json path");
    struct mtpd_tok *tok = calloc(1, sizeof(*tok));
    if (!tok)
        return tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
    tok->bos_id = tok->eos_id = tok->unk_id = -1;
    int rc = tok_load_json(tok, tokenizer_json, err, errlen);
    if (rc == 0 && config_json)
        rc = tok_load_config(tok, config_json, err, errlen);
    if (rc < 0) {
        mtpd_tok_free(tok);
        return rc;
    }
    *out = tok;
    return 0;
}

int mtpd_tok_load_dir(struct mtpd_tok **out, const char *dir, char *err,
                      size_t errlen)
{
    size_t n = strlen(dir) + 32;
    char *tj = malloc(n), *cj = malloc(n), *jj = malloc(n);
    int rc;
    if (!tj || !cj || !jj) {
        rc = tok_err(err, errlen, MTPD_TOK_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(tj, n, "%s/tokenizer.json", dir);
    snprintf(cj, n, "%s/tokenizer_config.json", dir);
    snprintf(jj, n, "%s/chat_template.jinja", dir);
    rc = mtpd_tok_load(out, tj, file_exists(cj) ? cj : NULL, err, errlen);
    if (rc == 0 && (*out)->chat == TOK_CHAT_NONE && file_exists(jj)) {
        /* transformers >= 4.43 may keep the template in its own file */
        size_t len;
        char *t = slurp(jj, &len);
        if (t)
            (*out)->chat = tok_chat_recognise(t, len);
        free(t);
    }
out:
    free(tj);
    free(cj);
    free(jj);
    return rc;
}

void mtpd_tok_free(struct mtpd_tok *tok)
{
    if (!tok)
        return;
    free(tok->tok_off);
    free(tok->tok_len);
    free(tok->dec_off);
    free(tok->dec_len);
    free(tok->special);
    free(tok->strs.p);
    free(tok->decb.p);
    tok_strmap_free(&tok->vocab);
    tok_strmap_free(&tok->added_map);
    tok_u64map_free(&tok->merges);
    tok_strmap_free(&tok->rawvocab);
    free(tok->rawstrs.p);
    free(tok->added);
    tok_trie_free(&tok->trie_raw);
    tok_trie_free(&tok->trie_norm);
    pcre2_code_free(tok->word_re);
    tok_stages_free(tok);
    free(tok->post_pre);
    free(tok->post_post);
    free(tok->bos_str);
    free(tok->eos_str);
    free(tok);
}

int32_t mtpd_tok_n_ids(const struct mtpd_tok *tok) { return tok->n_ids; }

int32_t mtpd_tok_token_id(const struct mtpd_tok *tok, const char *s,
                          size_t len)
{
    int32_t id = tok_strmap_get(&tok->added_map, &tok->strs, s, len);
    return id >= 0 ? id : tok_strmap_get(&tok->vocab, &tok->strs, s, len);
}

const char *mtpd_tok_token_str(const struct mtpd_tok *tok, int32_t id,
                               size_t *len)
{
    if (id < 0 || id >= tok->n_ids || tok->tok_len[id] == TOK_NOLEN)
        return NULL;
    if (len)
        *len = tok->tok_len[id];
    return tok->strs.p + tok->tok_off[id];
}

int mtpd_tok_is_special(const struct mtpd_tok *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && tok->special[id];
}

int32_t mtpd_tok_bos_id(const struct mtpd_tok *tok) { return tok->bos_id; }
int32_t mtpd_tok_eos_id(const struct mtpd_tok *tok) { return tok->eos_id; }
