/*
 * step.c - spec_step: the order of one scheduling step (cancellations;
 * rows and pool pages for each sequence; choose k; draft; one main
 * forward; accept; roll back; refill; the time shares). The phases live
 * in draft.c and verify.c.
 */
#include "spec_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    spec_seq_settle(s);
}

/* An engine-wide failure (a forward call failed): every sequence of the
 * call finishes with it, its caches as before the step. */
static void fail_call(struct spec_seq **seqs, int n, int err,
                      const char *what)
{
    for (int i = 0; i < n; i++)
        fail_seq(seqs[i], err, what);
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
            spec_seq_settle(s);
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
            spec_seq_settle(s);
            continue;
        }
        int own = s->last_k + 1;
        s->k = choose_k(e, s, dec_rows > own ? dec_rows - own : 0);
        if (rows + s->k + 1 > budget)
            s->k = budget - rows - 1;
        /* toks gets the drafts and the next token */
        int rc = spec_seq_toks(s, L + s->k + 2);
        if (rc == MTPD_OK)
            rc = spec_seq_hold(s, L + s->k + 1);
        if (rc == MTPD_ENOMEM && s->k > 0) { /* no drafts then */
            s->k = 0;
            rc = spec_seq_toks(s, L + 2);
            if (rc == MTPD_OK)
                rc = spec_seq_hold(s, L + 1);
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
        int rc = spec_seq_hold(s, s->main_len_before + chunk);
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
    /* every call, prompt chunks included: a prompt row costs about a
     * decode row (less its logits), and a server whose steps mostly carry
     * some prompt chunk would otherwise leave auto without a cost line */
    if (n_dec > 0)
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
            spec_seq_settle(s);
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
            spec_seq_settle(s);
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
