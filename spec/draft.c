/*
 * draft.c - the MTP side of a pass.
 *
 * Module alignment (as tools/ref/dsv3_ref.py's draft_tokens): MTP row q of
 * every module sits at position q and takes token x_{q+1}; module 0 pairs
 * it with the main model's hidden state h_q, module m >= 1 with module
 * m-1's output at row q-1 (zeros at q = 0), i.e. the state that predicted
 * x_{q+1}. Every module's row q predicts x_{q+2}, and in the decode state
 * every module holds exact rows 0..L-1.
 *
 * spec_draft: d_1 comes from the logits the last refill left (module 0 at
 * row L-1); module m (1 <= m < M) drafts d_{m+1} over rows L..L+m-1
 * (pairing module m-1's outputs at L-1.. with d_1..d_m); past the last
 * module M-1 the recursion continues with it at rows L+M-1, ...: (its own
 * output at the previous row, the last draft). Draft rows are approximate
 * and are dropped afterwards (spec_mtp_rollback).
 *
 * spec_refill: after the main forward, every module gets exact rows
 * [len, min(L, T-1)) with T the number of known tokens (for a sequence
 * that has just finished: of its settled history). Module 0's last
 * row is at L-1 in the decode state and its logits draft the next d_1.
 * One MTP call per module for all sequences.
 */
#include "spec_int.h"

#include "mtp_head.h"

#include <string.h>

int32_t spec_draft_token(struct spec_engine *e, struct spec_seq *s,
                         const float *logits, float *q)
{
    if (spec_sampling_greedy(&s->p.sampling))
        return spec_argmax(logits, e->vocab);
    spec_probs(&s->p.sampling, logits, e->vocab, q, e->ibuf);
    return spec_sample(q, e->vocab, &s->rng);
}

/* With the restricted head: projects the last MTP call's output rows
 * rows[0..n) through module's packed head into e->sub (one matmul), and
 * row i through the context ids of its sequence seqs[owner[i]] into
 * e->csub. */
static int sub_logits(struct spec_engine *e, int module, const int *rows,
                      struct spec_seq **seqs, const int *owner, int n)
{
    const size_t H = (size_t)e->hidden;
    struct kpool *pool = mtpd_ctx_pool(e->ctx);
    for (int i = 0; i < n; i++)
        memcpy(e->gather + (size_t)i * H, mtpd_ctx_hidden(e->ctx, rows[i]),
               H * sizeof(float));
    if (spec_draft_head_logits(&e->dh[module], pool, e->gather, e->hidden, n,
                               e->sub) < 0)
        return MTPD_EINVAL;
    for (int i = 0; i < n; i++) {
        const struct spec_draft_ctx *c = &seqs[owner[i]]->dctx;
        if (c->cap && spec_draft_ctx_logits(c, module, e->hidden, pool,
                                            e->gather + (size_t)i * H,
                                            e->csub + (size_t)i * e->n_ctx))
            return MTPD_EINVAL;
    }
    return MTPD_OK;
}

/* Full-vocabulary draft logits of output row `row` of the last MTP call,
 * i-th of the rows given to sub_logits, of sequence s (restricted head:
 * scattered into dst, -inf outside the subset). */
static const float *draft_logits(struct spec_engine *e, int module, int i,
                                 int row, const struct spec_seq *s,
                                 float *dst)
{
    if (!e->n_sub)
        return mtpd_ctx_logits(e->ctx, row);
    const struct spec_draft_ctx *c = s->dctx.cap ? &s->dctx : NULL;
    spec_draft_head_scatter(&e->dh[module], e->sub + (size_t)i * e->n_sub,
                            c, c ? e->csub + (size_t)i * e->n_ctx : NULL,
                            dst, e->vocab);
    return dst;
}

static float *qrow(struct spec_engine *e, struct spec_seq *s, int j)
{
    return s->q ? s->q + (size_t)j * (size_t)e->vocab : NULL;
}

void spec_mtp_rollback(struct spec_seq *s)
{
    for (int i = 0; i < s->n_mod; i++)
        if (mtpd_kv_len(s->kv, i) > s->mtp_exact[i])
            mtpd_kv_truncate(s->kv, i, s->mtp_exact[i]);
}

/* Records draft j (1-based) of s; EOS ends the draft there. */
static void put_draft(struct spec_seq *s, int j, int32_t d)
{
    int L = s->n_toks - 1;
    s->toks[L + j] = d;
    if (d == s->p.eos_id && s->k > j)
        s->k = j;
}

int spec_draft(struct spec_engine *e, struct spec_seq **seqs, int n)
{
    const size_t H = (size_t)e->hidden;
    int M = e->n_mtp;
    int any = 0;
    for (int i = 0; i < n; i++) {
        struct spec_seq *s = seqs[i];
        if (s->k < 1)
            continue;
        put_draft(s, 1, spec_draft_token(e, s, s->mtp_logits, qrow(e, s, 0)));
        any |= s->k > 1;
    }
    if (!any)
        return MTPD_OK;

    /* modules 1..M-1: module m drafts d_{m+1} over rows L..L+m-1 */
    int *off = e->r_off; /* each seq's first row in hout (prev module) */
    for (int mi = 1; mi < M; mi++) {
        int cnt = 0, rows = 0;
        for (int i = 0; i < n; i++) {
            struct spec_seq *s = seqs[i];
            if (s->k <= mi)
                continue;
            int L = s->n_toks - 1;
            if (mtpd_kv_len(s->kv, mi) != L || s->stash_pos[mi - 1] != L - 1 ||
                rows + mi > e->max_rows) {
                s->k = mi; /* cannot draft deeper: stop here */
                continue;
            }
            float *h = e->hin + (size_t)rows * H;
            memcpy(h, s->stash + (size_t)(mi - 1) * H, H * sizeof(float));
            if (mi > 1) /* module mi-1's draft rows L..L+mi-2 */
                memcpy(h + H, e->hout + (size_t)off[i] * H,
                       (size_t)(mi - 1) * H * sizeof(float));
            struct mtpd_mtp_seq *q = &e->qseq[cnt];
            q->kv = s->kv;
            q->tokens = s->toks + L + 1;
            q->hidden = h;
            q->n_tokens = mi;
            q->logits_from = e->n_sub ? mi : mi - 1;
            e->slots[cnt].seq = i;
            e->slots[cnt].row = rows;
            s->ph_rows[SPEC_PH_DRAFT] += mi;
            rows += mi;
            cnt++;
        }
        if (cnt == 0)
            break;
        int rc = mtpd_mtp_forward(e->ctx, mi, e->qseq, cnt);
        if (rc < 0)
            return rc;
        if (e->n_sub) {
            for (int c = 0; c < cnt; c++) {
                e->rowidx[c] = e->slots[c].row + mi - 1;
                e->rowseq[c] = e->slots[c].seq;
            }
            if ((rc = sub_logits(e, mi, e->rowidx, seqs, e->rowseq, cnt)) < 0)
                return rc;
        }
        for (int c = 0; c < cnt; c++) {
            int i = e->slots[c].seq, r0 = e->slots[c].row;
            struct spec_seq *s = seqs[i];
            for (int r = 0; r < mi; r++)
                memcpy(e->hout + (size_t)(r0 + r) * H,
                       mtpd_ctx_hidden(e->ctx, r0 + r), H * sizeof(float));
            off[i] = r0;
            if (mi == M - 1)
                memcpy(s->dhid, mtpd_ctx_hidden(e->ctx, r0 + mi - 1),
                       H * sizeof(float));
            put_draft(s, mi + 1,
                      spec_draft_token(e, s,
                                       draft_logits(e, mi, c, r0 + mi - 1,
                                                    s, e->lbuf),
                                       qrow(e, s, mi)));
        }
    }

    /* recursion with the last module at rows L, L+1, ... */
    if (M == 1)
        for (int i = 0; i < n; i++) {
            struct spec_seq *s = seqs[i];
            if (s->k <= 1)
                continue;
            if (s->stash_pos[0] != s->n_toks - 2) {
                s->k = 1;
                continue;
            }
            memcpy(s->dhid, s->stash, H * sizeof(float));
        }
    for (int t = 1;; t++) {
        int depth = M + t; /* drafting d_depth at row L + M + t - 2 */
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            struct spec_seq *s = seqs[i];
            if (s->k < depth)
                continue;
            int L = s->n_toks - 1;
            if (mtpd_kv_len(s->kv, M - 1) != L + M + t - 2) {
                s->k = depth - 1;
                continue;
            }
            struct mtpd_mtp_seq *q = &e->qseq[cnt];
            q->kv = s->kv;
            q->tokens = s->toks + L + depth - 1;
            q->hidden = s->dhid;
            q->n_tokens = 1;
            q->logits_from = e->n_sub ? 1 : 0;
            e->slots[cnt].seq = i;
            s->ph_rows[SPEC_PH_DRAFT]++;
            cnt++;
        }
        if (cnt == 0)
            break;
        double t0 = spec_now();
        int rc = mtpd_mtp_forward(e->ctx, M - 1, e->qseq, cnt);
        if (rc < 0)
            return rc;
        if (e->n_sub) {
            for (int c = 0; c < cnt; c++) {
                e->rowidx[c] = c;
                e->rowseq[c] = e->slots[c].seq;
            }
            if ((rc = sub_logits(e, M - 1, e->rowidx, seqs, e->rowseq,
                                 cnt)) < 0)
                return rc;
        }
        /* adaptive k's T_step: one sequence's share of the step */
        double dt = (spec_now() - t0) / cnt;
        e->costs.step_s = e->costs.step_s > 0
                              ? 0.9 * e->costs.step_s + 0.1 * dt
                              : dt;
        for (int c = 0; c < cnt; c++) {
            struct spec_seq *s = seqs[e->slots[c].seq];
            memcpy(s->dhid, mtpd_ctx_hidden(e->ctx, c), H * sizeof(float));
            put_draft(s, depth,
                      spec_draft_token(e, s,
                                       draft_logits(e, M - 1, c, c, s,
                                                    e->lbuf),
                                       qrow(e, s, depth - 1)));
        }
    }
    return MTPD_OK;
}

/* logits_from for a call that needs no logits rows */
static int no_logits(int n_tokens)
{
    return n_tokens;
}

/* Appends the main hidden rows of this call's new positions [p0, p1) of
 * s to its log (auto's pause); drops MTP for s if they do not fit. */
static void log_hidden(struct spec_engine *e, struct spec_seq *s, int p0,
                       int p1)
{
    const size_t H = (size_t)e->hidden;
    if (!s->hlog || p0 != s->hlog_base + s->hlog_n ||
        s->hlog_n + (p1 - p0) > s->hlog_cap) {
        spec_mtp_drop(s);
        return;
    }
    for (int p = p0; p < p1; p++)
        memcpy(s->hlog + (size_t)s->hlog_n++ * H,
               mtpd_ctx_hidden(e->ctx, s->rows_at + p - s->main_len_before),
               H * sizeof(float));
}

/* The main model's hidden state at position p of s: this call's output
 * rows, or the log of a pause. NULL when neither holds it. */
static const float *main_hidden(struct spec_engine *e,
                                const struct spec_seq *s, int p)
{
    if (p >= s->main_len_before)
        return mtpd_ctx_hidden(e->ctx, s->rows_at + p - s->main_len_before);
    int i = p - s->hlog_base;
    if (s->hlog && i >= 0 && i < s->hlog_n)
        return s->hlog + (size_t)i * (size_t)e->hidden;
    return NULL;
}

int spec_refill(struct spec_engine *e, struct spec_seq **seqs, int n)
{
    const size_t H = (size_t)e->hidden;
    int M = e->n_mtp;
    struct spec_slot *slot = e->slots;
    e->catchup = 0;
    for (int i = 0; i < n; i++) { /* paused: only log */
        struct spec_seq *s = seqs[i];
        if (s->paused && s->fin == SPEC_RUNNING && spec_seq_decoding(s)) {
            int L = mtpd_kv_len(s->kv, -1);
            int target = s->n_toks - 1 < L ? s->n_toks - 1 : L;
            log_hidden(e, s, s->main_len_before, target);
        }
    }
    /* per sequence: module mi-1's rows of this refill, as p0/n and their
     * first row in hout */
    int *prev_p0 = e->r_p0, *prev_off = e->r_off, *prev_n = e->r_n;
    for (int i = 0; i < n; i++)
        prev_n[i] = 0;
    for (int mi = 0; mi < M; mi++) {
        int cnt = 0, rows = 0;
        for (int i = 0; i < n; i++) {
            struct spec_seq *s = seqs[i];
            /* a sequence that finished in this step was settled to its
             * output: its MTP caches still catch up with it, so that a
             * restart (the next turn) can keep them */
            if (!s->use_mtp)
                continue;
            int L = mtpd_kv_len(s->kv, -1);
            int target = s->n_toks - 1 < L ? s->n_toks - 1 : L;
            int len = mtpd_kv_len(s->kv, mi);
            if (target <= len)
                continue;
            if (mi > 0 && mtpd_kv_len(s->kv, 0) < target)
                continue; /* module 0 deferred it (below) */
            if (mi == 0 && rows + target - len > e->max_rows) {
                /* a catch-up after a pause that does not fit this call
                 * (other sequences' rows): keep logging, next pass */
                log_hidden(e, s, s->main_len_before, target);
                continue;
            }
            float *h = e->hin + (size_t)rows * H;
            for (int p = len; p < target; p++, h += H) {
                const float *src;
                if (mi == 0) {
                    if (!(src = main_hidden(e, s, p)))
                        return MTPD_EINVAL; /* main hidden no longer held */
                } else if (p == 0) {
                    memset(h, 0, H * sizeof(float));
                    continue;
                } else if (p - 1 == s->stash_pos[mi - 1]) {
                    src = s->stash + (size_t)(mi - 1) * H;
                } else if (p - 1 >= prev_p0[i] &&
                           p - 1 < prev_p0[i] + prev_n[i]) {
                    src = e->hout +
                          (size_t)(prev_off[i] + p - 1 - prev_p0[i]) * H;
                } else {
                    return MTPD_EINVAL; /* broken invariant */
                }
                memcpy(h, src, H * sizeof(float));
            }
            if (mi == 0 && len < s->main_len_before) {
                s->hlog_n = 0; /* the pause's log is consumed */
                e->catchup = 1;
            }
            int nr = target - len;
            int draft_row = mi == 0 && target == L && s->n_toks == L + 1 &&
                            s->fin == SPEC_RUNNING;
            struct mtpd_mtp_seq *q = &e->qseq[cnt];
            q->kv = s->kv;
            q->tokens = s->toks + len + 1;
            q->hidden = e->hin + (size_t)rows * H;
            q->n_tokens = nr;
            q->logits_from = draft_row && !e->n_sub ? nr - 1 : no_logits(nr);
            slot[cnt].seq = i;
            slot[cnt].row = rows;
            slot[cnt].p0 = len;
            slot[cnt].n = nr;
            slot[cnt].logits = draft_row;
            s->ph_rows[SPEC_PH_REFILL] += nr;
            rows += nr;
            cnt++;
        }
        /* module mi-1's inputs to module mi have been read: its stash moves
         * to the last row it computed in this refill */
        if (mi > 0)
            for (int i = 0; i < n; i++)
                if (prev_n[i] > 0) {
                    struct spec_seq *s = seqs[i];
                    memcpy(s->stash + (size_t)(mi - 1) * H,
                           e->hout + (size_t)(prev_off[i] + prev_n[i] - 1) * H,
                           H * sizeof(float));
                    s->stash_pos[mi - 1] = prev_p0[i] + prev_n[i] - 1;
                    prev_n[i] = 0;
                }
        if (cnt == 0)
            return MTPD_OK;
        int rc = mtpd_mtp_forward(e->ctx, mi, e->qseq, cnt);
        if (rc < 0)
            return rc;
        int n_lg = 0;
        if (e->n_sub) {
            for (int c = 0; c < cnt; c++)
                if (slot[c].logits) {
                    e->rowseq[n_lg] = slot[c].seq;
                    e->rowidx[n_lg++] = slot[c].row + slot[c].n - 1;
                }
            if (n_lg && (rc = sub_logits(e, mi, e->rowidx, seqs, e->rowseq,
                                         n_lg)) < 0)
                return rc;
        }
        n_lg = 0;
        for (int c = 0; c < cnt; c++) {
            int i = slot[c].seq, r0 = slot[c].row, nr = slot[c].n;
            struct spec_seq *s = seqs[i];
            for (int r = 0; r < nr; r++)
                memcpy(e->hout + (size_t)(r0 + r) * H,
                       mtpd_ctx_hidden(e->ctx, r0 + r), H * sizeof(float));
            if (slot[c].logits) {
                const float *lg = draft_logits(e, mi, n_lg++, r0 + nr - 1, s,
                                               s->mtp_logits);
                if (lg != s->mtp_logits)
                    memcpy(s->mtp_logits, lg,
                           (size_t)e->vocab * sizeof(float));
                s->mtp_logits_pos = slot[c].p0 + nr - 1;
            }
            prev_p0[i] = slot[c].p0;
            prev_off[i] = r0;
            prev_n[i] = nr;
        }
    }
    for (int i = 0; i < n; i++)
        if (prev_n[i] > 0) {
            struct spec_seq *s = seqs[i];
            memcpy(s->stash + (size_t)(M - 1) * H,
                   e->hout + (size_t)(prev_off[i] + prev_n[i] - 1) * H,
                   H * sizeof(float));
            s->stash_pos[M - 1] = prev_p0[i] + prev_n[i] - 1;
        }
    return MTPD_OK;
}
