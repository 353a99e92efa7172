/*
 * pv.c - kmatmul_pv: y[t][j] = sum_i x[t][i] * V[i][j], the rows of V
 * weighted by x (attention's probabilities times values, q_nope times
 * W_UK). Dispatched on kisa_active().
 *
 * SIMD over j: a tile of M column vectors x NT tokens stays in registers
 * while i runs over all V rows, so each V element is loaded (and widened)
 * once per tile and used for NT tokens; x[t][i] is broadcast from memory.
 * AVX-512: the columns are cut into equal tiles of at most MMAX(NT)
 * vectors (8 for NT <= 2, 6, 4, then 3, 2), the last vector masked; wide
 * tiles keep enough independent FMA chains when NT is 1 (attention at
 * T=1). AVX2: M=8, 4, 2 for NT = 1, 2, 3..4 (one FMA chain per
 * accumulator: at M=2 one token waited on the FMA latency), tails by the
 * scalar loop.
 *
 * Batch invariant: y[t][j] is one FMA chain over i in row order (one
 * multiply-add chain in the scalar loop), whatever the tile, NT or
 * n_tok; which loop computes column j depends on j and n_cols only.
 *
 * Q8_0 (kv_b of a q8 / q4 / q4_1 checkpoint, read per head as W_UK): element
 * (i, j) is code * d of its 32-column block, one rounding, as
 * kmat_row_f32 gives it; a vector's 16 (AVX2: 8) columns share a block.
 */
#include "kcpu.h"

#define PV_NT 8 /* most tokens per tile */

/* F8: the block scales of row i's block row. */
KINLINE const float *f8_srow(const struct kmat *V, int i)
{
    int nbc = (V->cols + V->blk - 1) / V->blk;
    return V->scale + (size_t)(i / V->blk) * nbc;
}

/* F8: the block scale of V element (i, j). */
KINLINE float f8_scale(const struct kmat *V, int i, int j)
{
    return f8_srow(V, i)[j / V->blk];
}

/* V element (i, j) as fp32 (F8: value times its block scale, rounded
 * once, as kmat_row_f32 gives it). */
KINLINE float v_at(const struct kmat *V, int i, int j)
{
    size_t k = (size_t)i * V->cols + j;
    switch (V->dtype) {
    case KDT_F32: return ((const float *)V->data)[k];
    case KDT_BF16: return kbf16_to_f32(((const uint16_t *)V->data)[k]);
    case KDT_F8_E4M3:
        return kf8e4m3_table[((const uint8_t *)V->data)[k]] *
               f8_scale(V, i, j);
    case KDT_Q8_0: return kq_weight(V, i, j);
    default: return kf16_to_f32(((const uint16_t *)V->data)[k]);
    }
}

/* Columns [j0, j1) for all tokens, one column at a time (portable).
 * Never inlined: inside an AVX2 caller GCC would contract the multiply-add
 * into an FMA at some call sites and not others, and the tail columns'
 * bits would then depend on the token count. */
__attribute__((noinline)) static void pv_scalar(const struct kmat *V, const float *x, int ldx,
                      float *y, int ldy, int n_tok, int j0, int j1)
{
    for (int t0 = 0; t0 < n_tok; t0 += PV_NT) {
        int nt = n_tok - t0 < PV_NT ? n_tok - t0 : PV_NT;
        for (int j = j0; j < j1; j++) {
            float acc[PV_NT] = {0};
            for (int i = 0; i < V->rows; i++) {
                float v = v_at(V, i, j);
                for (int t = 0; t < nt; t++)
                    acc[t] += x[(size_t)(t0 + t) * ldx + i] * v;
            }
            for (int t = 0; t < nt; t++)
                y[(size_t)(t0 + t) * ldy + j] = acc[t];
        }
    }
}

#if KCPU_X86
#include <immintrin.h>

/* The tiles read V column strip by column strip, each a strided stream
 * of a few lines per row; from DRAM that waited on every row (the Q8_0
 * W_UK of a head, 64 KB, ran at a fifth of the read bandwidth). A matrix
 * of at most PV_PF_BYTES is prefetched whole, a row at a time, during the
 * first tile, so the others find it in L2. */
#define PV_PF_BYTES (256u << 10)
#define PV_PF_ROWS 8

/* Not for a resident V (the attention's cache pages, a small model's
 * W_UK): it is in the caches, and the prefetches cost as many
 * instructions as half the FMAs of a one-token tile. */
KINLINE int pv_prefetch_all(const struct kmat *V)
{
    return !V->resident &&
           (size_t)V->rows * kmat_row_bytes(V->dtype, V->cols) <= PV_PF_BYTES;
}

KINLINE void pv_prefetch_row(const struct kmat *V, int i)
{
    size_t rb = kmat_row_bytes(V->dtype, V->cols);
    const char *r = (const char *)V->data + (size_t)i * rb;
    for (size_t o = 0; o < rb; o += 64)
        _mm_prefetch(r + o, _MM_HINT_T0);
    if (V->dtype == KDT_Q8_0)
        _mm_prefetch((const char *)(V->qd + (size_t)i * (V->cols / KQ_BLK)),
                     _MM_HINT_T0);
}

/* Q8_0: the fp32 scale of V element (i, j)'s block, by one F16C
 * conversion (the value kq_weight uses): a call of kf16_to_f32 per vector
 * and row made Q8_0 rows slower than bf16 ones at one token. */
KTARGET_AVX2 KINLINE float q8_scale_f16c(const struct kmat *V, int i, int j)
{
    return _cvtsh_ss(V->qd[(size_t)i * (V->cols / KQ_BLK) + j / KQ_BLK]);
}

/* 16 elements of V from p (element offset), fp32; masked when m != ~0.
 * F8 (all 16 in one scale block, sc: kmatmul_pv takes F8 with
 * blk % 16 == 0): e4m3 bits moved into an fp32 (exponent and
 * mantissa << 20, sign << 24) times 2^120 is the code's value exactly,
 * subnormals included; code 0x7f / 0xff is NaN; then times the scale, one
 * rounding, as v_at. */
KTARGET_AVX512 KINLINE __m512 v16(enum kdtype dt, const struct kmat *V,
                                  size_t p, float sc, __m512 scv,
                                  __mmask16 m)
{
    const void *v = V->data;
    if (dt == KDT_F8_E4M3) {
        __m512i b = _mm512_cvtepu8_epi32(
            _mm_maskz_loadu_epi8(m, (const uint8_t *)v + p));
        __m512i mag = _mm512_and_si512(b, _mm512_set1_epi32(0x7f));
        __m512i sign = _mm512_slli_epi32(
            _mm512_and_si512(b, _mm512_set1_epi32(0x80)), 24);
        __m512i bits = _mm512_or_si512(_mm512_slli_epi32(mag, 20), sign);
        __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(bits),
                                 _mm512_set1_ps(0x1p120f));
        f = _mm512_mask_mov_ps( /* the table's NaN, -NaN */
            f, _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)),
            _mm512_castsi512_ps(_mm512_or_si512(
                sign, _mm512_set1_epi32(0x7fc00000))));
        return _mm512_mul_ps(f, _mm512_set1_ps(sc));
    }
    if (dt == KDT_Q8_0) /* scv: the block's scale in every lane */
        return _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                _mm_maskz_loadu_epi8(m, (const int8_t *)v + p))),
            scv);
    switch (dt) {
    case KDT_F32: return _mm512_maskz_loadu_ps(m, (const float *)v + p);
    case KDT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(
                _mm256_maskz_loadu_epi16(m, (const uint16_t *)v + p)),
            16));
    default:
        return _mm512_cvtph_ps(
            _mm256_maskz_loadu_epi16(m, (const uint16_t *)v + p));
    }
}

/* Tokens [0, NT) x columns [j, j + 16M), the last vector masked by mlast.
 * pf: prefetch whole rows PV_PF_ROWS ahead (the first tile of a matrix
 * that fits pv_prefetch_all), so the later tiles read L2. */
KTARGET_AVX512 KINLINE void pv_tile512(enum kdtype dt, int NT, int M,
                                       const struct kmat *V, const float *x,
                                       int ldx, float *y, int ldy, int j,
                                       __mmask16 mlast, int pf)
{
    __m512 acc[PV_NT][8], vv[8];
    const size_t ld = (size_t)V->cols;
    KUNROLL
    for (int t = 0; t < NT; t++) {
        KUNROLL
        for (int k = 0; k < M; k++)
            acc[t][k] = _mm512_setzero_ps();
    }
    int cb[8]; /* F8: each vector's column block */
    KUNROLL
    for (int k = 0; k < M; k++)
        cb[k] = dt == KDT_F8_E4M3 ? (j + 16 * k) / V->blk : 0;
    /* Q8_0: the tile's blocks' scales of a row in one vector (one load,
     * one conversion), vector k's broadcast from lane qb[k] */
    const int nbr = V->cols / KQ_BLK, b0 = j / KQ_BLK;
    const int nbt = (j + 16 * M - 1) / KQ_BLK - b0 + 1; /* <= 5 */
    __m512i qb[8];
    KUNROLL
    for (int k = 0; k < M; k++)
        qb[k] = _mm512_set1_epi32((j + 16 * k) / KQ_BLK - b0);
    for (int i = 0; i < V->rows; i++) {
        size_t p = (size_t)i * ld + j;
        const float *srow = dt == KDT_F8_E4M3 ? f8_srow(V, i) : NULL;
        if (pf && i + PV_PF_ROWS < V->rows)
            pv_prefetch_row(V, i + PV_PF_ROWS);
        __m512 sq = _mm512_setzero_ps();
        if (dt == KDT_Q8_0)
            sq = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                (__mmask16)((1u << nbt) - 1), V->qd + (size_t)i * nbr + b0));
        KUNROLL
        for (int k = 0; k < M; k++)
            vv[k] = v16(dt, V, p + 16 * k, srow ? srow[cb[k]] : 0.0f,
                        dt == KDT_Q8_0 ? _mm512_permutexvar_ps(qb[k], sq)
                                       : sq,
                        k == M - 1 ? mlast : (__mmask16)0xffff);
        KUNROLL
        for (int t = 0; t < NT; t++) {
            __m512 b = _mm512_set1_ps(x[(size_t)t * ldx + i]);
            KUNROLL
            for (int k = 0; k < M; k++)
                acc[t][k] = _mm512_fmadd_ps(b, vv[k], acc[t][k]);
        }
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        KUNROLL
        for (int k = 0; k < M; k++)
            _mm512_mask_storeu_ps(y + (size_t)t * ldy + j + 16 * k,
                                  k == M - 1 ? mlast : (__mmask16)0xffff,
                                  acc[t][k]);
    }
}

/* Columns [0, n) for NT tokens in equal tiles of at most MMAX vectors. */
KTARGET_AVX512 KINLINE void pv_nt512(enum kdtype dt, int NT, int MMAX,
                                     const struct kmat *V, int n,
                                     const float *x, int ldx, float *y,
                                     int ldy)
{
    int nvec = (n + 15) / 16, ntile = (nvec + MMAX - 1) / MMAX;
    int pf = ntile > 1 && pv_prefetch_all(V);
    for (int i = 0; pf && i < PV_PF_ROWS && i < V->rows; i++)
        pv_prefetch_row(V, i);
    for (int tl = 0, j = 0; tl < ntile; tl++) {
        int m = nvec * (tl + 1) / ntile - nvec * tl / ntile;
        int left = n - (j + 16 * (m - 1)); /* columns in the last vector */
        __mmask16 ml = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        switch (m) { /* cases above MMAX are never taken */
#define PV_M(M)                                                              \
    case M:                                                                  \
        if (M <= MMAX)                                                       \
            pv_tile512(dt, NT, M <= MMAX ? M : 1, V, x, ldx, y, ldy, j, ml, \
                       pf && tl == 0);                               \
        break;
        PV_M(1) PV_M(2) PV_M(3) PV_M(4) PV_M(5) PV_M(6) PV_M(7) PV_M(8)
#undef PV_M
        }
        j += 16 * m;
    }
}

KTARGET_AVX512 KINLINE void pv_dt512(enum kdtype dt, const struct kmat *V,
                                     int n, const float *x, int ldx, float *y,
                                     int ldy, int nt)
{
    switch (nt) {
    case 1: pv_nt512(dt, 1, 8, V, n, x, ldx, y, ldy); break;
    case 2: pv_nt512(dt, 2, 8, V, n, x, ldx, y, ldy); break;
    case 3: pv_nt512(dt, 3, 6, V, n, x, ldx, y, ldy); break;
    case 4: pv_nt512(dt, 4, 4, V, n, x, ldx, y, ldy); break;
    case 5: pv_nt512(dt, 5, 3, V, n, x, ldx, y, ldy); break;
    case 6: pv_nt512(dt, 6, 3, V, n, x, ldx, y, ldy); break;
    case 7: pv_nt512(dt, 7, 2, V, n, x, ldx, y, ldy); break;
    default: pv_nt512(dt, 8, 2, V, n, x, ldx, y, ldy); break;
    }
}

KTARGET_AVX512 static void pv_avx512(const struct kmat *V, int n,
                                     const float *x, int ldx, float *y,
                                     int ldy, int nt)
{
    switch (V->dtype) {
    case KDT_F32: pv_dt512(KDT_F32, V, n, x, ldx, y, ldy, nt); break;
    case KDT_BF16: pv_dt512(KDT_BF16, V, n, x, ldx, y, ldy, nt); break;
    case KDT_F8_E4M3: pv_dt512(KDT_F8_E4M3, V, n, x, ldx, y, ldy, nt); break;
    case KDT_Q8_0: pv_dt512(KDT_Q8_0, V, n, x, ldx, y, ldy, nt); break;
    default: pv_dt512(KDT_F16, V, n, x, ldx, y, ldy, nt); break;
    }
}

/* 8 elements of V from p; F8 as v16 (scale sc). */
KTARGET_AVX2 KINLINE __m256 v8(enum kdtype dt, const struct kmat *V,
                               size_t p, float sc)
{
    const void *v = V->data;
    if (dt == KDT_F8_E4M3) {
        __m256i b = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64((const __m128i *)((const uint8_t *)v + p)));
        __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7f));
        __m256i sign = _mm256_slli_epi32(
            _mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
        __m256i bits = _mm256_or_si256(_mm256_slli_epi32(mag, 20), sign);
        __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(bits),
                                 _mm256_set1_ps(0x1p120f));
        f = _mm256_blendv_ps( /* the table's NaN, -NaN */
            f, _mm256_castsi256_ps(_mm256_or_si256(
                   sign, _mm256_set1_epi32(0x7fc00000))),
            _mm256_castsi256_ps(_mm256_cmpeq_epi32(
                mag, _mm256_set1_epi32(0x7f))));
        return _mm256_mul_ps(f, _mm256_set1_ps(sc));
    }
    if (dt == KDT_Q8_0)
        return _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                _mm_loadl_epi64((const __m128i *)((const int8_t *)v + p)))),
            _mm256_set1_ps(sc));
    switch (dt) {
    case KDT_F32: return _mm256_loadu_ps((const float *)v + p);
    case KDT_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(
                _mm_loadu_si128((const __m128i *)((const uint16_t *)v + p))),
            16));
    default:
        return _mm256_cvtph_ps(
            _mm_loadu_si128((const __m128i *)((const uint16_t *)v + p)));
    }
}

/* Tokens [0, NT) x columns [j, j + 8M), all full vectors; pf as
 * pv_tile512. */
KTARGET_AVX2 KINLINE void pv_tile256(enum kdtype dt, int NT, int M,
                                     const struct kmat *V, const float *x,
                                     int ldx, float *y, int ldy, int j,
                                     int pf)
{
    __m256 acc[4][8], vv[8];
    const size_t ld = (size_t)V->cols;
    KUNROLL
    for (int t = 0; t < NT; t++) {
        KUNROLL
        for (int k = 0; k < M; k++)
            acc[t][k] = _mm256_setzero_ps();
    }
    /* F8: each vector's column block; Q8_0: its 32-column block less the
     * tile's first (0..2), whose scales are converted once per row */
    int cb[8];
    const int qb0 = j / KQ_BLK;
    KUNROLL
    for (int k = 0; k < M; k++)
        cb[k] = dt == KDT_F8_E4M3 ? (j + 8 * k) / V->blk
                : dt == KDT_Q8_0  ? (j + 8 * k) / KQ_BLK - qb0
                                  : 0;
    for (int i = 0; i < V->rows; i++) {
        size_t p = (size_t)i * ld + j;
        const float *srow = dt == KDT_F8_E4M3 ? f8_srow(V, i) : NULL;
        if (pf && i + PV_PF_ROWS < V->rows)
            pv_prefetch_row(V, i + PV_PF_ROWS);
        float s3[3] = {0.0f, 0.0f, 0.0f};
        if (dt == KDT_Q8_0) {
            s3[0] = q8_scale_f16c(V, i, qb0 * KQ_BLK);
            if (cb[M - 1] > 0)
                s3[1] = q8_scale_f16c(V, i, (qb0 + 1) * KQ_BLK);
            if (cb[M - 1] > 1)
                s3[2] = q8_scale_f16c(V, i, (qb0 + 2) * KQ_BLK);
        }
        KUNROLL
        for (int k = 0; k < M; k++)
            vv[k] = v8(dt, V, p + 8 * k,
                       srow ? srow[cb[k]]
                       : dt == KDT_Q8_0 ? s3[cb[k]]
                                        : 0.0f);
        KUNROLL
        for (int t = 0; t < NT; t++) {
            __m256 b = _mm256_broadcast_ss(x + (size_t)t * ldx + i);
            KUNROLL
            for (int k = 0; k < M; k++)
                acc[t][k] = _mm256_fmadd_ps(b, vv[k], acc[t][k]);
        }
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        KUNROLL
        for (int k = 0; k < M; k++)
            _mm256_storeu_ps(y + (size_t)t * ldy + j + 8 * k, acc[t][k]);
    }
}

KTARGET_AVX2 KINLINE void pv_nt256(enum kdtype dt, int NT, int M,
                                   const struct kmat *V, int n,
                                   const float *x, int ldx, float *y, int ldy,
                                   int t0)
{
    int j = 0;
    int pf = n > 8 * M && pv_prefetch_all(V);
    for (int i = 0; pf && i < PV_PF_ROWS && i < V->rows; i++)
        pv_prefetch_row(V, i);
    x += (size_t)t0 * ldx;
    y += (size_t)t0 * ldy;
    for (; j + 8 * M <= n; j += 8 * M)
        pv_tile256(dt, NT, M, V, x, ldx, y, ldy, j, pf && j == 0);
    for (; j + 8 <= n; j += 8)
        pv_tile256(dt, NT, 1, V, x, ldx, y, ldy, j, 0);
    if (j < n)
        pv_scalar(V, x, ldx, y, ldy, NT, j, n);
}

KTARGET_AVX2 KINLINE void pv_dt256(enum kdtype dt, const struct kmat *V,
                                   int n, const float *x, int ldx, float *y,
                                   int ldy, int nt)
{
    for (int t0 = 0; t0 < nt; t0 += 4) {
        switch (nt - t0) {
        case 1: pv_nt256(dt, 1, 8, V, n, x, ldx, y, ldy, t0); break;
        case 2: pv_nt256(dt, 2, 4, V, n, x, ldx, y, ldy, t0); break;
        case 3: pv_nt256(dt, 3, 2, V, n, x, ldx, y, ldy, t0); break;
        default: pv_nt256(dt, 4, 2, V, n, x, ldx, y, ldy, t0); break;
        }
    }
}

KTARGET_AVX2 static void pv_avx2(const struct kmat *V, int n, const float *x,
                                 int ldx, float *y, int ldy, int nt)
{
    switch (V->dtype) {
    case KDT_F32: pv_dt256(KDT_F32, V, n, x, ldx, y, ldy, nt); break;
    case KDT_BF16: pv_dt256(KDT_BF16, V, n, x, ldx, y, ldy, nt); break;
    case KDT_F8_E4M3: pv_dt256(KDT_F8_E4M3, V, n, x, ldx, y, ldy, nt); break;
    case KDT_Q8_0: pv_dt256(KDT_Q8_0, V, n, x, ldx, y, ldy, nt); break;
    default: pv_dt256(KDT_F16, V, n, x, ldx, y, ldy, nt); break;
    }
}
#endif

int kmatmul_pv(const struct kmat *V, int n_cols, const float *x, int ldx,
               float *y, int ldy, int n_tok)
{
    if (V == NULL || x == NULL || y == NULL || n_tok < 0 || V->rows < 0 ||
        n_cols <= 0 || n_cols > V->cols || (V->rows > 0 && V->data == NULL) ||
        (V->dtype != KDT_F32 && V->dtype != KDT_BF16 &&
         V->dtype != KDT_F16 && V->dtype != KDT_F8_E4M3 &&
         V->dtype != KDT_Q8_0))
        return MTPD_K_EINVAL;
    if (V->dtype == KDT_Q8_0 &&
        (V->qd == NULL || V->cols % KQ_BLK != 0))
        return MTPD_K_EINVAL;
    if (V->dtype == KDT_F8_E4M3 &&
        (V->scale == NULL || V->blk <= 0 || V->blk % 16 != 0))
        return MTPD_K_EINVAL; /* a vector's columns share one scale */
    if (n_tok > 1 && (ldx < V->rows || ldy < n_cols))
        return MTPD_K_EINVAL;
    enum kisa isa = kisa_active();
    for (int t0 = 0; t0 < n_tok; t0 += PV_NT) {
        int nt = n_tok - t0 < PV_NT ? n_tok - t0 : PV_NT;
        const float *xt = x + (size_t)t0 * ldx;
        float *yt = y + (size_t)t0 * ldy;
#if KCPU_X86
        if (isa == KISA_AVX512) {
            pv_avx512(V, n_cols, xt, ldx, yt, ldy, nt);
            continue;
        }
        if (isa == KISA_AVX2) {
            pv_avx2(V, n_cols, xt, ldx, yt, ldy, nt);
            continue;
        }
#endif
        (void)isa;
        pv_scalar(V, xt, ldx, yt, ldy, nt, 0, n_cols);
    }
    return MTPD_K_OK;
}
