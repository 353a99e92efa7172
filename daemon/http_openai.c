/*
 * http_openai.c - POST /v1/chat/completions, POST /v1/completions (FIM
 * with `suffix`) and GET /v1/models (docs/http.md).
 *
 * A request body (model/json.h) becomes the same kind of job as a
 * msgpack-rpc `generate` (admitted against the queue and the KV budget,
 * run by the compute thread in the shared batch); the job's output
 * becomes OpenAI's JSON reply, or server-sent events flushed per chunk.
 * mtpd's own fields ride in an "mtpd" object on both sides.
 *
 * Sessions: `session` (or `mtpd.session`, or the X-Mtpd-Session header)
 * names a daemon session; without one, the request reuses the recent
 * HTTP conversation (a session this file keeps, LRU) that shares the
 * longest prefix with it when the request extends most of it, as
 * llama.cpp's prompt cache does; otherwise it starts a new one.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http_int.h"
#include "srv_engine.h"
#include "srv_log.h"

#define DEFAULT_MAX_TOKENS_CHAT 256
#define DEFAULT_MAX_TOKENS_COMPLETION 16 /* OpenAI's documented default */

/* A parsed generation request; strings point into the JSON document. */
struct gen_req {
    enum http_kind kind;
    struct mtpd_tok_ids toks;
    int max_tokens;
    double temperature, top_p;
    int top_k;
    uint64_t seed;
    const char *stops[SRV_MAX_STOPS];
    int n_stops;
    int draft_tokens;
    int stream, include_usage, provenance, ignore_eos;
    const char *session;
};

/* An error while parsing: reply 400 naming the field. */
struct perr {
    char field[64];
    char msg[256];
    int status;
    const char *code;
};

static int bad(struct perr *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct perr *e, const char *field, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = 400;
    e->code = "bad_params";
    return -1;
}

/* The member k of object o; NULL when absent or null. */
static const struct json *get(const struct json *o, const char *k)
{
    const struct json *v = json_get(o, k);
    return v && v->type != JSON_NULL ? v : NULL;
}

static int get_num(const struct json *o, const char *k, double lo,
                   double hi, double *out, struct perr *e)
{
    const struct json *v = get(o, k);
    if (!v)
        return 0;
    if (json_double(v, out) < 0 || *out < lo || *out > hi)
        return bad(e, k, "%s: expected a number in [%g, %g]", k, lo, hi);
    return 1;
}

static int get_int(const struct json *o, const char *k, int64_t lo,
                   int64_t hi, int64_t *out, struct perr *e)
{
    const struct json *v = get(o, k);
    if (!v)
        return 0;
    if (json_int(v, out) < 0 || *out < lo || *out > hi)
        return bad(e, k, "%s: expected an integer in [%lld, %lld]", k,
                   (long long)lo, (long long)hi);
    return 1;
}

static int get_bool(const struct json *o, const char *k, int *out,
                    struct perr *e)
{
    const struct json *v = get(o, k);
    if (!v)
        return 0;
    if (json_bool(v, out) < 0)
        return bad(e, k, "%s: expected a boolean", k);
    return 1;
}

/* Options both endpoints share. */
static int parse_options(struct srv *s, const struct json *o,
                         struct gen_req *g, struct perr *e)
{
    int ctx = mtpd_model_config(s->model)->max_position_embeddings;
    int64_t iv;
    double dv;
    const struct json *v;
    if ((v = get(o, "model")) && v->type != JSON_STRING)
        return bad(e, "model", "model: expected a string");
    int r = get_int(o, "max_tokens", 1, ctx, &iv, e);
    if (r < 0)
        return -1;
    if (r)
        g->max_tokens = (int)iv;
    if ((r = get_int(o, "max_completion_tokens", 1, ctx, &iv, e)) < 0)
        return -1;
    if (r)
        g->max_tokens = (int)iv;
    if ((r = get_num(o, "temperature", 0, 100, &dv, e)) < 0)
        return -1;
    if (r)
        g->temperature = dv;
    if ((r = get_num(o, "top_p", 0, 1, &dv, e)) < 0)
        return -1;
    if (r) {
        if (dv <= 0)
            return bad(e, "top_p", "top_p: expected a number in (0, 1]");
        g->top_p = dv;
    }
    if ((r = get_int(o, "top_k", -1, 1 << 30, &iv, e)) < 0)
        return -1;
    if (r)
        g->top_k = iv < 0 ? 0 : (int)iv; /* -1: off, as llama.cpp/vLLM */
    if ((r = get_int(o, "seed", INT64_MIN, INT64_MAX, &iv, e)) < 0)
        return -1;
    if (r)
        g->seed = (uint64_t)iv;
    if (get_int(o, "n", 1, 1, &iv, e) < 0)
        return bad(e, "n", "n: only 1 is supported");
    if (get_int(o, "best_of", 1, 1, &iv, e) < 0)
        return bad(e, "best_of", "best_of: only 1 is supported");
    if (get_num(o, "presence_penalty", 0, 0, &dv, e) < 0)
        return bad(e, "presence_penalty",
                   "presence_penalty: only 0 is supported");
    if (get_num(o, "frequency_penalty", 0, 0, &dv, e) < 0)
        return bad(e, "frequency_penalty",
                   "frequency_penalty: only 0 is supported");
    if ((v = get(o, "logit_bias")) &&
        (v->type != JSON_OBJECT || v->len))
        return bad(e, "logit_bias", "logit_bias: not supported");
    if ((v = get(o, "tools")) && (v->type != JSON_ARRAY || v->len))
        return bad(e, "tools", "tools: not supported");
    if ((v = get(o, "user")) && v->type != JSON_STRING)
        return bad(e, "user", "user: expected a string");
    if ((v = get(o, "response_format"))) {
        const char *t = json_str(get(v, "type"));
        if (v->type != JSON_OBJECT || !t || strcmp(t, "text"))
            return bad(e, "response_format",
                       "response_format: only {\"type\": \"text\"} is "
                       "supported");
    }
    if (get_bool(o, "stream", &g->stream, e) < 0)
        return -1;
    if ((v = get(o, "stream_options"))) {
        if (v->type != JSON_OBJECT)
            return bad(e, "stream_options",
                       "stream_options: expected an object");
        if (get_bool(v, "include_usage", &g->include_usage, e) < 0)
            return bad(e, "stream_options.include_usage",
                       "stream_options.include_usage: expected a boolean");
    }
    if (get_bool(o, "ignore_eos", &g->ignore_eos, e) < 0)
        return -1;
    if ((v = get(o, "stop"))) {
        if (v->type == JSON_STRING) {
            g->stops[g->n_stops++] = v->u.str;
        } else if (v->type == JSON_ARRAY) {
            if (v->len > SRV_MAX_STOPS)
                return bad(e, "stop", "stop: at most %d strings",
                           SRV_MAX_STOPS);
            for (size_t i = 0; i < v->len; i++) {
                const struct json *x = v->u.items[i];
                if (x->type != JSON_STRING)
                    return bad(e, "stop", "stop: expected a string or an "
                               "array of strings");
                g->stops[g->n_stops++] = x->u.str;
            }
        } else {
            return bad(e, "stop", "stop: expected a string or an array of "
                       "strings");
        }
        for (int i = 0; i < g->n_stops; i++)
            if (strlen(g->stops[i]) > SRV_MAX_STOP_LEN)
                return bad(e, "stop", "stop: each at most %d bytes",
                           SRV_MAX_STOP_LEN);
    }
    if ((v = get(o, "session"))) {
        if (v->type != JSON_STRING)
            return bad(e, "session", "session: expected a string");
        g->session = v->u.str;
    }
    /* mtpd's own fields: top level (as vLLM's extra parameters) or in
     * the "mtpd" object */
    const struct json *ext = get(o, "mtpd");
    if (ext && ext->type != JSON_OBJECT)
        return bad(e, "mtpd", "mtpd: expected an object");
    const struct json *objs[2] = {o, ext};
    for (int i = 0; i < 2; i++) {
        const struct json *x = objs[i];
        if (!x)
            continue;
        const char *dk = i ? "mtpd.draft_tokens" : "draft_tokens";
        if ((v = get(x, "draft_tokens"))) {
            const char *str = json_str(v);
            if (str && !strcmp(str, "auto"))
                g->draft_tokens = SPEC_K_AUTO;
            else if (json_int(v, &iv) == 0 && iv >= 0 && iv <= SPEC_K_MAX)
                g->draft_tokens = (int)iv;
            else
                return bad(e, dk, "%s: expected an integer in [0, %d] or "
                           "\"auto\"", dk, SPEC_K_MAX);
        }
        if (i && (v = get(x, "session"))) {
            if (v->type != JSON_STRING)
                return bad(e, "mtpd.session",
                           "mtpd.session: expected a string");
            g->session = v->u.str;
        }
        if (i && get_bool(x, "provenance", &g->provenance, e) < 0)
            return bad(e, "mtpd.provenance",
                       "mtpd.provenance: expected a boolean");
    }
    return 0;
}

/* The text of a message's content: a string, or an array of parts of
 * which the {"type": "text", "text": ...} ones count. *owned is set when
 * the text was assembled (the caller frees it). */
static int content_text(const struct json *c, const char **text,
                        size_t *len, char **owned, struct perr *e)
{
    *owned = NULL;
    if (!c) {
        *text = "";
        *len = 0;
        return 0;
    }
    if (c->type == JSON_STRING) {
        *text = c->u.str;
        *len = c->len;
        return 0;
    }
    if (c->type != JSON_ARRAY)
        return bad(e, "messages", "messages[].content: expected a string or "
                   "an array of text parts");
    size_t total = 0;
    for (size_t i = 0; i < c->len; i++) {
        const struct json *p = c->u.items[i];
        const char *ty = json_str(get(p, "type"));
        const struct json *t = get(p, "text");
        if (!ty || strcmp(ty, "text") || !t || t->type != JSON_STRING)
            return bad(e, "messages", "messages[].content[]: only "
                       "{\"type\": \"text\", \"text\": STR} parts are "
                       "supported");
        total += t->len;
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return bad(e, "messages", "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < c->len; i++) {
        const struct json *t = get(c->u.items[i], "text");
        memcpy(buf + n, t->u.str, t->len);
        n += t->len;
    }
    buf[n] = 0;
    *owned = buf;
    *text = buf;
    *len = n;
    return 0;
}

static int parse_chat(struct srv *s, const struct json *o, struct gen_req *g,
                      struct perr *e)
{
    const struct json *m = get(o, "messages");
    if (!m || m->type != JSON_ARRAY || m->len == 0)
        return bad(e, "messages", "messages: expected a non-empty array of "
                   "{role, content}");
    if (get(o, "logprobs") && get(o, "logprobs")->type == JSON_TRUE)
        return bad(e, "logprobs", "logprobs: not supported");
    struct mtpd_tok_msg *msgs = calloc(m->len, sizeof *msgs);
    char **owned = calloc(m->len, sizeof *owned);
    int rc = 0;
    if (!msgs || !owned) {
        rc = bad(e, "messages", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->len; i++) {
        const struct json *x = m->u.items[i];
        const char *role = json_str(get(x, "role"));
        if (x->type != JSON_OBJECT || !role) {
            rc = bad(e, "messages", "messages[%zu]: expected {\"role\": STR, "
                     "\"content\": STR}", i);
            goto out;
        }
        msgs[i].role = role;
        if ((rc = content_text(get(x, "content"), &msgs[i].content,
                               &msgs[i].content_len, &owned[i], e)) < 0)
            goto out;
    }
    char err[160] = "";
    int tr = mtpd_tok_chat_encode(s->enc, msgs, m->len, 1, &g->toks, err,
                                  sizeof err);
    if (tr < 0)
        rc = bad(e, "messages", "messages: %s",
                 err[0] ? err : mtpd_tok_err_str(tr));
out:
    if (owned)
        for (size_t i = 0; i < m->len; i++)
            free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}

static int parse_completion(struct srv *s, const struct json *o,
                            struct gen_req *g, struct perr *e)
{
    const struct json *p = get(o, "prompt");
    const struct json *sfx = get(o, "suffix");
    int vocab = mtpd_model_config(s->model)->vocab_size;
    int echo = 0;
    if (get_bool(o, "echo", &echo, e) < 0)
        return -1;
    if (echo)
        return bad(e, "echo", "echo: not supported");
    if (get(o, "logprobs"))
        return bad(e, "logprobs", "logprobs: not supported");
    if (sfx && sfx->type != JSON_STRING)
        return bad(e, "suffix", "suffix: expected a string");
    /* a one-element array is the same prompt */
    if (p && p->type == JSON_ARRAY && p->len == 1 &&
        (p->u.items[0]->type == JSON_STRING ||
         p->u.items[0]->type == JSON_ARRAY))
        p = p->u.items[0];
    if (!p)
        return bad(e, "prompt", "prompt: required (a string or an array of "
                   "token ids)");
    char err[160] = "";
    int tr;
    if (p->type == JSON_STRING) {
        if (sfx)
            tr = mtpd_tok_fim_encode(s->enc, p->u.str, p->len, sfx->u.str,
                                     sfx->len, &g->toks, err, sizeof err);
        else
            tr = mtpd_tok_encode(s->enc, p->u.str, p->len,
                                 MTPD_TOK_ADD_SPECIAL, &g->toks, err,
                                 sizeof err);
        if (tr < 0)
            return bad(e, sfx ? "suffix" : "prompt", "%s",
                       err[0] ? err : mtpd_tok_err_str(tr));
        return 0;
    }
    if (p->type != JSON_ARRAY)
        return bad(e, "prompt", "prompt: expected a string or an array of "
                   "token ids");
    if (sfx)
        return bad(e, "suffix", "suffix: needs a text prompt");
    for (size_t i = 0; i < p->len; i++) {
        int64_t id;
        if (json_int(p->u.items[i], &id) < 0 || id < 0 || id >= vocab)
            return bad(e, "prompt", "prompt: a batch of prompts is not "
                       "supported; token ids must be integers in [0, %d)",
                       vocab);
        int32_t t = (int32_t)id;
        if (mtpd_tok_ids_append(&g->toks, &t, 1) < 0)
            return bad(e, "prompt", "out of memory");
    }
    return 0;
}

/* ---- sessions ---- */

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

static void conv_remove(struct http_srv *h, int i)
{
    memmove(h->convs[i], h->convs[i + 1],
            sizeof h->convs[0] * (size_t)(h->n_convs - i - 1));
    h->n_convs--;
}

static void conv_to_front(struct http_srv *h, int i)
{
    char id[SRV_SESSION_ID_LEN + 1];
    memcpy(id, h->convs[i], sizeof id);
    memmove(h->convs[1], h->convs[0], sizeof h->convs[0] * (size_t)i);
    memcpy(h->convs[0], id, sizeof id);
}

/* The session for a request without one: the recent conversation it
 * extends, or a new one (the least recent conversation makes room), or a
 * temporary one when conversations are off or sessions are at their
 * limit. */
static struct session *conv_session(struct http_srv *h,
                                    const struct gen_req *g, int *reused)
{
    struct srv *s = h->srv;
    int want = s->cfg.http_conversations;
    if (want > HTTP_MAX_CONVS)
        want = HTTP_MAX_CONVS;
    *reused = 0;
    if (want <= 0)
        return session_new(s, 1);
    int best = -1, best_len = 0;
    for (int i = 0; i < h->n_convs;) {
        struct session *se = session_find(s, h->convs[i]);
        if (!se) { /* closed, evicted or expired */
            conv_remove(h, i);
            continue;
        }
        int n = common_prefix(se->hist, se->n_hist, g->toks.v,
                              (int)g->toks.n);
        /* the request extends most of what the session holds (a chat
         * turn re-renders the last reply, so not always all of it) */
        if (!se->busy && n > best_len && 2 * n >= se->n_hist) {
            best = i;
            best_len = n;
        }
        i++;
    }
    if (best >= 0) {
        conv_to_front(h, best);
        *reused = 1;
        h->conv_reused++;
        return session_find(s, h->convs[0]);
    }
    while (h->n_convs >= want) { /* the least recent idle one goes */
        int i = h->n_convs - 1;
        while (i >= 0) {
            struct session *se = session_find(s, h->convs[i]);
            if (!se || !se->busy)
                break;
            i--;
        }
        if (i < 0)
            return session_new(s, 1); /* all busy */
        struct session *se = session_find(s, h->convs[i]);
        if (se)
            session_close(s, se);
        conv_remove(h, i);
    }
    if (s->sessions.n >= s->cfg.max_sessions)
        return session_new(s, 1);
    struct session *se = session_new(s, 0);
    if (!se)
        return NULL;
    memmove(h->convs[1], h->convs[0], sizeof h->convs[0] *
            (size_t)h->n_convs);
    memcpy(h->convs[0], se->id, sizeof h->convs[0]);
    h->n_convs++;
    return se;
}

/* ---- submit ---- */

static void gen_error(struct http_srv *h, struct evhttp_request *req,
                      enum http_path path, const struct perr *e)
{
    http_error(h, req, path, e->status, e->field[0] ? e->field : NULL,
               e->code, "%s", e->msg);
}

/* The reply 500: out of memory. */
static int internal_oom(struct perr *e)
{
    e->status = 500;
    e->code = "internal";
    e->field[0] = 0;
    snprintf(e->msg, sizeof e->msg, "out of memory");
    return -1;
}

/* job_admit()'s error as the HTTP reply. */
static int admit_error(struct srv *s, const struct job_admit_err *ae,
                       struct perr *e)
{
    e->field[0] = 0;
    switch (ae->code) {
    case SRV_E_UNKNOWN_SESSION:
        e->status = 404;
        e->code = "unknown_session";
        snprintf(e->field, sizeof e->field, "session");
        break;
    case SRV_E_BUSY:
        e->status = 409;
        e->code = "busy";
        snprintf(e->field, sizeof e->field, "session");
        break;
    case SRV_E_KV_BUDGET: {
        int never = ae->need > s->cfg.kv_budget;
        e->status = never ? 400 : 429;
        e->code = "kv_budget";
        snprintf(e->field, sizeof e->field, "%s",
                 never ? "max_tokens" : "");
        snprintf(e->msg, sizeof e->msg, "the request needs %zu bytes of KV "
                 "cache; %zu of the budget's %zu are held by running "
                 "requests", ae->need, ae->held, s->cfg.kv_budget);
        return -1;
    }
    default:
        return internal_oom(e);
    }
    snprintf(e->msg, sizeof e->msg, "%s", ae->msg);
    return -1;
}

static int submit(struct http_srv *h, struct evhttp_request *req,
                  enum http_path path, struct gen_req *g, struct perr *e)
{
    struct srv *s = h->srv;
    int ctx = mtpd_model_config(s->model)->max_position_embeddings;
    if (g->toks.n == 0)
        return bad(e, g->kind == HTTP_CHAT ? "messages" : "prompt",
                   "the prompt encodes to no tokens");
    if (g->toks.n >= (size_t)ctx)
        return bad(e, g->kind == HTTP_CHAT ? "messages" : "prompt",
                   "the prompt (%zu tokens) does not fit the context (%d)",
                   g->toks.n, ctx);
    if (s->jobs_inflight >= s->cfg.max_queue) {
        e->status = 429;
        e->code = "overloaded";
        e->field[0] = 0;
        snprintf(e->msg, sizeof e->msg, "the request queue is full "
                 "(--max-queue %d); retry later", s->cfg.max_queue);
        return -1;
    }
    struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
    const char *hdr = evhttp_find_header(ih, "X-Mtpd-Session");
    if (!g->session && hdr && *hdr)
        g->session = hdr;
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return internal_oom(e);
    int conv = 0;
    struct job_admit_req q = {
        .session = g->session,
        .toks = &g->toks,
        .max_tokens = g->max_tokens ? g->max_tokens
                      : g->kind == HTTP_CHAT ? DEFAULT_MAX_TOKENS_CHAT
                                             : DEFAULT_MAX_TOKENS_COMPLETION,
        .temperature = g->temperature, .top_p = g->top_p,
        .top_k = g->top_k, .seed = g->seed,
        .draft_tokens = g->draft_tokens, .ignore_eos = g->ignore_eos,
        .stream = g->stream,
        .stops = g->stops, .n_stops = g->n_stops,
    };
    if (!g->session) {
        q.sess = conv_session(h, g, &conv);
        if (!q.sess) {
            free(r);
            return internal_oom(e);
        }
    }
    struct job_admit_err ae;
    struct job *j = job_admit(s, &q, &ae);
    if (!j) {
        free(r);
        return admit_error(s, &ae, e);
    }
    struct session *se = j->sess;
    r->req = req;
    r->evcon = evhttp_request_get_connection(req);
    r->job = j;
    r->kind = g->kind;
    r->path = path;
    r->stream = g->stream;
    r->include_usage = g->include_usage;
    r->provenance = g->provenance;
    r->created = (long long)time(NULL);
    r->t0 = j->t_submit;
    snprintf(r->id, sizeof r->id, "%s-%llx%08llx",
             g->kind == HTTP_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)time(NULL),
             (unsigned long long)++h->next_id);
    if (!se->temporary)
        memcpy(r->session, se->id, sizeof r->session);
    http_req_link(h, r);
    j->http = r;
    SRV_LOG(SLOG_DEBUG, "http %s: session %.8s%s, %d prompt tokens, "
            "max_tokens %d", r->id, se->id, conv ? " (conversation)" : "",
            j->n_prompt, j->params.max_tokens);
    sched_submit(&s->sched, j);
    return 0;
}

void http_openai_generate(struct http_srv *h, struct evhttp_request *req,
                          enum http_path path)
{
    struct srv *s = h->srv;
    if (h->stopping || s->shutting_down) {
        http_error(h, req, path, 503, NULL, "shutting_down",
                   "the daemon is stopping");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    char err[160];
    struct json_doc *doc = json_parse(body, len, err, sizeof err);
    if (!doc) {
        http_error(h, req, path, 400, NULL, "bad_json",
                   "the body is not valid JSON: %s", err);
        return;
    }
    const struct json *o = json_root(doc);
    struct gen_req g = {.kind = path == HP_CHAT ? HTTP_CHAT
                                                : HTTP_COMPLETION,
                        .top_p = 1, .draft_tokens = SRV_DRAFT_UNSET};
    struct perr e = {0};
    int rc;
    if (o->type != JSON_OBJECT)
        rc = bad(&e, "body", "the body must be a JSON object");
    else
        rc = parse_options(s, o, &g, &e);
    if (rc == 0)
        rc = g.kind == HTTP_CHAT ? parse_chat(s, o, &g, &e)
                                 : parse_completion(s, o, &g, &e);
    if (rc == 0)
        rc = submit(h, req, path, &g, &e);
    if (rc < 0)
        gen_error(h, req, path, &e);
    mtpd_tok_ids_free(&g.toks);
    json_doc_free(doc);
}

/* ---- replies ---- */

static const char *finish_reason(const struct job *j)
{
    if (j->finish_override == 2)
        return "shutdown";
    switch (j->finish) {
    case SPEC_FINISH_STOP: return "stop";
    case SPEC_FINISH_LENGTH:
    case SPEC_FINISH_CONTEXT: return "length";
    case SPEC_FINISH_CANCELLED: return "cancelled";
    default: return spec_finish_str(j->finish);
    }
}

static void put_usage(struct jw *w, const struct job *j)
{
    jw_key(w, "usage");
    jw_obj(w);
    jw_key(w, "prompt_tokens");
    jw_int(w, j->n_prompt);
    jw_key(w, "completion_tokens");
    jw_int(w, (long long)j->out_ids.n);
    jw_key(w, "total_tokens");
    jw_int(w, j->n_prompt + (long long)j->out_ids.n);
    jw_key(w, "prompt_tokens_details");
    jw_obj(w);
    jw_key(w, "cached_tokens");
    jw_int(w, j->reused);
    jw_end(w);
    jw_end(w);
}

/* The "mtpd" object of a final reply: finish reason as the daemon says
 * it, session, and the speculative stats of `mtpd generate --json`. */
static void put_ext(struct jw *w, const struct http_req *r,
                    const struct job *j)
{
    jw_key(w, "mtpd");
    jw_obj(w);
    jw_key(w, "finish_reason");
    jw_cstr(w, j->finish_override == 2 ? "shutdown"
                                       : spec_finish_str(j->finish));
    jw_key(w, "session");
    jw_cstr(w, r->session[0] ? r->session : NULL);
    jw_key(w, "prompt_tokens_reused");
    jw_int(w, j->reused);
    jw_key(w, "queue_seconds");
    jw_num(w, j->queue_s);
    if (j->errmsg[0]) {
        jw_key(w, "error");
        jw_cstr(w, j->errmsg);
    }
    char buf[4096];
    int n = spec_stats_json(&j->stats, buf, sizeof buf);
    if (n > 0 && (size_t)n < sizeof buf) {
        jw_key(w, "stats");
        jw_json(w, buf);
    }
    jw_end(w);
}

static void put_head(struct jw *w, const struct http_req *r, int chunk)
{
    jw_key(w, "id");
    jw_cstr(w, r->id);
    jw_key(w, "object");
    jw_cstr(w, r->kind == HTTP_CHAT
                   ? (chunk ? "chat.completion.chunk" : "chat.completion")
                   : "text_completion");
    jw_key(w, "created");
    jw_int(w, r->created);
    jw_key(w, "model");
    jw_cstr(w, r->h->model_name);
    jw_key(w, "system_fingerprint");
    jw_cstr(w, "mtpd-" MTPD_VERSION);
}

/* Opens a reply (or a stream chunk) up to its one choice's "index":
 * {<head>, "choices": [{"index": 0, ... */
static void choice_begin(struct jw *w, const struct http_req *r, int chunk)
{
    jw_obj(w);
    put_head(w, r, chunk);
    jw_key(w, "choices");
    jw_arr(w);
    jw_obj(w);
    jw_key(w, "index");
    jw_int(w, 0);
}

/* Closes the choice and the choices array: ..., "logprobs": null,
 * "finish_reason": finish}] (null while streaming). */
static void choice_end(struct jw *w, const char *finish)
{
    jw_key(w, "logprobs");
    jw_null(w);
    jw_key(w, "finish_reason");
    jw_cstr(w, finish);
    jw_end(w);
    jw_end(w);
}

static void full_reply(struct http_req *r, struct job *j)
{
    struct jw w;
    jw_init(&w);
    choice_begin(&w, r, 0);
    if (r->kind == HTTP_CHAT) {
        jw_key(&w, "message");
        jw_obj(&w);
        jw_key(&w, "role");
        jw_cstr(&w, "assistant");
        jw_key(&w, "content");
        jw_str(&w, j->out_text ? j->out_text : "", j->out_len);
        jw_end(&w);
    } else {
        jw_key(&w, "text");
        jw_str(&w, j->out_text ? j->out_text : "", j->out_len);
    }
    choice_end(&w, finish_reason(j));
    put_usage(&w, j);
    put_ext(&w, r, j);
    jw_end(&w);
    if (r->session[0])
        evhttp_add_header(evhttp_request_get_output_headers(r->req),
                          "X-Mtpd-Session", r->session);
    if (w.oom)
        http_error(r->h, r->req, r->path, 500, NULL, "internal",
                   "out of memory");
    else
        http_reply(r->h, r->req, r->path, 200, "application/json", w.p,
                   w.n);
    jw_free(&w);
}

/* Starts the event stream (status line and headers). */
static void stream_start(struct http_req *r)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(oh, "Content-Type", "text/event-stream");
    evhttp_add_header(oh, "Cache-Control", "no-cache");
    evhttp_add_header(oh, "X-Accel-Buffering", "no");
    if (r->session[0])
        evhttp_add_header(oh, "X-Mtpd-Session", r->session);
    evhttp_send_reply_start(r->req, 200, "OK");
    http_count(r->h, r->path, 200);
    r->started = 1;
}

/* Sends one SSE event ("data: " + w + blank line). 0, or -1 when the
 * client stopped reading (over --max-outbuf): its connection is closed
 * and the generation cancelled. */
static int stream_send(struct http_req *r, struct jw *w)
{
    struct evhttp_connection *evcon = r->evcon;
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon)
                                    : NULL;
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) >
                   r->h->srv->cfg.max_outbuf) {
        SRV_LOG(SLOG_WARN, "http %s: the client does not read (over "
                "--max-outbuf): closing it", r->id);
        evhttp_connection_free(evcon); /* on_conn_close: gone, cancelled */
        return -1;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return 0;
    evbuffer_add(b, "data: ", 6);
    if (w)
        evbuffer_add(b, w->p, w->n);
    else
        evbuffer_add(b, "[DONE]", 6);
    evbuffer_add(b, "\n\n", 2);
    evhttp_send_reply_chunk(r->req, b);
    evbuffer_free(b);
    return 0;
}

/* One chunk of streamed text (and, with mtpd.provenance, every token:
 * id, how it was produced, the text it released). */
static int stream_chunk(struct http_req *r, const struct mtpd_tok_ids *ids,
                        const struct mtpd_tok_ids *src, const char *text,
                        size_t len, const char *finish, struct job *j)
{
    struct jw w;
    jw_init(&w);
    choice_begin(&w, r, 1);
    if (r->kind == HTTP_CHAT) {
        jw_key(&w, "delta");
        jw_obj(&w);
        if (!finish) {
            if (r->started < 2) { /* the first delta names the role */
                jw_key(&w, "role");
                jw_cstr(&w, "assistant");
                r->started = 2;
            }
            jw_key(&w, "content");
            jw_str(&w, text, len);
        }
        jw_end(&w);
    } else {
        jw_key(&w, "text");
        jw_str(&w, finish ? "" : text, finish ? 0 : len);
    }
    choice_end(&w, finish);
    if (finish) {
        put_ext(&w, r, j);
    } else if (r->provenance && ids && ids->n) {
        jw_key(&w, "mtpd");
        jw_obj(&w);
        jw_key(&w, "tokens");
        jw_arr(&w);
        size_t off = 0;
        for (size_t i = 0; i < ids->n; i++) {
            size_t nb = src && 2 * i + 1 < src->n ? (size_t)src->v[2 * i + 1]
                                                  : 0;
            if (off + nb > len)
                nb = len - off;
            if (i + 1 == ids->n)
                nb = len - off; /* text released at the end with it */
            jw_arr(&w);
            jw_int(&w, ids->v[i]);
            jw_int(&w, src && 2 * i < src->n ? src->v[2 * i] : 0);
            jw_str(&w, text + off, nb);
            jw_end(&w);
            off += nb;
        }
        jw_end(&w);
        jw_end(&w);
    }
    jw_end(&w);
    int rc = w.oom ? 0 : stream_send(r, &w);
    jw_free(&w);
    return rc;
}

static void stream_usage(struct http_req *r, struct job *j)
{
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    put_head(&w, r, 1);
    jw_key(&w, "choices");
    jw_arr(&w);
    jw_end(&w);
    put_usage(&w, j);
    jw_end(&w);
    if (!w.oom)
        stream_send(r, &w);
    jw_free(&w);
}

static int err_status(enum srv_err e)
{
    switch (e) {
    case SRV_E_BAD_PARAMS:
    case SRV_E_OVER_LIMIT: return 400;
    case SRV_E_KV_BUDGET:
    case SRV_E_OVERLOADED: return 429;
    case SRV_E_CANCELLED:
    case SRV_E_SHUTTING_DOWN: return 503;
    default: return 500;
    }
}

void http_job_output(struct srv *s, struct job *j,
                     const struct mtpd_tok_ids *ids,
                     const struct mtpd_tok_ids *src, const char *text,
                     size_t len, int done)
{
    (void)s;
    struct http_req *r = j->http;
    if (ids->n && !r->got_first) {
        r->got_first = 1;
        http_hist_observe(&r->h->ttft, srv_now() - r->t0);
    }
    if (done && j->started && j->err == SRV_OK)
        http_hist_observe(&r->h->e2e, srv_now() - r->t0);
    if (r->req && r->stream && j->err == SRV_OK &&
        (len || (r->provenance && ids->n))) {
        if (!r->started)
            stream_start(r);
        stream_chunk(r, ids, src, text, len, NULL, j);
    }
    if (!done)
        return;
    j->http = NULL;
    r->job = NULL;
    if (r->evcon) /* the last reply: a drop no longer concerns us */
        evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    if (r->req) {
        http_track_flush(r->h, r->req);
        if (j->err != SRV_OK && !r->started) {
            enum srv_err code = j->err;
            if (code == SRV_E_CANCELLED && j->finish_override == 2)
                code = SRV_E_SHUTTING_DOWN;
            http_error(r->h, r->req, r->path, err_status(code), NULL,
                       srv_err_code(code), "%s", j->errmsg);
        } else if (!r->stream) {
            full_reply(r, j);
        } else {
            if (!r->started)
                stream_start(r);
            if (stream_chunk(r, NULL, NULL, "", 0, finish_reason(j), j) == 0) {
                if (r->include_usage)
                    stream_usage(r, j);
                stream_send(r, NULL);
            }
            if (r->req)
                evhttp_send_reply_end(r->req);
        }
    }
    http_req_free(r);
}

void http_openai_models(struct http_srv *h, struct evhttp_request *req)
{
    struct srv *s = h->srv;
    const struct mtpd_config *mc = mtpd_model_config(s->model);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "object");
    jw_cstr(&w, "list");
    jw_key(&w, "data");
    jw_arr(&w);
    jw_obj(&w);
    jw_key(&w, "id");
    jw_cstr(&w, h->model_name);
    jw_key(&w, "object");
    jw_cstr(&w, "model");
    jw_key(&w, "created");
    jw_int(&w, (long long)srv_wall() - (long long)(srv_now() - s->start_time));
    jw_key(&w, "owned_by");
    jw_cstr(&w, "mtpd");
    jw_key(&w, "max_model_len");
    jw_int(&w, mc->max_position_embeddings);
    jw_key(&w, "mtpd");
    jw_obj(&w);
    jw_key(&w, "vocab_size");
    jw_int(&w, mc->vocab_size);
    jw_key(&w, "mtp_modules");
    jw_int(&w, spec_engine_n_mtp(s->engine));
    jw_key(&w, "kv_bytes_per_token");
    jw_int(&w, (long long)mtpd_kv_bytes_per_token(s->model));
    jw_end(&w);
    jw_end(&w);
    jw_end(&w);
    jw_end(&w);
    http_reply(h, req, HP_MODELS, 200, "application/json", w.p ? w.p : "",
               w.n);
    jw_free(&w);
}
