/*
 * engine.c - engine and sequence lifetime, and spec_step: the order of one
 * scheduling step (choose k, draft, one main forward, accept, roll back,
 * refill). The phases live in draft.c and verify.c.
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
static void settle_finished(struct spec_seq *s)
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
    int held = mtpd_kv_len(s->kv, -1);
    mtpd_kv_reserve(s->kv, held > s->reserve ? held : s->reserve);
}

/* ---- one step -------------------------------------------------------- */

void spec_mtp_drop(struct spec_seq *s)
{
    s->use_mtp = 0;
    s->paused = 0;
    s->n_mod = 0;
    free(s->hlog);
    s->hlog = NULL;
    s->hlog_n = s->hlog_cap = 0;
}

/* auto decided speculation does not pay for now: plain decoding, the MTP
 * caches frozen at their length, main hidden rows logged from there. */
static void pause_mtp(struct spec_engine *e, struct spec_seq *s)
{
    if (!s->hlog) {
        int cap = SPEC_PAUSE_MAX + 8;
        if (cap > e->max_rows - SPEC_K_MAX - 1)
            cap = e->max_rows - SPEC_K_MAX - 1;
        if (cap >= SPEC_PAUSE_MIN + 8)
            s->hlog = malloc((size_t)cap * (size_t)e->hidden * sizeof(float));
        if (!s->hlog) {
            spec_mtp_drop(s);
            snprintf(s->notice, sizeof s->notice,
                     "draft-tokens auto: speculation does not pay here "
                     "(acceptance vs pass cost), switched to plain decoding");
            return;
        }
        s->hlog_cap = cap;
    }
    s->use_mtp = 0;
    s->paused = 1;
    s->hlog_base = mtpd_kv_len(s->kv, 0);
    s->hlog_n = 0;
    s->st.pauses++;
}

/* The pause is over: the next refill catches the caches up from the log. */
static void resume_mtp(struct spec_seq *s)
{
    s->paused = 0;
    s->use_mtp = 1;
}

/* k for this pass, capped by output budget, context and draft state;
 * others: rows the other decoding sequences of this step are expected to
 * bring (auto's cost of sharing a pass). */
static int choose_k(struct spec_engine *e, struct spec_seq *s, int others)
{
    int L = s->n_toks - 1;
    int k = s->k_cfg;
    if (k == SPEC_K_AUTO) {
        struct spec_costs c = e->costs;
        c.others = others;
        k = s->n_mod ? spec_adapt_choose(&s->ad, &c) : 0;
        if (s->ad.off && s->use_mtp)
            pause_mtp(e, s);
        else if (!s->ad.off && s->paused)
            resume_mtp(s);
    }
    int room_out = s->p.max_tokens - s->n_out - 1;
    int room_ctx = s->cap - L - 1;
    if (k > room_out)
        k = room_out;
    if (k > room_ctx)
        k = room_ctx;
    if (k > s->k_max)
        k = s->k_max;
    if (!s->use_mtp || s->mtp_logits_pos != L - 1)
        k = 0;
    return k < 0 ? 0 : k;
}

/* Finishes s alone with an error: code and a one-line message. */
static void fail_seq(struct spec_seq *s, int err, const char *what)
{
    s->fin = SPEC_FINISH_ERROR;
    s->err = err;
    snprintf(s->errmsg, sizeof s->errmsg, "%s: %s%s", what, mtpd_err_str(err),
             err == MTPD_ENOMEM ? " (the KV pool's budget is used up, or an "
                                  "allocation failed)" : "");
    settle_finished(s);
}

/* An engine-wide failure (a forward call failed): every sequence of the
 * call finishes with it, its caches as before the step. */
static void fail_call(struct spec_seq **seqs, int n, int err,
                      const char *what)
{
    for (int i = 0; i < n; i++)
        fail_seq(seqs[i], err, what);
}

/* Holds pool pages for positions [0, n) of s (and what the caller
 * reserved up front). */
static int hold_rows(struct spec_seq *s, int n)
{
    return mtpd_kv_reserve(s->kv, n > s->reserve ? n : s->reserve);
}

/* Shares a phase's wall seconds t between the sequences act[0..n) by
 * the rows each had in it (evenly when none had any); adds each share to
 * the sequence's slot of sh. */
static void share_time(struct spec_seq **act, int n, int phase, double t,
                       double *sh)
{
    long rows = 0;
    for (int i = 0; i < n; i++)
        rows += act[i]->ph_rows[phase];
    for (int i = 0; i < n; i++)
        sh[i] = rows > 0 ? t * (double)act[i]->ph_rows[phase] / (double)rows
                         : t / (double)n;
}

/* Time bookkeeping of a step over act[0..n_act) (decoding ones first):
 * each phase's wall time is shared by rows, so sequences that share a
 * pass are not each charged all of it. */
static void account_step(struct spec_engine *e, struct spec_seq **act,
                         int n_act, int n_dec, const double *t)
{
    /* t: start, draft start, main start, main end, refill start, end */
    double *sd = e->tshare, *sm = sd + e->max_rows, *sr = sm + e->max_rows;
    if (n_dec > 0)
        share_time(act, n_dec, SPEC_PH_DRAFT, t[2] - t[1], sd);
    /* the main forward, the set-up before it and acceptance after it */
    share_time(act, n_act, SPEC_PH_MAIN,
               (t[1] - t[0]) + (t[3] - t[2]) + (t[4] - t[3]), sm);
    share_time(act, n_act, SPEC_PH_REFILL, t[5] - t[4], sr);
    double refill_dec = 0.0;
    for (int i = 0; i < n_act; i++) {
        struct spec_seq *s = act[i];
        if (i < n_dec) {
            s->st.draft_s += sd[i];
            s->st.verify_s += sm[i];
            s->st.refill_s += sr[i];
            s->st.decode_s += sd[i] + sm[i] + sr[i];
            refill_dec += sr[i];
        } else {
            s->st.prefill_s += sm[i] + sr[i];
        }
    }
    /* adaptive k's T_refill: one decoding sequence's share per pass (a
     * catch-up after a pause is no typical refill) */
    if (n_dec > 0 && !e->catchup) {
        double rf = refill_dec / n_dec;
        e->costs.refill_s = e->costs.refill_s > 0
                                ? 0.9 * e->costs.refill_s + 0.1 * rf
                                : rf;
    }
}

static void defer(unsigned char *deferred, int i, int *n_def)
{
    if (deferred)
        deferred[i] = 1;
    (*n_def)++;
}

int spec_step_ex(struct spec_engine *e, struct spec_seq **seqs, int n,
                 int max_rows, unsigned char *deferred, int *n_deferred)
{
    double t[6];
    t[0] = spec_now();
    struct spec_seq **act = e->act;
    int n_act = 0, n_dec = 0, rows = 0, n_def = 0;
    int budget = max_rows > 0 && max_rows < e->max_rows ? max_rows
                                                         : e->max_rows;
    if (deferred && n > 0)
        memset(deferred, 0, (size_t)n);
    if (n_deferred)
        *n_deferred = 0;

    /* 0. cancellations take effect; a sequence another thread cancels
     * from here on finishes at the next step */
    for (int i = 0; i < n; i++) {
        struct spec_seq *s = seqs[i];
        if (s->fin == SPEC_RUNNING && atomic_load(&s->cancel)) {
            s->fin = SPEC_FINISH_CANCELLED;
            settle_finished(s);
        }
    }

    /* rows the decoding sequences will bring, estimated from their last
     * passes (for auto's cost of a shared pass) */
    int dec_rows = 0;
    for (int i = 0; i < n; i++)
        if (seqs[i]->fin == SPEC_RUNNING && spec_seq_decoding(seqs[i]))
            dec_rows += seqs[i]->last_k + 1;
    if (dec_rows > budget)
        dec_rows = budget;

    /* 1. decoding sequences first: k + 1 rows each, their pool pages held
     * before anything runs (a full pool finishes that sequence alone) */
    for (int i = 0; i < n; i++) {
        struct spec_seq *s = seqs[i];
        if (s->fin != SPEC_RUNNING || !spec_seq_decoding(s))
            continue;
        if (rows + 1 > budget) {
            defer(deferred, i, &n_def);
            continue;
        }
        int L = s->n_toks - 1;
        if (L + 1 > s->cap) { /* cannot happen after a pass; be safe */
            s->fin = SPEC_FINISH_CONTEXT;
            settle_finished(s);
            continue;
        }
        int own = s->last_k + 1;
        s->k = choose_k(e, s, dec_rows > own ? dec_rows - own : 0);
        if (rows + s->k + 1 > budget)
            s->k = budget - rows - 1;
        /* toks gets the drafts and the next token */
        int rc = spec_seq_toks(s, L + s->k + 2);
        if (rc == MTPD_OK)
            rc = hold_rows(s, L + s->k + 1);
        if (rc == MTPD_ENOMEM && s->k > 0) { /* no drafts then */
            s->k = 0;
            rc = spec_seq_toks(s, L + 2);
            if (rc == MTPD_OK)
                rc = hold_rows(s, L + 1);
        }
        if (rc < 0) {
            fail_seq(s, rc, "KV pool");
            continue;
        }
        s->main_len_before = L;
        for (int j = 0; j < s->n_mod; j++)
            s->mtp_exact[j] = mtpd_kv_len(s->kv, j);
        memset(s->ph_rows, 0, sizeof s->ph_rows);
        s->ph_rows[SPEC_PH_MAIN] = s->k + 1;
        rows += s->k + 1;
        act[n_act++] = s;
    }
    n_dec = n_act;
    /* then prompt chunks in the rows left */
    for (int i = 0; i < n; i++) {
        struct spec_seq *s = seqs[i];
        if (s->fin != SPEC_RUNNING || spec_seq_decoding(s))
            continue;
        if (rows >= budget) {
            defer(deferred, i, &n_def);
            continue;
        }
        s->main_len_before = mtpd_kv_len(s->kv, -1);
        int chunk = s->n_prompt - s->main_len_before;
        if (chunk > budget - rows)
            chunk = budget - rows;
        int rc = hold_rows(s, s->main_len_before + chunk);
        if (rc < 0) {
            fail_seq(s, rc, "KV pool");
            continue;
        }
        s->k = chunk; /* rows of this prompt chunk */
        memset(s->ph_rows, 0, sizeof s->ph_rows);
        s->ph_rows[SPEC_PH_MAIN] = chunk;
        rows += chunk;
        act[n_act++] = s;
    }
    if (n_deferred)
        *n_deferred = n_def;
    if (n_act == 0)
        return MTPD_OK;

    /* 2. draft d_1..d_k (MTP calls) */
    t[1] = spec_now();
    int rc = spec_draft(e, act, n_dec);
    t[2] = spec_now();
    if (rc < 0) {
        for (int i = 0; i < n_dec; i++)
            spec_mtp_rollback(act[i]);
        fail_call(act, n_act, rc, "MTP draft");
        return rc;
    }

    /* 3. one main forward over every sequence's rows */
    rows = 0;
    for (int i = 0; i < n_act; i++) {
        struct spec_seq *s = act[i];
        struct mtpd_seq *ms = &e->mseq[i];
        int L = s->main_len_before;
        ms->kv = s->kv;
        ms->tokens = s->toks + L;
        if (i < n_dec) {
            ms->n_tokens = s->k + 1;
            ms->logits_from = 0;
        } else {
            ms->n_tokens = s->k;
            /* logits only at the prompt's last row */
            ms->logits_from = L + s->k == s->n_prompt ? s->k - 1 : s->k;
        }
        s->rows_at = rows;
        rows += ms->n_tokens;
    }
    rc = mtpd_forward(e->ctx, e->mseq, n_act);
    t[3] = spec_now();
    if (rc < 0) {
        for (int i = 0; i < n_dec; i++)
            spec_mtp_rollback(act[i]);
        fail_call(act, n_act, rc, "forward");
        return rc;
    }
    if (n_act == n_dec) /* decode-only calls: prompt chunks cost differently */
        spec_cost_add(&e->costs.main, rows, t[3] - t[2]);

    /* 4. accept / first token */
    for (int i = 0; i < n_act; i++) {
        struct spec_seq *s = act[i];
        if (i < n_dec) {
            spec_verify_accept(e, s);
            spec_mtp_rollback(s);
        } else if (s->main_len_before + s->k == s->n_prompt) {
            spec_first_token(e, s,
                             mtpd_ctx_logits(e->ctx, s->rows_at + s->k - 1));
        }
        if (s->fin != SPEC_RUNNING) /* the refill then completes its MTP */
            settle_finished(s);
    }
    t[4] = spec_now();

    /* 5. exact MTP entries for the new positions; drafts the next d_1 */
    rc = spec_refill(e, act, n_act);
    t[5] = spec_now();
    if (rc < 0) {
        fail_call(act, n_act, rc, "MTP refill");
        return rc;
    }

    /* 6. bookkeeping: time, context limit, finished sequences */
    account_step(e, act, n_act, n_dec, t);
    for (int i = 0; i < n_act; i++) {
        struct spec_seq *s = act[i];
        if (s->fin == SPEC_RUNNING && spec_seq_decoding(s) &&
            s->n_toks > s->cap)
            s->fin = SPEC_FINISH_CONTEXT;
        if (s->fin != SPEC_RUNNING)
            settle_finished(s);
    }
    return MTPD_OK;
}

int spec_step(struct spec_engine *e, struct spec_seq **seqs, int n)
{
    return spec_step_ex(e, seqs, n, 0, NULL, NULL);
}

int spec_generate(struct spec_engine *e, struct spec_seq *s)
{
    while (s->fin == SPEC_RUNNING) {
        int rc = spec_step(e, &s, 1);
        if (rc < 0)
            return rc;
    }
    return MTPD_OK;
}
