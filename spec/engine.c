/*
 * engine.c - engine and sequence lifetime, the sequence accessors, and
 * emitting tokens. One scheduling step is in step.c, a restart in
 * restart.c.
 */
#include "spec_int.h"

#include "mtp_head.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double spec_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *spec_finish_str(enum spec_finish f)
{
    switch (f) {
    case SPEC_RUNNING: return "running";
    case SPEC_FINISH_STOP: return "stop";
    case SPEC_FINISH_LENGTH: return "length";
    case SPEC_FINISH_CONTEXT: return "context";
    case SPEC_FINISH_ERROR: return "error";
    case SPEC_FINISH_CANCELLED: return "cancelled";
    }
    return "?";
}

void spec_params_default(struct spec_params *p, const struct mtpd_model *m)
{
    memset(p, 0, sizeof *p);
    p->sampling.temperature = 0.0f;
    p->sampling.top_k = 0;
    p->sampling.top_p = 1.0f;
    p->seed = 0;
    p->draft_tokens = m && mtpd_model_n_mtp(m) > 0 ? 1 : 0;
    p->max_tokens = 256;
    p->eos_id = m ? mtpd_model_config(m)->eos_token_id : -1;
    p->kv_capacity = 0;
    p->auto_k_max = 4;
}

/* ---- engine ---------------------------------------------------------- */

void spec_engine_free(struct spec_engine *e)
{
    if (!e)
        return;
    mtpd_ctx_free(e->ctx);
    mtpd_kv_pool_free(e->own_pool);
    free(e->hin);
    free(e->hout);
    free(e->pbuf);
    free(e->rbuf);
    free(e->ibuf);
    free(e->mseq);
    free(e->qseq);
    free(e->act);
    free(e->rbase);
    free(e->r_p0);
    free(e->r_off);
    free(e->r_n);
    free(e->slots);
    for (int i = 0; i < MTPD_MAX_MTP; i++)
        spec_draft_head_free(&e->dh[i]);
    free(e->sub);
    free(e->csub);
    free(e->gather);
    free(e->lbuf);
    free(e->rowidx);
    free(e->rowseq);
    free(e->tshare);
    free(e);
}

int spec_engine_new(const struct mtpd_model *m,
                    const struct spec_engine_opts *o, struct spec_engine **out)
{
    *out = NULL;
    if (!m || !o || o->n_threads < 1 || o->max_rows < 0)
        return MTPD_EINVAL;
    struct spec_engine *e = calloc(1, sizeof *e);
    if (!e)
        return MTPD_ENOMEM;
    const struct mtpd_config *cfg = mtpd_model_config(m);
    e->m = m;
    e->vocab = cfg->vocab_size;
    e->hidden = cfg->hidden_size;
    e->n_mtp = mtpd_model_n_mtp(m);
    e->max_rows = o->max_rows ? o->max_rows : 256;
    if (e->max_rows < SPEC_K_MAX + 1)
        e->max_rows = SPEC_K_MAX + 1;
    e->pool = o->kv_pool;
    if (!e->pool) {
        struct mtpd_kv_pool_opts po = {0};
        int rc = mtpd_kv_pool_new(m, &po, &e->own_pool);
        if (rc < 0) {
            free(e);
            return rc;
        }
        e->pool = e->own_pool;
    }
    /* MTP refill calls may carry one row per module more than the main
     * call they follow (see draft.c) */
    int ctx_rows = e->max_rows + MTPD_MAX_MTP;
    size_t hr = (size_t)ctx_rows * (size_t)e->hidden;
    e->ctx = mtpd_ctx_new(m, ctx_rows, o->n_threads);
    e->hin = malloc(hr * sizeof(float));
    e->hout = malloc(hr * sizeof(float));
    e->pbuf = malloc((size_t)e->vocab * sizeof(float));
    e->rbuf = malloc((size_t)e->vocab * sizeof(float));
    e->ibuf = malloc((size_t)e->vocab * sizeof(int32_t));
    e->mseq = calloc((size_t)e->max_rows, sizeof *e->mseq);
    e->qseq = calloc((size_t)e->max_rows, sizeof *e->qseq);
    e->act = calloc((size_t)e->max_rows, sizeof *e->act);
    e->rbase = calloc((size_t)e->max_rows, sizeof *e->rbase);
    e->r_p0 = calloc((size_t)e->max_rows, sizeof(int));
    e->r_off = calloc((size_t)e->max_rows, sizeof(int));
    e->r_n = calloc((size_t)e->max_rows, sizeof(int));
    e->slots = calloc((size_t)ctx_rows, sizeof *e->slots);
    e->tshare = malloc(3 * (size_t)e->max_rows * sizeof(double));
    if (!e->ctx || !e->hin || !e->hout || !e->pbuf || !e->rbuf ||
        !e->ibuf || !e->mseq || !e->qseq || !e->act || !e->rbase ||
        !e->r_p0 || !e->r_off || !e->r_n || !e->slots || !e->tshare) {
        spec_engine_free(e);
        return MTPD_ENOMEM;
    }
    if (o->draft_vocab && o->n_draft_vocab > 0 && e->n_mtp > 0 &&
        o->n_draft_vocab < e->vocab) {
        e->n_sub = o->n_draft_vocab;
        e->n_ctx = o->n_draft_ctx > 0 ? o->n_draft_ctx : 0;
        if (e->n_ctx > e->vocab)
            e->n_ctx = e->vocab;
        for (int i = 0; i < e->n_mtp; i++) {
            int rc = spec_draft_head_init(&e->dh[i], mtpd_mtp_head(m, i),
                                          o->draft_vocab, e->n_sub);
            if (rc < 0) {
                spec_engine_free(e);
                return rc == -2 ? MTPD_ENOMEM : MTPD_EINVAL;
            }
        }
        e->sub = malloc((size_t)ctx_rows * (size_t)e->n_sub * sizeof(float));
        e->csub = malloc((size_t)ctx_rows * (size_t)(e->n_ctx ? e->n_ctx : 1) *
                         sizeof(float));
        e->gather = malloc(hr * sizeof(float));
        e->lbuf = malloc((size_t)e->vocab * sizeof(float));
        e->rowidx = malloc((size_t)ctx_rows * sizeof(int));
        e->rowseq = malloc((size_t)ctx_rows * sizeof(int));
        if (!e->sub || !e->csub || !e->gather || !e->lbuf || !e->rowidx ||
            !e->rowseq) {
            spec_engine_free(e);
            return MTPD_ENOMEM;
        }
    }
    *out = e;
    return MTPD_OK;
}

int spec_engine_n_mtp(const struct spec_engine *e)
{
    return e->n_mtp;
}

void spec_engine_pool_stats(const struct spec_engine *e, long *fallbacks,
                            long *solo_runs, long *runs)
{
    struct kpool_stats st;
    kpool_get_stats(mtpd_ctx_pool(e->ctx), &st);
    *fallbacks = st.fallbacks;
    *solo_runs = st.solo_runs;
    *runs = st.runs;
}

const struct mtpd_model *spec_engine_model(const struct spec_engine *e)
{
    return e->m;
}

struct mtpd_ctx *spec_engine_ctx(struct spec_engine *e) { return e->ctx; }

_Static_assert(SPEC_DRAFT_MODS == MTPD_MAX_MTP, "draft_head.h module count");

/* ---- sequences ------------------------------------------------------- */

void spec_seq_free(struct spec_seq *s)
{
    if (!s)
        return;
    mtpd_kv_free(s->kv);
    free(s->toks);
    free(s->out);
    free(s->mtp_logits);
    free(s->stash);
    free(s->q);
    free(s->dhid);
    free(s->hlog);
    spec_draft_ctx_free(&s->dctx);
    free(s->trace_k);
    free(s->trace_a);
    free(s);
}

int spec_seq_cap(const struct spec_engine *e, const struct spec_params *p)
{
    int max = mtpd_model_config(e->m)->max_position_embeddings;
    return p->kv_capacity > 0 && p->kv_capacity < max ? p->kv_capacity : max;
}

int spec_seq_toks(struct spec_seq *s, int n)
{
    if (n <= s->toks_cap)
        return MTPD_OK;
    int cap = s->toks_cap ? s->toks_cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *t = realloc(s->toks, (size_t)cap * sizeof *t);
    if (!t)
        return MTPD_ENOMEM;
    s->toks = t;
    s->toks_cap = cap;
    return MTPD_OK;
}

int spec_seq_plan(const struct spec_engine *e, const struct spec_params *p,
                  int *k_cfg, int *k_max, int *n_mod)
{
    if (!p || p->max_tokens < 1 ||
        (p->draft_tokens < 0 && p->draft_tokens != SPEC_K_AUTO))
        return MTPD_EINVAL;
    int k = p->draft_tokens > SPEC_K_MAX ? SPEC_K_MAX : p->draft_tokens;
    if (e->n_mtp == 0)
        k = 0;
    int auto_max = p->auto_k_max > 0 ? p->auto_k_max : 4;
    if (auto_max > SPEC_K_MAX)
        auto_max = SPEC_K_MAX;
    *k_cfg = k;
    *k_max = k == SPEC_K_AUTO ? auto_max : k;
    *n_mod = k != 0 ? e->n_mtp : 0;
    return MTPD_OK;
}

int spec_seq_buffers(struct spec_seq *s, const struct spec_params *p,
                     int n_mod, int k_max)
{
    const struct spec_engine *e = s->e;
    size_t V = (size_t)e->vocab, H = (size_t)e->hidden;
    int sampling = !spec_sampling_greedy(&p->sampling);
    if (p->max_tokens > s->out_cap) {
        int32_t *o = realloc(s->out, (size_t)p->max_tokens * sizeof *o);
        if (!o)
            return MTPD_ENOMEM;
        s->out = o;
        s->out_cap = p->max_tokens;
    }
    if (n_mod == 0)
        return MTPD_OK;
    if (!s->mtp_logits && !(s->mtp_logits = malloc(V * sizeof(float))))
        return MTPD_ENOMEM;
    /* room for every module, so a later restart never needs more */
    if (!s->stash &&
        !(s->stash = malloc((size_t)e->n_mtp * H * sizeof(float))))
        return MTPD_ENOMEM;
    if (!s->dhid && !(s->dhid = malloc(H * sizeof(float))))
        return MTPD_ENOMEM;
    if (sampling && k_max > s->q_cap) {
        float *q = realloc(s->q, (size_t)k_max * V * sizeof(float));
        if (!q)
            return MTPD_ENOMEM;
        s->q = q;
        s->q_cap = k_max;
    }
    if (e->n_sub && e->n_ctx && !s->dctx.cap &&
        spec_draft_ctx_init(&s->dctx, e->dh, e->n_mtp, e->n_ctx) < 0)
        return MTPD_ENOMEM;
    return MTPD_OK;
}

void spec_seq_start(struct spec_seq *s, const struct spec_params *p, int n,
                    int k_cfg, int k_max, int n_mod)
{
    struct spec_engine *e = s->e;
    s->p = *p;
    s->cap = spec_seq_cap(e, p);
    if (s->cap > mtpd_kv_capacity(s->kv))
        s->cap = mtpd_kv_capacity(s->kv);
    s->n_prompt = n;
    s->n_toks = n;
    s->n_out = 0;
    s->fin = SPEC_RUNNING;
    s->err = 0;
    s->errmsg[0] = 0;
    atomic_store(&s->cancel, 0);
    s->notice[0] = 0;
    if (p->draft_tokens != 0 && e->n_mtp == 0)
        snprintf(s->notice, sizeof s->notice,
                 "model has no MTP module: plain decoding (draft tokens 0)");
    s->k_cfg = k_cfg;
    s->k_max = k_max;
    s->n_mod = n_mod;
    s->use_mtp = n_mod > 0;
    s->paused = 0;
    s->hlog_n = 0;
    s->mtp_logits_pos = -1;
    for (int i = 0; i < MTPD_MAX_MTP; i++)
        s->stash_pos[i] = -1;
    s->k = s->last_k = s->last_a = 0;
    s->trace_n = 0;
    spec_rng_seed(&s->rng, p->seed);
    memset(&s->st, 0, sizeof s->st);
    s->st.prompt_tokens = n;
    spec_adapt_init(&s->ad, s->k_max);
    if (s->dctx.cap) {
        spec_draft_ctx_reset(&s->dctx);
        if (s->use_mtp)
            for (int i = 0; i < n; i++)
                spec_draft_ctx_add(&s->dctx, e->dh, s->toks[i]);
    }
}

int spec_seq_new(struct spec_engine *e, const struct spec_params *p,
                 const int32_t *prompt, int n_prompt, struct spec_seq **out)
{
    *out = NULL;
    int k_cfg, k_max, n_mod;
    if (n_prompt < 1 || spec_seq_plan(e, p, &k_cfg, &k_max, &n_mod) < 0)
        return MTPD_EINVAL;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->vocab)
            return MTPD_EINVAL;
    int cap = spec_seq_cap(e, p);
    if (n_prompt > cap)
        return MTPD_EFULL;
    struct spec_seq *s = calloc(1, sizeof *s);
    if (!s)
        return MTPD_ENOMEM;
    s->e = e;
    /* the cache may span the model's whole context: it takes pool pages
     * only as it grows, and the sequence's capacity is a limit that a
     * restart may change */
    int rc = mtpd_kv_new_in(e->pool,
                            mtpd_model_config(e->m)->max_position_embeddings,
                            &s->kv);
    if (rc == MTPD_OK)
        rc = spec_seq_toks(s, n_prompt + 1); /* + the first token */
    if (rc == MTPD_OK)
        rc = spec_seq_buffers(s, p, n_mod, k_max);
    if (rc < 0) {
        spec_seq_free(s);
        return rc;
    }
    memcpy(s->toks, prompt, (size_t)n_prompt * sizeof(int32_t));
    spec_seq_start(s, p, n_prompt, k_cfg, k_max, n_mod);
    *out = s;
    return MTPD_OK;
}

size_t spec_engine_kv_cost(const struct spec_engine *e, int n_positions)
{
    return mtpd_kv_pool_cost(e->pool, n_positions);
}

struct mtpd_kv_pool *spec_engine_kv_pool(struct spec_engine *e)
{
    return e->pool;
}

int spec_seq_reserve(struct spec_seq *s, int n_positions)
{
    if (n_positions < 0)
        return MTPD_EINVAL;
    if (n_positions > s->cap)
        return MTPD_EFULL;
    int rc = mtpd_kv_reserve(s->kv, n_positions);
    if (rc < 0)
        return rc;
    s->reserve = n_positions;
    return MTPD_OK;
}

void spec_seq_cancel(struct spec_seq *s)
{
    atomic_store(&s->cancel, 1);
}

enum spec_finish spec_seq_finish(const struct spec_seq *s)
{
    return s->fin;
}

const int32_t *spec_seq_tokens(const struct spec_seq *s, int *n)
{
    *n = s->n_toks;
    return s->toks;
}

const char *spec_seq_error(const struct spec_seq *s)
{
    return s->fin == SPEC_FINISH_ERROR ? s->errmsg : "";
}

int spec_seq_error_code(const struct spec_seq *s)
{
    return s->fin == SPEC_FINISH_ERROR ? s->err : 0;
}

const int32_t *spec_seq_output(const struct spec_seq *s, int *n)
{
    *n = s->n_out;
    return s->out;
}

const struct spec_stats *spec_seq_stats(const struct spec_seq *s)
{
    return &s->st;
}

int spec_seq_last_k(const struct spec_seq *s)
{
    return s->last_k;
}

int spec_seq_last_pass(const struct spec_seq *s, int *k, int *a)
{
    *k = s->last_k;
    *a = s->last_a;
    return s->st.passes > 0;
}

const char *spec_seq_notice(const struct spec_seq *s)
{
    return s->notice[0] ? s->notice : NULL;
}

struct mtpd_kv *spec_seq_kv(struct spec_seq *s)
{
    return s->kv;
}

int spec_seq_trace(struct spec_seq *s, int cap)
{
    free(s->trace_k);
    free(s->trace_a);
    s->trace_k = malloc((size_t)cap * sizeof(int32_t));
    s->trace_a = malloc((size_t)cap * sizeof(int32_t));
    s->trace_cap = cap;
    s->trace_n = 0;
    if (!s->trace_k || !s->trace_a) {
        s->trace_cap = 0;
        return MTPD_ENOMEM;
    }
    return MTPD_OK;
}

int spec_seq_trace_get(const struct spec_seq *s, const int32_t **k,
                       const int32_t **accepted)
{
    *k = s->trace_k;
    *accepted = s->trace_a;
    return s->trace_n;
}

/* ---- emission -------------------------------------------------------- */

int spec_emit(struct spec_seq *s, int32_t tok)
{
    if (s->dctx.cap)
        spec_draft_ctx_add(&s->dctx, s->e->dh, tok);
    if (tok == s->p.eos_id) {
        s->fin = SPEC_FINISH_STOP;
        return 0;
    }
    int r = s->p.on_token ? s->p.on_token(s->p.ud, s, tok)
                          : SPEC_TOK_CONTINUE;
    if (r == SPEC_TOK_DROP) {
        s->fin = SPEC_FINISH_STOP;
        return 0;
    }
    s->out[s->n_out++] = tok;
    s->st.generated_tokens++;
    if (r == SPEC_TOK_STOP) {
        s->fin = SPEC_FINISH_STOP;
        return 0;
    }
    if (s->n_out >= s->p.max_tokens) {
        s->fin = SPEC_FINISH_LENGTH;
        return 0;
    }
    return 1;
}

/* After a finish: keep the caches consistent with prompt + output, the
 * last emitted token pending (so a session could continue from here). */
void spec_seq_settle(struct spec_seq *s)
{
    int n = s->n_prompt + s->n_out;
    s->n_toks = n;
    int L = n - 1;
    if (mtpd_kv_len(s->kv, -1) > L)
        mtpd_kv_truncate(s->kv, -1, L);
    for (int i = 0; i < s->n_mod; i++) {
        int want = L;
        if (mtpd_kv_len(s->kv, i) > want)
            mtpd_kv_truncate(s->kv, i, want);
        if (s->stash_pos[i] >= want)
            s->stash_pos[i] = -1;
    }
    if (s->mtp_logits_pos >= L)
        s->mtp_logits_pos = -1;
    /* give back the pages the last pass held for its drafts (keeping what
     * spec_seq_reserve asked for); lowering a reservation cannot fail */
    spec_seq_hold(s, mtpd_kv_len(s->kv, -1));
}

int spec_seq_hold(struct spec_seq *s, int n)
{
    return mtpd_kv_reserve(s->kv, n > s->reserve ? n : s->reserve);
}
