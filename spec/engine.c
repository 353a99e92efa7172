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
    if (!e->ctx || !e->hin || !e->hout || !e->pbuf || !e->rbuf ||
        !e->ibuf || !e->mseq || !e->qseq || !e->act || !e->rbase ||
        !e->r_p0 || !e->r_off || !e->r_n || !e->slots) {
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

int spec_seq_new(struct spec_engine *e, const struct spec_params *p,
                 const int32_t *prompt, int n_prompt, struct spec_seq **out)
{
    *out = NULL;
    const struct mtpd_config *cfg = mtpd_model_config(e->m);
    if (!p || n_prompt < 1 || p->max_tokens < 1 ||
        (p->draft_tokens < 0 && p->draft_tokens != SPEC_K_AUTO))
        return MTPD_EINVAL;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->vocab)
            return MTPD_EINVAL;
    int cap = p->kv_capacity > 0 ? p->kv_capacity
                                 : cfg->max_position_embeddings;
    if (n_prompt > cap)
        return MTPD_EFULL;
    struct spec_seq *s = calloc(1, sizeof *s);
    if (!s)
        return MTPD_ENOMEM;
    s->e = e;
    s->p = *p;
    s->cap = cap;
    s->n_prompt = n_prompt;
    s->n_toks = n_prompt;
    s->fin = SPEC_RUNNING;
    s->mtp_logits_pos = -1;
    for (int i = 0; i < MTPD_MAX_MTP; i++)
        s->stash_pos[i] = -1;
    spec_rng_seed(&s->rng, p->seed);
    s->st.prompt_tokens = n_prompt;

    s->k_cfg = p->draft_tokens;
    if (s->k_cfg > SPEC_K_MAX)
        s->k_cfg = SPEC_K_MAX;
    int auto_max = p->auto_k_max > 0 ? p->auto_k_max : 4;
    if (auto_max > SPEC_K_MAX)
        auto_max = SPEC_K_MAX;
    if (s->k_cfg != 0 && e->n_mtp == 0) {
        snprintf(s->notice, sizeof s->notice,
                 "model has no MTP module: plain decoding (draft tokens 0)");
        s->k_cfg = 0;
    }
    s->k_max = s->k_cfg == SPEC_K_AUTO ? auto_max : s->k_cfg;
    s->use_mtp = s->k_cfg != 0;
    s->n_mod = s->use_mtp ? e->n_mtp : 0;
    spec_adapt_init(&s->ad, s->k_max);

    size_t V = (size_t)e->vocab, H = (size_t)e->hidden;
    s->kv = mtpd_kv_new(e->m, cap);
    s->toks = malloc(((size_t)cap + SPEC_K_MAX + 2) * sizeof(int32_t));
    s->out = malloc((size_t)p->max_tokens * sizeof(int32_t));
    if (s->use_mtp) {
        s->mtp_logits = malloc(V * sizeof(float));
        s->stash = malloc((size_t)s->n_mod * H * sizeof(float));
        s->dhid = malloc(H * sizeof(float));
        if (!spec_sampling_greedy(&p->sampling))
            s->q = malloc((size_t)s->k_max * V * sizeof(float));
    }
    if (!s->kv || !s->toks || !s->out ||
        (s->use_mtp && (!s->mtp_logits || !s->stash || !s->dhid ||
                        (!spec_sampling_greedy(&p->sampling) && !s->q)))) {
        spec_seq_free(s);
        return MTPD_ENOMEM;
    }
    memcpy(s->toks, prompt, (size_t)n_prompt * sizeof(int32_t));
    if (s->use_mtp && e->n_sub && e->n_ctx) {
        if (spec_draft_ctx_init(&s->dctx, e->dh, e->n_mtp, e->n_ctx) < 0) {
            spec_seq_free(s);
            return MTPD_ENOMEM;
        }
        for (int i = 0; i < n_prompt; i++)
            spec_draft_ctx_add(&s->dctx, e->dh, prompt[i]);
    }
    *out = s;
    return MTPD_OK;
}

enum spec_finish spec_seq_finish(const struct spec_seq *s)
{
    return s->fin;
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

/* k for this pass, capped by output budget, context and draft state. */
static int choose_k(struct spec_engine *e, struct spec_seq *s)
{
    int L = s->n_toks - 1;
    int k = s->k_cfg;
    if (k == SPEC_K_AUTO) {
        k = s->n_mod ? spec_adapt_choose(&s->ad, &e->costs) : 0;
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

static void fail_seqs(struct spec_seq **seqs, int n, int err)
{
    for (int i = 0; i < n; i++) {
        seqs[i]->fin = SPEC_FINISH_ERROR;
        seqs[i]->err = err;
    }
}

int spec_step(struct spec_engine *e, struct spec_seq **seqs, int n)
{
    double t0 = spec_now();
    struct spec_seq **act = e->act;
    int n_act = 0, n_dec = 0, rows = 0;

    /* 1. decoding sequences first: k + 1 rows each */
    for (int i = 0; i < n && n_act < e->max_rows; i++) {
        struct spec_seq *s = seqs[i];
        if (s->fin != SPEC_RUNNING || !spec_seq_decoding(s))
            continue;
        if (rows + 1 > e->max_rows)
            break;
        s->k = choose_k(e, s);
        if (rows + s->k + 1 > e->max_rows)
            s->k = e->max_rows - rows - 1;
        s->main_len_before = s->n_toks - 1;
        for (int j = 0; j < s->n_mod; j++)
            s->mtp_exact[j] = mtpd_kv_len(s->kv, j);
        rows += s->k + 1;
        act[n_act++] = s;
    }
    n_dec = n_act;
    /* then prompt chunks in the rows left */
    for (int i = 0; i < n && rows < e->max_rows; i++) {
        struct spec_seq *s = seqs[i];
        if (s->fin != SPEC_RUNNING || spec_seq_decoding(s))
            continue;
        if (!s->prefill_started) {
            s->prefill_started = 1;
            s->t_prefill0 = t0;
        }
        s->main_len_before = mtpd_kv_len(s->kv, -1);
        int chunk = s->n_prompt - s->main_len_before;
        if (chunk > e->max_rows - rows)
            chunk = e->max_rows - rows;
        s->k = chunk; /* rows of this prompt chunk */
        rows += chunk;
        act[n_act++] = s;
    }
    if (n_act == 0)
        return MTPD_OK;

    /* 2. draft d_1..d_k (MTP calls) */
    double td = spec_now();
    int rc = spec_draft(e, act, n_dec);
    double tv = spec_now();
    if (rc < 0) {
        for (int i = 0; i < n_dec; i++)
            spec_mtp_rollback(act[i]);
        fail_seqs(act, n_act, rc);
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
    double ta = spec_now();
    if (rc < 0) {
        for (int i = 0; i < n_dec; i++)
            spec_mtp_rollback(act[i]);
        fail_seqs(act, n_act, rc);
        return rc;
    }
    if (n_act == n_dec) /* decode-only calls: prompt chunks cost differently */
        spec_cost_add(&e->costs.main, rows, ta - tv);

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
    }
    double tr = spec_now();

    /* 5. exact MTP entries for the new positions; drafts the next d_1 */
    rc = spec_refill(e, act, n_act);
    double t1 = spec_now();
    if (rc < 0) {
        fail_seqs(act, n_act, rc);
        return rc;
    }
    if (n_dec > 0 && !e->catchup) { /* a catch-up is no typical refill */
        double rf = t1 - tr;
        e->costs.refill_s = e->costs.refill_s > 0
                                ? 0.9 * e->costs.refill_s + 0.1 * rf
                                : rf;
    }

    /* 6. bookkeeping: time, context limit, finished sequences */
    for (int i = 0; i < n_act; i++) {
        struct spec_seq *s = act[i];
        if (i < n_dec) {
            s->st.decode_s += t1 - t0;
            s->st.draft_s += tv - td;
            s->st.verify_s += ta - tv;
            s->st.refill_s += t1 - tr;
        } else if (spec_seq_decoding(s) || s->fin != SPEC_RUNNING) {
            s->st.prefill_s += t1 - s->t_prefill0;
        }
        if (s->fin == SPEC_RUNNING && spec_seq_decoding(s) &&
            s->n_toks > s->cap)
            s->fin = SPEC_FINISH_CONTEXT;
        if (s->fin != SPEC_RUNNING)
            settle_finished(s);
    }
    return MTPD_OK;
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
