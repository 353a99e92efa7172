/*
 * test_kcuda_moe.c - the CUDA backend's MoE and logits ops against the
 * CPU: kcuda_moe_route vs kroute_row (cuda_route.h, itself checked
 * against moe.c by test_cuda_route), kcuda_moe_ffn vs kmatmul + kswiglu
 * for every weight dtype and several row counts (plus determinism, batch
 * invariance and a CUDA graph replay), kcuda_argmax / kcuda_softmax vs
 * kargmax / ksoftmax_scaled, kcuda_spec_accept vs kaccept_seq. Built only
 * with CUDA; exits 77 (skip) with "no CUDA device: ..." where there is
 * no GPU. Run: build/tests/unit/test_kcuda_moe [name].
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_route.h"
#include "kcuda.h"
#include "kernels.h"
#include "unit_test.h"

static struct kcuda *G;
static struct kcuda *G0; /* no workspace: the ops' fallbacks */

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rs = 0x9e3779b97f4a7c15ULL;

static double urand(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) * 0x1.0p-53;
}

static int irand(int n) { return (int)(urand() * n); }

static float frand(float lo, float hi)
{
    return lo + (float)urand() * (hi - lo);
}

/* Device copy of n host bytes (NULL on failure); freed by dfree. */
static void *dup_dev(const void *h, size_t n)
{
    void *d = kcuda_malloc(G, n ? n : 4);
    if (d && n && (kcuda_h2d(G, d, h, n) || kcuda_sync(G))) {
        kcuda_free(G, d);
        return NULL;
    }
    return d;
}

static int get_dev(void *h, const void *d, size_t n)
{
    int rc = kcuda_d2h(G, h, d, n);
    return rc ? rc : kcuda_sync(G);
}

#define DEV_OK(expr)                                                        \
    do {                                                                    \
        int rc_ = (expr);                                                   \
        CHECK(rc_ == 0, "%s = %d: %s", #expr, rc_, kcuda_last_error());     \
    } while (0)

/* ---- routing ------------------------------------------------------------ */

static enum test_return route_one(const struct kcuda_route *rt0, int n_tok,
                                  int coarse, int with_bias)
{
    struct kcuda_route rt = *rt0;
    int E = rt.n_experts, K = rt.k;
    float *lg = malloc(sizeof(float) * (size_t)n_tok * E);
    float *bias = malloc(sizeof(float) * E);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n_tok * K);
    float *w = malloc(sizeof(float) * (size_t)n_tok * K);
    float *scr = malloc(sizeof(float) * 3 * E);
    CHECK(lg && bias && idx && w && scr, "oom");
    for (size_t i = 0; i < (size_t)n_tok * E; i++)
        lg[i] = coarse ? roundf(frand(-4, 4) * 4) / 4 : frand(-4, 4);
    for (int e = 0; e < E; e++)
        bias[e] = coarse ? roundf(frand(-.5f, .5f) * 4) / 4
                         : frand(-.5f, .5f);
    float *d_lg = dup_dev(lg, sizeof(float) * (size_t)n_tok * E);
    float *d_b = dup_dev(bias, sizeof(float) * E);
    int32_t *d_idx = kcuda_malloc(G, sizeof(int32_t) * (size_t)n_tok * K);
    float *d_w = kcuda_malloc(G, sizeof(float) * (size_t)n_tok * K);
    CHECK(d_lg && d_b && d_idx && d_w, "device alloc");
    rt.bias = with_bias ? d_b : NULL;
    DEV_OK(kcuda_moe_route(G, &rt, d_lg, E, n_tok, d_idx, d_w));
    DEV_OK(get_dev(idx, d_idx, sizeof(int32_t) * (size_t)n_tok * K));
    DEV_OK(get_dev(w, d_w, sizeof(float) * (size_t)n_tok * K));
    int near_ties = 0;
    for (int t = 0; t < n_tok; t++) {
        int32_t hi[KROUTE_MAX_EXPERTS];
        float hw[KROUTE_MAX_EXPERTS];
        kroute_row(&rt, lg + (size_t)t * E, with_bias ? bias : NULL, hi, hw,
                   scr);
        for (int j = 0; j < K; j++) {
            int32_t di = idx[(size_t)t * K + j];
            float dw = w[(size_t)t * K + j];
            if (di != hi[j]) {
                /* device expf differs from the CPU's by ulps: only a
                 * near tie of the choice scores may flip the pick */
                CHECK(di >= 0 && di < E, "row %d slot %d: id %d", t, j, di);
                float cd = kroute_choice(&rt, scr[di], bias, di);
                float ch = kroute_choice(&rt, scr[hi[j]], bias, hi[j]);
                CHECK(fabsf(cd - ch) <= 1e-5f * (1 + fabsf(ch)),
                      "row %d slot %d: device %d host %d (%g vs %g)", t, j,
                      di, hi[j], (double)cd, (double)ch);
                near_ties++;
                break; /* the rest of the row legitimately differs */
            }
            CHECK(fabsf(dw - hw[j]) <= 2e-6f * (1 + fabsf(hw[j])),
                  "row %d slot %d (expert %d): weight %.9g vs %.9g", t, j,
                  di, (double)dw, (double)hw[j]);
        }
    }
    CHECK(near_ties <= n_tok / 50 + 1, "%d near ties in %d rows", near_ties,
          n_tok);
    kcuda_free(G, d_lg);
    kcuda_free(G, d_b);
    kcuda_free(G, d_idx);
    kcuda_free(G, d_w);
    free(lg);
    free(bias);
    free(idx);
    free(w);
    free(scr);
    return TEST_PASS;
}

static enum test_return test_route(void)
{
    static const int shapes[][4] = {
        {256, 8, 4, 8}, {8, 4, 2, 3}, {6, 3, 2, 2}, {64, 1, 1, 6},
        {16, 4, 1, 6},  {1024, 32, 8, 8},
    };
    static const int rows[] = {1, 5, 64, 301};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int sc = 0; sc < 2; sc++)
            for (int m = 0; m < 3; m++)
                for (int v = 0; v < 4; v++) {
                    struct kcuda_route rt = {
                        .n_experts = shapes[si][0], .n_group = shapes[si][1],
                        .topk_group = shapes[si][2], .k = shapes[si][3],
                        .scoring = sc, .method = m, .norm = v & 1,
                        .scale = 2.5f};
                    enum test_return r =
                        route_one(&rt, rows[(si + v) % 4], v >> 1, v & 1);
                    if (r != TEST_PASS) {
                        fprintf(stderr, "  (E %d scoring %d method %d)\n",
                                rt.n_experts, sc, m);
                        return r;
                    }
                }
    return TEST_PASS;
}

/* ---- experts ------------------------------------------------------------ */

/* A host matrix of dtype dt with random weights, and its dequantised
 * fp32 copy (the reference's: kmatmul quantizes x to int8 for Q8_0 /
 * Q4_1 weights, the device keeps fp32 activations as kcuda.h says); owns
 * its buffers. */
struct hmat {
    struct kmat m, mf;
    void *data;
    float *scale, *deq;
    uint16_t *qd, *qm;
};

static int hmat_init(struct hmat *h, enum kdtype dt, int rows, int cols)
{
    memset(h, 0, sizeof(*h));
    size_t n = (size_t)rows * cols;
    size_t nb = kmat_row_bytes(dt, cols) * rows;
    h->data = malloc(nb);
    if (!h->data)
        return -1;
    float amp = 1.0f / sqrtf((float)cols);
    for (size_t i = 0; i < n; i++) {
        float v = frand(-amp, amp) * 2;
        switch (dt) {
        case KDT_F32: ((float *)h->data)[i] = v; break;
        case KDT_BF16: ((uint16_t *)h->data)[i] = kf32_to_bf16(v); break;
        case KDT_F16: ((uint16_t *)h->data)[i] = kf32_to_f16(v); break;
        case KDT_F8_E4M3: { /* any byte but NaN (0x7f, 0xff) */
            uint8_t b = (uint8_t)irand(256);
            if ((b & 0x7f) == 0x7f)
                b ^= 1;
            ((uint8_t *)h->data)[i] = b;
            break;
        }
        case KDT_Q8_0: ((int8_t *)h->data)[i] = (int8_t)(irand(255) - 127);
            break;
        default: break;
        }
    }
    if (dt == KDT_Q4_1)
        for (size_t i = 0; i < nb; i++)
            ((uint8_t *)h->data)[i] = (uint8_t)irand(256);
    h->m = (struct kmat){.dtype = dt, .rows = rows, .cols = cols,
                         .data = h->data};
    if (dt == KDT_F8_E4M3) {
        int blk = 128;
        size_t ns = (size_t)((rows + blk - 1) / blk) * ((cols + blk - 1) / blk);
        h->scale = malloc(sizeof(float) * ns);
        if (!h->scale)
            return -1;
        for (size_t i = 0; i < ns; i++) /* e4m3 spans +-448 */
            h->scale[i] = amp * frand(0.002f, 0.006f);
        h->m.scale = h->scale;
        h->m.blk = blk;
    }
    if (dt == KDT_Q8_0 || dt == KDT_Q4_1) {
        size_t nq = (size_t)rows * (cols / KQ_BLK);
        h->qd = malloc(sizeof(uint16_t) * nq);
        h->qm = malloc(sizeof(uint16_t) * nq);
        if (!h->qd || !h->qm)
            return -1;
        for (size_t i = 0; i < nq; i++) {
            float d = amp * frand(0.005f, 0.02f) * (dt == KDT_Q4_1 ? 16 : 1);
            h->qd[i] = kf32_to_f16(d);
            h->qm[i] = kf32_to_f16(-8 * d * frand(0.8f, 1.2f));
        }
        h->m.qd = h->qd;
        h->m.qm = dt == KDT_Q4_1 ? h->qm : NULL;
    }
    h->deq = malloc(sizeof(float) * n);
    if (!h->deq)
        return -1;
    for (int r = 0; r < rows; r++)
        if (kmat_row_f32(&h->m, r, h->deq + (size_t)r * cols))
            return -1;
    h->mf = (struct kmat){.dtype = KDT_F32, .rows = rows, .cols = cols,
                          .data = h->deq};
    return 0;
}

static void hmat_free(struct hmat *h)
{
    free(h->data);
    free(h->scale);
    free(h->deq);
    free(h->qd);
    free(h->qm);
}

/* moe.c's combine on the CPU: y[t] += w * down(swiglu(gate x, up x)) over
 * the row's experts in ascending id. */
static int cpu_moe(struct hmat *gate, struct hmat *up, struct hmat *down,
                   const float *x, int ldx, int n_tok, const int32_t *idx,
                   const float *w, int k, float *y, int ldy)
{
    int hid = gate[0].m.cols, inter = gate[0].m.rows;
    float *g = malloc(sizeof(float) * inter), *u = malloc(sizeof(float) * inter);
    float *o = malloc(sizeof(float) * hid);
    if (!g || !u || !o)
        return -1;
    for (int t = 0; t < n_tok; t++) {
        int last = -1;
        for (int s = 0; s < k; s++) {
            int bj = -1;
            for (int j = 0; j < k; j++) {
                int e = idx[t * k + j];
                if (e > last && (bj < 0 || e < idx[t * k + bj]))
                    bj = j;
            }
            int e = idx[t * k + bj];
            last = e;
            if (kmatmul(NULL, &gate[e].mf, x + (size_t)t * ldx, ldx, g,
                        inter, 1) ||
                kmatmul(NULL, &up[e].mf, x + (size_t)t * ldx, ldx, u, inter,
                        1))
                return -1;
            kswiglu(g, g, u, inter);
            if (kmatmul(NULL, &down[e].mf, g, inter, o, hid, 1))
                return -1;
            kaxpy(y + (size_t)t * ldy, w[t * k + bj], o, hid);
        }
    }
    free(g);
    free(u);
    free(o);
    return 0;
}

/* Random distinct experts per row, random weights. */
static void rand_routing(int n_tok, int E, int k, int32_t *idx, float *w)
{
    for (int t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do {
                e = irand(E);
                dup = 0;
                for (int l = 0; l < j; l++)
                    dup |= idx[t * k + l] == e;
            } while (dup);
            idx[t * k + j] = e;
            w[t * k + j] = frand(0.05f, 1.0f);
        }
}

static enum test_return ffn_case(enum kdtype dt, int E, int k, int hid,
                                 int inter, const int *rows, int n_rows)
{
    struct hmat gate[16], up[16], down[16];
    struct kdmat dg[16], du[16], dd[16];
    CHECK(E <= 16, "E");
    for (int e = 0; e < E; e++) {
        CHECK(hmat_init(&gate[e], dt, inter, hid) == 0 &&
              hmat_init(&up[e], dt, inter, hid) == 0 &&
              hmat_init(&down[e], dt, hid, inter) == 0, "oom");
        DEV_OK(kcuda_mat_upload(G, &gate[e].m, &dg[e]));
        DEV_OK(kcuda_mat_upload(G, &up[e].m, &du[e]));
        DEV_OK(kcuda_mat_upload(G, &down[e].m, &dd[e]));
    }
    struct kcuda_experts *ex;
    DEV_OK(kcuda_experts_new(G, E, dg, du, dd, &ex));
    int maxn = 0;
    for (int i = 0; i < n_rows; i++)
        maxn = rows[i] > maxn ? rows[i] : maxn;
    int ldx = hid + 4, ldy = hid + 8;
    size_t nx = (size_t)maxn * ldx, ny = (size_t)maxn * ldy;
    float *x = malloc(sizeof(float) * nx), *y0 = malloc(sizeof(float) * ny);
    float *yr = malloc(sizeof(float) * ny), *yd = malloc(sizeof(float) * ny);
    float *yd2 = malloc(sizeof(float) * ny);
    int32_t *idx = malloc(sizeof(int32_t) * maxn * k);
    float *w = malloc(sizeof(float) * maxn * k);
    CHECK(x && y0 && yr && yd && yd2 && idx && w, "oom");
    float *d_x = kcuda_malloc(G, sizeof(float) * nx);
    float *d_y = kcuda_malloc(G, sizeof(float) * ny);
    int32_t *d_idx = kcuda_malloc(G, sizeof(int32_t) * maxn * k);
    float *d_w = kcuda_malloc(G, sizeof(float) * maxn * k);
    CHECK(d_x && d_y && d_idx && d_w, "device alloc");
    for (int ri = 0; ri < n_rows; ri++) {
        int n = rows[ri];
        for (size_t i = 0; i < nx; i++)
            x[i] = frand(-1, 1);
        for (size_t i = 0; i < ny; i++)
            y0[i] = frand(-1, 1); /* the shared expert's output, say */
        rand_routing(n, E, k, idx, w);
        memcpy(yr, y0, sizeof(float) * ny);
        CHECK(cpu_moe(gate, up, down, x, ldx, n, idx, w, k, yr, ldy) == 0,
              "cpu reference");
        DEV_OK(kcuda_h2d(G, d_x, x, sizeof(float) * nx));
        DEV_OK(kcuda_h2d(G, d_y, y0, sizeof(float) * ny));
        DEV_OK(kcuda_h2d(G, d_idx, idx, sizeof(int32_t) * n * k));
        DEV_OK(kcuda_h2d(G, d_w, w, sizeof(float) * n * k));
        DEV_OK(kcuda_moe_ffn(G, ex, d_x, ldx, n, d_idx, d_w, k, d_y, ldy));
        DEV_OK(get_dev(yd, d_y, sizeof(float) * ny));
        for (int t = 0; t < n; t++) {
            float mx = 0;
            for (int c = 0; c < hid; c++)
                mx = fmaxf(mx, fabsf(yr[(size_t)t * ldy + c]));
            for (int c = 0; c < ldy; c++) {
                size_t i = (size_t)t * ldy + c;
                if (c >= hid) { /* padding untouched */
                    CHECK(yd[i] == y0[i], "row %d col %d written", t, c);
                    continue;
                }
                CHECK(fabsf(yd[i] - yr[i]) <= 1e-4f * mx + 1e-6f,
                      "%s n %d row %d col %d: %.7g vs CPU %.7g",
                      kdtype_str(dt), n, t, c, (double)yd[i], (double)yr[i]);
            }
        }
        /* deterministic: the same call again gives the same bits */
        DEV_OK(kcuda_h2d(G, d_y, y0, sizeof(float) * ny));
        DEV_OK(kcuda_moe_ffn(G, ex, d_x, ldx, n, d_idx, d_w, k, d_y, ldy));
        DEV_OK(get_dev(yd2, d_y, sizeof(float) * ny));
        CHECK(memcmp(yd, yd2, sizeof(float) * ny) == 0, "not deterministic");
        /* batch invariant: the last row alone gives its bits in the batch */
        size_t lt = (size_t)(n - 1);
        DEV_OK(kcuda_h2d(G, d_y, y0 + lt * ldy, sizeof(float) * ldy));
        DEV_OK(kcuda_moe_ffn(G, ex, d_x + lt * ldx, ldx, 1, d_idx + lt * k,
                             d_w + lt * k, k, d_y, ldy));
        DEV_OK(get_dev(yd2, d_y, sizeof(float) * ldy));
        CHECK(memcmp(yd + lt * ldy, yd2, sizeof(float) * hid) == 0,
              "%s: row %zu alone differs from itself in %d rows",
              kdtype_str(dt), lt, n);
    }
    /* a CUDA graph of the call replays it */
    {
        int n = rows[n_rows - 1];
        struct kcuda_graph *gr = NULL;
        DEV_OK(kcuda_h2d(G, d_y, y0, sizeof(float) * ny));
        DEV_OK(kcuda_sync(G));
        DEV_OK(kcuda_graph_begin(G));
        int rc = kcuda_moe_ffn(G, ex, d_x, ldx, n, d_idx, d_w, k, d_y, ldy);
        int rc2 = kcuda_graph_end(G, &gr);
        CHECK(rc == 0 && rc2 == 0, "capture: %d %d %s", rc, rc2,
              kcuda_last_error());
        DEV_OK(kcuda_graph_launch(G, gr));
        DEV_OK(get_dev(yd2, d_y, sizeof(float) * ny));
        CHECK(memcmp(yd, yd2, sizeof(float) * ny) == 0,
              "graph replay differs");
        kcuda_graph_free(gr);
    }
    kcuda_free(G, d_x);
    kcuda_free(G, d_y);
    kcuda_free(G, d_idx);
    kcuda_free(G, d_w);
    kcuda_experts_free(G, ex);
    for (int e = 0; e < E; e++) {
        kcuda_mat_free(G, &dg[e]);
        kcuda_mat_free(G, &du[e]);
        kcuda_mat_free(G, &dd[e]);
        hmat_free(&gate[e]);
        hmat_free(&up[e]);
        hmat_free(&down[e]);
    }
    free(x);
    free(y0);
    free(yr);
    free(yd);
    free(yd2);
    free(idx);
    free(w);
    return TEST_PASS;
}

static enum test_return test_moe_ffn(void)
{
    static const enum kdtype dts[] = {KDT_BF16, KDT_F8_E4M3, KDT_Q8_0,
                                      KDT_Q4_1, KDT_F32, KDT_F16};
    /* 1 row (decode), 2, 3, 5 (each group width), 40 (groups of 8 and a
     * remainder per expert) */
    static const int rows[] = {1, 2, 3, 5, 40};
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
        /* hidden 1152: a full 1024-column chunk and a partial one */
        if (ffn_case(dts[i], 8, 3, 256, 128, rows, 5) != TEST_PASS ||
            ffn_case(dts[i], 16, 4, 1152, 96, rows, 5) != TEST_PASS) {
            fprintf(stderr, "  (dtype %s)\n", kdtype_str(dts[i]));
            return TEST_FAIL;
        }
    }
    return TEST_PASS;
}

static enum test_return test_moe_args(void)
{
    struct hmat h;
    struct kdmat d[2];
    CHECK(hmat_init(&h, KDT_BF16, 64, 64) == 0, "oom");
    DEV_OK(kcuda_mat_upload(G, &h.m, &d[0]));
    struct hmat h2;
    CHECK(hmat_init(&h2, KDT_F16, 64, 64) == 0, "oom");
    DEV_OK(kcuda_mat_upload(G, &h2.m, &d[1]));
    struct kcuda_experts *ex;
    struct kdmat gate[2] = {d[0], d[1]};
    CHECK(kcuda_experts_new(G, 2, gate, gate, gate, &ex) == MTPD_K_EINVAL,
          "mixed dtypes accepted");
    CHECK(strstr(kcuda_last_error(), "dtype") != NULL, "message: %s",
          kcuda_last_error());
    kcuda_mat_free(G, &d[0]);
    kcuda_mat_free(G, &d[1]);
    hmat_free(&h);
    hmat_free(&h2);
    return TEST_PASS;
}

/* ---- logits ------------------------------------------------------------- */

static enum test_return test_argmax_softmax(void)
{
    static const int cols[] = {1, 7, 1000, 5000, 129280};
    for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++) {
        int n = cols[ci], rows = 6, ld = n + 3;
        size_t tot = (size_t)rows * ld;
        float *x = malloc(sizeof(float) * tot), *o = malloc(sizeof(float) * tot);
        float *ref = malloc(sizeof(float) * n);
        int32_t am[6];
        CHECK(x && o && ref, "oom");
        for (size_t i = 0; i < tot; i++)
            x[i] = frand(-8, 8);
        /* row 1: ties (a coarse grid); row 2: NaN and -inf sprinkled;
         * row 3: all NaN; row 4: all -inf but one NaN; row 5: the max
         * at the end, tied with one earlier */
        for (int c = 0; c < n; c++) {
            x[1 * (size_t)ld + c] = roundf(x[1 * (size_t)ld + c] / 4);
            if (irand(5) == 0)
                x[2 * (size_t)ld + c] = irand(2) ? NAN : -INFINITY;
            x[3 * (size_t)ld + c] = NAN;
            x[4 * (size_t)ld + c] = c == n / 2 ? NAN : -INFINITY;
        }
        x[n - 1] = 50.0f; /* row 0: the max in the last column */
        x[5 * (size_t)ld + n - 1] = 100.0f;
        x[5 * (size_t)ld + n / 3] = 100.0f;
        float *d_x = dup_dev(x, sizeof(float) * tot);
        float *d_o = kcuda_malloc(G, sizeof(float) * tot);
        int32_t *d_am = kcuda_malloc(G, sizeof(am));
        CHECK(d_x && d_o && d_am, "device alloc");
        for (int h = 0; h < 2; h++) { /* split rows, then one block each */
            struct kcuda *g = h ? G0 : G;
            memset(am, 0x55, sizeof(am));
            DEV_OK(kcuda_argmax(g, d_x, ld, n, rows, d_am));
            DEV_OK(kcuda_d2h(g, am, d_am, sizeof(am)));
            DEV_OK(kcuda_sync(g));
            for (int r = 0; r < rows; r++)
                CHECK(am[r] == kargmax(x + (size_t)r * ld, n),
                      "argmax n %d row %d (%s): %d vs %d", n, r,
                      h ? "no workspace" : "workspace", am[r],
                      kargmax(x + (size_t)r * ld, n));
        }
        float scale = 0.7f;
        DEV_OK(kcuda_softmax(G, d_x, ld, n, rows, scale, d_o, ld));
        DEV_OK(get_dev(o, d_o, sizeof(float) * tot));
        for (int r = 0; r < rows; r++) {
            ksoftmax_scaled(x + (size_t)r * ld, n, scale, ref);
            for (int c = 0; c < n; c++) {
                float d = o[(size_t)r * ld + c], h = ref[c];
                float xv = x[(size_t)r * ld + c];
                if (!(xv > -INFINITY)) {
                    CHECK(d == 0.0f, "softmax: NaN/-inf entry not 0");
                    continue;
                }
                CHECK(fabsf(d - h) <= 1e-5f * h + 1e-12f,
                      "softmax n %d row %d col %d: %g vs %g", n, r, c,
                      (double)d, (double)h);
            }
        }
        /* in place */
        DEV_OK(kcuda_softmax(G, d_x, ld, n, rows, scale, d_x, ld));
        DEV_OK(get_dev(x, d_x, sizeof(float) * tot));
        for (int r = 0; r < rows; r++)
            CHECK(memcmp(x + (size_t)r * ld, o + (size_t)r * ld,
                         sizeof(float) * n) == 0, "in place differs");
        kcuda_free(G, d_x);
        kcuda_free(G, d_o);
        kcuda_free(G, d_am);
        free(x);
        free(o);
        free(ref);
    }
    return TEST_PASS;
}

static void dist(float *p, int V, int sparse)
{
    double s = 0;
    for (int i = 0; i < V; i++) {
        double u = urand();
        p[i] = sparse && urand() < 0.9 ? 0.0f : (float)(u * u * u);
        s += p[i];
    }
    if (s == 0) {
        p[irand(V)] = 1;
        s = 1;
    }
    for (int i = 0; i < V; i++)
        p[i] = (float)(p[i] / s);
}

static enum test_return test_spec_accept(void)
{
    static const int Vs[] = {1, 7, 1000, 129280};
    enum { KMAX = 5 };
    int hist[KMAX + 1] = {0};
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++) {
        int V = Vs[vi];
        float *p = malloc(sizeof(float) * (KMAX + 1) * V);
        float *q = malloc(sizeof(float) * KMAX * V);
        CHECK(p && q, "oom");
        float *d_p = kcuda_malloc(G, sizeof(float) * (KMAX + 1) * V);
        float *d_q = kcuda_malloc(G, sizeof(float) * KMAX * V);
        int32_t *d_d = kcuda_malloc(G, sizeof(int32_t) * KMAX);
        float *d_u = kcuda_malloc(G, sizeof(float) * (KMAX + 1));
        int32_t *d_out = kcuda_malloc(G, sizeof(int32_t) * 2);
        CHECK(d_p && d_q && d_d && d_u && d_out, "device alloc");
        int trials = V > 10000 ? 30 : 300;
        for (int t = 0; t < trials; t++) {
            int k = irand(KMAX + 1), close = irand(2), sparse = irand(2);
            for (int i = 0; i <= k; i++)
                dist(p + (size_t)i * V, V, sparse);
            int32_t draft[KMAX];
            float u[KMAX + 1];
            double ud[KMAX + 1];
            for (int i = 0; i < k; i++) {
                if (close)
                    memcpy(q + (size_t)i * V, p + (size_t)i * V,
                           sizeof(float) * V);
                else
                    dist(q + (size_t)i * V, V, irand(2));
                q[(size_t)i * V + irand(V)] *= 1.3f;
                draft[i] = irand(V);
                while (close && q[(size_t)i * V + draft[i]] == 0.0f)
                    draft[i] = irand(V);
            }
            for (int i = 0; i <= k; i++) {
                u[i] = (float)urand();
                if (u[i] >= 1.0f)
                    u[i] = 0.0f;
                ud[i] = u[i];
            }
            DEV_OK(kcuda_h2d(G, d_p, p, sizeof(float) * (k + 1) * V));
            if (k > 0) {
                DEV_OK(kcuda_h2d(G, d_q, q, sizeof(float) * k * V));
                DEV_OK(kcuda_h2d(G, d_d, draft, sizeof(int32_t) * k));
            }
            DEV_OK(kcuda_h2d(G, d_u, u, sizeof(float) * (k + 1)));
            DEV_OK(kcuda_spec_accept(G, d_p, d_q, d_d, d_u, k, V, d_out));
            int32_t out[2], ref[2];
            DEV_OK(get_dev(out, d_out, sizeof(out)));
            kaccept_seq(p, q, draft, ud, k, V, ref);
            CHECK(out[0] == ref[0] && out[1] == ref[1],
                  "V %d k %d trial %d: device (%d, %d) host (%d, %d)", V, k,
                  t, out[0], out[1], ref[0], ref[1]);
            hist[out[0]]++;
        }
        kcuda_free(G, d_p);
        kcuda_free(G, d_q);
        kcuda_free(G, d_d);
        kcuda_free(G, d_u);
        kcuda_free(G, d_out);
        free(p);
        free(q);
    }
    CHECK(hist[0] > 0 && hist[2] > 0, "accepted counts: %d %d", hist[0],
          hist[2]);
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    int nd = kcuda_device_count();
    if (nd == 0) {
        printf("no CUDA device: test_kcuda_moe skipped (needs a GPU)\n");
        return 77;
    }
    kisa_set(KISA_SCALAR); /* the CPU references' plain code path */
    /* the largest moe_ffn call below: 40 rows x 4 experts */
    size_t ws = kcuda_moe_ffn_workspace(40, 4, 1152, 128);
    char err[256];
    if (kcuda_open(0, ws, &G, err, sizeof err) != 0) {
        fprintf(stderr, "kcuda_open: %s\n", err);
        return 1;
    }
    if (kcuda_open(0, 0, &G0, err, sizeof err) != 0) {
        fprintf(stderr, "kcuda_open: %s\n", err);
        return 1;
    }
    printf("%s\n", kcuda_describe(G));
    static const struct test_case tests[] = {
        {"route", test_route},
        {"moe_ffn", test_moe_ffn},
        {"moe_args", test_moe_args},
        {"argmax_softmax", test_argmax_softmax},
        {"spec_accept", test_spec_accept},
    };
    int rc = test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
    kcuda_close(G0);
    kcuda_close(G);
    return rc;
}
