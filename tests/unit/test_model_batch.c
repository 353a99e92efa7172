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
#include "model_int.h" /* attn_chunk */
#include "unit_test.h"

static const char *g_dir;
/* the CPU path's invariants (bitwise, chunked attention): on the CPU even
 * where "auto" would pick a GPU (test_cuda_parity covers the device) */
static const struct mtpd_load_opts g_cpu = {.device = "cpu"};

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
    CHECK(mtpd_model_load(g_dir, &g_cpu, &m, err, sizeof(err)) == 0, "%s", err);
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
            const float *rl = ref_logits + ((size_t)s * 16 + r) * V;
            const float *rh = ref_hidden + ((size_t)s * 16 + r) * H;
            /* batch invariance: the same bits (kernels.h, moe.c) */
            CHECK(memcmp(mtpd_ctx_logits(cx, row), rl, sizeof(float) * V) ==
                          0 &&
                      memcmp(mtpd_ctx_hidden(cx, row), rh,
                             sizeof(float) * H) == 0,
                  "seq %d row %d: logits differ by %g, hidden by %g", s, r,
                  maxdiff(mtpd_ctx_logits(cx, row), rl, V),
                  maxdiff(mtpd_ctx_hidden(cx, row), rh, H));
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

/*
 * Batch invariance with MoE routing: each sequence's step rows must get
 * the same bits alone on one thread as inside calls with other sequences
 * (other tokens, so its experts are shared with other rows or not, and
 * each expert's row count changes), at every place in the call, on one
 * and three threads; and a step fed in one call must match the same
 * tokens fed one call per token (prompt chunks).
 */
#define NB 5
static enum test_return test_rows_any_neighbours(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, &g_cpu, &m, err, sizeof(err)) == 0, "%s", err);
    const struct mtpd_config *c = mtpd_model_config(m);
    int V = c->vocab_size, H = c->hidden_size;
    enum { PRE = 6, CAP = 32, MAXT = 5 };
    int T[NB] = {1, 3, 5, 2, 4};
    int32_t toks[NB][CAP];
    for (int s = 0; s < NB; s++)
        for (int i = 0; i < CAP; i++)
            toks[s][i] = (int32_t)((s * 977 + i * 131 + 7) % V);
    struct mtpd_ctx *c1 = mtpd_ctx_new(m, 64, 1), *c3 = mtpd_ctx_new(m, 64, 3);
    float *ref = malloc(sizeof(float) * NB * MAXT * V);
    float *refh = malloc(sizeof(float) * NB * MAXT * H);
    struct mtpd_kv *kv[NB] = {0};
    CHECK(c1 && c3 && ref && refh, "allocation");
    for (int s = 0; s < NB; s++) {
        CHECK((kv[s] = mtpd_kv_new(m, CAP)) != NULL, "kv allocation");
        struct mtpd_seq pre = {kv[s], toks[s], PRE, PRE};
        CHECK(mtpd_forward(c1, &pre, 1) == 0, "prefix %d", s);
    }
    /* alone, one thread */
    for (int s = 0; s < NB; s++) {
        struct mtpd_seq q = {kv[s], toks[s] + PRE, T[s], 0};
        CHECK(mtpd_forward(c1, &q, 1) == 0, "alone %d", s);
        for (int r = 0; r < T[s]; r++) {
            memcpy(ref + ((size_t)s * MAXT + r) * V, mtpd_ctx_logits(c1, r),
                   sizeof(float) * V);
            memcpy(refh + ((size_t)s * MAXT + r) * H, mtpd_ctx_hidden(c1, r),
                   sizeof(float) * H);
        }
        CHECK(mtpd_kv_truncate(kv[s], -1, PRE) == 0, "truncate");
    }
    /* with 1..NB-1 neighbours, rotated places, 1 or 3 threads */
    for (int trial = 0; trial < 2 * NB * (NB - 1); trial++) {
        int n = 2 + trial % (NB - 1), first = trial / (NB - 1) % NB;
        struct mtpd_ctx *cx = trial & 1 ? c3 : c1;
        struct mtpd_seq q[NB];
        for (int i = 0; i < n; i++) {
            int s = (first + i) % NB;
            q[i] = (struct mtpd_seq){kv[s], toks[s] + PRE, T[s], 0};
        }
        CHECK(mtpd_forward(cx, q, n) == 0, "trial %d", trial);
        for (int i = 0, row = 0; i < n; i++) {
            int s = (first + i) % NB;
            for (int r = 0; r < T[s]; r++, row++) {
                const float *rl = ref + ((size_t)s * MAXT + r) * V;
                const float *rh = refh + ((size_t)s * MAXT + r) * H;
                CHECK(memcmp(mtpd_ctx_logits(cx, row), rl,
                             sizeof(float) * V) == 0 &&
                          memcmp(mtpd_ctx_hidden(cx, row), rh,
                                 sizeof(float) * H) == 0,
                      "seq %d row %d, place %d of %d, %d threads: logits "
                      "differ by %g", s, r, i, n, trial & 1 ? 3 : 1,
                      maxdiff(mtpd_ctx_logits(cx, row), rl, V));
            }
            CHECK(mtpd_kv_truncate(kv[s], -1, PRE) == 0, "truncate");
        }
    }
    /* the same tokens one call each */
    for (int s = 0; s < NB; s++) {
        for (int r = 0; r < T[s]; r++) {
            struct mtpd_seq q = {kv[s], toks[s] + PRE + r, 1, 0};
            CHECK(mtpd_forward(c3, &q, 1) == 0, "token by token");
            const float *rl = ref + ((size_t)s * MAXT + r) * V;
            CHECK(memcmp(mtpd_ctx_logits(c3, 0), rl, sizeof(float) * V) == 0,
                  "seq %d row %d fed alone: logits differ by %g", s, r,
                  maxdiff(mtpd_ctx_logits(c3, 0), rl, V));
        }
        CHECK(mtpd_kv_truncate(kv[s], -1, PRE) == 0, "truncate");
    }
    for (int s = 0; s < NB; s++)
        mtpd_kv_free(kv[s]);
    free(ref);
    free(refh);
    mtpd_ctx_free(c1);
    mtpd_ctx_free(c3);
    mtpd_model_free(m);
    return TEST_PASS;
}

static enum test_return test_truncate_then_recompute(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, &g_cpu, &m, err, sizeof(err)) == 0, "%s", err);
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

/*
 * Attention batch invariance. One sequence (a 48-position prefix in
 * pages of `page` positions, chunks of `chunk`) steps 1-5 rows at a time
 * with a rollback in between; every step row's logits must have the same
 * bits whether attention runs by heads (mla.c) or by positions
 * (mla_split.c), on 1, 2 or 3 threads (other head groups, other position
 * shares), with the step's rows fed in one call or one call each, and
 * with another sequence in the same call.
 */
enum { INV_PRE = 48, INV_CAP = 80, INV_ROWS = 16 };

struct inv_run {
    int threads, split, one_by_one, neighbour;
    const char *name;
};

/* Runs the scenario; out: the INV_ROWS step rows' logits in order. */
static enum test_return inv_scenario(struct mtpd_model *m, int page,
                                     int chunk, const struct inv_run *run,
                                     float *out)
{
    int V = mtpd_model_config(m)->vocab_size;
    int32_t t[INV_CAP], u[INV_CAP];
    for (int i = 0; i < INV_CAP; i++) {
        t[i] = (int32_t)((i * 7919 + 3) % V);
        u[i] = (int32_t)((i * 104729 + 11) % V);
    }
    struct mtpd_kv_pool_opts po = {.page_positions = page};
    struct mtpd_kv_pool *pool;
    struct mtpd_kv *kv, *other;
    CHECK(mtpd_kv_pool_new(m, &po, &pool) == 0, "pool");
    CHECK(mtpd_kv_new_in(pool, INV_CAP, &kv) == 0 &&
          mtpd_kv_new_in(pool, INV_CAP, &other) == 0, "caches");
    struct mtpd_ctx *cx = mtpd_ctx_new(m, INV_CAP, run->threads);
    CHECK(cx, "ctx");
    mtpd_ctx_set_attn_split(cx, run->split);
    cx->attn_chunk = chunk;
    struct mtpd_seq pre[2] = {{kv, t, INV_PRE, INV_PRE},
                              {other, u, 37, 37}};
    CHECK(mtpd_forward(cx, pre, 1) == 0 && mtpd_forward(cx, pre + 1, 1) == 0,
          "prefill");
    int pos = INV_PRE, rows[] = {1, 3, 5, 2, 1, 4}, done = 0;
    for (int st = 0; st < 6; st++) {
        int T = rows[st];
        for (int r0 = 0; r0 < T; r0 += run->one_by_one ? 1 : T) {
            int nt = run->one_by_one ? 1 : T;
            /* the neighbour goes first, so this sequence's rows move */
            struct mtpd_seq q[2] = {{other, u + 37, 1 + st % 3, 0},
                                    {kv, t + pos + r0, nt, 0}};
            int first = run->neighbour ? 0 : 1;
            CHECK(mtpd_forward(cx, q + first, 2 - first) == 0, "step %d", st);
            int base = first ? 0 : q[0].n_tokens;
            for (int r = 0; r < nt; r++)
                memcpy(out + (size_t)(done + r0 + r) * V,
                       mtpd_ctx_logits(cx, base + r), sizeof(float) * V);
            if (run->neighbour)
                CHECK(mtpd_kv_truncate(other, -1, 37) == 0, "truncate");
        }
        done += T;
        pos += T;
        if (st == 2) { /* roll back by 4 */
            pos -= 4;
            CHECK(mtpd_kv_truncate(kv, -1, pos) == 0, "truncate");
        }
    }
    mtpd_kv_free(kv);
    mtpd_kv_free(other);
    mtpd_kv_pool_free(pool);
    mtpd_ctx_free(cx);
    return TEST_PASS;
}

/* Whether kmatmul gives a row the same bits alone and among up to 8 rows,
 * over every count of weight rows up to 40, on the active ISA: the
 * kernels' batch invariance (kernels.h), which attention's rests on. */
static int kmatmul_invariant(void)
{
    enum { R = 40, C = 144, T = 8 };
    static float w[R * C], x[T * C], y1[T * R], yn[T * R];
    static uint16_t wb[R * C];
    for (int i = 0; i < R * C; i++) { /* full mantissas: inexact sums */
        w[i] = sinf((float)i * 0.37f);
        wb[i] = kf32_to_bf16(w[i]);
    }
    for (int i = 0; i < T * C; i++)
        x[i] = cosf((float)i * 0.53f);
    for (int k = 0; k < 2; k++)
        for (int rows = 1; rows <= R; rows++) {
            struct kmat W = {.dtype = k ? KDT_BF16 : KDT_F32, .rows = rows,
                             .cols = C, .data = k ? (void *)wb : (void *)w};
            for (int t = 0; t < T; t++)
                if (kmatmul(NULL, &W, x + t * C, C, y1 + t * R, R, 1))
                    return 0;
            for (int nt = 2; nt <= T; nt++) {
                if (kmatmul(NULL, &W, x, C, yn, R, nt))
                    return 0;
                for (int t = 0; t < nt; t++)
                    if (memcmp(y1 + t * R, yn + t * R, sizeof(float) * rows))
                        return 0;
            }
        }
    return 1;
}

static enum test_return attention_invariant(int kv_bf16)
{
    static const struct inv_run runs[] = {
        {2, 0, 0, 0, "heads, 2 threads"},
        {2, 1, 0, 0, "positions, 2 threads"},
        {3, 1, 0, 0, "positions, 3 threads"},
        {1, 0, 0, 0, "heads, 1 thread"},
        {2, 0, 1, 0, "heads, one row per call"},
        {2, 1, 1, 0, "positions, one row per call"},
        {2, 0, 0, 1, "heads, with a neighbour"},
        {3, 0, 1, 1, "heads, one row per call, with a neighbour"},
    };
    /* pages, chunk: 4 chunks of 2 pages; 2 of 2 (1 on the native ISA) */
    static const int setups[][2] = {{8, 16}, {16, 32}};
    const int nruns = (int)(sizeof(runs) / sizeof(runs[0]));
    char err[512];
    struct mtpd_model *m;
    struct mtpd_load_opts lo = {.kv_bf16 = kv_bf16, .device = "cpu"};
    CHECK(mtpd_model_load(g_dir, &lo, &m, err, sizeof(err)) == 0, "%s", err);
    int V = mtpd_model_config(m)->vocab_size;
    float *ref = malloc(sizeof(float) * INV_ROWS * V);
    float *got = malloc(sizeof(float) * INV_ROWS * V);
    CHECK(ref && got, "allocation");
    enum kisa native = kisa_active();
    /* every ISA, then AVX-512 with AMX tiles (BF16 weights) */
    for (int path = 0; path <= KISA_COUNT; path++) {
        int amx = path == KISA_COUNT;
        int isa = amx ? KISA_AVX512 : path;
        if (kisa_set((enum kisa)isa) != 0 || kisa_set_amx(amx) != 0)
            continue; /* the CPU lacks it */
        const char *name = amx ? "amx" : kisa_str((enum kisa)isa);
        int is_native = isa == (int)native && amx == kisa_has_amx();
        /* without batch-invariant kernels only rounding is asked for (a
         * BF16 cache rounds the rows' small differences once more) */
        int bitwise = kmatmul_invariant();
        double tol = kv_bf16 ? 1e-3 : 1e-5;
        if (!bitwise)
            fprintf(stderr, "  %s: kmatmul not batch-invariant, attention "
                    "checked to %g\n", name, tol);
        for (int su = 0; su < (is_native ? 2 : 1); su++) {
            for (int k = 0; k < nruns; k++) {
                enum test_return r = inv_scenario(m, setups[su][0],
                                                  setups[su][1], &runs[k],
                                                  k ? got : ref);
                if (r != TEST_PASS)
                    return r;
                if (k == 0)
                    continue;
                for (int row = 0; row < INV_ROWS; row++) {
                    const float *a = ref + (size_t)row * V;
                    const float *b = got + (size_t)row * V;
                    double mx = 0;
                    for (int v = 0; v < V; v++)
                        mx = fabs(a[v]) > mx ? fabs(a[v]) : mx;
                    double d = maxdiff(a, b, V);
                    CHECK(bitwise ? memcmp(a, b, sizeof(float) * V) == 0
                                  : d <= tol * mx,
                          "%s, kv %s, pages %d, chunks %d, %s: step row %d "
                          "differs from %s by %g", name,
                          kv_bf16 ? "bf16" : "f32", setups[su][0],
                          setups[su][1], runs[k].name, row, runs[0].name, d);
                }
            }
        }
    }
    kisa_set(native);
    kisa_set_amx(0); /* the default */
    free(ref);
    free(got);
    mtpd_model_free(m);
    return TEST_PASS;
}

/* ... with the fp32 and with the BF16 KV cache */
static enum test_return test_attention_invariant(void)
{
    enum test_return r = attention_invariant(0);
    return r == TEST_PASS ? attention_invariant(1) : r;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"batch_equals_separate", test_batch_equals_separate},
        {"rows_any_neighbours", test_rows_any_neighbours},
        {"truncate_then_recompute", test_truncate_then_recompute},
        {"attention_invariant", test_attention_invariant},
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
