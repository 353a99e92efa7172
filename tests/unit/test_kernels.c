/*
 * test_kernels.c - unit tests for the CPU kernel backend (kernels.h).
 *
 * Every op is compared against a plain double-precision reference, for
 * every ISA this CPU supports (kisa_set), every weight dtype and odd
 * shapes; conversions are checked exhaustively against formulas written
 * independently of kernels/cpu/dtype.c. Tests return TEST_PASS/FAIL/SKIP
 * (memcached testapp.c style). Run: build/tests/unit/test_kernels [name].
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

#include "unit_test.h"

/* ---- helpers ------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

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

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Same value, or both NaN; +0 and -0 differ. */
static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return f32_bits(a) == f32_bits(b);
}

/* Independent decoders: sign * ldexp(significand, exponent). */
static double ref_bf16(uint16_t h)
{
    int s = h >> 15, e = (h >> 7) & 0xff, m = h & 0x7f;
    double v;
    if (e == 0xff)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp(m, -133);
    else
        v = ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static double ref_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0x1f)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp(m, -24);
    else
        v = ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static double ref_f8(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 0xf, m = b & 7;
    double v;
    if (e == 0xf && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexp(m, -9);
    else
        v = ldexp(8 + m, e - 10);
    return s ? -v : v;
}

/* Every ISA this CPU has; returns how many, fills isas. */
static int supported_isas(enum kisa *isas)
{
    int n = 0;
    for (int i = 0; i < KISA_COUNT; i++)
        if ((int)kisa_detect() >= i)
            isas[n++] = (enum kisa)i;
    return n;
}

/* Matmul code paths: every ISA this CPU has, and AVX-512 once more with
 * AMX tiles (BF16 weights) where the CPU has them. */
struct mpath {
    enum kisa isa;
    int amx;
};

static int matmul_paths(struct mpath *p)
{
    enum kisa isas[KISA_COUNT];
    int n = 0, n_isa = supported_isas(isas);
    for (int i = 0; i < n_isa; i++) {
        p[n++] = (struct mpath){isas[i], 0};
        if (isas[i] == KISA_AVX512 && kisa_has_amx())
            p[n++] = (struct mpath){isas[i], 1};
    }
    return n;
}

static void mpath_set(struct mpath p)
{
    kisa_set(p.isa);
    kisa_set_amx(p.amx);
}

static const char *mpath_str(struct mpath p)
{
    return p.amx ? "avx512+amx" : kisa_str(p.isa);
}

/* Back to the default: the best ISA, AMX-BF16 off (isa.c). */
static void mpath_reset(void)
{
    kisa_set(kisa_detect());
    kisa_set_amx(0);
}

/* ---- conversions --------------------------------------------------- */

static enum test_return test_isa(void)
{
    enum kisa best = kisa_detect();
    CHECK(kisa_set(KISA_COUNT) == MTPD_K_EINVAL, "bad isa accepted");
    CHECK(kisa_set((enum kisa)-1) == MTPD_K_EINVAL, "negative isa accepted");
    for (int i = 0; i < KISA_COUNT; i++) {
        int rc = kisa_set((enum kisa)i);
        CHECK((i <= (int)best) == (rc == 0), "kisa_set(%s) = %d",
              kisa_str((enum kisa)i), rc);
        if (rc == 0)
            CHECK(kisa_active() == (enum kisa)i, "active != set");
    }
    kisa_set(best);
    printf("  detected ISA: %s\n", kisa_str(best));
    return TEST_PASS;
}

static enum test_return test_bf16_exhaustive(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float got = kbf16_to_f32((uint16_t)h);
        float want = (float)ref_bf16((uint16_t)h);
        CHECK(same_float(got, want), "bf16 %04x: %a vs %a", h, got, want);
        if (!isnan(got))
            CHECK(kf32_to_bf16(got) == h, "round trip %04x", h);
    }
    return TEST_PASS;
}

static enum test_return test_f16_exhaustive(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float got = kf16_to_f32((uint16_t)h);
        float want = (float)ref_f16((uint16_t)h);
        CHECK(same_float(got, want), "f16 %04x: %a vs %a", h, got, want);
    }
    return TEST_PASS;
}

static enum test_return test_f8_exhaustive(void)
{
    for (int b = 0; b < 256; b++) {
        float got = kf8e4m3_to_f32((uint8_t)b);
        float want = (float)ref_f8((uint8_t)b);
        CHECK(same_float(got, want), "f8 %02x: %a vs %a", b, got, want);
    }
    CHECK(kf8e4m3_to_f32(0x7e) == 448.0f, "max");
    CHECK(isnan(kf8e4m3_to_f32(0x7f)) && isnan(kf8e4m3_to_f32(0xff)), "nan");
    return TEST_PASS;
}

/* RNE reference on doubles: pick the nearer neighbour, ties to even. */
static uint16_t ref_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t lo = (uint16_t)(u >> 16);
    if ((u & 0xffff) == 0)
        return lo;
    uint16_t hi = (uint16_t)(lo + 1);
    double dl = fabs((double)f - ref_bf16(lo));
    double dh = fabs(ref_bf16(hi) - (double)f);
    if ((hi & 0x7f80) == 0x7f80 && (hi & 0x7f) == 0) /* rounds to inf */
        dh = fabs(ldexp(1.0, 128) - fabs((double)f));
    if (dl < dh)
        return lo;
    if (dh < dl)
        return hi;
    return (lo & 1) ? hi : lo;
}

static enum test_return test_f32_to_bf16(void)
{
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = rnd_u32();
        if (i < 1000) /* ties and near-ties */
            u = (u & 0xffff0000u) | 0x8000u | (i & 1);
        float f;
        memcpy(&f, &u, sizeof f);
        if (isnan(f)) {
            CHECK(isnan(kbf16_to_f32(kf32_to_bf16(f))), "nan %08x", u);
            continue;
        }
        uint16_t got = kf32_to_bf16(f), want = ref_to_bf16(f);
        CHECK(got == want, "%08x: %04x vs %04x", u, got, want);
    }
    CHECK(kf32_to_bf16(INFINITY) == 0x7f80, "inf");
    CHECK(kf32_to_bf16(-0.0f) == 0x8000, "-0");
    CHECK(kf32_to_bf16(0x1.ffffp127f) == 0x7f80, "overflow to inf");
    return TEST_PASS;
}

/* kf32_to_f16: every f16 round trips; random floats go to the nearest
 * f16 (ties to even), overflow to inf. */
static enum test_return test_f32_to_f16(void)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* NaN */
        uint16_t g = kf32_to_f16(kf16_to_f32((uint16_t)h));
        CHECK(g == h, "round trip %04x -> %04x", h, g);
    }
    for (int i = 0; i < 200000; i++) {
        uint32_t u = rnd_u32();
        u = (u & 0x807fffffu) | ((100 + (rnd_u32() % 44)) << 23);
        float f;
        memcpy(&f, &u, sizeof f);
        uint16_t h = kf32_to_f16(f);
        double v = ref_f16(h), e = fabs(v - f);
        if ((h & 0x7fff) == 0x7c00) { /* inf: past the largest + half ulp */
            CHECK(fabs(f) >= 65520.0, "%a to inf", f);
            continue;
        }
        for (int dlt = -1; dlt <= 1; dlt += 2) {
            uint16_t n = (uint16_t)(h + dlt);
            if ((h & 0x7fff) == 0 && dlt < 0)
                continue;
            if ((n & 0x7c00) == 0x7c00)
                continue;
            double en = fabs(ref_f16(n) - f);
            CHECK(e < en || (e == en && !(h & 1)), "%a -> %04x, %04x closer",
                  f, h, n);
        }
    }
    CHECK(kf32_to_f16(1e6f) == 0x7c00 && kf32_to_f16(-1e6f) == 0xfc00,
          "overflow");
    CHECK(kf32_to_f16(65504.0f) == 0x7bff, "max");
    CHECK((kf32_to_f16(NAN) & 0x7e00) == 0x7e00, "nan");
    return TEST_PASS;
}

static enum test_return test_dtype_names(void)
{
    CHECK(kdtype_size(KDT_F32) == 4 && kdtype_size(KDT_BF16) == 2 &&
              kdtype_size(KDT_F16) == 2 && kdtype_size(KDT_F8_E4M3) == 1,
          "sizes");
    CHECK(strcmp(kdtype_str(KDT_BF16), "BF16") == 0, "name");
    CHECK(kdtype_size(KDT_COUNT) == 0, "bad dtype size");
    return TEST_PASS;
}

/* ---- matmul -------------------------------------------------------- */

/* A random test matrix; owns data and scale. */
/* f rounded to the nearest bf16, ties to even (finite f). */
static float round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* tmat_new sets kmat.act_bf16 on BF16 matrices while this is 1
 * (test_matmul_bf16_act). */
static int g_act_bf16;

struct tmat {
    struct kmat m;
    void *data;
    float *scale;
    uint16_t *qd, *qm; /* Q8_0 / Q4_1 */
    uint8_t *qsc;      /* Q4_S */
    int8_t *qmn, *qexp;
};

static void tmat_free(struct tmat *t)
{
    free(t->data);
    free(t->scale);
    free(t->qd);
    free(t->qm);
    free(t->qsc);
    free(t->qmn);
    free(t->qexp);
}

static int is_q(enum kdtype dt)
{
    return dt == KDT_Q8_0 || dt == KDT_Q4_1 || dt == KDT_Q4_S;
}

/* A random fp16 block scale (or min): +-[0.5, 1) * 2^-3..2^-9. */
static uint16_t rnd_qscale(void)
{
    return kf32_to_f16(ldexpf((1.0f + rnd_f()) * 0.5f, -3 - (int)(rnd_u32() % 7)) *
                       (rnd_u32() & 1 ? 1.0f : -1.0f));
}

/* Q4_S's scales: random bytes, exponent pairs over the whole allowed
 * range now and then (subnormal fp16 products), else -12..-3 (scales and
 * mins of the size rnd_qscale gives). */
static int tmat_q4s(struct tmat *t, int rows, int cols)
{
    size_t nb = (size_t)rows * (cols / KQ_BLK);
    size_t ne = (size_t)rows * 2 * ((cols / KQ_BLK + KQ4S_GRP - 1) / KQ4S_GRP);
    t->qsc = malloc(nb + 1);
    t->qmn = malloc(nb + 1);
    t->qexp = malloc(ne + 1);
    if (t->qsc == NULL || t->qmn == NULL || t->qexp == NULL)
        return -1;
    for (size_t i = 0; i < nb; i++) {
        t->qsc[i] = (uint8_t)rnd_u32();
        t->qmn[i] = (int8_t)rnd_u32();
    }
    for (size_t i = 0; i < ne; i++)
        t->qexp[i] = (int8_t)(rnd_u32() % 8 == 0
                                  ? KQ4S_EMIN + (int)(rnd_u32() % 32)
                                  : -12 + (int)(rnd_u32() % 10));
    t->m.qsc = t->qsc;
    t->m.qmn = t->qmn;
    t->m.qexp = t->qexp;
    return 0;
}

/* Q8_0 / Q4_1 / Q4_S (cols a multiple of KQ_BLK): random codes, scales,
 * mins. */
static int tmat_new_q(struct tmat *t, enum kdtype dt, int rows, int cols)
{
    size_t nb = (size_t)rows * (cols / KQ_BLK);
    size_t bytes = (size_t)rows * kmat_row_bytes(dt, cols);
    if (dt == KDT_Q4_S) {
        t->m = (struct kmat){.dtype = dt, .rows = rows, .cols = cols};
        if ((t->data = malloc(bytes + 1)) == NULL)
            return -1;
        for (size_t i = 0; i < bytes; i++)
            ((uint8_t *)t->data)[i] = (uint8_t)rnd_u32();
        t->m.data = t->data;
        return tmat_q4s(t, rows, cols);
    }
    t->data = malloc(bytes + 1);
    t->qd = malloc(nb * sizeof *t->qd + 2);
    t->qm = malloc(nb * sizeof *t->qm + 2);
    if (t->data == NULL || t->qd == NULL || t->qm == NULL)
        return -1;
    for (size_t i = 0; i < bytes; i++)
        ((uint8_t *)t->data)[i] = (uint8_t)rnd_u32();
    for (size_t i = 0; i < nb; i++) {
        t->qd[i] = rnd_qscale();
        t->qm[i] = rnd_qscale();
    }
    t->m = (struct kmat){.dtype = dt, .rows = rows, .cols = cols,
                         .data = t->data, .qd = t->qd,
                         .qm = dt == KDT_Q4_1 ? t->qm : NULL};
    return 0;
}

static int tmat_new(struct tmat *t, enum kdtype dt, int rows, int cols,
                    int blk)
{
    size_t n = (size_t)rows * cols;
    memset(t, 0, sizeof *t);
    if (is_q(dt))
        return tmat_new_q(t, dt, rows, cols);
    t->data = malloc(n * kdtype_size(dt) + 1);
    if (t->data == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case KDT_F32: ((float *)t->data)[i] = rnd_f(); break;
        case KDT_BF16: ((uint16_t *)t->data)[i] = kf32_to_bf16(rnd_f()); break;
        case KDT_F16: { /* exponents 0..17: subnormals through ~8 */
            uint32_t r = rnd_u32();
            ((uint16_t *)t->data)[i] =
                (uint16_t)((r & 0x8000) | ((r >> 16) % 18) << 10 | (r & 0x3ff));
            break;
        }
        default: {
            uint8_t b = (uint8_t)rnd_u32();
            if ((b & 0x7f) == 0x7f) /* no NaN codes */
                b ^= 1;
            ((uint8_t *)t->data)[i] = b;
        }
        }
    }
    t->m = (struct kmat){dt, rows, cols, t->data, NULL, 0, NULL, NULL, 0,
                         g_act_bf16 && dt == KDT_BF16, NULL, NULL, NULL};
    if (dt == KDT_F8_E4M3) {
        size_t ns = (size_t)((rows + blk - 1) / blk) * ((cols + blk - 1) / blk);
        t->scale = malloc(ns * sizeof(float));
        if (t->scale == NULL)
            return -1;
        for (size_t i = 0; i < ns; i++)
            t->scale[i] = ldexpf(1.0f + 0.5f * rnd_f(), -(int)(rnd_u32() % 12));
        t->m.scale = t->scale;
        t->m.blk = blk;
    }
    return 0;
}

static double tmat_at(const struct tmat *t, int r, int c)
{
    const struct kmat *m = &t->m;
    size_t i = (size_t)r * m->cols + c;
    switch (m->dtype) {
    case KDT_F32: return ((const float *)m->data)[i];
    case KDT_BF16: return ref_bf16(((const uint16_t *)m->data)[i]);
    case KDT_F16: return ref_f16(((const uint16_t *)m->data)[i]);
    case KDT_Q8_0: { /* q * d */
        size_t b = (size_t)r * (m->cols / 32) + c / 32;
        return (double)((const int8_t *)m->data)[i] * ref_f16(m->qd[b]);
    }
    case KDT_Q4_1: { /* q * d + m; low nibbles: first 16 of a block */
        size_t b = (size_t)r * (m->cols / 32) + c / 32;
        uint8_t v = ((const uint8_t *)m->data)[b * 16 + c % 16];
        int q = c % 32 < 16 ? v & 15 : v >> 4;
        return q * ref_f16(m->qd[b]) + ref_f16(m->qm[b]);
    }
    case KDT_Q4_S: { /* q * sc * 2^e + mn * 2^f */
        int nb = m->cols / 32, ng = (nb + 7) / 8;
        size_t b = (size_t)r * nb + c / 32;
        uint8_t v = ((const uint8_t *)m->data)[b * 16 + c % 16];
        int q = c % 32 < 16 ? v & 15 : v >> 4;
        const int8_t *e = m->qexp + (size_t)r * 2 * ng + 2 * (c / 32 / 8);
        return q * ldexp(m->qsc[b], e[0]) + ldexp(m->qmn[b], e[1]);
    }
    default: {
        int nb = (m->cols + m->blk - 1) / m->blk;
        return ref_f8(((const uint8_t *)m->data)[i]) *
               m->scale[(size_t)(r / m->blk) * nb + c / m->blk];
    }
    }
}

/* x row as the Q8_0 / Q4_1 kernels see it: per 32 columns
 * xd = max|x| / 127, codes round(x / xd) (kernels/cpu/matmul_qa.c). */
static void qa_x(const float *x, int cols, double *out)
{
    for (int j = 0; j < cols / 32; j++) {
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[j * 32 + i]));
        float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0;
        for (int i = 0; i < 32; i++)
            out[j * 32 + i] = nearbyintf(x[j * 32 + i] * id) * (double)d;
    }
}

/* ref[t * rows + o] and the error bound 1e-5 * sum |terms| in bound[]. */
static void matmul_ref(const struct tmat *t, const float *x, int ldx,
                       int n_tok, double *ref, double *bound)
{
    int rows = t->m.rows, cols = t->m.cols;
    int qa = is_q(t->m.dtype);
    double *xq = malloc((size_t)n_tok * cols * sizeof *xq);
    for (int k = 0; k < n_tok && qa && xq; k++)
        qa_x(x + (size_t)k * ldx, cols, xq + (size_t)k * cols);
    for (int o = 0; o < rows; o++)
        for (int k = 0; k < n_tok; k++) {
            double s = 0, a = 0;
            for (int c = 0; c < cols; c++) {
                double xv = qa && xq ? xq[(size_t)k * cols + c]
                                     : x[(size_t)k * ldx + c];
                double term = tmat_at(t, o, c) * xv;
                s += term;
                a += fabs(term);
            }
            ref[(size_t)k * rows + o] = s;
            bound[(size_t)k * rows + o] = 1e-5 * a + 1e-30;
        }
    free(xq);
}

#define SENTINEL 12345.0f

/*
 * Runs kmatmul_rows(row0, row1) for every ISA and pool and compares with
 * ref (on paths where kmat_act_bf16(&t->m), x rounded to bf16, with
 * ref_act / bound_act when given); checks rows outside the range and the
 * ldy padding stay untouched.
 */
static enum test_return check_matmul_act(const struct tmat *t, const float *x,
                                         int ldx, int n_tok, const double *ref,
                                         const double *bound,
                                         const double *ref_act,
                                         const double *bound_act, int row0,
                                         int row1, struct kpool **pools,
                                         int n_pools)
{
    struct mpath paths[KISA_COUNT + 1];
    int n_isa = matmul_paths(paths);
    int rows = t->m.rows, ldy = rows + 3;
    float *y = malloc((size_t)n_tok * ldy * sizeof *y);
    if (y == NULL)
        return TEST_FAIL;
    enum test_return ret = TEST_PASS;
    const double *ref0 = ref, *bound0 = bound;
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        mpath_set(paths[ii]);
        int act = ref_act != NULL && kmat_act_bf16(&t->m);
        ref = act ? ref_act : ref0;
        bound = act ? bound_act : bound0;
        for (int pi = 0; pi < n_pools && ret == TEST_PASS; pi++) {
            for (size_t i = 0; i < (size_t)n_tok * ldy; i++)
                y[i] = SENTINEL;
            int rc = row0 == 0 && row1 == rows
                         ? kmatmul(pools[pi], &t->m, x, ldx, y, ldy, n_tok)
                         : kmatmul_rows(pools[pi], &t->m, row0, row1, x, ldx,
                                        y, ldy, n_tok);
            for (int k = 0; k < n_tok && ret == TEST_PASS && rc == 0; k++)
                for (int o = 0; o < ldy; o++) {
                    float got = y[(size_t)k * ldy + o];
                    int in = o >= row0 && o < row1;
                    double want = in ? ref[(size_t)k * rows + o] : SENTINEL;
                    double tol = in ? bound[(size_t)k * rows + o] : 0;
                    if (!(fabs(got - want) <= tol)) {
                        fprintf(stderr,
                                "  %s %s%s %dx%d blk %d n_tok %d rows [%d,%d) "
                                "pool %d: y[%d][%d] = %.9g, want %.9g "
                                "(tol %.3g)\n",
                                mpath_str(paths[ii]), kdtype_str(t->m.dtype),
                                act ? " (x as bf16)" : "",
                                rows, t->m.cols, t->m.blk, n_tok, row0, row1,
                                kpool_size(pools[pi]), k, o, got, want, tol);
                        ret = TEST_FAIL;
                        break;
                    }
                }
            if (rc != 0) {
                fprintf(stderr, "  kmatmul returned %d\n", rc);
                ret = TEST_FAIL;
            }
        }
    }
    mpath_reset();
    free(y);
    return ret;
}

static enum test_return check_matmul(const struct tmat *t, const float *x,
                                     int ldx, int n_tok, const double *ref,
                                     const double *bound, int row0, int row1,
                                     struct kpool **pools, int n_pools)
{
    return check_matmul_act(t, x, ldx, n_tok, ref, bound, NULL, NULL, row0,
                            row1, pools, n_pools);
}

/* One shape: builds W and x (ldx = cols + 5), the reference, and checks
 * the full range plus a sub-range. */
static enum test_return matmul_case(enum kdtype dt, int rows, int cols,
                                    int blk, int n_tok, struct kpool **pools,
                                    int n_pools)
{
    struct tmat t;
    int ldx = cols + 5;
    float *x = malloc((size_t)n_tok * ldx * sizeof *x);
    double *ref = malloc((size_t)n_tok * rows * sizeof *ref);
    double *bound = malloc((size_t)n_tok * rows * sizeof *bound);
    float *xr = NULL;
    double *ref_a = NULL, *bound_a = NULL;
    enum test_return ret = TEST_FAIL;
    if (tmat_new(&t, dt, rows, cols, blk) != 0 || !x || !ref || !bound)
        goto out;
    for (size_t i = 0; i < (size_t)n_tok * ldx; i++)
        x[i] = rnd_f();
    matmul_ref(&t, x, ldx, n_tok, ref, bound);
    if (t.m.act_bf16) { /* the reference of x rounded to bf16 (RNE) */
        size_t n = (size_t)n_tok * ldx;
        xr = malloc(n * sizeof *xr);
        ref_a = malloc((size_t)n_tok * rows * sizeof *ref_a);
        bound_a = malloc((size_t)n_tok * rows * sizeof *bound_a);
        if (!xr || !ref_a || !bound_a) {
            ret = TEST_FAIL;
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            xr[i] = round_bf16(x[i]);
        matmul_ref(&t, xr, ldx, n_tok, ref_a, bound_a);
    }
    ret = check_matmul_act(&t, x, ldx, n_tok, ref, bound, ref_a, bound_a, 0,
                           rows, pools, n_pools);
    if (ret == TEST_PASS && rows > 2)
        ret = check_matmul_act(&t, x, ldx, n_tok, ref, bound, ref_a, bound_a,
                               1, rows - 1 - rows / 3, pools, n_pools);
    if (ret == TEST_PASS && rows >= 20) /* 15 rows: a part ends mid-chunk */
        ret = check_matmul_act(&t, x, ldx, n_tok, ref, bound, ref_a, bound_a,
                               rows / 4, rows / 4 + 15, pools, n_pools);
out:
    free(xr);
    free(ref_a);
    free(bound_a);
    tmat_free(&t);
    free(x);
    free(ref);
    free(bound);
    return ret;
}

static enum test_return matmul_suite(const enum kdtype *dts, int n_dt, int blk)
{
    static const int cols_v[] = {1, 15, 17, 129, 300};
    static const int rows_v[] = {1, 2, 3, 17, 70};
    static const int ntok_v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 33};
    struct kpool *pools[3];
    for (int i = 0; i < 3; i++)
        if ((pools[i] = kpool_new(i + 1)) == NULL)
            return TEST_FAIL;
    enum test_return ret = TEST_PASS;
    for (int d = 0; d < n_dt && ret == TEST_PASS; d++)
        for (size_t c = 0; c < sizeof cols_v / sizeof *cols_v; c++)
            for (size_t r = 0; r < sizeof rows_v / sizeof *rows_v; r++)
                for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                    ret = matmul_case(dts[d], rows_v[r], cols_v[c], blk,
                                      ntok_v[k], pools, 3);
                    if (ret != TEST_PASS)
                        goto done;
                }
done:
    for (int i = 0; i < 3; i++)
        kpool_free(pools[i]);
    return ret;
}

static enum test_return test_matmul_dense(void)
{
    enum kdtype dts[] = {KDT_F32, KDT_BF16, KDT_F16};
    return matmul_suite(dts, 3, 0);
}

static enum test_return test_matmul_f8_blk128(void)
{
    enum kdtype dt = KDT_F8_E4M3;
    return matmul_suite(&dt, 1, 128);
}

/* Small odd blocks: many partial blocks, tails inside every block. */
static enum test_return test_matmul_f8_blk_odd(void)
{
    enum kdtype dt = KDT_F8_E4M3;
    enum test_return r = matmul_suite(&dt, 1, 7);
    return r == TEST_PASS ? matmul_suite(&dt, 1, 16) : r;
}

/* Q8_0 / Q4_1: whole blocks only; one segment, several, several chunks. */
static enum test_return test_matmul_q(void)
{
    static const int cols_v[] = {32, 96, 320, 2080};
    static const int rows_v[] = {1, 3, 17, 70};
    static const int ntok_v[] = {1, 2, 3, 4, 5, 8, 9, 33};
    static const enum kdtype dts[] = {KDT_Q8_0, KDT_Q4_1, KDT_Q4_S};
    struct kpool *pools[3];
    for (int i = 0; i < 3; i++)
        if ((pools[i] = kpool_new(i + 1)) == NULL)
            return TEST_FAIL;
    enum test_return ret = TEST_PASS;
    for (int d = 0; d < 3 && ret == TEST_PASS; d++)
        for (size_t c = 0; c < sizeof cols_v / sizeof *cols_v; c++)
            for (size_t r = 0; r < sizeof rows_v / sizeof *rows_v; r++)
                for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                    if (cols_v[c] > 1000 && ntok_v[k] > 9)
                        continue; /* the reference is slow */
                    ret = matmul_case(dts[d], rows_v[r], cols_v[c], 0,
                                      ntok_v[k], pools, 3);
                    if (ret != TEST_PASS)
                        goto done;
                }
done:
    for (int i = 0; i < 3; i++)
        kpool_free(pools[i]);
    return ret;
}

/* kmatmul of W on n tokens of x with every ISA this CPU has: the same
 * bits as the first (scalar). y0, y: n * W->rows floats. Leaves the
 * detected ISA active. */
static enum test_return q_isas_agree(const struct kmat *W, const float *x,
                                     int n, float *y0, float *y,
                                     const char *what)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    enum test_return ret = TEST_PASS;
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        kisa_set(isas[ii]);
        if (kmatmul(NULL, W, x, W->cols, ii ? y : y0, W->rows, n) != 0) {
            fprintf(stderr, "  %s: kmatmul failed\n", what);
            ret = TEST_FAIL;
        } else if (ii > 0 &&
                   memcmp(y, y0, (size_t)n * W->rows * sizeof *y) != 0) {
            fprintf(stderr, "  %s %s %dx%d, %d tokens: %s differs from %s\n",
                    what, kdtype_str(W->dtype), W->rows, W->cols, n,
                    kisa_str(isas[ii]), kisa_str(isas[0]));
            ret = TEST_FAIL;
        }
    }
    kisa_set(kisa_detect());
    return ret;
}

/* Q8_0 / Q4_1: the integer lanes and float steps are the same in every
 * ISA (matmul_qa.c), so every ISA gives the same bits. */
static enum test_return test_matmul_q_isa_equal(void)
{
    static const enum kdtype dts[] = {KDT_Q8_0, KDT_Q4_1, KDT_Q4_S};
    /* long rows; and short rows with enough tokens for the VNNI
     * rows-in-lanes kernel (matmul.c: rl_min_tok), slabs of 16 rows
     * with a partial last one, odd block counts; long rows with enough
     * tokens for it, segment by segment with a short last segment */
    static const struct {
        int rows, cols, n;
    } shapes[] = {{45, 2112, 11}, {45, 160, 5}, {45, 384, 17},
                  {37, 1024, 50}, {16, 224, 40}, {37, 2112, 50},
                  {45, 192, 1},   {45, 512, 1},  {38, 384, 1},
                  {19, 128, 3}};
    float *x = malloc((size_t)50 * 2112 * sizeof *x);
    float *y0 = malloc((size_t)50 * 45 * sizeof *y0);
    float *y = malloc((size_t)50 * 45 * sizeof *y);
    CHECK(x && y0 && y, "alloc");
    for (size_t i = 0; i < (size_t)50 * 2112; i++)
        x[i] = rnd_f();
    for (size_t k = 0; k < 3 * sizeof shapes / sizeof *shapes; k++) {
        int d = (int)(k % 3), rows = shapes[k / 3].rows;
        int cols = shapes[k / 3].cols, n = shapes[k / 3].n;
        struct tmat t;
        CHECK(tmat_new(&t, dts[d], rows, cols, 0) == 0, "alloc");
        enum test_return r = q_isas_agree(&t.m, x, n, y0, y, "random");
        tmat_free(&t);
        CHECK(r == TEST_PASS, "ISAs differ");
    }
    free(x);
    free(y0);
    free(y);
    return TEST_PASS;
}

/* The integer sums at their largest: every Q4 nibble 15 (Q8_0 code
 * -128) against x codes all +127 or all -127. The AVX2 Q4 kernel adds
 * the partial sums of a block in int16 before widening (|.| <= 30480)
 * and the AVX2 Q8_0 kernel moves signs onto x: an overflow there would
 * change the bits against the scalar kernel, whose sums are plain ints.
 * One token (row loops and the short-row kernels) and a few (pairs,
 * transposed blocks). */
static enum test_return test_matmul_q_extreme(void)
{
    static const enum kdtype dts[] = {KDT_Q8_0, KDT_Q4_1, KDT_Q4_S};
    static const struct {
        int rows, cols, n;
    } shapes[] = {{9, 2112, 1}, {9, 2112, 3}, {9, 160, 1},
                  {9, 384, 2},  {9, 512, 5},  {9, 1024, 1}};
    float *x = malloc((size_t)5 * 2112 * sizeof *x);
    float *y0 = malloc((size_t)5 * 9 * sizeof *y0);
    float *y = malloc((size_t)5 * 9 * sizeof *y);
    CHECK(x && y0 && y, "alloc");
    for (size_t k = 0; k < 3 * sizeof shapes / sizeof *shapes; k++) {
        enum kdtype dt = dts[k % 3];
        int rows = shapes[k / 3].rows, cols = shapes[k / 3].cols;
        int n = shapes[k / 3].n;
        struct tmat t;
        CHECK(tmat_new(&t, dt, rows, cols, 0) == 0, "alloc");
        memset(t.data, dt == KDT_Q8_0 ? 0x80 : 0xff,
               (size_t)rows * kmat_row_bytes(dt, cols));
        enum test_return r = TEST_PASS;
        for (int sign = -1; sign <= 1 && r == TEST_PASS; sign += 2) {
            for (size_t i = 0; i < (size_t)n * cols; i++)
                x[i] = (float)sign;
            r = q_isas_agree(&t.m, x, n, y0, y, sign > 0 ? "x +127" : "x -127");
        }
        tmat_free(&t);
        CHECK(r == TEST_PASS, "ISAs differ at the extremes");
    }
    free(x);
    free(y0);
    free(y);
    return TEST_PASS;
}

/* Q4_X8 (matmul_q4x8.c): Q4_S / Q4_1 with eight rows interleaved gives
 * the source's bits on every ISA and token count (one token: slab pairs;
 * several: passes of 1-4), rows not a multiple of 8 (padding lanes),
 * 65-block rows (a short last segment and exponent group), row ranges
 * that cut slabs (other rows untouched), its rows widened by
 * kmat_row_f32, the largest int16 partials (nibbles 15, x +-127). */
static enum test_return test_matmul_q4x8(void)
{
    static const enum kdtype dts[] = {KDT_Q4_1, KDT_Q4_S};
    static const struct {
        int rows, cols, n, extreme;
    } shapes[] = {{45, 2080, 1, 0}, {45, 2080, 3, 0}, {13, 160, 9, 0},
                  {8, 384, 2, 0},   {37, 1024, 5, 0}, {64, 64, 1, 0},
                  {21, 2080, 1, 1}, {21, 512, 6, 1}};
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    size_t nx = (size_t)9 * 2080, ny = (size_t)9 * 64;
    float *x = malloc(nx * sizeof *x), *y0 = malloc(ny * sizeof *y0);
    float *y = malloc(ny * sizeof *y), *row = malloc(2080 * sizeof *row);
    float *row0 = malloc(2080 * sizeof *row0);
    CHECK(x && y0 && y && row && row0, "alloc");
    for (size_t k = 0; k < 2 * sizeof shapes / sizeof *shapes; k++) {
        enum kdtype dt = dts[k % 2];
        int rows = shapes[k / 2].rows, cols = shapes[k / 2].cols;
        int n = shapes[k / 2].n, ext = shapes[k / 2].extreme;
        struct tmat t;
        struct kmat X;
        CHECK(tmat_new(&t, dt, rows, cols, 0) == 0, "alloc");
        if (ext)
            memset(t.data, 0xff, (size_t)rows * kmat_row_bytes(dt, cols));
        for (size_t i = 0; i < (size_t)n * cols; i++)
            x[i] = ext ? (i % 2 ? 1.0f : -1.0f) * (k % 4 < 2 ? 1 : -1)
                       : rnd_f();
        void *buf = aligned_alloc(64, kq4x8_bytes(&t.m));
        CHECK(buf && kq4x8_pack(&t.m, buf, &X) == 0, "pack");
        CHECK(X.dtype == KDT_Q4_X8 && X.rows == rows, "packed shape");
        for (int ii = 0; ii < n_isa; ii++) {
            kisa_set(isas[ii]);
            CHECK(kmatmul(NULL, &t.m, x, cols, y0, rows, n) == 0, "source");
            memset(y, 0x7f, ny * sizeof *y);
            CHECK(kmatmul(NULL, &X, x, cols, y, rows, n) == 0, "x8");
            CHECK(!memcmp(y, y0, (size_t)n * rows * sizeof *y),
                  "%s %dx%d, %d tokens, %s: Q4_X8 differs from the source",
                  kdtype_str(dt), rows, cols, n, kisa_str(isas[ii]));
            /* rows [3, rows - 2): the others keep their bytes */
            memset(y, 0x7f, ny * sizeof *y);
            CHECK(kmatmul_rows(NULL, &X, 3, rows - 2, x, cols, y, rows, n) == 0,
                  "rows");
            for (int tk = 0; tk < n; tk++)
                for (int r = 0; r < rows; r++) {
                    float v = y[(size_t)tk * rows + r], e;
                    memset(&e, 0x7f, sizeof e);
                    if (r >= 3 && r < rows - 2)
                        CHECK(v == y0[(size_t)tk * rows + r], "row %d", r);
                    else
                        CHECK(!memcmp(&v, &e, sizeof v), "row %d touched", r);
                }
        }
        kisa_set(kisa_detect());
        for (int r = 0; r < rows; r += 5) {
            CHECK(kmat_row_f32(&X, r, row) == 0 &&
                  kmat_row_f32(&t.m, r, row0) == 0, "row_f32");
            CHECK(!memcmp(row, row0, (size_t)cols * sizeof *row), "row %d", r);
        }
        CHECK(kmat_bytes(&X) >= kmat_bytes(&t.m) &&
              kmat_bytes(&X) <= kq4x8_bytes(&t.m), "bytes");
        free(buf);
        tmat_free(&t);
    }
    struct tmat q8;
    CHECK(tmat_new(&q8, KDT_Q8_0, 8, 64, 0) == 0, "alloc");
    CHECK(kq4x8_bytes(&q8.m) == 0, "Q8_0 has no Q4_X8 form");
    tmat_free(&q8);
    free(x);
    free(y0);
    free(y);
    free(row);
    free(row0);
    return TEST_PASS;
}

/* Q4_S is Q4_1 with scales and mins that kq4s_expand gives (kernels.h):
 * the same bits as that Q4_1 matrix on every path and token count (rows
 * past one expansion group, short rows for the rows-in-lanes kernels, a
 * last exponent group of 4 and of 1 block), and the checks refuse what a
 * damaged checkpoint could hold. */
static enum test_return test_matmul_q4s(void)
{
    static const struct {
        int rows, cols;
    } shapes[] = {{45, 2112}, {70, 384}, {37, 160}, {33, 1056}, {3, 32}};
    static const int ntok_v[] = {1, 2, 3, 5, 8, 17, 40};
    struct kpool *pool = kpool_new(2);
    float *x = malloc((size_t)40 * 2112 * sizeof *x);
    float *y0 = malloc((size_t)40 * 70 * sizeof *y0);
    float *y1 = malloc((size_t)40 * 70 * sizeof *y1);
    CHECK(pool && x && y0 && y1, "alloc");
    for (size_t i = 0; i < (size_t)40 * 2112; i++)
        x[i] = rnd_f();
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int rows = shapes[s].rows, cols = shapes[s].cols, nb = cols / 32;
        struct tmat t;
        CHECK(tmat_new(&t, KDT_Q4_S, rows, cols, 0) == 0, "alloc");
        uint16_t *qd = malloc((size_t)rows * nb * 2 * sizeof *qd);
        CHECK(qd != NULL, "alloc");
        for (int ii = 0; ii < n_isa; ii++) { /* every ISA's expansion */
            kisa_set(isas[ii]);
            kq4s_expand(&t.m, 0, rows, qd, qd + (size_t)rows * nb);
            for (int r = 0; r < rows; r++) /* exact: the fp16 values are them */
                for (int j = 0; j < nb; j++) {
                    size_t k = (size_t)r * nb + j;
                    const int8_t *e = t.qexp + (size_t)r * 2 * ((nb + 7) / 8) +
                                      2 * (j / 8);
                    CHECK(ref_f16(qd[k]) == ldexp(t.qsc[k], e[0]) &&
                              ref_f16(qd[(size_t)rows * nb + k]) ==
                                  ldexp(t.qmn[k], e[1]),
                          "%s expand %dx%d row %d block %d",
                          kisa_str(isas[ii]), rows, cols, r, j);
                }
        }
        struct kmat q41 = {.dtype = KDT_Q4_1, .rows = rows, .cols = cols,
                           .data = t.data, .qd = qd,
                           .qm = qd + (size_t)rows * nb};
        for (int ii = 0; ii < n_isa; ii++) {
            kisa_set(isas[ii]);
            for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                int n = ntok_v[k];
                CHECK(kmatmul(pool, &t.m, x, cols, y1, rows, n) == 0 &&
                          kmatmul(pool, &q41, x, cols, y0, rows, n) == 0,
                      "kmatmul");
                CHECK(memcmp(y0, y1, (size_t)n * rows * sizeof *y0) == 0,
                      "%s %dx%d, %d tokens: Q4_S != its Q4_1",
                      kisa_str(isas[ii]), rows, cols, n);
            }
        }
        kisa_set(kisa_detect());
        CHECK(kq4s_check(&t.m) == 0, "check of good exponents");
        t.qexp[rows - 1] = KQ4S_EMAX + 1;
        CHECK(kq4s_check(&t.m) == MTPD_K_EINVAL, "exponent over the range");
        t.qexp[rows - 1] = KQ4S_EMIN - 1;
        CHECK(kq4s_check(&t.m) == MTPD_K_EINVAL, "exponent under the range");
        t.m.qmn = NULL;
        CHECK(kmatmul(NULL, &t.m, x, cols, y0, rows, 1) == MTPD_K_EINVAL,
              "Q4_S without mins");
        free(qd);
        tmat_free(&t);
    }
    kpool_free(pool);
    free(x);
    free(y0);
    free(y1);
    return TEST_PASS;
}

/* Q8_0 / Q4_1 with several tokens: the AMX kernel gives the vector
 * kernel's bits (row counts with and without a remainder below 16, a
 * partial last group of four blocks, token counts across the 16-token
 * tiles). Skips where the CPU or OS has no AMX-INT8. */
static enum test_return test_matmul_q_amx(void)
{
    if (!kisa_amx_int8()) {
        CHECK(kisa_set_amx_int8(1) == MTPD_K_EINVAL ||
              kisa_active() != KISA_AVX512,
              "AMX unusable but kisa_set_amx_int8(1) accepted");
        return TEST_SKIP;
    }
    static const struct {
        int rows, cols;
    } shapes[] = {{45, 2112}, {70, 2080}, {32, 96}, {16, 4128}};
    static const int ntok_v[] = {2, 3, 8, 16, 17, 33};
    static const enum kdtype dts[] = {KDT_Q8_0, KDT_Q4_1, KDT_Q4_S};
    struct kpool *pool = kpool_new(2);
    float *x = malloc((size_t)33 * 4128 * sizeof *x);
    float *y0 = malloc((size_t)33 * 70 * sizeof *y0);
    float *y1 = malloc((size_t)33 * 70 * sizeof *y1);
    CHECK(pool && x && y0 && y1, "alloc");
    for (size_t i = 0; i < (size_t)33 * 4128; i++)
        x[i] = rnd_f();
    enum test_return ret = TEST_PASS;
    for (int d = 0; d < 3 && ret == TEST_PASS; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            struct tmat t;
            int rows = shapes[s].rows, cols = shapes[s].cols;
            CHECK(tmat_new(&t, dts[d], rows, cols, 0) == 0, "alloc");
            for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                int n = ntok_v[k];
                int rc = kmatmul(pool, &t.m, x, cols, y1, rows, n);
                kisa_set_amx_int8(0);
                rc |= kmatmul(pool, &t.m, x, cols, y0, rows, n);
                kisa_set_amx_int8(1);
                if (rc != 0 ||
                    memcmp(y0, y1, (size_t)n * rows * sizeof *y0) != 0) {
                    fprintf(stderr, "  %s %dx%d n_tok %d: AMX != vector "
                            "(rc %d)\n", kdtype_str(dts[d]), rows, cols, n, rc);
                    ret = TEST_FAIL;
                    break;
                }
            }
            tmat_free(&t);
        }
    kpool_free(pool);
    free(x);
    free(y0);
    free(y1);
    return ret;
}

/* Bigger than one L2 tile (matmul.c tiles rows when n_tok > 4); x wider
 * than one L1 chunk. */
static enum test_return test_matmul_tiled(void)
{
    struct kpool *pools[2] = {kpool_new(1), kpool_new(2)};
    enum test_return ret = TEST_FAIL;
    if (pools[0] && pools[1]) {
        ret = matmul_case(KDT_F32, 301, 1100, 0, 11, pools, 2);
        if (ret == TEST_PASS) /* BF16 column chunks with a masked tail */
            ret = matmul_case(KDT_BF16, 70, 2100, 0, 9, pools, 2);
        if (ret == TEST_PASS)
            ret = matmul_case(KDT_F8_E4M3, 263, 2100, 128, 6, pools, 2);
    }
    kpool_free(pools[0]);
    kpool_free(pools[1]);
    return ret;
}

/* BF16 shapes the AMX kernel takes (cols % 32 == 0, >= 16 rows): row
 * counts with a short last group of 16 and of 64, token counts around the
 * 16-token tiles; every path, so also the AVX-512 kernel on them. */
static enum test_return test_matmul_amx(void)
{
    static const int cols_v[] = {32, 64, 352, 2112};
    static const int rows_v[] = {16, 17, 37, 70, 130};
    static const int ntok_v[] = {1, 2, 5, 15, 16, 17, 33};
    struct kpool *pools[3];
    for (int i = 0; i < 3; i++)
        if ((pools[i] = kpool_new(i + 1)) == NULL)
            return TEST_FAIL;
    printf("  AMX: %s\n", kisa_has_amx() ? "yes" : "no (AVX-512 only)");
    enum test_return ret = TEST_PASS;
    for (size_t c = 0; c < sizeof cols_v / sizeof *cols_v; c++)
        for (size_t r = 0; r < sizeof rows_v / sizeof *rows_v; r++)
            for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                if (cols_v[c] > 1000 && ntok_v[k] > 16)
                    continue; /* the reference is slow */
                ret = matmul_case(KDT_BF16, rows_v[r], cols_v[c], 0,
                                  ntok_v[k], pools, 3);
                if (ret != TEST_PASS)
                    goto done;
            }
done:
    for (int i = 0; i < 3; i++)
        kpool_free(pools[i]);
    return ret;
}

/*
 * BF16 weights at every kind of misalignment (safetensors data is only
 * element-aligned; the AMX kernel shifts its tiles to whole lines and
 * reads around the matrix), with NaN around it: results against the
 * reference, and each x row alone vs inside batches of 2..20 (memcmp).
 */
static enum test_return test_matmul_amx_align(void)
{
    static const int offs[] = {2, 8, 14, 32, 62};
    static const int shapes[][2] = {{37, 96}, {70, 352}, {16, 32}};
    static const int ntok_v[] = {1, 3, 9, 17};
    struct kpool *pools[2] = {kpool_new(1), kpool_new(3)};
    enum test_return ret = pools[0] && pools[1] ? TEST_PASS : TEST_FAIL;
    for (size_t si = 0; si < 3 && ret == TEST_PASS; si++)
        for (size_t oi = 0; oi < 5 && ret == TEST_PASS; oi++) {
            int rows = shapes[si][0], cols = shapes[si][1], ld = cols + 1;
            size_t bytes = (size_t)rows * cols * 2, nbuf = bytes / 2 + 256;
            struct tmat t;
            uint16_t *buf = aligned_alloc(64, nbuf * 2);
            float *x = malloc((size_t)20 * ld * sizeof *x);
            float *y1 = malloc((size_t)20 * rows * sizeof *y1);
            float *y = malloc((size_t)20 * rows * sizeof *y);
            double *ref = malloc((size_t)17 * rows * sizeof *ref);
            double *bound = malloc((size_t)17 * rows * sizeof *bound);
            if (tmat_new(&t, KDT_BF16, rows, cols, 0) != 0 || !buf || !x ||
                !y1 || !y || !ref || !bound) {
                ret = TEST_FAIL;
                goto next;
            }
            for (size_t i = 0; i < nbuf; i++)
                buf[i] = 0x7fc0; /* NaN */
            t.m.data = (char *)buf + 128 + offs[oi];
            memcpy((void *)t.m.data, t.data, bytes);
            for (size_t i = 0; i < (size_t)20 * ld; i++)
                x[i] = rnd_f();
            for (size_t k = 0; k < 4 && ret == TEST_PASS; k++) {
                matmul_ref(&t, x, ld, ntok_v[k], ref, bound);
                ret = check_matmul(&t, x, ld, ntok_v[k], ref, bound, 0, rows,
                                   pools, 2);
            }
            struct mpath paths[KISA_COUNT + 1];
            int n_paths = matmul_paths(paths);
            for (int pi = 0; pi < n_paths && ret == TEST_PASS; pi++) {
                mpath_set(paths[pi]);
                for (int r = 0; r < 20; r++)
                    kmatmul(NULL, &t.m, x + (size_t)r * ld, ld,
                            y1 + (size_t)r * rows, rows, 1);
                for (int n = 2; n <= 20 && ret == TEST_PASS; n++) {
                    kmatmul(pools[n % 2], &t.m, x + (size_t)(20 - n) * ld, ld,
                            y, rows, n);
                    if (memcmp(y, y1 + (size_t)(20 - n) * rows,
                               (size_t)n * rows * sizeof *y) != 0) {
                        fprintf(stderr, "  %s BF16 %dx%d at +%d: rows alone "
                                "!= in a batch of %d\n", mpath_str(paths[pi]),
                                rows, cols, offs[oi], n);
                        ret = TEST_FAIL;
                    }
                }
            }
            mpath_reset();
        next:
            tmat_free(&t);
            free(buf);
            free(x);
            free(y1);
            free(y);
            free(ref);
            free(bound);
        }
    kpool_free(pools[0]);
    kpool_free(pools[1]);
    return ret;
}

static enum test_return test_matmul_args(void)
{
    float x[4] = {1, 2, 3, 4}, y[4] = {0};
    float w[4] = {1, 0, 0, 1};
    struct kmat m = {KDT_F32, 2, 2, w, NULL, 0, NULL, NULL, 0, 0, NULL, NULL, NULL};
    CHECK(kmatmul(NULL, &m, x, 2, y, 2, 2) == 0, "ok call");
    CHECK(y[0] == 1 && y[1] == 2 && y[2] == 3 && y[3] == 4, "identity");
    CHECK(kmatmul(NULL, NULL, x, 2, y, 2, 1) == MTPD_K_EINVAL, "null W");
    CHECK(kmatmul(NULL, &m, x, 1, y, 2, 2) == MTPD_K_EINVAL, "ldx < cols");
    CHECK(kmatmul(NULL, &m, x, 2, y, 1, 2) == MTPD_K_EINVAL, "ldy < rows");
    CHECK(kmatmul(NULL, &m, x, 2, y, 2, -1) == MTPD_K_EINVAL, "n_tok < 0");
    CHECK(kmatmul(NULL, &m, x, 2, y, 2, 0) == 0, "n_tok 0");
    CHECK(kmatmul_rows(NULL, &m, 1, 3, x, 2, y, 2, 1) == MTPD_K_EINVAL,
          "row1 > rows");
    CHECK(kmatmul_rows(NULL, &m, 2, 1, x, 2, y, 2, 1) == MTPD_K_EINVAL,
          "row0 > row1");
    struct kmat f8 = {KDT_F8_E4M3, 2, 2, w, NULL, 128, NULL, NULL, 0, 0, NULL, NULL, NULL};
    CHECK(kmatmul(NULL, &f8, x, 2, y, 2, 1) == MTPD_K_EINVAL, "f8 no scale");
    struct kmat bad = {KDT_COUNT, 2, 2, w, NULL, 0, NULL, NULL, 0, 0, NULL, NULL, NULL};
    CHECK(kmatmul(NULL, &bad, x, 2, y, 2, 1) == MTPD_K_EINVAL, "bad dtype");
    CHECK(kmat_row_f32(&m, 2, y) == MTPD_K_EINVAL, "row out of range");
    int8_t q[64] = {0};
    uint16_t d[2] = {0x3c00, 0x3c00};
    float x64[64] = {0};
    struct kmat q8 = {.dtype = KDT_Q8_0, .rows = 1, .cols = 64, .data = q,
                      .qd = d};
    CHECK(kmatmul(NULL, &q8, x64, 64, y, 1, 1) == 0, "q8 ok");
    q8.cols = 48;
    CHECK(kmatmul(NULL, &q8, x64, 64, y, 1, 1) == MTPD_K_EINVAL,
          "q8 cols not whole blocks");
    q8.cols = 64;
    q8.qd = NULL;
    CHECK(kmatmul(NULL, &q8, x64, 64, y, 1, 1) == MTPD_K_EINVAL, "q8 no scale");
    struct kmat q4 = {.dtype = KDT_Q4_1, .rows = 1, .cols = 64, .data = q,
                      .qd = d};
    CHECK(kmatmul(NULL, &q4, x64, 64, y, 1, 1) == MTPD_K_EINVAL, "q4 no min");
    CHECK(kmat_row_f32(&q4, 0, y) == MTPD_K_EINVAL, "q4 row no min");
    return TEST_PASS;
}

static enum test_return test_mat_row_f32(void)
{
    for (int dt = 0; dt < KDT_COUNT; dt++) {
        struct tmat t;
        float out[320];
        if (dt == KDT_Q4_X8) /* made from Q4_S / Q4_1: test_matmul_q4x8 */
            continue;
        int cols = is_q(dt) ? 320 : 300;
        if (tmat_new(&t, (enum kdtype)dt, 140, cols, 128) != 0)
            return TEST_FAIL;
        for (int r = 0; r < 140; r += 13) {
            CHECK(kmat_row_f32(&t.m, r, out) == 0, "rc");
            for (int c = 0; c < cols; c++)
                CHECK(out[c] == (float)tmat_at(&t, r, c), "%s [%d][%d]",
                      kdtype_str((enum kdtype)dt), r, c);
        }
        tmat_free(&t);
    }
    return TEST_PASS;
}

/* ---- kmatmul_pv ---------------------------------------------------- */

/* One shape: y = x V (first n_cols columns) for every ISA, against a
 * double reference with the matmul bound; columns past n_cols and the ldy
 * padding must stay untouched. */
static enum test_return pv_case(enum kdtype dt, int rows, int cols,
                                int n_cols, int n_tok)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    struct tmat t;
    int ldx = rows + 3, ldy = cols + 2;
    float *x = malloc(((size_t)n_tok * ldx + 1) * sizeof *x);
    float *y = malloc((size_t)n_tok * ldy * sizeof *y);
    enum test_return ret = TEST_FAIL;
    if (tmat_new(&t, dt, rows > 0 ? rows : 1, cols, 0) != 0 || !x || !y)
        goto out;
    t.m.rows = rows;
    for (size_t i = 0; i < (size_t)n_tok * ldx; i++)
        x[i] = rnd_f();
    ret = TEST_PASS;
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        kisa_set(isas[ii]);
        for (size_t i = 0; i < (size_t)n_tok * ldy; i++)
            y[i] = SENTINEL;
        if (kmatmul_pv(&t.m, n_cols, x, ldx, y, ldy, n_tok) != 0) {
            fprintf(stderr, "  kmatmul_pv failed\n");
            ret = TEST_FAIL;
        }
        for (int k = 0; k < n_tok && ret == TEST_PASS; k++)
            for (int j = 0; j < ldy; j++) {
                double s = 0, a = 0;
                for (int i = 0; i < rows && j < n_cols; i++) {
                    double term = x[(size_t)k * ldx + i] * tmat_at(&t, i, j);
                    s += term;
                    a += fabs(term);
                }
                double want = j < n_cols ? s : SENTINEL;
                double tol = j < n_cols ? 1e-5 * a + 1e-30 : 0;
                float got = y[(size_t)k * ldy + j];
                if (!(fabs(got - want) <= tol)) {
                    fprintf(stderr, "  %s %s pv %dx%d cols %d n_tok %d: "
                            "y[%d][%d] = %.9g, want %.9g (tol %.3g)\n",
                            kisa_str(isas[ii]), kdtype_str(dt), rows, cols,
                            n_cols, n_tok, k, j, got, want, tol);
                    ret = TEST_FAIL;
                    break;
                }
            }
    }
    kisa_set(kisa_detect());
out:
    tmat_free(&t);
    free(x);
    free(y);
    return ret;
}

static enum test_return test_matmul_pv(void)
{
    static const enum kdtype dts[] = {KDT_F32, KDT_BF16, KDT_F16};
    static const int rows_v[] = {0, 1, 7, 64, 301, 2000};
    /* column counts: every tile split of 1..9+ vectors, tails, n_cols <
     * cols (the attention's c_kv part of a cache row) */
    static const int cols_v[] = {1, 15, 16, 17, 40, 64, 100, 128, 144, 200,
                                 300};
    static const int ntok_v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 19};
    for (size_t d = 0; d < 3; d++)
        for (size_t r = 0; r < sizeof rows_v / sizeof *rows_v; r++)
            for (size_t c = 0; c < sizeof cols_v / sizeof *cols_v; c++)
                for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                    int cols = cols_v[c];
                    if (rows_v[r] == 2000 && (ntok_v[k] % 4 || cols < 64))
                        continue; /* long sums: a few shapes are enough */
                    if (pv_case(dts[d], rows_v[r], cols, cols, ntok_v[k]) !=
                            TEST_PASS ||
                        (cols > 1 &&
                         pv_case(dts[d], rows_v[r], cols,
                                 cols - 1 - (int)(k * 7 % (size_t)(cols - 1)),
                                 ntok_v[k]) != TEST_PASS))
                        return TEST_FAIL;
                }
    /* Q8_0 (kv_b of q8 / q4 checkpoints): whole blocks; tiles, tails
     * and n_cols < cols as above */
    static const int q8_cols[] = {32, 64, 160, 512};
    static const int q8_rows[] = {0, 1, 7, 128, 301};
    for (size_t r = 0; r < sizeof q8_rows / sizeof *q8_rows; r++)
        for (size_t c = 0; c < sizeof q8_cols / sizeof *q8_cols; c++)
            for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v; k++) {
                int cols = q8_cols[c];
                if (pv_case(KDT_Q8_0, q8_rows[r], cols, cols, ntok_v[k]) !=
                        TEST_PASS ||
                    pv_case(KDT_Q8_0, q8_rows[r], cols,
                            cols - 1 - (int)(k * 7 % (size_t)(cols - 1)),
                            ntok_v[k]) != TEST_PASS)
                    return TEST_FAIL;
            }
    float x[2] = {1, 2}, y[2];
    struct kmat f8 = {KDT_F8_E4M3, 2, 1, x, NULL, 128, NULL, NULL, 0, 0, NULL, NULL, NULL};
    CHECK(kmatmul_pv(&f8, 1, x, 2, y, 1, 1) == MTPD_K_EINVAL,
          "f8 without scales accepted"); /* with them: matmul_pv_f8 */
    struct kmat v = {KDT_F32, 2, 1, x, NULL, 0, NULL, NULL, 0, 0, NULL, NULL, NULL};
    CHECK(kmatmul_pv(&v, 1, x, 1, y, 1, 2) == MTPD_K_EINVAL, "ldx < rows");
    CHECK(kmatmul_pv(&v, 2, x, 2, y, 1, 1) == MTPD_K_EINVAL, "n_cols > cols");
    CHECK(kmatmul_pv(&v, 0, x, 2, y, 1, 1) == MTPD_K_EINVAL, "n_cols 0");
    CHECK(kmatmul_pv(&v, 1, x, 2, y, 1, 1) == 0 && y[0] == 5.0f, "1x2 . 2x1");
    return TEST_PASS;
}

/* ---- batch invariance ---------------------------------------------- */

#define INV_POOL 40 /* distinct x rows; batches of 2..INV_POOL rows */

/* x rows [n, ldx] for a batch of n: pool rows (s + i) % INV_POOL, so each
 * pool row sits at a different place (and with other neighbours) in each
 * batch. */
static void inv_batch(const float *xs, int ld, int n, int s, float *x)
{
    for (int i = 0; i < n; i++)
        memcpy(x + (size_t)i * ld, xs + (size_t)((s + i) % INV_POOL) * ld,
               (size_t)ld * sizeof *x);
}

/*
 * kmatmul_rows(row0, row1) of every pool row alone (calling thread) vs the
 * same row inside batches of n = 2..INV_POOL rows at shifting places, on
 * pools of 1..3 threads: the bits must match (memcmp). Then each row of
 * [row0, row1) against the full-range call.
 */
static enum test_return inv_matmul_case(enum kdtype dt, int rows, int cols,
                                        int blk, struct kpool **pools,
                                        int n_pools)
{
    struct mpath paths[KISA_COUNT + 1];
    int n_isa = matmul_paths(paths);
    struct tmat t;
    int ld = cols + 3; /* unaligned rows: the kernels' staging copy too */
    float *xs = malloc((size_t)INV_POOL * ld * sizeof *xs);
    float *x = malloc((size_t)INV_POOL * ld * sizeof *x);
    float *y1 = malloc((size_t)INV_POOL * rows * sizeof *y1);
    float *y = malloc((size_t)INV_POOL * rows * sizeof *y);
    enum test_return ret = TEST_FAIL;
    if (tmat_new(&t, dt, rows, cols, blk) != 0 || !xs || !x || !y1 || !y)
        goto out;
    for (size_t i = 0; i < (size_t)INV_POOL * ld; i++)
        xs[i] = rnd_f();
    ret = TEST_PASS;
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        mpath_set(paths[ii]);
        int rc = 0;
        for (int r = 0; r < INV_POOL; r++) /* each row alone */
            rc |= kmatmul(NULL, &t.m, xs + (size_t)r * ld, ld,
                          y1 + (size_t)r * rows, rows, 1);
        for (int pi = 0; pi < n_pools && ret == TEST_PASS && rc == 0; pi++)
            for (int n = 2; n <= INV_POOL && ret == TEST_PASS; n++) {
                int s = (n * 13 + pi * 7) % INV_POOL;
                inv_batch(xs, ld, n, s, x);
                rc |= kmatmul(pools[pi], &t.m, x, ld, y, rows, n);
                for (int i = 0; i < n && rc == 0; i++) {
                    int r = (s + i) % INV_POOL;
                    if (memcmp(y + (size_t)i * rows, y1 + (size_t)r * rows,
                               (size_t)rows * sizeof *y) != 0) {
                        fprintf(stderr, "  %s %s %dx%d blk %d: row %d alone "
                                "!= row %d of %d (pool %d)\n",
                                mpath_str(paths[ii]), kdtype_str(dt), rows,
                                cols, blk, r, i, n, kpool_size(pools[pi]));
                        ret = TEST_FAIL;
                        break;
                    }
                }
            }
        /* sub-ranges of rows (as the MoE's work items call it) */
        for (int r0 = 0; r0 < rows && ret == TEST_PASS && rc == 0; r0 += 5) {
            int r1 = r0 + 1 + (r0 * 7) % (rows - r0);
            inv_batch(xs, ld, 9, r0, x);
            rc |= kmatmul_rows(pools[r0 % n_pools], &t.m, r0, r1, x, ld, y,
                               rows, 9);
            for (int i = 0; i < 9 && rc == 0; i++) {
                const float *want = y1 + (size_t)((r0 + i) % INV_POOL) * rows;
                if (memcmp(y + (size_t)i * rows + r0, want + r0,
                           (size_t)(r1 - r0) * sizeof *y) != 0) {
                    fprintf(stderr, "  %s %s %dx%d: rows [%d,%d) differ from "
                            "the full call\n", mpath_str(paths[ii]),
                            kdtype_str(dt), rows, cols, r0, r1);
                    ret = TEST_FAIL;
                    break;
                }
            }
        }
        if (rc != 0) {
            fprintf(stderr, "  kmatmul failed\n");
            ret = TEST_FAIL;
        }
    }
    mpath_reset();
out:
    tmat_free(&t);
    free(xs);
    free(x);
    free(y1);
    free(y);
    return ret;
}

/* Every dtype; widths with one summation segment and with several (and,
 * for many tokens, several L1 chunks); BF16 below and above the packed
 * kernel's width; row counts that leave remainders after every register
 * blocking and split unevenly across threads and L2 tiles. */
static enum test_return test_matmul_invariant(void)
{
    struct kpool *pools[3];
    for (int i = 0; i < 3; i++)
        if ((pools[i] = kpool_new(i + 1)) == NULL)
            return TEST_FAIL;
    static const struct {
        enum kdtype dt;
        int rows, cols, blk;
    } cases[] = {
        {KDT_F32, 37, 300, 0},       {KDT_F32, 45, 2100, 0},
        {KDT_BF16, 37, 17, 0},       {KDT_BF16, 37, 300, 0},
        {KDT_BF16, 45, 2100, 0},     {KDT_F16, 37, 300, 0},
        {KDT_BF16, 16, 32, 0},       {KDT_BF16, 37, 320, 0}, /* AMX */
        {KDT_BF16, 70, 2112, 0},
        {KDT_F16, 45, 2100, 0},      {KDT_F8_E4M3, 37, 300, 128},
        {KDT_F8_E4M3, 45, 2100, 128}, {KDT_F8_E4M3, 30, 1111, 7},
        {KDT_Q8_0, 37, 320, 0},      {KDT_Q8_0, 45, 2112, 0},
        {KDT_Q4_1, 37, 320, 0},      {KDT_Q4_1, 45, 2112, 0},
        {KDT_Q8_0, 37, 160, 0},      {KDT_Q4_1, 37, 160, 0}, /* rows in lanes */
        {KDT_Q4_S, 37, 320, 0},      {KDT_Q4_S, 45, 2112, 0},
        {KDT_Q4_S, 37, 160, 0},
        /* one token on rows of 5..16 blocks: a kernel of its own (AVX2
         * short2) */
        {KDT_Q4_1, 37, 192, 0},      {KDT_Q8_0, 37, 384, 0},
        {KDT_Q4_S, 45, 512, 0},      {KDT_Q8_0, 21, 256, 0},
        {KDT_Q8_0, 19, 128, 0},      {KDT_Q4_1, 19, 128, 0},
    };
    enum test_return ret = TEST_PASS;
    /* both ways of streaming the weights for few tokens (kisa_row_stream:
     * the default differs between AMD and Intel), each against the rows
     * side by side of longer batches */
    for (int rs = 0; rs < 2 && ret == TEST_PASS; rs++) {
        kisa_set_row_stream(rs);
        for (size_t i = 0; i < sizeof cases / sizeof *cases &&
                           ret == TEST_PASS; i++)
            ret = inv_matmul_case(cases[i].dt, cases[i].rows, cases[i].cols,
                                  cases[i].blk, pools, 3);
        if (ret != TEST_PASS)
            fprintf(stderr, "  (row stream %d)\n", rs);
    }
    kisa_set_row_stream(-1);
    if (kisa_amx_int8()) { /* Q8_0 / Q4_1 again on the vector kernels alone */
        kisa_set_amx_int8(0);
        for (size_t i = 0; i < sizeof cases / sizeof *cases &&
                           ret == TEST_PASS; i++)
            if (is_q(cases[i].dt))
                ret = inv_matmul_case(cases[i].dt, cases[i].rows,
                                      cases[i].cols, cases[i].blk, pools, 3);
        kisa_set_amx_int8(1);
    }
    for (int i = 0; i < 3; i++)
        kpool_free(pools[i]);
    return ret;
}

/* BF16 with kmat.act_bf16: x rounded to bf16 on CPUs with AVX512-BF16
 * (matmul_bf16dp.c), exact elsewhere; against both references, and batch
 * invariance as test_matmul_invariant checks it. */
static enum test_return test_matmul_bf16_act(void)
{
    static const int cols_v[] = {1, 15, 17, 32, 129, 300, 1100, 2100};
    static const int rows_v[] = {1, 3, 17, 70};
    static const int ntok_v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 33};
    struct kpool *pools[3];
    for (int i = 0; i < 3; i++)
        if ((pools[i] = kpool_new(i + 1)) == NULL)
            return TEST_FAIL;
    g_act_bf16 = 1;
    enum test_return ret = TEST_PASS;
    /* the flag takes effect exactly where the instruction exists */
    struct kmat w = {.dtype = KDT_BF16, .rows = 1, .cols = 1, .data = "",
                     .act_bf16 = 1};
    int want = kisa_active() == KISA_AVX512 && kisa_has_avx512bf16();
    if (kmat_act_bf16(&w) != want) {
        fprintf(stderr, "  kmat_act_bf16 %d, want %d\n", kmat_act_bf16(&w),
                want);
        ret = TEST_FAIL;
    }
    w.act_bf16 = 0;
    if (kmat_act_bf16(&w) != 0)
        ret = TEST_FAIL;
    for (size_t c = 0; c < sizeof cols_v / sizeof *cols_v && ret == TEST_PASS; c++)
        for (size_t r = 0; r < sizeof rows_v / sizeof *rows_v && ret == TEST_PASS; r++)
            for (size_t k = 0; k < sizeof ntok_v / sizeof *ntok_v &&
                               ret == TEST_PASS; k++)
                ret = matmul_case(KDT_BF16, rows_v[r], cols_v[c], 0,
                                  ntok_v[k], pools, 3);
    static const int inv[][2] = {{37, 17}, {37, 300}, {45, 2100}, {70, 2112}};
    for (size_t i = 0; i < sizeof inv / sizeof *inv && ret == TEST_PASS; i++)
        for (int rs = 0; rs < 2 && ret == TEST_PASS; rs++) {
            kisa_set_row_stream(rs);
            ret = inv_matmul_case(KDT_BF16, inv[i][0], inv[i][1], 0, pools, 3);
        }
    kisa_set_row_stream(-1);
    g_act_bf16 = 0;
    /* where it does not take effect, the flag changes no bit */
    struct tmat t = {0};
    int rows = 37, cols = 2100, n = 9;
    float *x = malloc((size_t)n * cols * sizeof *x);
    float *y0 = malloc((size_t)n * rows * sizeof *y0);
    float *y1 = malloc((size_t)n * rows * sizeof *y1);
    if (ret == TEST_PASS && (tmat_new(&t, KDT_BF16, rows, cols, 0) != 0 ||
                             !x || !y0 || !y1))
        ret = TEST_FAIL;
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    for (size_t i = 0; ret == TEST_PASS && i < (size_t)n * cols; i++)
        x[i] = rnd_f();
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        kisa_set(isas[ii]);
        t.m.act_bf16 = 1;
        if (kmat_act_bf16(&t.m))
            continue;
        int rc = kmatmul(pools[1], &t.m, x, cols, y1, rows, n);
        t.m.act_bf16 = 0;
        rc |= kmatmul(pools[1], &t.m, x, cols, y0, rows, n);
        if (rc || memcmp(y0, y1, (size_t)n * rows * sizeof *y0) != 0) {
            fprintf(stderr, "  %s: act_bf16 without effect changed y\n",
                    kisa_str(isas[ii]));
            ret = TEST_FAIL;
        }
    }
    kisa_set(kisa_detect());
    tmat_free(&t);
    free(x);
    free(y0);
    free(y1);
    for (int i = 0; i < 3; i++)
        kpool_free(pools[i]);
    if (ret == TEST_PASS && !want)
        fprintf(stderr, "  (no AVX512-BF16 here: checked the exact path)\n");
    return ret;
}

/* kmatmul_pv: a token alone vs inside batches of 2..INV_POOL tokens. */
static enum test_return inv_pv_case(enum kdtype dt, int rows, int cols,
                                    int n_cols, int blk)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    struct tmat t;
    int ld = rows + 1;
    float *xs = malloc((size_t)INV_POOL * ld * sizeof *xs);
    float *x = malloc((size_t)INV_POOL * ld * sizeof *x);
    float *y1 = malloc((size_t)INV_POOL * n_cols * sizeof *y1);
    float *y = malloc((size_t)INV_POOL * n_cols * sizeof *y);
    enum test_return ret = TEST_FAIL;
    if (tmat_new(&t, dt, rows, cols, blk) != 0 || !xs || !x || !y1 || !y)
        goto out;
    for (size_t i = 0; i < (size_t)INV_POOL * ld; i++)
        xs[i] = rnd_f();
    ret = TEST_PASS;
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        kisa_set(isas[ii]);
        int rc = 0;
        for (int r = 0; r < INV_POOL; r++)
            rc |= kmatmul_pv(&t.m, n_cols, xs + (size_t)r * ld, ld,
                             y1 + (size_t)r * n_cols, n_cols, 1);
        for (int n = 2; n <= INV_POOL && ret == TEST_PASS && rc == 0; n++) {
            int s = (n * 13) % INV_POOL;
            inv_batch(xs, ld, n, s, x);
            rc |= kmatmul_pv(&t.m, n_cols, x, ld, y, n_cols, n);
            for (int i = 0; i < n && rc == 0; i++)
                if (memcmp(y + (size_t)i * n_cols,
                           y1 + (size_t)((s + i) % INV_POOL) * n_cols,
                           (size_t)n_cols * sizeof *y) != 0) {
                    fprintf(stderr, "  %s %s pv %dx%d cols %d: token %d of "
                            "%d != alone\n", kisa_str(isas[ii]),
                            kdtype_str(dt), rows, cols, n_cols, i, n);
                    ret = TEST_FAIL;
                    break;
                }
        }
        if (rc != 0) {
            fprintf(stderr, "  kmatmul_pv failed\n");
            ret = TEST_FAIL;
        }
    }
    kisa_set(kisa_detect());
out:
    tmat_free(&t);
    free(xs);
    free(x);
    free(y1);
    free(y);
    return ret;
}

static enum test_return test_matmul_pv_invariant(void)
{
    static const enum kdtype dts[] = {KDT_F32, KDT_BF16, KDT_F16,
                                      KDT_F8_E4M3};
    for (size_t d = 0; d < 4; d++) {
        int blk = dts[d] == KDT_F8_E4M3 ? 128 : 0;
        if (inv_pv_case(dts[d], 301, 144, 144, blk) != TEST_PASS ||
            inv_pv_case(dts[d], 77, 200, 131, blk) != TEST_PASS)
            return TEST_FAIL;
    }
    if (inv_pv_case(KDT_Q8_0, 128, 512, 512, 0) != TEST_PASS ||
        inv_pv_case(KDT_Q8_0, 77, 224, 131, 0) != TEST_PASS)
        return TEST_FAIL;
    return inv_pv_case(KDT_F8_E4M3, 40, 100, 97, 16);
}

/* kmatmul_pv on F8 rows (MLA absorption reads kv_b in place) gives the
 * bits of the same call on their fp32 values (kmat_row_f32), which is
 * what absorb.c used to copy: every ISA, tile widths, tails, tokens. F8
 * with a scale block that is not a multiple of 16 columns is refused. */
static enum test_return test_matmul_pv_f8(void)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    static const struct {
        int rows, cols, n_cols, blk;
    } cases[] = {{256, 512, 512, 128}, {128, 200, 131, 128}, {48, 90, 77, 16},
                 {300, 144, 144, 32}};
    float *x = malloc((size_t)9 * 301 * sizeof *x);
    float *y0 = malloc((size_t)9 * 512 * sizeof *y0);
    float *y1 = malloc((size_t)9 * 512 * sizeof *y1);
    float *dense = malloc((size_t)300 * 512 * sizeof *dense);
    CHECK(x && y0 && y1 && dense, "alloc");
    for (int i = 0; i < 9 * 301; i++)
        x[i] = rnd_f();
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        struct tmat t;
        int rows = cases[c].rows, cols = cases[c].cols, nc = cases[c].n_cols;
        CHECK(tmat_new(&t, KDT_F8_E4M3, rows, cols, cases[c].blk) == 0,
              "alloc");
        for (int r = 0; r < rows; r++)
            CHECK(kmat_row_f32(&t.m, r, dense + (size_t)r * cols) == 0,
                  "row");
        struct kmat d = {.dtype = KDT_F32, .rows = rows, .cols = cols,
                         .data = dense};
        for (int ii = 0; ii < n_isa; ii++) {
            kisa_set(isas[ii]);
            for (int n = 1; n <= 9; n += 4) {
                CHECK(kmatmul_pv(&t.m, nc, x, 301, y1, nc, n) == 0 &&
                      kmatmul_pv(&d, nc, x, 301, y0, nc, n) == 0,
                      "kmatmul_pv");
                CHECK(memcmp(y0, y1, (size_t)n * nc * sizeof *y0) == 0,
                      "%s F8 %dx%d blk %d, %d tokens: != its fp32 values",
                      kisa_str(isas[ii]), rows, cols, cases[c].blk, n);
            }
        }
        kisa_set(kisa_detect());
        t.m.blk = 8;
        CHECK(kmatmul_pv(&t.m, nc, x, 301, y1, nc, 1) == MTPD_K_EINVAL,
              "F8 blk 8 accepted");
        tmat_free(&t);
    }
    free(x);
    free(y0);
    free(y1);
    free(dense);
    return TEST_PASS;
}

/* ---- small ops ----------------------------------------------------- */

static enum test_return test_dot_axpy(void)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    float a[1000], b[1000], y[1000], y0[1000];
    for (int i = 0; i < 1000; i++)
        a[i] = rnd_f(), b[i] = rnd_f(), y0[i] = rnd_f();
    for (int ii = 0; ii < n_isa; ii++) {
        kisa_set(isas[ii]);
        for (int n = 0; n <= 1000; n = n < 70 ? n + 1 : n * 3 / 2 + 1) {
            if (n > 1000)
                n = 1000;
            double s = 0, abs_s = 0;
            for (int i = 0; i < n; i++)
                s += (double)a[i] * b[i], abs_s += fabs((double)a[i] * b[i]);
            float got = kdot(a, b, n);
            CHECK(fabs(got - s) <= 1e-5 * abs_s + 1e-30, "%s kdot n=%d",
                  kisa_str(isas[ii]), n);
            memcpy(y, y0, sizeof y);
            kaxpy(y, 0.37f, a, n);
            for (int i = 0; i < 1000; i++) {
                double want = i < n ? y0[i] + 0.37 * a[i] : y0[i];
                CHECK(fabs(y[i] - want) <= 1e-6 * (fabs(y0[i]) + 1),
                      "%s kaxpy n=%d i=%d", kisa_str(isas[ii]), n, i);
            }
            if (n == 1000)
                break;
        }
    }
    kisa_set(kisa_detect());
    return TEST_PASS;
}

/* rmsnorm of the first n elements for one ISA, F32/BF16/F16 weights, in
 * place and out of place. */
static enum test_return rmsnorm_n(enum kisa isa, int n)
{
    enum { N = 1031 };
    float x[N], out[N], wf[N];
    uint16_t wb[N], wh[N];
    for (int i = 0; i < n; i++) {
        x[i] = rnd_f() * 3;
        wf[i] = rnd_f();
        wb[i] = kf32_to_bf16(wf[i]);
        wh[i] = (uint16_t)(0x3800 | (rnd_u32() & 0x83ff)); /* |w| in [.5,1) */
    }
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + 1e-6);
    for (int dt = 0; dt < 3; dt++) {
        const void *w = dt == 0 ? (const void *)wf : dt == 1 ? (const void *)wb
                                                             : (const void *)wh;
        memcpy(out, x, sizeof(float) * n);
        if (dt == 1)
            krmsnorm(out, x, w, (enum kdtype)dt, n, 1e-6f);
        else
            krmsnorm(out, out, w, (enum kdtype)dt, n, 1e-6f); /* in place */
        for (int i = 0; i < n; i++) {
            double wv = dt == 0 ? wf[i] : dt == 1 ? ref_bf16(wb[i])
                                                  : ref_f16(wh[i]);
            double want = x[i] * inv * wv;
            CHECK(fabs(out[i] - want) <= 1e-6 * fabs(want) + 1e-30,
                  "%s n %d dt %d i %d: %g vs %g", kisa_str(isa), n, dt, i,
                  out[i], want);
        }
    }
    return TEST_PASS;
}

static enum test_return test_rmsnorm(void)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    enum test_return ret = TEST_PASS;
    for (int ii = 0; ii < n_isa && ret == TEST_PASS; ii++) {
        kisa_set(isas[ii]);
        for (int n = 1; n <= 1031 && ret == TEST_PASS;
             n = n < 40 ? n + 1 : n == 40 ? 320 : n == 320 ? 1031 : 1032)
            ret = rmsnorm_n(isas[ii], n);
    }
    kisa_set(kisa_detect());
    return ret;
}

static enum test_return test_rope(void)
{
    enum { D = 64 };
    float x[D], x0[D], inv_freq[D / 2];
    for (int i = 0; i < D / 2; i++)
        inv_freq[i] = (float)pow(10000.0, -2.0 * i / D);
    for (int pos = 0; pos < 5000; pos += 777) {
        for (int i = 0; i < D; i++)
            x0[i] = x[i] = rnd_f();
        krope(x, D, pos, inv_freq, 1.25f);
        float y[D], cs[D];
        memcpy(y, x0, sizeof y);
        krope_cs(cs, D, pos, inv_freq, 1.25f);
        krope_apply(y, D, cs);
        CHECK(memcmp(x, y, sizeof y) == 0, "krope_cs/apply != krope, pos %d",
              pos);
        for (int i = 0; i < D / 2; i++) {
            double ang = (float)pos * inv_freq[i]; /* fp32 angle, like torch */
            double c = cos(ang) * 1.25, s = sin(ang) * 1.25;
            double a = x0[2 * i] * c - x0[2 * i + 1] * s;
            double b = x0[2 * i] * s + x0[2 * i + 1] * c;
            CHECK(fabs(x[2 * i] - a) <= 1e-6 && fabs(x[2 * i + 1] - b) <= 1e-6,
                  "pos %d pair %d", pos, i);
        }
    }
    return TEST_PASS;
}

/* Softmax and SwiGLU for one ISA and length n (x in +-20, g in +-8, a few
 * large |g| for exp's overflow and underflow). */
static enum test_return softmax_swiglu_n(enum kisa isa, int n)
{
    enum { N = 513 };
    float x[N], x0[N], g[N], u[N], out[N];
    for (int i = 0; i < n; i++)
        x0[i] = x[i] = rnd_f() * 20, g[i] = rnd_f() * 8, u[i] = rnd_f();
    if (n > 3)
        g[0] = -200.0f, g[1] = 200.0f, g[2] = -90.0f, x0[3] = x[3] = -1e30f;
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        mx = x0[i] > mx ? x0[i] : mx;
    for (int i = 0; i < n; i++)
        sum += exp(x0[i] - mx);
    float got_mx = ksoftmax(x, n);
    CHECK(got_mx == (float)mx, "%s n %d: max %g vs %g", kisa_str(isa), n,
          got_mx, mx);
    for (int i = 0; i < n; i++) {
        double want = exp(x0[i] - mx) / sum;
        CHECK(fabs(x[i] - want) <= 4e-6 * want + 1e-30,
              "%s n %d: softmax %d: %g vs %g", kisa_str(isa), n, i, x[i], want);
    }
    kswiglu(out, g, u, n);
    for (int i = 0; i < n; i++) {
        double want = g[i] / (1 + exp(-(double)g[i])) * u[i];
        CHECK(fabs(out[i] - want) <= 1e-6 * fabs(want) + 1e-30,
              "%s n %d: swiglu %d: %g vs %g", kisa_str(isa), n, i, out[i], want);
    }
    return TEST_PASS;
}

static enum test_return test_softmax_swiglu(void)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        kisa_set(isas[ii]);
        for (int n = 1; n <= 513; n = n < 40 ? n + 1 : n * 2 + 1)
            if (softmax_swiglu_n(isas[ii], n) != TEST_PASS) {
                kisa_set(kisa_detect());
                return TEST_FAIL;
            }
        float one = 5.0f;
        CHECK(ksoftmax(&one, 1) == 5.0f && one == 1.0f, "n=1");
    }
    kisa_set(kisa_detect());
    return TEST_PASS;
}

/* Sampling helpers for one ISA and length n: softmax(scale * x) with NaN
 * and -inf entries at exactly 0, and argmax (lowest index, NaN ignored). */
static enum test_return probs_argmax_n(enum kisa isa, int n)
{
    enum { N = 1030 };
    float x[N] = {0}, out[N];
    for (int i = 0; i < n; i++)
        x[i] = rnd_f() * 30;
    if (n > 5)
        x[1] = NAN, x[2] = -INFINITY, x[4] = -500.0f;
    const float scale = 1.0f / 0.7f;
    double mx = -INFINITY, sum = 0;
    int amax = -1;
    for (int i = 0; i < n; i++)
        if (x[i] == x[i] && (amax < 0 || x[i] > x[amax]))
            amax = i, mx = x[i];
    /* the exponent rounded to float as the kernels form it (a rounding
     * of a -50 exponent alone is a 3e-6 relative change of its exp) */
#define ARG(i) ((double)(scale * (x[i] - (float)mx)))
    for (int i = 0; i < n; i++)
        if (x[i] == x[i])
            sum += exp(ARG(i));
    CHECK(ksoftmax_scaled(x, n, scale, out) == (float)mx, "%s n %d: max",
          kisa_str(isa), n);
    for (int i = 0; i < n; i++) {
        double want = x[i] == x[i] ? exp(ARG(i)) / sum : 0.0;
        CHECK(fabs(out[i] - want) <= 4e-6 * want + 1e-37,
              "%s n %d: probs %d: %g vs %g", kisa_str(isa), n, i, out[i], want);
        if (!(x[i] > -1e30f))
            CHECK(out[i] == 0.0f, "%s: NaN/-inf entry %d not 0", kisa_str(isa), i);
    }
#undef ARG
    CHECK(kargmax(x, n) == amax, "%s n %d: argmax %d vs %d", kisa_str(isa), n,
          kargmax(x, n), amax);
    if (n > 3) { /* ties go to the lowest index, wherever they are */
        x[n - 1] = x[n - 3] = 1e9f;
        CHECK(kargmax(x, n) == n - 3, "%s n %d: tie", kisa_str(isa), n);
        x[0] = NAN;
        x[n - 2] = 1e9f;
        CHECK(kargmax(x, n) == n - 3, "%s n %d: tie after NaN", kisa_str(isa), n);
    }
    /* exp-and-sum: x in +-30, scale 0.7, shift 5 */
    float e[N];
    double esum = 0;
    for (int i = 0; i < n; i++)
        e[i] = x[i] = rnd_f() * 30;
    float got = kexp_sum(e, n, 0.7f, 5.0f);
    for (int i = 0; i < n; i++) {
        double want = exp((double)(0.7f * x[i]) - 5.0);
        esum += e[i];
        CHECK(fabs(e[i] - want) <= 4e-6 * want + 1e-37,
              "%s n %d: exp %d: %g vs %g", kisa_str(isa), n, i, e[i], want);
    }
    CHECK(fabs(got - esum) <= 1e-6 * esum, "%s n %d: exp sum %g vs %g",
          kisa_str(isa), n, got, esum);
    for (int i = 0; i < n; i++)
        x[i] = NAN;
    CHECK(kargmax(x, n) == -1, "%s n %d: all NaN", kisa_str(isa), n);
    CHECK(ksoftmax_scaled(x, n, 1.0f, out) == -INFINITY && out[0] == 0.0f,
          "%s n %d: all NaN softmax", kisa_str(isa), n);
    for (int i = 0; i < n; i++)
        x[i] = -INFINITY;
    CHECK(kargmax(x, n) == 0, "%s n %d: all -inf", kisa_str(isa), n);
    return TEST_PASS;
}

static enum test_return test_probs_argmax(void)
{
    enum kisa isas[KISA_COUNT];
    int n_isa = supported_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        kisa_set(isas[ii]);
        for (int n = 1; n <= 1030; n = n < 40 ? n + 1 : n * 2 + 3)
            if (probs_argmax_n(isas[ii], n) != TEST_PASS) {
                kisa_set(kisa_detect());
                return TEST_FAIL;
            }
    }
    kisa_set(kisa_detect());
    CHECK(kargmax(NULL, 0) == -1, "n = 0");
    return TEST_PASS;
}

/* ---- pool ---------------------------------------------------------- */

struct pool_probe {
    int n_parts;
    int hits[256];
    int bad;
};

static void probe_fn(void *arg, int part, int n_parts)
{
    struct pool_probe *p = arg;
    if (n_parts != p->n_parts || part < 0 || part >= n_parts)
        __atomic_store_n(&p->bad, 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&p->hits[part], 1, __ATOMIC_RELAXED);
}

/* A part run by a worker stalls 2 ms, as if its thread were descheduled
 * by another process; the caller's parts take 50 us of spinning (time
 * for the worker to claim the other part). */
struct stall_probe {
    pthread_t caller;
    int hits[2];
    int caller_in; /* the caller has claimed its part */
};

static void stall_fn(void *arg, int part, int n_parts)
{
    struct stall_probe *p = arg;
    (void)n_parts;
    struct timespec t0, t;
    if (!pthread_equal(pthread_self(), p->caller)) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        /* hold this part until the caller has claimed the other one, so
         * that a caller descheduled on a loaded machine does not leave
         * both parts to the worker (then the pool has no estimate of the
         * solo time and the test would measure nothing) */
        struct timespec nap = {0, 100000};
        for (int i = 0; i < 20000 &&
                        !__atomic_load_n(&p->caller_in, __ATOMIC_ACQUIRE);
             i++)
            nanosleep(&nap, NULL);
    } else {
        __atomic_store_n(&p->caller_in, 1, __ATOMIC_RELEASE);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do
            clock_gettime(CLOCK_MONOTONIC, &t);
        while ((t.tv_sec - t0.tv_sec) * 1000000000L + t.tv_nsec - t0.tv_nsec <
               50000);
    }
    __atomic_fetch_add(&p->hits[part], 1, __ATOMIC_RELAXED);
}

static enum test_return test_pool_busy_fallback(void)
{
    struct kpool *p = kpool_new(2);
    CHECK(p != NULL, "kpool_new");
    struct kpool_stats st;
    for (int iter = 0; iter < 1000; iter++) { /* usually done by 13 */
        struct stall_probe pr = {.caller = pthread_self()};
        kpool_run(p, stall_fn, &pr, 2);
        CHECK(pr.hits[0] == 1 && pr.hits[1] == 1, "run %d: parts ran %d, %d",
              iter, pr.hits[0], pr.hits[1]);
        kpool_get_stats(p, &st);
        if (st.solo_runs >= 10)
            break;
    }
    /* stalls 2 and on turn the workers off: the rest run on the caller */
    CHECK(st.fallbacks == 1 && st.solo_runs >= 10,
          "fallbacks %ld, solo runs %ld of %ld", st.fallbacks, st.solo_runs,
          st.runs);
    kpool_free(p);
    kpool_get_stats(NULL, &st);
    CHECK(st.runs == 0, "stats of no pool");
    return TEST_PASS;
}

static enum test_return test_pool(void)
{
    CHECK(kpool_new(0) == NULL, "0 threads");
    CHECK(kpool_size(NULL) == 1, "null pool size");
    for (int nt = 1; nt <= 4; nt++) {
        struct kpool *p = kpool_new(nt);
        CHECK(p != NULL && kpool_size(p) == nt, "kpool_new(%d)", nt);
        for (int iter = 0; iter < 3000; iter++) {
            struct pool_probe pr = {.n_parts = 1 + iter % 11};
            if (iter % 500 == 499)
                pr.n_parts = 256;
            kpool_run(p, probe_fn, &pr, pr.n_parts);
            CHECK(!pr.bad, "bad part index");
            for (int i = 0; i < pr.n_parts; i++)
                CHECK(pr.hits[i] == 1, "threads %d parts %d: part %d ran %d",
                      nt, pr.n_parts, i, pr.hits[i]);
        }
        kpool_free(p);
    }
    kpool_free(NULL);
    return TEST_PASS;
}

/* kpool_share: the parts of a run tile [0, n_units) in order, without
 * gaps or overlaps; the first share per thread is the long one (70% of
 * the units over the threads), the last ones small. */
static enum test_return test_pool_share(void)
{
    for (int nt = 1; nt <= 4; nt++) {
        struct kpool *p = kpool_new(nt);
        CHECK(p != NULL, "kpool_new(%d)", nt);
        int np = kpool_parts(p, 1 << 20);
        CHECK(np == (nt > 1 ? 4 * nt : 1), "threads %d: %d parts", nt, np);
        for (int u = 1; u < 4 * nt; u++) /* too few units: a plain split */
            CHECK(kpool_parts(p, u) == (u < nt ? u : nt),
                  "threads %d, %d units: %d parts", nt, u, kpool_parts(p, u));
        kpool_free(p);
        static const int units[] = {0, 1, 3, 7, 16, 100, 128, 1000, 2047};
        for (size_t k = 0; k < sizeof units / sizeof *units; k++) {
            int n = units[k], next = 0, first = 0;
            for (int part = 0; part < np; part++) {
                int u0, u1;
                kpool_share(n, part, np, &u0, &u1);
                CHECK(u0 == next && u1 >= u0,
                      "threads %d units %d: part %d is [%d, %d), want from %d",
                      nt, n, part, u0, u1, next);
                next = u1;
                if (part < nt)
                    first += u1 - u0;
                if (nt > 1 && n >= 1000 && part >= 3 * nt)
                    CHECK(u1 - u0 <= n / 20,
                          "threads %d units %d: last-level part %d has %d",
                          nt, n, part, u1 - u0);
            }
            CHECK(next == n, "threads %d units %d: parts end at %d", nt, n,
                  next);
            CHECK(nt == 1 || (first >= n * 69 / 100 && first <= n * 71 / 100 + 1),
                  "threads %d units %d: first shares %d", nt, n, first);
        }
    }
    int u0, u1; /* a part count that is not a multiple of the levels */
    kpool_share(10, 2, 3, &u0, &u1);
    CHECK(u0 == 6 && u1 == 10, "plain split: [%d, %d)", u0, u1);
    return TEST_PASS;
}

/* ---- runner -------------------------------------------------------- */

static const struct {
    const char *name;
    enum test_return (*fn)(void);
} tests[] = {
    {"isa", test_isa},
    {"dtype_names", test_dtype_names},
    {"bf16_exhaustive", test_bf16_exhaustive},
    {"f16_exhaustive", test_f16_exhaustive},
    {"f8_exhaustive", test_f8_exhaustive},
    {"f32_to_bf16", test_f32_to_bf16},
    {"f32_to_f16", test_f32_to_f16},
    {"pool", test_pool},
    {"pool_share", test_pool_share},
    {"matmul_args", test_matmul_args},
    {"mat_row_f32", test_mat_row_f32},
    {"matmul_dense", test_matmul_dense},
    {"matmul_f8_blk128", test_matmul_f8_blk128},
    {"matmul_f8_blk_odd", test_matmul_f8_blk_odd},
    {"matmul_q", test_matmul_q},
    {"matmul_q_isa_equal", test_matmul_q_isa_equal},
    {"matmul_q_extreme", test_matmul_q_extreme},
    {"matmul_q4x8", test_matmul_q4x8},
    {"matmul_q4s", test_matmul_q4s},
    {"matmul_q_amx", test_matmul_q_amx},
    {"matmul_tiled", test_matmul_tiled},
    {"matmul_amx", test_matmul_amx},
    {"matmul_amx_align", test_matmul_amx_align},
    {"matmul_pv", test_matmul_pv},
    {"matmul_invariant", test_matmul_invariant},
    {"matmul_pv_invariant", test_matmul_pv_invariant},
    {"matmul_bf16_act", test_matmul_bf16_act},
    {"matmul_pv_f8", test_matmul_pv_f8},
    {"dot_axpy", test_dot_axpy},
    {"rmsnorm", test_rmsnorm},
    {"rope", test_rope},
    {"softmax_swiglu", test_softmax_swiglu},
    {"probs_argmax", test_probs_argmax},
    {"pool_busy_fallback", test_pool_busy_fallback},
};

int main(int argc, char **argv)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        enum test_return r = tests[i].fn();
        printf("%s %s\n", r == TEST_PASS ? "ok  " : r == TEST_SKIP ? "skip"
                                                                   : "FAIL",
               tests[i].name);
        fflush(stdout);
        failed += r == TEST_FAIL;
    }
    return failed ? 1 : 0;
}
