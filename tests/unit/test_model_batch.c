/*
 * test_model_batch.c - one forward call over several sequences must give
 * each sequence exactly what separate calls give (the daemon's scheduler
 * and the speculative engine batch sequences of different lengths), and a
 * failed call must leave every cache as it was.
 *
 *   test_model_batch CHECKPOINT_DIR...   (the committed golden presets)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "model_int.h" /* split_tile */
#include "unit_test.h"

static const char *g_dir;

#define NSEQ 3

/* Largest |a - b| over n floats. */
static double maxdiff(const float *a, const float *b, int n)
{
    double d = 0;
    for (int i = 0; i < n; i++) {
        double x = fabs((double)a[i] - b[i]);
        d = x > d ? x : d;
    }
    return d;
}

static enum test_return test_batch_equals_separate(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, NULL, &m, err, sizeof(err)) == 0, "%s", err);
    const struct mtpd_config *c = mtpd_model_config(m);
    int V = c->vocab_size, H = c->hidden_size;
    /* prefix lengths and new-token counts differ per sequence */
    int pre[NSEQ] = {5, 1, 9}, add[NSEQ] = {3, 1, 4};
    int32_t toks[NSEQ][16];
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < 16; i++)
            toks[s][i] = (int32_t)((s * 131 + i * 17 + 3) % V);
    struct mtpd_ctx *cx = mtpd_ctx_new(m, 32, 2);
    struct mtpd_kv *sep[NSEQ], *bat[NSEQ];
    float *ref_logits = malloc(sizeof(float) * 16 * V * NSEQ);
    float *ref_hidden = malloc(sizeof(float) * 16 * H * NSEQ);
    CHECK(cx && ref_logits && ref_hidden, "allocation");
    for (int s = 0; s < NSEQ; s++) {
        sep[s] = mtpd_kv_new(m, 32);
        bat[s] = mtpd_kv_new(m, 32);
        CHECK(sep[s] && bat[s], "kv allocation");
    }
    /* separately: prefix, then the new tokens with logits for every row */
    for (int s = 0; s < NSEQ; s++) {
        struct mtpd_seq a = {sep[s], toks[s], pre[s], pre[s] - 1};
        CHECK(mtpd_forward(cx, &a, 1) == 0, "separate prefix %d", s);
        struct mtpd_seq b = {sep[s], toks[s] + pre[s], add[s], 0};
        CHECK(mtpd_forward(cx, &b, 1) == 0, "separate step %d", s);
        for (int r = 0; r < add[s]; r++) {
            memcpy(ref_logits + ((size_t)s * 16 + r) * V,
                   mtpd_ctx_logits(cx, r), sizeof(float) * V);
            memcpy(ref_hidden + ((size_t)s * 16 + r) * H,
                   mtpd_ctx_hidden(cx, r), sizeof(float) * H);
        }
    }
    /* batched: all prefixes in one call, then all steps in one call */
    struct mtpd_seq pa[NSEQ], pb[NSEQ];
    for (int s = 0; s < NSEQ; s++) {
        pa[s] = (struct mtpd_seq){bat[s], toks[s], pre[s], pre[s] - 1};
        pb[s] = (struct mtpd_seq){bat[s], toks[s] + pre[s], add[s], 0};
    }
    CHECK(mtpd_forward(cx, pa, NSEQ) == 0, "batched prefix");
    CHECK(mtpd_forward(cx, pb, NSEQ) == 0, "batched step");
    int row = 0;
    for (int s = 0; s < NSEQ; s++) {
        CHECK(mtpd_kv_len(bat[s], -1) == pre[s] + add[s], "length of %d", s);
        for (int r = 0; r < add[s]; r++, row++) {
            double dl = maxdiff(mtpd_ctx_logits(cx, row),
                                ref_logits + ((size_t)s * 16 + r) * V, V);
            double dh = maxdiff(mtpd_ctx_hidden(cx, row),
                                ref_hidden + ((size_t)s * 16 + r) * H, H);
            /* same math, different summation grouping in the kernels */
            CHECK(dl < 1e-4 && dh < 1e-4, "seq %d row %d: logits %g hidden %g",
                  s, r, dl, dh);
        }
    }
    /* a failing call (one id out of range) changes no cache */
    int32_t bad[2] = {1, V};
    struct mtpd_seq pc[2] = {{bat[0], toks[0], 2, 0}, {bat[1], bad, 2, 0}};
    CHECK(mtpd_forward(cx, pc, 2) == MTPD_EINVAL, "bad id accepted");
    CHECK(mtpd_kv_len(bat[0], -1) == pre[0] + add[0] &&
          mtpd_kv_len(bat[1], -1) == pre[1] + add[1], "cache moved on error");
    /* one sequence twice in a call is refused */
    struct mtpd_seq pd[2] = {{bat[2], toks[2], 1, 0}, {bat[2], toks[2], 1, 0}};
    CHECK(mtpd_forward(cx, pd, 2) == MTPD_EINVAL, "duplicate accepted");
    for (int s = 0; s < NSEQ; s++) {
        mtpd_kv_free(sep[s]);
        mtpd_kv_free(bat[s]);
    }
    free(ref_logits);
    free(ref_hidden);
    mtpd_ctx_free(cx);
    mtpd_model_free(m);
    return TEST_PASS;
}

static enum test_return test_truncate_then_recompute(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, NULL, &m, err, sizeof(err)) == 0, "%s", err);
    int V = mtpd_model_config(m)->vocab_size;
    int32_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (int32_t)((i * 37 + 11) % V);
    struct mtpd_ctx *cx = mtpd_ctx_new(m, 16, 2);
    struct mtpd_kv *kv = mtpd_kv_new(m, 16);
    float *first = malloc(sizeof(float) * V);
    CHECK(cx && kv && first, "allocation");
    struct mtpd_seq a = {kv, t, 8, 7};
    CHECK(mtpd_forward(cx, &a, 1) == 0, "forward");
    memcpy(first, mtpd_ctx_logits(cx, 7), sizeof(float) * V);
    /* roll back 3 positions, feed other tokens, roll back again, then the
     * original ones: the logits must come back exactly */
    CHECK(mtpd_kv_truncate(kv, -1, 5) == 0, "truncate");
    CHECK(mtpd_kv_truncate(kv, -1, 6) == MTPD_EINVAL, "grew by truncate");
    int32_t other[3] = {1, 2, 3};
    struct mtpd_seq b = {kv, other, 3, 2};
    CHECK(mtpd_forward(cx, &b, 1) == 0, "other tokens");
    CHECK(mtpd_kv_truncate(kv, -1, 5) == 0, "truncate again");
    struct mtpd_seq c = {kv, t + 5, 3, 2};
    CHECK(mtpd_forward(cx, &c, 1) == 0, "replay");
    double d = maxdiff(mtpd_ctx_logits(cx, 2), first, V);
    CHECK(d < 1e-4, "logits after rollback differ by %g", d);
    free(first);
    mtpd_kv_free(kv);
    mtpd_ctx_free(cx);
    mtpd_model_free(m);
    return TEST_PASS;
}

/* Decode attention split by cache positions (mla_split.c) against split
 * by heads (mla.c): the same logits up to rounding, for 1-5 rows over a
 * 200-position prefix in tiles of 48 (tiles, shares and the causal mask
 * all cut through it), with a rollback in between. */
static enum test_return split_equals_heads(int kv_bf16)
{
    char err[512];
    struct mtpd_model *m;
    struct mtpd_load_opts lo = {.kv_bf16 = kv_bf16};
    CHECK(mtpd_model_load(g_dir, &lo, &m, err, sizeof(err)) == 0, "%s", err);
    int V = mtpd_model_config(m)->vocab_size;
    enum { PRE = 200, CAP = 240 };
    int32_t t[CAP];
    for (int i = 0; i < CAP; i++)
        t[i] = (int32_t)((i * 7919 + 3) % V);
    struct mtpd_ctx *cx[2];
    struct mtpd_kv *kv[2];
    for (int s = 0; s < 2; s++) {
        cx[s] = mtpd_ctx_new(m, CAP, 2);
        kv[s] = mtpd_kv_new(m, CAP);
        CHECK(cx[s] && kv[s], "allocation");
        mtpd_ctx_set_attn_split(cx[s], s); /* 0: by heads, 1: by positions */
        cx[s]->attn_chunk = 48; /* several chunks per share */
        struct mtpd_seq pre = {kv[s], t, PRE, PRE};
        CHECK(mtpd_forward(cx[s], &pre, 1) == 0, "prefill");
    }
    int pos = PRE, rows[] = {1, 3, 5, 2, 1, 4};
    double worst = 0;
    for (int st = 0; st < 6; st++) {
        int T = rows[st];
        for (int s = 0; s < 2; s++) {
            struct mtpd_seq q = {kv[s], t + pos, T, 0};
            CHECK(mtpd_forward(cx[s], &q, 1) == 0, "step %d", st);
        }
        for (int r = 0; r < T; r++) {
            const float *a = mtpd_ctx_logits(cx[0], r);
            double mx = 0;
            for (int v = 0; v < V; v++)
                mx = fabs(a[v]) > mx ? fabs(a[v]) : mx;
            double d = maxdiff(a, mtpd_ctx_logits(cx[1], r), V) / mx;
            worst = d > worst ? d : worst;
        }
        pos += T;
        if (st == 2) { /* roll both back by 4 */
            pos -= 4;
            for (int s = 0; s < 2; s++)
                CHECK(mtpd_kv_truncate(kv[s], -1, pos) == 0, "truncate");
        }
    }
    CHECK(worst < 1e-5, "split vs heads (kv %s): relative difference %g",
          kv_bf16 ? "bf16" : "f32", worst);
    for (int s = 0; s < 2; s++) {
        mtpd_kv_free(kv[s]);
        mtpd_ctx_free(cx[s]);
    }
    mtpd_model_free(m);
    return TEST_PASS;
}

/* ... with the fp32 and with the BF16 KV cache */
static enum test_return test_attention_split_equals_heads(void)
{
    enum test_return r = split_equals_heads(0);
    return r == TEST_PASS ? split_equals_heads(1) : r;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"batch_equals_separate", test_batch_equals_separate},
        {"truncate_then_recompute", test_truncate_then_recompute},
        {"attention_split_equals_heads", test_attention_split_equals_heads},
    };
    if (argc < 2) {
        fprintf(stderr, "usage: test_model_batch CHECKPOINT_DIR...\n");
        return 2;
    }
    int failed = 0;
    for (int a = 1; a < argc; a++) {
        g_dir = argv[a];
        fprintf(stderr, "checkpoint %s\n", g_dir);
        char *none[] = {argv[0]};
        failed |= test_main(tests, (int)(sizeof(tests) / sizeof(tests[0])),
                            1, none);
    }
    return failed ? 1 : 0;
}
