/*
 * methods.c - one handler per msgpack-rpc method (docs/protocol.md), on
 * the loop thread. Handlers take the connection and a validated request
 * and answer through reply.c; generate/fim check the queue limits, admit
 * the job (admit.c: session, KV budget) and hand it to the compute thread.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv.h"
#include "srv_engine.h"
#include "srv_log.h"

#define DEFAULT_MAX_TOKENS 256

static void reply_err(struct conn *c, uint32_t msgid, enum srv_err code,
                      const char *field_or_limit, const char *msg)
{
    struct srv_error e = {.code = code};
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    if (field_or_limit && code == SRV_E_BAD_PARAMS)
        snprintf(e.field, sizeof e.field, "%s", field_or_limit);
    if (field_or_limit && code == SRV_E_OVER_LIMIT)
        snprintf(e.limit, sizeof e.limit, "%s", field_or_limit);
    reply_error(c, msgid, &e);
}

static void m_hello(struct conn *c, struct srv_req *r)
{
    struct srv *s = c->srv;
    if (c->need_auth) {
        if (!r->token || !s->auth_token ||
            !srv_token_equal(r->token, r->token_len, s->auth_token, s->auth_len)) {
            reply_err(c, r->msgid, SRV_E_UNAUTHORIZED, NULL,
                      "hello: wrong or missing token");
            c->closing = 1;
            return;
        }
        c->need_auth = 0;
    }
    const struct mtpd_config *cfg = mtpd_model_config(s->model);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "server");
    pack_str(&pk, "mtpd");
    pack_str(&pk, "version");
    pack_str(&pk, MTPD_VERSION);
    pack_str(&pk, "protocol");
    msgpack_pack_int(&pk, 1);
    pack_str(&pk, "model");
    msgpack_pack_map(&pk, 5);
    const char *name = strrchr(s->cfg.model_dir, '/');
    name = name && name[1] ? name + 1 : s->cfg.model_dir;
    pack_str(&pk, "name");
    pack_str(&pk, name);
    pack_str(&pk, "vocab_size");
    msgpack_pack_int(&pk, cfg->vocab_size);
    pack_str(&pk, "context_length");
    msgpack_pack_int(&pk, cfg->max_position_embeddings);
    pack_str(&pk, "mtp_modules");
    msgpack_pack_int(&pk, spec_engine_n_mtp(s->engine));
    pack_str(&pk, "kv_bytes_per_token");
    msgpack_pack_uint64(&pk, mtpd_kv_bytes_per_token(s->model));
    pack_str(&pk, "limits");
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "max_frame");
    msgpack_pack_uint64(&pk, s->cfg.max_frame);
    pack_str(&pk, "max_sessions");
    msgpack_pack_int(&pk, s->cfg.max_sessions);
    pack_str(&pk, "max_tokens");
    msgpack_pack_int(&pk, cfg->max_position_embeddings);
    pack_str(&pk, "kv_budget_bytes");
    msgpack_pack_uint64(&pk, s->cfg.kv_budget);
    reply_finish(c, &sb);
}

static void m_session_open(struct conn *c, struct srv_req *r)
{
    struct srv *s = c->srv;
    if (s->sessions.n >= s->cfg.max_sessions) {
        reply_err(c, r->msgid, SRV_E_OVER_LIMIT, "sessions",
                  "too many sessions (--max-sessions)");
        return;
    }
    struct session *se = session_new(s, 0);
    if (!se) {
        reply_err(c, r->msgid, SRV_E_INTERNAL, NULL, "cannot make a session");
        return;
    }
    SRV_LOG(SLOG_DEBUG, "conn=%llu session %.8s opened",
            (unsigned long long)c->id, se->id);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "session");
    pack_str(&pk, se->id);
    reply_finish(c, &sb);
}

static struct session *find_session(struct conn *c, struct srv_req *r)
{
    struct session *se = session_find(c->srv, r->session);
    if (!se)
        reply_err(c, r->msgid, SRV_E_UNKNOWN_SESSION, NULL,
                  "no such session (closed, expired, evicted or never "
                  "opened)");
    return se;
}

static void m_session_close(struct conn *c, struct srv_req *r)
{
    struct session *se = find_session(c, r);
    if (!se)
        return;
    if (se->busy) {
        reply_err(c, r->msgid, SRV_E_BUSY, NULL,
                  "the session is running a request");
        return;
    }
    session_close(c->srv, se);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "closed");
    msgpack_pack_true(&pk);
    reply_finish(c, &sb);
}

static void pack_session(msgpack_packer *pk, const struct session *se,
                         int full)
{
    msgpack_pack_map(pk, full ? 7 : 5);
    pack_str(pk, "session");
    pack_str(pk, se->id);
    pack_str(pk, "tokens");
    msgpack_pack_int(pk, se->n_hist);
    pack_str(pk, "kv_bytes");
    msgpack_pack_uint64(pk, se->kv_bytes);
    if (full) {
        pack_str(pk, "last_use");
        msgpack_pack_double(pk, se->last_use_wall);
        pack_str(pk, "busy");
        if (se->busy)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    pack_str(pk, "requests");
    msgpack_pack_long(pk, se->requests);
    pack_str(pk, "stats");
    pack_stats(pk, &se->stats, se->prompt_reused, 0);
}

static void m_session_info(struct conn *c, struct srv_req *r)
{
    struct session *se = find_session(c, r);
    if (!se)
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    pack_session(&pk, se, 1);
    reply_finish(c, &sb);
}

static void m_tokenize(struct conn *c, struct srv_req *r)
{
    struct mtpd_tok_ids ids = {0};
    char err[160];
    int rc = mtpd_tok_encode(c->srv->enc, r->text, r->text_len,
                             r->add_special ? MTPD_TOK_ADD_SPECIAL : 0, &ids,
                             err, sizeof err);
    if (rc < 0) {
        reply_err(c, r->msgid, rc == MTPD_TOK_ENOMEM ? SRV_E_INTERNAL
                                                     : SRV_E_BAD_PARAMS,
                  "text", err);
        mtpd_tok_ids_free(&ids);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "ids");
    pack_ids(&pk, ids.v, (int)ids.n);
    reply_finish(c, &sb);
    mtpd_tok_ids_free(&ids);
}

static void m_detokenize(struct conn *c, struct srv_req *r)
{
    struct mtpd_tok_buf out = {0};
    char err[160];
    int rc = mtpd_tok_decode(c->srv->tok, r->ids, (size_t)r->n_ids, 0, &out,
                             err, sizeof err);
    if (rc < 0) {
        reply_err(c, r->msgid, SRV_E_BAD_PARAMS, "ids", err);
        mtpd_tok_buf_free(&out);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "text");
    pack_strn(&pk, out.p ? out.p : "", out.n);
    reply_finish(c, &sb);
    mtpd_tok_buf_free(&out);
}

/* tokens/s over the last 10 s: one bucket per second */
static void count_tokens(struct srv *s, long long n)
{
    long sec = (long)srv_now();
    if (sec != s->tok_bucket_sec) {
        long gap = sec - s->tok_bucket_sec;
        for (long i = 1; i <= gap && i <= 10; i++)
            s->tok_bucket[(s->tok_bucket_sec + i) % 10] = 0;
        s->tok_bucket_sec = sec;
    }
    s->tok_bucket[sec % 10] += n;
}

static void m_stats(struct conn *c, struct srv_req *r)
{
    struct srv *s = c->srv;
    count_tokens(s, 0);
    long long recent = 0;
    for (int i = 0; i < 10; i++)
        recent += s->tok_bucket[i];
    uint64_t allocated = 0, resident = 0;
    srv_mem_stats(&allocated, &resident);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 18);
    pack_str(&pk, "uptime_seconds");
    msgpack_pack_double(&pk, srv_now() - s->start_time);
    pack_str(&pk, "requests");
    msgpack_pack_long(&pk, s->requests);
    pack_str(&pk, "requests_active");
    msgpack_pack_int(&pk, s->jobs_inflight);
    pack_str(&pk, "queue_depth");
    msgpack_pack_int(&pk, sched_queue_depth(&s->sched));
    pack_str(&pk, "tokens_generated");
    msgpack_pack_long_long(&pk, s->tokens_generated);
    pack_str(&pk, "prompt_tokens");
    msgpack_pack_long_long(&pk, s->prompt_tokens);
    pack_str(&pk, "prompt_tokens_reused");
    msgpack_pack_long_long(&pk, s->prompt_reused);
    pack_str(&pk, "sessions");
    msgpack_pack_int(&pk, s->sessions.n);
    pack_str(&pk, "kv_bytes_in_use");
    msgpack_pack_uint64(&pk, s->sessions.kv_used);
    pack_str(&pk, "kv_budget_bytes");
    msgpack_pack_uint64(&pk, s->cfg.kv_budget);
    pack_str(&pk, "tokens_per_s");
    msgpack_pack_double(&pk, (double)recent / 10.0);
    pack_str(&pk, "device");
    pack_str(&pk, s->device);
    pack_str(&pk, "act_dtype");
    pack_str(&pk, s->act_dtype);
    pack_str(&pk, "spec");
    pack_stats(&pk, &s->spec_total, s->prompt_reused, 0);
    pack_str(&pk, "errors");
    int n_err = 0;
    for (int i = 1; i < SRV_E_COUNT; i++)
        n_err += s->errors[i] != 0;
    msgpack_pack_map(&pk, (size_t)n_err);
    for (int i = 1; i < SRV_E_COUNT; i++)
        if (s->errors[i]) {
            pack_str(&pk, srv_err_code((enum srv_err)i));
            msgpack_pack_long(&pk, s->errors[i]);
        }
    pack_str(&pk, "connections");
    msgpack_pack_int(&pk, s->n_conns);
    pack_str(&pk, "jemalloc");
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "allocated");
    msgpack_pack_uint64(&pk, allocated);
    pack_str(&pk, "resident");
    msgpack_pack_uint64(&pk, resident);
    pack_str(&pk, "per_session");
    msgpack_pack_array(&pk, (size_t)s->sessions.n);
    for (struct session *se = s->sessions.head; se; se = se->next)
        if (!se->temporary)
            pack_session(&pk, se, 0);
    reply_finish(c, &sb);
}

static struct job *find_job(struct conn *c, uint32_t msgid)
{
    for (struct job *j = c->jobs; j; j = j->cnext)
        if (j->msgid == msgid)
            return j;
    return NULL;
}

static void m_cancel(struct conn *c, struct srv_req *r)
{
    struct job *j = find_job(c, r->cancel_msgid);
    if (j)
        atomic_store(&j->cancel, 1);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, r->msgid);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "cancelled");
    if (j)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    reply_finish(c, &sb);
}

/* The request's token list: 0, or -1 after replying with the error. */
static int request_tokens(struct conn *c, struct srv_req *r,
                          struct mtpd_tok_ids *out)
{
    struct srv *s = c->srv;
    char err[160] = "";
    int rc = 0;
    const char *field = "prompt";
    switch (r->prompt) {
    case SRV_PROMPT_IDS:
        rc = mtpd_tok_ids_append(out, r->ids, (size_t)r->n_ids);
        field = "ids";
        break;
    case SRV_PROMPT_TEXT:
        rc = mtpd_tok_encode(s->enc, r->text, r->text_len,
                             MTPD_TOK_ADD_SPECIAL, out, err, sizeof err);
        break;
    case SRV_PROMPT_MESSAGES: {
        struct mtpd_tok_msg *m = calloc((size_t)r->n_msgs, sizeof *m);
        if (!m) {
            rc = MTPD_TOK_ENOMEM;
            break;
        }
        for (int i = 0; i < r->n_msgs; i++) {
            m[i].role = r->msgs[i].role;
            m[i].content = r->msgs[i].content;
            m[i].content_len = r->msgs[i].content_len;
        }
        rc = mtpd_tok_chat_encode(s->enc, m, (size_t)r->n_msgs, 1, out, err,
                                  sizeof err);
        free(m);
        field = "messages";
        break;
    }
    case SRV_PROMPT_FIM:
        rc = mtpd_tok_fim_encode(s->enc, r->text, r->text_len, r->suffix,
                                 r->suffix_len, out, err, sizeof err);
        field = "prefix";
        break;
    default:
        rc = MTPD_TOK_EINVAL;
    }
    if (rc < 0) {
        reply_err(c, r->msgid, rc == MTPD_TOK_ENOMEM ? SRV_E_INTERNAL
                                                     : SRV_E_BAD_PARAMS,
                  field, err[0] ? err : mtpd_tok_err_str(rc));
        return -1;
    }
    if (out->n == 0) {
        reply_err(c, r->msgid, SRV_E_BAD_PARAMS, field,
                  "the prompt encodes to no tokens");
        return -1;
    }
    int ctx = mtpd_model_config(s->model)->max_position_embeddings;
    if (out->n >= (size_t)ctx) {
        char msg[128];
        snprintf(msg, sizeof msg, "the prompt (%zu tokens) does not fit the "
                 "context (%d)", out->n, ctx);
        reply_err(c, r->msgid, SRV_E_OVER_LIMIT, "prompt_tokens", msg);
        return -1;
    }
    return 0;
}

static void m_generate(struct conn *c, struct srv_req *r)
{
    struct srv *s = c->srv;
    if (s->shutting_down) {
        reply_err(c, r->msgid, SRV_E_SHUTTING_DOWN, NULL,
                  "the daemon is stopping");
        return;
    }
    if (c->n_inflight >= s->cfg.max_inflight) {
        reply_err(c, r->msgid, SRV_E_OVER_LIMIT, "in_flight",
                  "too many requests in flight on this connection");
        return;
    }
    if (s->jobs_inflight >= s->cfg.max_queue) {
        reply_err(c, r->msgid, SRV_E_OVERLOADED, NULL,
                  "the request queue is full (--max-queue); retry later");
        return;
    }
    if (find_job(c, r->msgid)) {
        reply_err(c, r->msgid, SRV_E_BAD_PARAMS, "msgid",
                  "a request with this msgid is already running");
        return;
    }
    struct mtpd_tok_ids toks = {0};
    if (request_tokens(c, r, &toks) < 0) {
        mtpd_tok_ids_free(&toks);
        return;
    }
    struct job_admit_req q = {
        .session = r->session[0] ? r->session : NULL,
        .toks = &toks,
        .max_tokens = r->max_tokens ? r->max_tokens : DEFAULT_MAX_TOKENS,
        .temperature = r->temperature, .top_p = r->top_p,
        .top_k = r->top_k, .seed = r->seed,
        .draft_tokens = r->draft_tokens, .ignore_eos = r->ignore_eos,
        .stream = r->stream,
        .stops = (const char *const *)r->stops, .n_stops = r->n_stops,
    };
    struct job_admit_err ae;
    struct job *j = job_admit(s, &q, &ae);
    mtpd_tok_ids_free(&toks); /* empty when the job took it */
    if (!j) {
        char msg[160];
        if (ae.code == SRV_E_KV_BUDGET)
            snprintf(msg, sizeof msg, "the request needs %zu bytes of KV "
                     "cache; %zu of %zu are held by running sessions",
                     ae.need, ae.held, s->cfg.kv_budget);
        reply_err(c, r->msgid, ae.code, NULL,
                  ae.code == SRV_E_KV_BUDGET ? msg : ae.msg);
        return;
    }
    j->conn = c;
    j->msgid = r->msgid;
    j->cnext = c->jobs;
    if (c->jobs)
        c->jobs->cprev = j;
    c->jobs = j;
    c->n_inflight++;
    SRV_LOG(SLOG_DEBUG, "conn=%llu msgid=%u session %.8s: %s, %d prompt "
            "tokens, max_tokens %d", (unsigned long long)c->id, r->msgid,
            j->sess->id, srv_method_name(r->method), j->n_prompt,
            j->params.max_tokens);
    sched_submit(&s->sched, j);
}

void methods_dispatch(struct conn *c, struct srv_req *r)
{
    switch (r->method) {
    case SRV_M_HELLO: m_hello(c, r); break;
    case SRV_M_SESSION_OPEN: m_session_open(c, r); break;
    case SRV_M_SESSION_CLOSE: m_session_close(c, r); break;
    case SRV_M_SESSION_INFO: m_session_info(c, r); break;
    case SRV_M_GENERATE:
    case SRV_M_FIM: m_generate(c, r); break;
    case SRV_M_CANCEL: m_cancel(c, r); break;
    case SRV_M_TOKENIZE: m_tokenize(c, r); break;
    case SRV_M_DETOKENIZE: m_detokenize(c, r); break;
    case SRV_M_STATS: m_stats(c, r); break;
    default:
        reply_err(c, r->msgid, SRV_E_UNKNOWN_METHOD, NULL, "unknown method");
    }
}

static void send_chunk(struct conn *c, uint32_t msgid,
                       const struct mtpd_tok_ids *ids, const char *text,
                       size_t len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    notify_begin(&sb, &pk, "generate.chunk");
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "msgid");
    msgpack_pack_uint32(&pk, msgid);
    pack_str(&pk, "text");
    pack_strn(&pk, text, len);
    pack_str(&pk, "ids");
    pack_ids(&pk, ids->v, (int)ids->n);
    conn_send(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* spec_finish_str, with the daemon's own reasons */
static const char *finish_str(const struct job *j)
{
    if (j->finish == SPEC_FINISH_CANCELLED)
        return j->finish_override == 2 ? "shutdown" : "cancelled";
    return spec_finish_str(j->finish);
}

static void send_result(struct conn *c, struct job *j)
{
    if (j->err != SRV_OK) {
        enum srv_err code = j->err;
        if (code == SRV_E_CANCELLED && j->finish_override == 2)
            code = SRV_E_SHUTTING_DOWN;
        reply_err(c, j->msgid, code,
                  code == SRV_E_OVER_LIMIT ? "prompt_tokens" : NULL,
                  j->errmsg);
        return;
    }
    const char *finish = finish_str(j);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    reply_begin(&sb, &pk, j->msgid);
    msgpack_pack_map(&pk, j->errmsg[0] ? 5 : 4);
    pack_str(&pk, "ids");
    pack_ids(&pk, j->out_ids.v, (int)j->out_ids.n);
    pack_str(&pk, "text");
    pack_strn(&pk, j->out_text ? j->out_text : "", j->out_len);
    pack_str(&pk, "finish_reason");
    pack_str(&pk, finish);
    pack_str(&pk, "stats");
    pack_stats(&pk, &j->stats, j->reused, j->queue_s);
    if (j->errmsg[0]) {
        pack_str(&pk, "error");
        pack_str(&pk, j->errmsg);
    }
    reply_finish(c, &sb);
}

static void job_unlink(struct job *j)
{
    struct conn *c = j->conn;
    if (!c)
        return;
    if (j->cprev)
        j->cprev->cnext = j->cnext;
    else
        c->jobs = j->cnext;
    if (j->cnext)
        j->cnext->cprev = j->cprev;
    c->n_inflight--;
    j->conn = NULL;
}

void methods_on_job_output(struct srv *s, struct job *j,
                           const struct mtpd_tok_ids *ids, const char *text,
                           size_t len, int done)
{
    if (j->conn && j->stream && j->err == SRV_OK && (ids->n || len))
        send_chunk(j->conn, j->msgid, ids, text, len);
    if (!done)
        return;
    struct session *se = j->sess;
    se->seq = j->seq;
    se->busy = 0;
    if (j->started) {
        /* the history is the prompt + the generated ids */
        struct mtpd_tok_ids h = {0};
        if (mtpd_tok_ids_append(&h, j->prompt, (size_t)j->n_prompt) == 0 &&
            (!j->out_ids.n ||
             mtpd_tok_ids_append(&h, j->out_ids.v, j->out_ids.n) == 0))
            session_set_history(se, h.v, (int)h.n);
        mtpd_tok_ids_free(&h);
        se->requests++;
        spec_stats_add(&se->stats, &j->stats);
        se->prompt_reused += j->reused;
        spec_stats_add(&s->spec_total, &j->stats);
        s->tokens_generated += (long long)j->out_ids.n;
        s->prompt_tokens += j->n_prompt;
        s->prompt_reused += j->reused;
        count_tokens(s, (long long)j->out_ids.n);
    }
    session_set_kv(s, se, se->seq ? j->kv_bytes : 0);
    if (j->conn)
        send_result(j->conn, j);
    SRV_LOG(SLOG_DEBUG, "msgid=%u session %.8s: %s, %zu tokens", j->msgid,
            se->id, j->err ? srv_err_code(j->err) : finish_str(j),
            j->out_ids.n);
    job_unlink(j);
    s->jobs_inflight--;
    if (se->temporary)
        session_close(s, se);
    else
        session_touch(s, se);
    job_free(j);
    if (s->shutting_down)
        srv_shutdown_check(s);
}

void methods_conn_gone(struct conn *c)
{
    for (struct job *j = c->jobs, *nx; j; j = nx) {
        nx = j->cnext;
        atomic_store(&j->cancel, 1);
        j->conn = NULL;
        j->cprev = j->cnext = NULL;
    }
    c->jobs = NULL;
    c->n_inflight = 0;
}
