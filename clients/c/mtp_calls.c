/*
 * mtp_calls.c - the typed calls: hello, generate/fim, sessions, tokenizer,
 * stats. Each packs its params map, runs mtp_client_call() and copies what
 * it needs out of the reply.
 */
#include "mtp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A params map being packed into its own buffer. */
struct params {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void params_init(struct params *p, size_t n_fields)
{
    msgpack_sbuffer_init(&p->sb);
    msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&p->pk, n_fields);
}

static int params_call(mtp_client *c, struct params *p, const char *method,
                       mtp_chunk_fn cb, void *ud, const msgpack_object **res)
{
    int rc = mtp_client_call(c, method, p->sb.data, p->sb.size, cb, ud, res);
    msgpack_sbuffer_destroy(&p->sb);
    if (rc == MTP_OK && res && !*res)
        rc = mtp_fail(c, MTP_E_BAD_REPLY, "%s: no result", method);
    return rc;
}

static int bad_reply(mtp_client *c, const char *method, const char *what)
{
    return mtp_fail(c, MTP_E_BAD_REPLY, "%s: reply without %s", method, what);
}

/* ---- hello ------------------------------------------------------------- */

int mtp_hello(mtp_client *c, const char *token, struct mtp_server_info *info)
{
    struct params p;
    params_init(&p, token ? 1 : 0);
    if (token) {
        mtp_pack_str(&p.pk, "token");
        mtp_pack_str(&p.pk, token);
    }
    const msgpack_object *r;
    int rc = params_call(c, &p, "hello", NULL, NULL, &r);
    if (rc < 0 || !info)
        return rc;
    memset(info, 0, sizeof *info);
    int64_t v = 0;
    mtp_obj_strcpy(mtp_map_get(r, "server"), info->server, sizeof info->server);
    mtp_obj_strcpy(mtp_map_get(r, "version"), info->version,
                   sizeof info->version);
    if (mtp_obj_int(mtp_map_get(r, "protocol"), &v))
        info->protocol = (int)v;
    const msgpack_object *m = mtp_map_get(r, "model");
    mtp_obj_strcpy(mtp_map_get(m, "name"), info->model, sizeof info->model);
    mtp_obj_int(mtp_map_get(m, "vocab_size"), &info->vocab_size);
    mtp_obj_int(mtp_map_get(m, "context_length"), &info->context_length);
    mtp_obj_int(mtp_map_get(m, "mtp_modules"), &info->mtp_modules);
    mtp_obj_int(mtp_map_get(m, "kv_bytes_per_token"),
                &info->kv_bytes_per_token);
    const msgpack_object *l = mtp_map_get(r, "limits");
    mtp_obj_int(mtp_map_get(l, "max_frame"), &info->max_frame);
    mtp_obj_int(mtp_map_get(l, "max_sessions"), &info->max_sessions);
    mtp_obj_int(mtp_map_get(l, "max_tokens"), &info->max_tokens);
    mtp_obj_int(mtp_map_get(l, "kv_budget_bytes"), &info->kv_budget_bytes);
    return MTP_OK;
}

/* ---- generate / fim ------------------------------------------------------- */

void mtp_gen_params_init(struct mtp_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = -1;
    p->top_p = -1;
    p->top_k = -1;
    p->draft_tokens = MTP_DRAFT_DEFAULT;
}

/* Packs the fields of p that are set; with pk NULL only counts them. */
static size_t pack_gen(msgpack_packer *pk, const struct mtp_gen_params *p,
                       bool fim, bool stream)
{
    size_t n = 0;
    /* counts the field; when packing, packs its key and is true so that
     * the statement after it packs the value */
#define FIELD(name) (n++, pk ? (mtp_pack_str(pk, name), 1) : 0)
    if (p->session && FIELD("session"))
        mtp_pack_str(pk, p->session);
    if (fim) {
        if (FIELD("prefix"))
            mtp_pack_str(pk, p->prefix);
        if (FIELD("suffix"))
            mtp_pack_str(pk, p->suffix);
    } else if (p->prompt) {
        if (FIELD("prompt"))
            mtp_pack_str(pk, p->prompt);
    } else if (p->messages) {
        if (FIELD("messages")) {
            msgpack_pack_array(pk, p->n_messages);
            for (size_t i = 0; i < p->n_messages; i++) {
                msgpack_pack_map(pk, 2);
                mtp_pack_str(pk, "role");
                mtp_pack_str(pk, p->messages[i].role);
                mtp_pack_str(pk, "content");
                mtp_pack_str(pk, p->messages[i].content);
            }
        }
    } else if (p->ids) {
        if (FIELD("ids")) {
            msgpack_pack_array(pk, p->n_ids);
            for (size_t i = 0; i < p->n_ids; i++)
                msgpack_pack_int32(pk, p->ids[i]);
        }
    }
    if (p->max_tokens > 0 && FIELD("max_tokens"))
        msgpack_pack_int(pk, p->max_tokens);
    if (p->stop && p->n_stop && FIELD("stop")) {
        msgpack_pack_array(pk, p->n_stop);
        for (size_t i = 0; i < p->n_stop; i++)
            mtp_pack_str(pk, p->stop[i]);
    }
    if (p->temperature >= 0 && FIELD("temperature"))
        msgpack_pack_double(pk, p->temperature);
    if (p->top_p > 0 && FIELD("top_p"))
        msgpack_pack_double(pk, p->top_p);
    if (p->top_k >= 0 && FIELD("top_k"))
        msgpack_pack_int(pk, p->top_k);
    if (p->has_seed && FIELD("seed"))
        msgpack_pack_int64(pk, p->seed);
    if (p->draft_tokens != MTP_DRAFT_DEFAULT && FIELD("draft_tokens")) {
        if (p->draft_tokens == MTP_DRAFT_AUTO)
            mtp_pack_str(pk, "auto");
        else
            msgpack_pack_int(pk, p->draft_tokens);
    }
    if (stream && FIELD("stream"))
        msgpack_pack_true(pk);
    if (p->ignore_eos && FIELD("ignore_eos"))
        msgpack_pack_true(pk);
#undef FIELD
    return n;
}

void mtp_result_free(struct mtp_result *res)
{
    if (!res)
        return;
    free(res->text);
    free(res->ids);
    memset(res, 0, sizeof *res);
}

/* Copies a generate/fim result map into res. */
static int take_result(mtp_client *c, const char *method,
                       const msgpack_object *r, struct mtp_result *res)
{
    const msgpack_object *text = mtp_map_get(r, "text");
    const msgpack_object *ids = mtp_map_get(r, "ids");
    if (!text || text->type != MSGPACK_OBJECT_STR)
        return bad_reply(c, method, "text");
    if (!ids || ids->type != MSGPACK_OBJECT_ARRAY)
        return bad_reply(c, method, "ids");
    res->text = malloc(text->via.str.size + 1);
    res->ids = malloc((ids->via.array.size + 1) * sizeof *res->ids);
    if (!res->text || !res->ids) {
        mtp_result_free(res);
        return mtp_fail(c, MTP_E_NOMEM, NULL);
    }
    memcpy(res->text, text->via.str.ptr, text->via.str.size);
    res->text[text->via.str.size] = 0;
    res->text_len = text->via.str.size;
    res->n_ids = ids->via.array.size;
    for (size_t i = 0; i < res->n_ids; i++) {
        int64_t v = 0;
        mtp_obj_int(&ids->via.array.ptr[i], &v);
        res->ids[i] = (int32_t)v;
    }
    mtp_obj_strcpy(mtp_map_get(r, "finish_reason"), res->finish_reason,
                   sizeof res->finish_reason);
    mtp_obj_strcpy(mtp_map_get(r, "error"), res->error, sizeof res->error);
    mtp_stats_parse(mtp_map_get(r, "stats"), &res->stats);
    return MTP_OK;
}

static int run_gen(mtp_client *c, const char *method,
                   const struct mtp_gen_params *p, mtp_chunk_fn cb, void *ud,
                   struct mtp_result *res)
{
    bool fim = !strcmp(method, "fim");
    memset(res, 0, sizeof *res);
    if (!p)
        return mtp_fail(c, MTP_E_ARG, "%s: no params", method);
    if (fim && (!p->prefix || !p->suffix))
        return mtp_fail(c, MTP_E_ARG, "fim: prefix and suffix are required");
    struct params q;
    params_init(&q, pack_gen(NULL, p, fim, cb != NULL));
    pack_gen(&q.pk, p, fim, cb != NULL);
    const msgpack_object *r;
    int rc = params_call(c, &q, method, cb, ud, &r);
    if (rc < 0)
        return rc;
    return take_result(c, method, r, res);
}

int mtp_generate(mtp_client *c, const struct mtp_gen_params *p,
                 mtp_chunk_fn cb, void *ud, struct mtp_result *res)
{
    return run_gen(c, "generate", p, cb, ud, res);
}

int mtp_fim(mtp_client *c, const struct mtp_gen_params *p, mtp_chunk_fn cb,
            void *ud, struct mtp_result *res)
{
    return run_gen(c, "fim", p, cb, ud, res);
}

/* ---- sessions --------------------------------------------------------------- */

static void params_session(struct params *p, const char *id)
{
    params_init(p, 1);
    mtp_pack_str(&p->pk, "session");
    mtp_pack_str(&p->pk, id);
}

int mtp_session_open(mtp_client *c, char id[MTP_SESSION_ID_LEN + 1])
{
    struct params p;
    params_init(&p, 0);
    const msgpack_object *r;
    int rc = params_call(c, &p, "session.open", NULL, NULL, &r);
    if (rc < 0)
        return rc;
    if (!mtp_obj_strcpy(mtp_map_get(r, "session"), id,
                        MTP_SESSION_ID_LEN + 1))
        return bad_reply(c, "session.open", "session");
    return MTP_OK;
}

int mtp_session_close(mtp_client *c, const char *id)
{
    if (!id)
        return mtp_fail(c, MTP_E_ARG, "session.close: no session id");
    struct params p;
    params_session(&p, id);
    return params_call(c, &p, "session.close", NULL, NULL, NULL);
}

int mtp_session_info(mtp_client *c, const char *id,
                     struct mtp_session_info *info)
{
    if (!id)
        return mtp_fail(c, MTP_E_ARG, "session.info: no session id");
    struct params p;
    params_session(&p, id);
    const msgpack_object *r;
    int rc = params_call(c, &p, "session.info", NULL, NULL, &r);
    if (rc < 0 || !info)
        return rc;
    memset(info, 0, sizeof *info);
    mtp_obj_strcpy(mtp_map_get(r, "session"), info->session,
                   sizeof info->session);
    mtp_obj_int(mtp_map_get(r, "tokens"), &info->tokens);
    mtp_obj_int(mtp_map_get(r, "kv_bytes"), &info->kv_bytes);
    mtp_obj_int(mtp_map_get(r, "requests"), &info->requests);
    mtp_obj_double(mtp_map_get(r, "last_use"), &info->last_use);
    const msgpack_object *b = mtp_map_get(r, "busy");
    info->busy = b && b->type == MSGPACK_OBJECT_BOOLEAN && b->via.boolean;
    mtp_stats_parse(mtp_map_get(r, "stats"), &info->stats);
    return MTP_OK;
}

/* ---- tokenizer -------------------------------------------------------------- */

int mtp_tokenize(mtp_client *c, const char *text, int add_special,
                 int32_t **ids, size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text)
        return mtp_fail(c, MTP_E_ARG, "tokenize: no text");
    struct params p;
    params_init(&p, add_special >= 0 ? 2 : 1);
    mtp_pack_str(&p.pk, "text");
    mtp_pack_str(&p.pk, text);
    if (add_special >= 0) {
        mtp_pack_str(&p.pk, "add_special");
        if (add_special)
            msgpack_pack_true(&p.pk);
        else
            msgpack_pack_false(&p.pk);
    }
    const msgpack_object *r;
    int rc = params_call(c, &p, "tokenize", NULL, NULL, &r);
    if (rc < 0)
        return rc;
    const msgpack_object *a = mtp_map_get(r, "ids");
    if (!a || a->type != MSGPACK_OBJECT_ARRAY)
        return bad_reply(c, "tokenize", "ids");
    *ids = malloc((a->via.array.size + 1) * sizeof **ids);
    if (!*ids)
        return mtp_fail(c, MTP_E_NOMEM, NULL);
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        int64_t v = 0;
        mtp_obj_int(&a->via.array.ptr[i], &v);
        (*ids)[i] = (int32_t)v;
    }
    *n_ids = a->via.array.size;
    return MTP_OK;
}

int mtp_detokenize(mtp_client *c, const int32_t *ids, size_t n_ids,
                   char **text)
{
    *text = NULL;
    struct params p;
    params_init(&p, 1);
    mtp_pack_str(&p.pk, "ids");
    msgpack_pack_array(&p.pk, n_ids);
    for (size_t i = 0; i < n_ids; i++)
        msgpack_pack_int32(&p.pk, ids[i]);
    const msgpack_object *r;
    int rc = params_call(c, &p, "detokenize", NULL, NULL, &r);
    if (rc < 0)
        return rc;
    const msgpack_object *t = mtp_map_get(r, "text");
    if (!t || t->type != MSGPACK_OBJECT_STR)
        return bad_reply(c, "detokenize", "text");
    *text = malloc(t->via.str.size + 1);
    if (!*text)
        return mtp_fail(c, MTP_E_NOMEM, NULL);
    memcpy(*text, t->via.str.ptr, t->via.str.size);
    (*text)[t->via.str.size] = 0;
    return MTP_OK;
}

/* ---- stats ------------------------------------------------------------------- */

int mtp_server_stats(mtp_client *c, struct mtp_server_stats *st, char **json)
{
    if (json)
        *json = NULL;
    struct params p;
    params_init(&p, 0);
    const msgpack_object *r;
    int rc = params_call(c, &p, "stats", NULL, NULL, &r);
    if (rc < 0)
        return rc;
    if (r->type != MSGPACK_OBJECT_MAP)
        return bad_reply(c, "stats", "a map");
    if (st) {
        memset(st, 0, sizeof *st);
        mtp_obj_double(mtp_map_get(r, "uptime_seconds"), &st->uptime_seconds);
        mtp_obj_double(mtp_map_get(r, "tokens_per_s"), &st->tokens_per_s);
        mtp_obj_int(mtp_map_get(r, "requests"), &st->requests);
        mtp_obj_int(mtp_map_get(r, "requests_active"), &st->requests_active);
        mtp_obj_int(mtp_map_get(r, "queue_depth"), &st->queue_depth);
        mtp_obj_int(mtp_map_get(r, "tokens_generated"),
                    &st->tokens_generated);
        mtp_obj_int(mtp_map_get(r, "prompt_tokens"), &st->prompt_tokens);
        mtp_obj_int(mtp_map_get(r, "prompt_tokens_reused"),
                    &st->prompt_tokens_reused);
        mtp_obj_int(mtp_map_get(r, "sessions"), &st->sessions);
        mtp_obj_int(mtp_map_get(r, "kv_bytes_in_use"), &st->kv_bytes_in_use);
        mtp_obj_int(mtp_map_get(r, "kv_budget_bytes"), &st->kv_budget_bytes);
        mtp_stats_parse(mtp_map_get(r, "spec"), &st->spec);
    }
    if (json && !(*json = mtp_to_json(r)))
        return mtp_fail(c, MTP_E_NOMEM, NULL);
    return MTP_OK;
}
