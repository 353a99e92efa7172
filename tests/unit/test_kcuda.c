/*
 * test_kcuda.c - the CUDA backend's core ops (kcuda.h) against the CPU
 * ops of kernels.h and plain double-precision references, on random
 * inputs: kcuda_matmul for every dtype (F8 with 128 and odd blocks) and
 * n_tok 1..20 and 64 (skinny kernel and cuBLASLt path, the latter also
 * with a tiny workspace that forces token and weight-row chunks),
 * rmsnorm, swiglu, rope, embed (zero_pos), add, MLA absorb_q / head_out,
 * copies, graphs, the copy-bandwidth probe.
 *
 * Tolerances (A = sum over the dot product of |w * x|, weights taken
 * exactly as kmat_row_f32 gives them):
 * - skinny matmul, F32 wide matmul: |y - ref| <= 1e-5 A (fp32 sums);
 * - wide matmul of the other dtypes: 5e-3 A (x and the weights rounded to
 *   bf16: <= 2^-8 relative per term, plus the fp32 sum);
 * - against kmatmul itself: the above plus the CPU's own error, 1e-5 A,
 *   and for Q8_0 / Q4_1 its int8 rounding of x: sum |w| * amax32(x) / 254;
 * - rmsnorm, swiglu, rope: a few fp32 ulps of the CPU op; embed: bitwise
 *   equal to kmat_row_f32; absorb: 1e-5 A against a double reference.
 *
 * Needs a GPU: exits 77 (meson's skip) with "no CUDA device: <reason>"
 * when kcuda_device_count() is 0. Run: build/tests/unit/test_kcuda [name].
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcuda.h"
#include "kernels.h"

#include "unit_test.h"

static struct kcuda *g;   /* 256 MiB workspace */
static struct kcuda *gs;  /* 64 KiB workspace: the wide path in chunks */

/* ---- helpers ------------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd_u32(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return (uint32_t)(x >> 32);
}

/* Uniform in [-1, 1). */
static float rnd_f(void)
{
    return (float)((double)rnd_u32() / 2147483648.0 - 1.0);
}

/* A device copy of n host bytes (synchronous), NULL on failure. */
static void *dev_copy(struct kcuda *h, const void *src, size_t n)
{
    void *d = kcuda_malloc(h, n);
    if (d && (kcuda_h2d(h, d, src, n) || kcuda_sync(h))) {
        kcuda_free(h, d);
        return NULL;
    }
    return d;
}

/* Device -> host, synchronous; 0 on success. */
static int dev_get(struct kcuda *h, void *dst, const void *src, size_t n)
{
    return kcuda_d2h(h, dst, src, n) || kcuda_sync(h) ? -1 : 0;
}

#define DEV_CHECK(rc, what)                                                 \
    CHECK((rc) == 0, "%s returned %d: %s", what, (int)(rc),                \
          kcuda_last_error())

/* A random host matrix that owns its buffers. */
struct hmat {
    struct kmat m;
    void *data;
    float *scale;
    uint16_t *qd, *qm;
    uint8_t *q4s; /* Q4_S: scale bytes, min bytes, exponent pairs */
};

static void hmat_free(struct hmat *t)
{
    free(t->data);
    free(t->scale);
    free(t->q4s);
    free(t->qd);
    free(t->qm);
    memset(t, 0, sizeof *t);
}

/* +-[0.5, 1) * 2^-3..2^-9 as fp16 */
static uint16_t rnd_qscale(void)
{
    return kf32_to_f16(ldexpf((1.0f + rnd_f()) * 0.5f,
                              -3 - (int)(rnd_u32() % 7)) *
                       (rnd_u32() & 1 ? 1.0f : -1.0f));
}

static int hmat_new(struct hmat *t, enum kdtype dt, int rows, int cols,
                    int blk)
{
    memset(t, 0, sizeof *t);
    size_t n = (size_t)rows * cols;
    size_t bytes = (size_t)rows * kmat_row_bytes(dt, cols);
    t->data = malloc(bytes + 16);
    if (t->data == NULL)
        return -1;
    t->m = (struct kmat){.dtype = dt, .rows = rows, .cols = cols,
                         .data = t->data};
    switch (dt) {
    case KDT_F32:
        for (size_t i = 0; i < n; i++)
            ((float *)t->data)[i] = rnd_f();
        break;
    case KDT_BF16:
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)t->data)[i] = kf32_to_bf16(rnd_f());
        break;
    case KDT_F16:
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)t->data)[i] = kf32_to_f16(rnd_f());
        break;
    case KDT_F8_E4M3: {
        for (size_t i = 0; i < n; i++) {
            uint8_t b = (uint8_t)rnd_u32();
            if ((b & 0x7f) == 0x7f) /* no NaN codes */
                b ^= 1;
            ((uint8_t *)t->data)[i] = b;
        }
        size_t ns = (size_t)((rows + blk - 1) / blk) * ((cols + blk - 1) / blk);
        t->scale = malloc(ns * sizeof(float));
        if (t->scale == NULL)
            return -1;
        for (size_t i = 0; i < ns; i++)
            t->scale[i] = ldexpf(1.0f + 0.5f * rnd_f(), -(int)(rnd_u32() % 8));
        t->m.scale = t->scale;
        t->m.blk = blk;
        break;
    }
    case KDT_Q4_S: { /* goes up as Q4_1 (kcuda_mat_upload) */
        size_t nb = (size_t)rows * (cols / KQ_BLK);
        size_t ne = (size_t)rows * 2 * ((cols / KQ_BLK + KQ4S_GRP - 1) / KQ4S_GRP);
        if ((t->q4s = malloc(2 * nb + ne + 1)) == NULL)
            return -1;
        for (size_t i = 0; i < bytes; i++)
            ((uint8_t *)t->data)[i] = (uint8_t)rnd_u32();
        for (size_t i = 0; i < 2 * nb; i++)
            t->q4s[i] = (uint8_t)rnd_u32();
        for (size_t i = 0; i < ne; i++) /* 2^-13 .. 2^-9 */
            t->q4s[2 * nb + i] = (uint8_t)(-13 + (int)(rnd_u32() % 5));
        t->m.qsc = t->q4s;
        t->m.qmn = (const int8_t *)t->q4s + nb;
        t->m.qexp = (const int8_t *)t->q4s + 2 * nb;
        break;
    }
    default: { /* Q8_0 / Q4_1 */
        size_t nb = (size_t)rows * (cols / KQ_BLK);
        t->qd = malloc(nb * 2 + 2);
        t->qm = malloc(nb * 2 + 2);
        if (t->qd == NULL || t->qm == NULL)
            return -1;
        for (size_t i = 0; i < bytes; i++)
            ((uint8_t *)t->data)[i] = (uint8_t)rnd_u32();
        for (size_t i = 0; i < nb; i++) {
            t->qd[i] = rnd_qscale();
            t->qm[i] = rnd_qscale();
        }
        t->m.qd = t->qd;
        t->m.qm = dt == KDT_Q4_1 ? t->qm : NULL;
    }
    }
    return 0;
}

/* ---- matmul -------------------------------------------------------- */

#define SENTINEL 12345.0f

/*
 * One shape and n_tok on handle h: y = W x on the device against the
 * double reference and against kmatmul. ldx is cols + 5 for odd n_tok
 * (unaligned rows of x: the kernel's scalar x loads) and cols rounded up
 * to 4 otherwise (float4 loads); ldy = rows + 3 with the padding checked
 * untouched.
 */
static enum test_return mm_case(struct kcuda *h, const struct hmat *t,
                                const struct kdmat *dw, int n_tok)
{
    const int rows = t->m.rows, cols = t->m.cols;
    const int ldx = n_tok % 2 ? cols + 5 : (cols + 3) / 4 * 4;
    const int ldy = rows + 3;
    const int wide = n_tok > KCUDA_SKINNY_ROWS;
    const enum kdtype dt = t->m.dtype;
    const int q = dt == KDT_Q8_0 || dt == KDT_Q4_1 || dt == KDT_Q4_S;
    size_t nx = (size_t)n_tok * ldx, ny = (size_t)n_tok * ldy;
    float *x = malloc(nx * sizeof *x), *y = malloc(ny * sizeof *y);
    float *yc = malloc(ny * sizeof *yc), *wr = malloc((size_t)cols * 4);
    float *dx = NULL, *dy = NULL;
    enum test_return ret = TEST_FAIL;
    if (!x || !y || !yc || !wr)
        goto out;
    for (size_t i = 0; i < nx; i++)
        x[i] = rnd_f();
    for (size_t i = 0; i < ny; i++)
        y[i] = SENTINEL;
    dx = dev_copy(h, x, nx * sizeof *x);
    dy = dev_copy(h, y, ny * sizeof *y);
    if (!dx || !dy) {
        fprintf(stderr, "  device alloc: %s\n", kcuda_last_error());
        goto out;
    }
    int rc = kcuda_matmul(h, dw, dx, ldx, dy, ldy, n_tok);
    if (rc == 0)
        rc = dev_get(h, y, dy, ny * sizeof *y);
    if (rc) {
        fprintf(stderr, "  kcuda_matmul %s %dx%d n_tok %d: %d %s\n",
                kdtype_str(dt), rows, cols, n_tok, rc, kcuda_last_error());
        goto out;
    }
    if (kmatmul(NULL, &t->m, x, ldx, yc, ldy, n_tok)) {
        fprintf(stderr, "  kmatmul failed\n");
        goto out;
    }
    const double rel = wide && dt != KDT_F32 ? 5e-3 : 1e-5;
    ret = TEST_PASS;
    for (int o = 0; o < rows && ret == TEST_PASS; o++) {
        kmat_row_f32(&t->m, o, wr);
        for (int k = 0; k < n_tok; k++) {
            const float *xr = x + (size_t)k * ldx;
            double s = 0, a = 0, qa = 0;
            for (int c = 0; c < cols; c++) {
                s += (double)wr[c] * xr[c];
                a += fabs((double)wr[c] * xr[c]);
            }
            for (int b = 0; q && b < cols / KQ_BLK; b++) {
                double amax = 0, aw = 0;
                for (int c = b * KQ_BLK; c < (b + 1) * KQ_BLK; c++) {
                    amax = fmax(amax, fabs(xr[c]));
                    aw += fabs(wr[c]);
                }
                qa += aw * amax / 254.0;
            }
            double got = y[(size_t)k * ldy + o], cpu = yc[(size_t)k * ldy + o];
            double tol = rel * a + 1e-30, tol_cpu = tol + 1e-5 * a + qa;
            if (!(fabs(got - s) <= tol) || !(fabs(got - cpu) <= tol_cpu)) {
                fprintf(stderr,
                        "  %s %dx%d blk %d n_tok %d: y[%d][%d] = %.9g, "
                        "ref %.9g (tol %.3g), kmatmul %.9g (tol %.3g)\n",
                        kdtype_str(dt), rows, cols, t->m.blk, n_tok, k, o, got,
                        s, tol, cpu, tol_cpu);
                ret = TEST_FAIL;
                break;
            }
        }
    }
    for (int k = 0; k < n_tok && ret == TEST_PASS; k++)
        for (int o = rows; o < ldy; o++)
            if (y[(size_t)k * ldy + o] != SENTINEL) {
                fprintf(stderr, "  %s n_tok %d: padding y[%d][%d] written\n",
                        kdtype_str(dt), n_tok, k, o);
                ret = TEST_FAIL;
                break;
            }
out:
    kcuda_free(h, dx);
    kcuda_free(h, dy);
    free(x);
    free(y);
    free(yc);
    free(wr);
    return ret;
}

/* Every n_tok 1..20 and 64 for one matrix (uploaded once). */
static enum test_return mm_shape(enum kdtype dt, int rows, int cols, int blk)
{
    struct hmat t;
    struct kdmat d;
    enum test_return ret = TEST_FAIL;
    memset(&d, 0, sizeof d);
    if (hmat_new(&t, dt, rows, cols, blk)) {
        fprintf(stderr, "  out of host memory\n");
        goto out;
    }
    int rc = kcuda_mat_upload(g, &t.m, &d);
    if (rc) {
        fprintf(stderr, "  upload: %d %s\n", rc, kcuda_last_error());
        goto out;
    }
    static const int ntok_v[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                 12, 13, 14, 15, 16, 17, 18, 19, 20, 64};
    ret = TEST_PASS;
    for (size_t i = 0; i < sizeof ntok_v / sizeof *ntok_v && ret == TEST_PASS;
         i++) {
        ret = mm_case(g, &t, &d, ntok_v[i]);
        if (ret == TEST_PASS && ntok_v[i] > KCUDA_SKINNY_ROWS)
            ret = mm_case(gs, &t, &d, ntok_v[i]); /* chunked wide path */
    }
out:
    kcuda_mat_free(g, &d);
    hmat_free(&t);
    return ret;
}

struct shape {
    int rows, cols;
};

static enum test_return mm_suite(enum kdtype dt, int blk,
                                 const struct shape *sh, int n)
{
    for (int i = 0; i < n; i++)
        if (mm_shape(dt, sh[i].rows, sh[i].cols, blk) != TEST_PASS)
            return TEST_FAIL;
    return TEST_PASS;
}

/* Shapes: cols not a multiple of the 16-byte chunk take the scalar path;
 * 1040 = 8 * 128 + 16: a partial F8 scale block; the last shape has
 * 16 * SMs + 192 rows (2304 on an H200), enough for 4 rows per block in
 * the skinny kernel (pick_rows in matmul.cu): set at run time. */
static struct shape dense_shapes[] = {
    {1, 1}, {3, 17}, {70, 129}, {70, 1040}, {129, 2048}, {0, 256}};
static struct shape q_shapes[] = {{1, 32}, {70, 96}, {129, 2048}, {0, 256}};

static enum test_return test_matmul_dense(void)
{
    enum kdtype dts[] = {KDT_F32, KDT_BF16, KDT_F16};
    for (int i = 0; i < 3; i++)
        if (mm_suite(dts[i], 0, dense_shapes,
                     sizeof dense_shapes / sizeof *dense_shapes) != TEST_PASS)
            return TEST_FAIL;
    return TEST_PASS;
}

static enum test_return test_matmul_f8(void)
{
    if (mm_suite(KDT_F8_E4M3, 128, dense_shapes,
                 sizeof dense_shapes / sizeof *dense_shapes) != TEST_PASS)
        return TEST_FAIL;
    /* a block edge that is not a power of two: the scalar path */
    static const struct shape odd[] = {{70, 1040}, {100, 96}};
    return mm_suite(KDT_F8_E4M3, 48, odd, 2);
}

static enum test_return test_matmul_q(void)
{
    if (mm_suite(KDT_Q8_0, 0, q_shapes, sizeof q_shapes / sizeof *q_shapes) !=
        TEST_PASS)
        return TEST_FAIL;
    if (mm_suite(KDT_Q4_1, 0, q_shapes, sizeof q_shapes / sizeof *q_shapes) !=
        TEST_PASS)
        return TEST_FAIL;
    return mm_suite(KDT_Q4_S, 0, q_shapes, sizeof q_shapes / sizeof *q_shapes);
}

static enum test_return test_matmul_args(void)
{
    struct kdmat d = {.dtype = KDT_BF16, .rows = 4, .cols = 8};
    float *p = kcuda_malloc(g, 64 * sizeof(float));
    CHECK(p != NULL, "alloc");
    CHECK(kcuda_matmul(g, &d, p, 8, p, 4, 1) == MTPD_K_EINVAL, "no data");
    d.data = p;
    CHECK(kcuda_matmul(g, &d, p, 7, p, 4, 1) == MTPD_K_EINVAL, "ldx < cols");
    CHECK(kcuda_matmul(g, &d, p, 8, p, 3, 1) == MTPD_K_EINVAL, "ldy < rows");
    d.dtype = KDT_F8_E4M3;
    CHECK(kcuda_matmul(g, &d, p, 8, p, 4, 1) == MTPD_K_EINVAL, "F8 no scale");
    d.dtype = KDT_BF16;
    CHECK(kcuda_matmul(g, &d, p, 8, p, 4, 0) == 0, "n_tok 0");
    kcuda_free(g, p);
    return TEST_PASS;
}

/* ---- per-token ops ------------------------------------------------- */

static int close_ulps(float got, float want, double ulps)
{
    double tol = ulps * ldexp(1.0, -23) * fabs(want) + 1e-37;
    return fabs((double)got - want) <= tol;
}

static enum test_return test_rmsnorm(void)
{
    static const int cols_v[] = {1, 7, 1000, 7168};
    enum kdtype wts[] = {KDT_F32, KDT_BF16, KDT_F16};
    const int rows = 5;
    for (size_t ci = 0; ci < sizeof cols_v / sizeof *cols_v; ci++)
        for (int wi = 0; wi < 3; wi++) {
            int n = cols_v[ci], ld = n + 3;
            size_t nx = (size_t)rows * ld;
            float *x = malloc(nx * 4), *out = malloc(nx * 4);
            float *ref = malloc((size_t)n * 4);
            void *w = malloc((size_t)n * 4);
            CHECK(x && out && ref && w, "alloc");
            for (size_t i = 0; i < nx; i++)
                x[i] = rnd_f() * 3.0f;
            for (int i = 0; i < n; i++) {
                float v = 1.0f + 0.5f * rnd_f();
                if (wts[wi] == KDT_F32)
                    ((float *)w)[i] = v;
                else if (wts[wi] == KDT_BF16)
                    ((uint16_t *)w)[i] = kf32_to_bf16(v);
                else
                    ((uint16_t *)w)[i] = kf32_to_f16(v);
            }
            void *dw = kcuda_vec_upload(g, w, wts[wi], n);
            float *dx = dev_copy(g, x, nx * 4);
            float *dout = dev_copy(g, x, nx * 4);
            CHECK(dw && dx && dout, "device alloc: %s", kcuda_last_error());
            /* out of place into dout, then in place in dx */
            int rc = kcuda_rmsnorm(g, dout, ld, dx, ld, dw, wts[wi], n, rows,
                                   1e-6f);
            DEV_CHECK(rc, "kcuda_rmsnorm");
            rc = kcuda_rmsnorm(g, dx, ld, dx, ld, dw, wts[wi], n, rows, 1e-6f);
            DEV_CHECK(rc, "kcuda_rmsnorm in place");
            for (int pass = 0; pass < 2; pass++) {
                DEV_CHECK(dev_get(g, out, pass ? dx : dout, nx * 4), "copy");
                for (int r = 0; r < rows; r++) {
                    krmsnorm(ref, x + (size_t)r * ld, w, wts[wi], n, 1e-6f);
                    for (int i = 0; i < n; i++)
                        CHECK(close_ulps(out[(size_t)r * ld + i], ref[i], 4),
                              "n %d wt %s row %d [%d]: %.9g vs %.9g", n,
                              kdtype_str(wts[wi]), r, i,
                              out[(size_t)r * ld + i], ref[i]);
                }
            }
            kcuda_free(g, dw);
            kcuda_free(g, dx);
            kcuda_free(g, dout);
            free(x);
            free(out);
            free(ref);
            free(w);
        }
    return TEST_PASS;
}

static enum test_return test_swiglu(void)
{
    const int rows = 7, n = 1003, ld = 1010;
    size_t nx = (size_t)rows * ld;
    float *gt = malloc(nx * 4), *up = malloc(nx * 4), *out = malloc(nx * 4);
    float ref[1003];
    CHECK(gt && up && out, "alloc");
    for (size_t i = 0; i < nx; i++) {
        gt[i] = rnd_f() * 12.0f;
        up[i] = rnd_f() * 2.0f;
    }
    float *dg = dev_copy(g, gt, nx * 4), *du = dev_copy(g, up, nx * 4);
    float *dout = dev_copy(g, up, nx * 4);
    CHECK(dg && du && dout, "device alloc");
    DEV_CHECK(kcuda_swiglu(g, dout, ld, dg, ld, du, ld, n, rows), "swiglu");
    DEV_CHECK(dev_get(g, out, dout, nx * 4), "copy");
    for (int r = 0; r < rows; r++) {
        kswiglu(ref, gt + (size_t)r * ld, up + (size_t)r * ld, n);
        for (int i = 0; i < n; i++)
            CHECK(close_ulps(out[(size_t)r * ld + i], ref[i], 8),
                  "row %d [%d]: %.9g vs %.9g", r, i, out[(size_t)r * ld + i],
                  ref[i]);
        /* the padding is the copy of up, untouched */
        for (int i = n; i < ld; i++)
            CHECK(out[(size_t)r * ld + i] == up[(size_t)r * ld + i],
                  "padding [%d][%d] written", r, i);
    }
    kcuda_free(g, dg);
    kcuda_free(g, du);
    kcuda_free(g, dout);
    free(gt);
    free(up);
    free(out);
    return TEST_PASS;
}

/* q rows as MLA has them: H heads of nope + rope, rope roped at off nope,
 * stride nope + rope; positions up to 163840 (long-context angles). */
static enum test_return test_rope(void)
{
    const int rows = 6, H = 5, nope = 16, dim = 64, qk = nope + dim;
    const int ld = H * qk + 2;
    size_t nx = (size_t)rows * ld;
    float *x = malloc(nx * 4), *out = malloc(nx * 4), inv[32];
    int32_t pos[6] = {0, 1, 17, 4095, 65537, 163839};
    CHECK(x && out, "alloc");
    for (size_t i = 0; i < nx; i++)
        x[i] = rnd_f();
    for (int i = 0; i < dim / 2; i++)
        inv[i] = (float)pow(10000.0, -2.0 * i / dim) * (i % 3 ? 1.0f : 0.25f);
    const float mscale = 1.2f;
    float *dx = dev_copy(g, x, nx * 4), *dinv = dev_copy(g, inv, sizeof inv);
    int32_t *dpos = dev_copy(g, pos, sizeof pos);
    CHECK(dx && dinv && dpos, "device alloc");
    DEV_CHECK(kcuda_rope(g, dx, ld, nope, qk, H, dim, dpos, rows, dinv, mscale),
              "kcuda_rope");
    DEV_CHECK(dev_get(g, out, dx, nx * 4), "copy");
    for (int r = 0; r < rows; r++) {
        float *want = x + (size_t)r * ld;
        for (int h = 0; h < H; h++)
            krope(want + nope + h * qk, dim, pos[r], inv, mscale);
        for (int i = 0; i < ld; i++) {
            float got = out[(size_t)r * ld + i];
            /* rotated pairs: 4 ulps of the pair's size; the rest exact */
            double tol = 4 * ldexp(1.0, -23) * 2.0 * mscale;
            CHECK(fabs((double)got - want[i]) <= tol, "row %d [%d]: %.9g vs %.9g",
                  r, i, got, want[i]);
        }
    }
    kcuda_free(g, dx);
    kcuda_free(g, dinv);
    kcuda_free(g, dpos);
    free(x);
    free(out);
    return TEST_PASS;
}

static enum test_return test_embed(void)
{
    enum kdtype dts[] = {KDT_F32, KDT_BF16, KDT_F16, KDT_F8_E4M3, KDT_Q8_0,
                         KDT_Q4_1};
    const int V = 50, D = 96, n = 6, ldo = D + 1;
    int32_t ids[6] = {0, 49, 7, 7, 50 /* out of range */, 13};
    int32_t zp[6] = {0, 1, 2, 0, 3, 9};
    float out[6 * 97], want[96];
    for (int di = 0; di < 6; di++) {
        struct hmat t;
        struct kdmat d;
        CHECK(hmat_new(&t, dts[di], V, D, 32) == 0, "alloc");
        DEV_CHECK(kcuda_mat_upload(g, &t.m, &d), "upload");
        int32_t *dids = dev_copy(g, ids, sizeof ids);
        int32_t *dzp = dev_copy(g, zp, sizeof zp);
        float *dout = kcuda_malloc(g, sizeof out);
        CHECK(dids && dzp && dout, "device alloc");
        for (int withz = 0; withz < 2; withz++) {
            DEV_CHECK(kcuda_embed(g, &d, dids, n, dout, ldo, withz ? dzp : NULL),
                      "kcuda_embed");
            DEV_CHECK(dev_get(g, out, dout, sizeof out), "copy");
            for (int r = 0; r < n; r++) {
                int zero = (withz && zp[r] == 0) || ids[r] >= V;
                if (!zero)
                    kmat_row_f32(&t.m, ids[r], want);
                for (int c = 0; c < D; c++) {
                    float w = zero ? 0.0f : want[c];
                    CHECK(memcmp(&out[r * ldo + c], &w, 4) == 0,
                          "%s zero_pos %d row %d [%d]: %.9g vs %.9g",
                          kdtype_str(dts[di]), withz, r, c, out[r * ldo + c],
                          w);
                }
            }
        }
        kcuda_free(g, dids);
        kcuda_free(g, dzp);
        kcuda_free(g, dout);
        kcuda_mat_free(g, &d);
        hmat_free(&t);
    }
    return TEST_PASS;
}

static enum test_return test_add_copies(void)
{
    const size_t n = 100003;
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    CHECK(a && b && c, "alloc");
    for (size_t i = 0; i < n; i++) {
        a[i] = rnd_f();
        b[i] = rnd_f();
    }
    float *pin = kcuda_host_alloc(g, n * 4);
    CHECK(pin != NULL, "pinned alloc: %s", kcuda_last_error());
    float *da = dev_copy(g, a, n * 4), *db = dev_copy(g, b, n * 4);
    float *dc = kcuda_malloc(g, n * 4);
    CHECK(da && db && dc, "device alloc");
    /* aligned, and shifted by one float (the scalar path) */
    DEV_CHECK(kcuda_add(g, da, db, n), "kcuda_add");
    DEV_CHECK(kcuda_add(g, da + 1, db + 1, n - 1), "kcuda_add (unaligned)");
    DEV_CHECK(kcuda_d2d(g, dc, da, n * 4), "d2d");
    DEV_CHECK(kcuda_d2h(g, pin, dc, n * 4), "d2h");
    DEV_CHECK(kcuda_sync(g), "sync");
    for (size_t i = 0; i < n; i++) {
        float want = a[i] + b[i];
        if (i > 0)
            want += b[i];
        CHECK(pin[i] == want, "[%zu]: %.9g vs %.9g", i, pin[i], want);
    }
    DEV_CHECK(kcuda_memset(g, dc, 0, n * 4), "memset");
    DEV_CHECK(dev_get(g, c, dc, n * 4), "copy");
    for (size_t i = 0; i < n; i++)
        CHECK(c[i] == 0.0f, "memset [%zu]", i);
    kcuda_free(g, da);
    kcuda_free(g, db);
    kcuda_free(g, dc);
    kcuda_host_free(g, pin);
    free(a);
    free(b);
    free(c);
    return TEST_PASS;
}

/* ---- MLA absorption ------------------------------------------------ */

static double kvb_at(const struct hmat *t, int r, int c)
{
    float row[512];
    kmat_row_f32(&t->m, r, row);
    return row[c];
}

static enum test_return absorb_case(enum kdtype dt, int n_rows)
{
    const int H = 3, nope = 24, rope = 8, v = 20, L = 72, qk = nope + rope;
    const int ldq = H * qk + 1, lda = H * v + 2, rf = L + rope;
    struct hmat t;
    struct kdmat d;
    CHECK(hmat_new(&t, dt, H * (nope + v), L, 0) == 0, "alloc");
    DEV_CHECK(kcuda_mat_upload(g, &t.m, &d), "upload");
    size_t nq = (size_t)n_rows * ldq, nqc = (size_t)n_rows * H * rf;
    size_t noc = (size_t)n_rows * H * L, na = (size_t)n_rows * lda;
    float *q = malloc(nq * 4), *qc = malloc(nqc * 4), *oc = malloc(noc * 4);
    float *at = malloc(na * 4);
    CHECK(q && qc && oc && at, "alloc");
    for (size_t i = 0; i < nq; i++)
        q[i] = rnd_f();
    for (size_t i = 0; i < noc; i++)
        oc[i] = rnd_f();
    for (size_t i = 0; i < na; i++)
        at[i] = SENTINEL;
    float *dq = dev_copy(g, q, nq * 4), *dqc = kcuda_malloc(g, nqc * 4);
    float *doc = dev_copy(g, oc, noc * 4), *dat = dev_copy(g, at, na * 4);
    CHECK(dq && dqc && doc && dat, "device alloc");
    DEV_CHECK(kcuda_mla_absorb_q(g, &d, H, nope, rope, v, dq, ldq, dqc, n_rows),
              "kcuda_mla_absorb_q");
    DEV_CHECK(kcuda_mla_head_out(g, &d, H, nope, v, doc, dat, lda, n_rows),
              "kcuda_mla_head_out");
    DEV_CHECK(dev_get(g, qc, dqc, nqc * 4), "copy");
    DEV_CHECK(dev_get(g, at, dat, na * 4), "copy");
    for (int r = 0; r < n_rows; r++)
        for (int h = 0; h < H; h++) {
            const float *qr = q + (size_t)r * ldq + h * qk;
            const float *got = qc + ((size_t)r * H + h) * rf;
            for (int j = 0; j < L; j++) { /* q_nope . W_UK_h[:, j] */
                double s = 0, a = 0;
                for (int i = 0; i < nope; i++) {
                    double term = qr[i] * kvb_at(&t, h * (nope + v) + i, j);
                    s += term;
                    a += fabs(term);
                }
                CHECK(fabs(got[j] - s) <= 1e-5 * a + 1e-30,
                      "%s absorb_q r %d h %d j %d: %.9g vs %.9g",
                      kdtype_str(dt), r, h, j, got[j], s);
            }
            for (int e = 0; e < rope; e++)
                CHECK(got[L + e] == qr[nope + e], "q_pe r %d h %d [%d]", r, h,
                      e);
            const float *o = oc + ((size_t)r * H + h) * L;
            for (int k = 0; k < v; k++) { /* W_UV_h[k] . oc */
                double s = 0, a = 0;
                for (int j = 0; j < L; j++) {
                    double term =
                        o[j] * kvb_at(&t, h * (nope + v) + nope + k, j);
                    s += term;
                    a += fabs(term);
                }
                float gv = at[(size_t)r * lda + h * v + k];
                CHECK(fabs(gv - s) <= 1e-5 * a + 1e-30,
                      "%s head_out r %d h %d o %d: %.9g vs %.9g",
                      kdtype_str(dt), r, h, k, gv, s);
            }
        }
    for (int r = 0; r < n_rows; r++)
        for (int i = H * v; i < lda; i++)
            CHECK(at[(size_t)r * lda + i] == SENTINEL, "attn padding written");
    kcuda_free(g, dq);
    kcuda_free(g, dqc);
    kcuda_free(g, doc);
    kcuda_free(g, dat);
    kcuda_mat_free(g, &d);
    hmat_free(&t);
    free(q);
    free(qc);
    free(oc);
    free(at);
    return TEST_PASS;
}

static enum test_return test_absorb(void)
{
    enum kdtype dts[] = {KDT_F32, KDT_BF16, KDT_F16};
    static const int rows_v[] = {1, 5, 8, 9, 21};
    for (int di = 0; di < 3; di++)
        for (size_t ri = 0; ri < sizeof rows_v / sizeof *rows_v; ri++)
            if (absorb_case(dts[di], rows_v[ri]) != TEST_PASS)
                return TEST_FAIL;
    return TEST_PASS;
}

/* ---- graphs, bandwidth ----------------------------------------------- */

static enum test_return test_graph(void)
{
    const size_t n = 4099;
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    CHECK(a && b && c, "alloc");
    for (size_t i = 0; i < n; i++) {
        a[i] = rnd_f();
        b[i] = rnd_f();
    }
    float *da = dev_copy(g, a, n * 4), *db = dev_copy(g, b, n * 4);
    CHECK(da && db, "device alloc");
    struct kcuda_graph *gr = NULL;
    DEV_CHECK(kcuda_graph_begin(g), "graph_begin");
    int rc = kcuda_add(g, da, db, n);
    int rc2 = kcuda_add(g, da, db, n);
    DEV_CHECK(kcuda_graph_end(g, &gr), "graph_end");
    DEV_CHECK(rc || rc2, "kcuda_add in capture");
    /* captured, not run */
    DEV_CHECK(dev_get(g, c, da, n * 4), "copy");
    for (size_t i = 0; i < n; i++)
        CHECK(c[i] == a[i], "ran during capture [%zu]", i);
    DEV_CHECK(kcuda_graph_launch(g, gr), "graph_launch");
    DEV_CHECK(kcuda_graph_launch(g, gr), "graph_launch");
    DEV_CHECK(dev_get(g, c, da, n * 4), "copy");
    for (size_t i = 0; i < n; i++) {
        float w = a[i];
        for (int k = 0; k < 4; k++)
            w += b[i];
        CHECK(c[i] == w, "[%zu]: %.9g vs %.9g", i, c[i], w);
    }
    kcuda_graph_free(gr);
    /* an op that fails inside a capture fails the capture */
    DEV_CHECK(kcuda_graph_begin(g), "graph_begin");
    struct kdmat bad = {.dtype = KDT_BF16, .rows = 4, .cols = 8};
    CHECK(kcuda_matmul(g, &bad, da, 8, db, 4, 1) == MTPD_K_EINVAL, "bad op");
    gr = NULL;
    CHECK(kcuda_graph_end(g, &gr) != 0 && gr == NULL,
          "a capture with an error gave a graph");
    CHECK(strstr(kcuda_last_error(), "graph capture") != NULL, "error: %s",
          kcuda_last_error());
    /* and the stream works after it */
    DEV_CHECK(kcuda_add(g, da, db, n), "kcuda_add after a failed capture");
    DEV_CHECK(kcuda_sync(g), "sync");
    kcuda_free(g, da);
    kcuda_free(g, db);
    free(a);
    free(b);
    free(c);
    return TEST_PASS;
}

static enum test_return test_info(void)
{
    size_t fr = 0, tot = 0;
    DEV_CHECK(kcuda_mem_info(g, &fr, &tot), "mem_info");
    CHECK(tot > 0 && fr <= tot, "free %zu total %zu", fr, tot);
    CHECK(kcuda_sm_count(g) > 0, "sm count");
    CHECK(strstr(kcuda_describe(g), "SMs") != NULL, "%s", kcuda_describe(g));
    double gbps = 0;
    DEV_CHECK(kcuda_copy_bandwidth(g, (size_t)64 << 20, 3, &gbps),
              "copy_bandwidth");
    CHECK(gbps > 1.0, "%.1f GB/s", gbps);
    printf("  %s, copy %.0f GB/s\n", kcuda_describe(g), gbps);
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    if (kcuda_device_count() == 0) {
        const char *why = kcuda_last_error();
        printf("no CUDA device: %s\n", why[0] ? why : "0 devices visible");
        return 77; /* meson: skipped */
    }
    char err[256];
    if (kcuda_open(0, (size_t)256 << 20, &g, err, sizeof err) ||
        kcuda_open(0, (size_t)64 << 10, &gs, err, sizeof err)) {
        fprintf(stderr, "kcuda_open: %s\n", err);
        return 1;
    }
    int big = 16 * kcuda_sm_count(g) + 192;
    dense_shapes[sizeof dense_shapes / sizeof *dense_shapes - 1].rows = big;
    q_shapes[sizeof q_shapes / sizeof *q_shapes - 1].rows = big;
    static const struct test_case tests[] = {
        {"info", test_info},
        {"add_copies", test_add_copies},
        {"graph", test_graph},
        {"matmul_args", test_matmul_args},
        {"matmul_dense", test_matmul_dense},
        {"matmul_f8", test_matmul_f8},
        {"matmul_q", test_matmul_q},
        {"rmsnorm", test_rmsnorm},
        {"swiglu", test_swiglu},
        {"rope", test_rope},
        {"embed", test_embed},
        {"absorb", test_absorb},
    };
    int rc = test_main(tests, sizeof tests / sizeof *tests, argc, argv);
    kcuda_close(gs);
    kcuda_close(g);
    return rc;
}
