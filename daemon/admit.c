/*
 * admit.c - the one admission of a generation, for msgpack-rpc
 * (methods.c) and HTTP (http_openai.c): the session it runs in, the KV
 * budget (the whole reservation up front, evicting idle sessions), the
 * sampling parameters and the job. The callers validate the request
 * before and link the job to their connection after; each words the
 * errors for its own protocol.
 */
#include <stdlib.h>
#include <string.h>

#include "srv.h"
#include "srv_engine.h"

static struct job *admit_fail(struct job_admit_err *err, enum srv_err code,
                              const char *msg)
{
    err->code = code;
    err->msg = msg;
    return NULL;
}

struct job *job_admit(struct srv *s, struct job_admit_req *q,
                      struct job_admit_err *err)
{
    memset(err, 0, sizeof *err);
    struct session *se;
    if (q->session) {
        se = session_find(s, q->session);
        if (!se)
            return admit_fail(err, SRV_E_UNKNOWN_SESSION,
                              "no such session (closed, expired, evicted "
                              "or never opened)");
        if (se->busy)
            return admit_fail(err, SRV_E_BUSY,
                              "the session is already running a request");
    } else {
        se = q->sess ? q->sess : session_new(s, 1);
        if (!se)
            return admit_fail(err, SRV_E_INTERNAL, "out of memory");
    }
    int ctx = mtpd_model_config(s->model)->max_position_embeddings;
    long reserve = (long)q->toks->n + q->max_tokens;
    if (reserve > ctx)
        reserve = ctx;
    size_t need = srv_kv_cost(s->engine, (int)reserve);
    if (session_make_room(s, need, se) < 0) {
        err->need = need;
        err->held = s->sessions.kv_used - se->kv_bytes;
        if (se->temporary)
            session_close(s, se);
        return admit_fail(err, SRV_E_KV_BUDGET, NULL);
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j || spec_textout_new(s->tok, q->stops, q->n_stops, &j->text) < 0) {
        if (j)
            job_free(j);
        if (se->temporary)
            session_close(s, se);
        return admit_fail(err, SRV_E_INTERNAL, "out of memory");
    }
    session_set_kv(s, se, need);
    spec_params_default(&j->params, s->model);
    j->params.sampling.temperature = (float)q->temperature;
    j->params.sampling.top_p = (float)q->top_p;
    j->params.sampling.top_k = q->top_k;
    j->params.seed = q->seed;
    j->params.draft_tokens = q->draft_tokens == SRV_DRAFT_UNSET
                                 ? s->cfg.draft_tokens
                                 : q->draft_tokens;
    j->params.auto_k_max = 4;
    j->params.max_tokens = q->max_tokens;
    j->params.kv_capacity = 0;
    if (q->ignore_eos)
        j->params.eos_id = -1;
    j->prompt = q->toks->v; /* the job owns it now */
    j->n_prompt = (int)q->toks->n;
    memset(q->toks, 0, sizeof *q->toks);
    j->reserve = (int)reserve;
    j->sess = se;
    j->stream = q->stream;
    j->seq = se->seq;
    se->seq = NULL;
    se->busy = 1;
    session_touch(s, se);
    s->jobs_inflight++;
    j->t_submit = srv_now();
    return j;
}
