/*
 * check.c - the test hooks of spec_test.h: the rollback self-check
 * (`mtpd generate --check-rollback`) and the broken acceptance rule.
 *
 * After passes with rejections the live caches must hold what a fresh
 * prefill of the accepted sequence would hold. We run one more position
 * on the live caches (main row L over the pending token, then MTP module 0
 * row L over (that hidden state, the main argmax)) and the same on fresh
 * caches built from scratch over toks[0..L], and compare logits. The live
 * caches are truncated back afterwards, so the sequence is unchanged.
 */
#include "spec_int.h"
#include "spec_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double max_abs_diff(const float *a, const float *b, int n)
{
    double m = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d)
            m = d != d ? INFINITY : d;
    }
    return m;
}

/* Main row L then (if mtp) MTP module 0 row L on kv; copies the main
 * logits, main hidden and MTP logits out. kv must hold main len L and MTP
 * len L. */
static int one_more(struct spec_engine *e, struct mtpd_kv *kv,
                    const int32_t *tok, int mtp, float *lg, float *hid,
                    float *mlg, int32_t *arg)
{
    struct mtpd_seq ms = {kv, tok, 1, 0};
    int rc = mtpd_forward(e->ctx, &ms, 1);
    if (rc < 0)
        return rc;
    memcpy(lg, mtpd_ctx_logits(e->ctx, 0), (size_t)e->vocab * sizeof(float));
    memcpy(hid, mtpd_ctx_hidden(e->ctx, 0), (size_t)e->hidden * sizeof(float));
    if (!mtp)
        return MTPD_OK;
    if (*arg < 0)
        *arg = spec_argmax(lg, e->vocab);
    struct mtpd_mtp_seq q = {kv, arg, hid, 1, 0};
    rc = mtpd_mtp_forward(e->ctx, 0, &q, 1);
    if (rc < 0)
        return rc;
    memcpy(mlg, mtpd_ctx_logits(e->ctx, 0), (size_t)e->vocab * sizeof(float));
    return MTPD_OK;
}

void spec_engine_set_break_accept(struct spec_engine *e, int on)
{
    e->break_accept = on != 0;
}

int spec_seq_check_rollback(struct spec_engine *e, struct spec_seq *s,
                            double *main_diff, double *mtp_diff)
{
    *main_diff = *mtp_diff = -1.0;
    if (!spec_seq_decoding(s))
        return MTPD_EINVAL;
    int L = s->n_toks - 1;
    size_t V = (size_t)e->vocab, H = (size_t)e->hidden;
    int mtp = s->use_mtp && mtpd_kv_len(s->kv, 0) == L;
    if (mtpd_kv_len(s->kv, -1) != L || L + 1 > s->cap)
        return MTPD_EINVAL;
    float *buf = malloc((4 * V + 2 * H + (size_t)(L + 1) * H) * sizeof(float));
    struct mtpd_kv *kv = mtpd_kv_new(e->m, L + 1);
    if (!buf || !kv) {
        free(buf);
        mtpd_kv_free(kv);
        return MTPD_ENOMEM;
    }
    float *lg0 = buf, *lg1 = buf + V, *mlg0 = buf + 2 * V, *mlg1 = buf + 3 * V;
    float *hid0 = buf + 4 * V, *hid1 = hid0 + H, *hall = hid1 + H;
    int32_t arg = -1;
    int rc = one_more(e, s->kv, s->toks + L, mtp, lg0, hid0, mlg0, &arg);
    mtpd_kv_truncate(s->kv, -1, L);
    if (mtp && mtpd_kv_len(s->kv, 0) > L)
        mtpd_kv_truncate(s->kv, 0, L);
    /* fresh: prefill toks[0..L) in chunks, keeping every hidden row */
    for (int p = 0; rc >= 0 && p < L;) {
        int n = L - p < e->max_rows ? L - p : e->max_rows;
        struct mtpd_seq ms = {kv, s->toks + p, n, n - 1};
        rc = mtpd_forward(e->ctx, &ms, 1);
        for (int r = 0; rc >= 0 && r < n; r++)
            memcpy(hall + (size_t)(p + r) * H, mtpd_ctx_hidden(e->ctx, r),
                   H * sizeof(float));
        p += n;
    }
    for (int p = 0; rc >= 0 && mtp && p < L;) {
        int n = L - p < e->max_rows ? L - p : e->max_rows;
        struct mtpd_mtp_seq q = {kv, s->toks + p + 1, hall + (size_t)p * H, n,
                                 n - 1};
        rc = mtpd_mtp_forward(e->ctx, 0, &q, 1);
        p += n;
    }
    if (rc >= 0)
        rc = one_more(e, kv, s->toks + L, mtp, lg1, hid1, mlg1, &arg);
    if (rc >= 0) {
        *main_diff = max_abs_diff(lg0, lg1, e->vocab);
        if (mtp)
            *mtp_diff = max_abs_diff(mlg0, mlg1, e->vocab);
    }
    mtpd_kv_free(kv);
    free(buf);
    return rc < 0 ? rc : MTPD_OK;
}
