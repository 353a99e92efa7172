/*
 * matmul_q.c - block kernels for mtpd's quantized weights, Q8_0 and Q4_1
 * (layouts in kernels.h), with fp32 activations: scalar, AVX2, AVX-512.
 *
 * Each weight is widened to exactly the fp32 value kq_weight() gives
 * (Q8_0: q * d, exact; Q4_1: fma(q, d, m), one rounding), then FMA'd into
 * the same per-lane chains as the dense kernels (kcpu.h): within a
 * summation segment lane l of row r and token t adds its columns in a
 * fixed order, the lanes are summed by one tree (hsum on AVX2, reduce4 on
 * AVX-512, one chain in scalar) and the segment sums are added to y in
 * column order. NR x NT blocking and token passes only pick which chains
 * run side by side, so results are batch invariant like every kmatmul.
 *
 * Why fp32 activations rather than int8 ones (llama.cpp's way): the
 * quantized x would be rounded per row, which keeps invariance, but on the
 * default model decode is bound by reading weights, and the fp32 path
 * adds no second rounding; see bench/results/bench_quant-2026-12-02.md.
 */
#include "kcpu.h"

/* ---- scalar -------------------------------------------------------- */

void kmm_block_q_scalar(const struct kmm_blk *b)
{
    const struct kmat *W = b->W;
    float w[KQ_BLK];
    for (int r = b->r0; r < b->r1; r++) {
        for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
            ce = kmm_seg_end(b, cs);
            float tot[KMM_NT] = {0};
            for (int c = cs; c < ce; c += KQ_BLK) {
                for (int i = 0; i < KQ_BLK; i++)
                    w[i] = kq_weight(W, r, c + i);
                for (int t = 0; t < b->nt; t++) {
                    const float *xp = b->x + (size_t)t * b->ldx + c;
                    for (int i = 0; i < KQ_BLK; i++)
                        tot[t] += w[i] * xp[i];
                }
            }
            int add = b->accum || cs > b->c0;
            for (int t = 0; t < b->nt; t++) {
                float *yp = b->y + (size_t)t * b->ldy + r;
                *yp = add ? *yp + tot[t] : tot[t];
            }
        }
    }
}

#if KCPU_X86
#include <immintrin.h>

#include "avx512_sum.h"

/* Row r's data and scales. */
struct qrow {
    const uint8_t *q;
    const uint16_t *d, *m;
};

KINLINE struct qrow qrow_at(const struct kmat *W, int r)
{
    size_t nb = (size_t)(W->cols / KQ_BLK);
    struct qrow q = {(const uint8_t *)W->data +
                         (size_t)r * kmat_row_bytes(W->dtype, W->cols),
                     W->qd + (size_t)r * nb,
                     W->qm ? W->qm + (size_t)r * nb : NULL};
    return q;
}

/* ---- AVX2: 8 columns per step, 4 steps per block -------------------- */

#define NR2MAX 4
#define NT2MAX 4

/* Columns 8g..8g+7 of block j of a row, widened. */
KTARGET_AVX2 KINLINE __m256 q_w8(enum kdtype dt, const struct qrow *w, int j,
                                 int g, __m256 d, __m256 m)
{
    if (dt == KDT_Q8_0) {
        __m128i v = _mm_loadl_epi64((const __m128i *)(w->q + j * KQ_BLK + 8 * g));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d);
    }
    /* bytes 0..7 hold columns 0..7 (low) and 16..23 (high), 8..15 the rest */
    __m128i v = _mm_loadl_epi64(
        (const __m128i *)(w->q + j * (KQ_BLK / 2) + 8 * (g & 1)));
    __m256i i = _mm256_cvtepu8_epi32(v);
    i = g < 2 ? _mm256_and_si256(i, _mm256_set1_epi32(15))
              : _mm256_srli_epi32(i, 4);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, m);
}

KTARGET_AVX2 KINLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Rows r..r+NR-1, tokens x[0..NT), segment by segment over [c0, c1). */
KTARGET_AVX2 KINLINE void rows2(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int r,
                                const float *x, float *y)
{
    struct qrow w[NR2MAX];
    KUNROLL
    for (int k = 0; k < NR; k++)
        w[k] = qrow_at(b->W, r + k);
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m256 acc[NR2MAX][NT2MAX];
        KUNROLL
        for (int k = 0; k < NR; k++) {
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[k][t] = _mm256_setzero_ps();
        }
        for (int c = cs; c < ce; c += KQ_BLK) {
            int j = c / KQ_BLK;
            __m256 d[NR2MAX], m[NR2MAX];
            KUNROLL
            for (int k = 0; k < NR; k++) {
                _mm_prefetch((const char *)w[k].q +
                                 kmat_row_bytes(dt, c) + KMM_PF_BYTES / 4,
                             _MM_HINT_T0);
                d[k] = _mm256_set1_ps(_cvtsh_ss(w[k].d[j]));
                m[k] = dt == KDT_Q4_1 ? _mm256_set1_ps(_cvtsh_ss(w[k].m[j]))
                                      : d[k];
            }
            KUNROLL
            for (int g = 0; g < 4; g++) {
                __m256 wv[NR2MAX];
                KUNROLL
                for (int k = 0; k < NR; k++)
                    wv[k] = q_w8(dt, &w[k], j, g, d[k], m[k]);
                KUNROLL
                for (int t = 0; t < NT; t++) {
                    __m256 xv = _mm256_loadu_ps(x + (size_t)t * b->ldx + c +
                                                8 * g);
                    KUNROLL
                    for (int k = 0; k < NR; k++)
                        acc[k][t] = _mm256_fmadd_ps(wv[k], xv, acc[k][t]);
                }
            }
        }
        int add = b->accum || cs > b->c0;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            KUNROLL
            for (int k = 0; k < NR; k++) {
                float *yp = y + (size_t)t * b->ldy + r + k;
                float v = hsum8(acc[k][t]);
                *yp = add ? *yp + v : v;
            }
        }
    }
}

KTARGET_AVX2 KINLINE void loop2(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int t0)
{
    const float *x = b->x + (size_t)t0 * b->ldx;
    float *y = b->y + (size_t)t0 * b->ldy;
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows2(dt, NR, NT, b, r, x, y);
    for (; r < b->r1; r++)
        rows2(dt, 1, NT, b, r, x, y);
}

/* 4 rows x 1 token, else 2 rows x up to 4 tokens per pass (16 registers). */
KTARGET_AVX2 KINLINE void block2(enum kdtype dt, const struct kmm_blk *b)
{
    if (b->nt == 1) {
        loop2(dt, 4, 1, b, 0);
        return;
    }
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: loop2(dt, 2, 1, b, t0); break;
        case 2: loop2(dt, 2, 2, b, t0); break;
        case 3: loop2(dt, 2, 3, b, t0); break;
        default: loop2(dt, 2, 4, b, t0); break;
        }
    }
}

KTARGET_AVX2 void kmm_block_q_avx2(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0)
        block2(KDT_Q8_0, b);
    else
        block2(KDT_Q4_1, b);
}

/* ---- AVX-512: 16 columns per step, 2 steps per block ---------------- */

#define NR5MAX 8
#define NT5MAX 4

/* Columns 0..15 (w0) and 16..31 (w1) of block j of a row, widened. */
KTARGET_AVX512 KINLINE void q_w16(enum kdtype dt, const struct qrow *w, int j,
                                  __m512 *w0, __m512 *w1)
{
    __m512 d = _mm512_set1_ps(_cvtsh_ss(w->d[j]));
    if (dt == KDT_Q8_0) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(w->q + j * KQ_BLK));
        *w0 = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(v))),
            d);
        *w1 = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                _mm256_extracti128_si256(v, 1))),
            d);
        return;
    }
    __m512 m = _mm512_set1_ps(_cvtsh_ss(w->m[j]));
    __m128i v = _mm_loadu_si128((const __m128i *)(w->q + j * (KQ_BLK / 2)));
    __m512i i = _mm512_cvtepu8_epi32(v);
    *w0 = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(_mm512_and_si512(i, _mm512_set1_epi32(15))), d, m);
    *w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(i, 4)), d, m);
}

KTARGET_AVX512 KINLINE void rows5(enum kdtype dt, int NR, int NT,
                                  const struct kmm_blk *b, int r,
                                  const float *x, float *y)
{
    struct qrow w[NR5MAX];
    KUNROLL
    for (int k = 0; k < NR; k++)
        w[k] = qrow_at(b->W, r + k);
    const size_t ldy = (size_t)b->ldy;
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m512 acc[NR5MAX][NT5MAX];
        KUNROLL
        for (int k = 0; k < NR; k++) {
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[k][t] = _mm512_setzero_ps();
        }
        for (int c = cs; c < ce; c += KQ_BLK) {
            int j = c / KQ_BLK;
            __m512 w0[NR5MAX], w1[NR5MAX];
            KUNROLL
            for (int k = 0; k < NR; k++) {
                _mm_prefetch((const char *)w[k].q +
                                 kmat_row_bytes(dt, c) + KMM_PF_BYTES / 4,
                             _MM_HINT_T0);
                q_w16(dt, &w[k], j, &w0[k], &w1[k]);
            }
            KUNROLL
            for (int t = 0; t < NT; t++) {
                const float *xp = x + (size_t)t * b->ldx + c;
                __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
                KUNROLL
                for (int k = 0; k < NR; k++) {
                    acc[k][t] = _mm512_fmadd_ps(w0[k], x0, acc[k][t]);
                    acc[k][t] = _mm512_fmadd_ps(w1[k], x1, acc[k][t]);
                }
            }
        }
        int add = b->accum || cs > b->c0;
        /* every lane tree is reduce4's, whatever NR (avx512_sum.h) */
        if (NR >= 4) {
            KUNROLL
            for (int t = 0; t < NT; t++) {
                KUNROLL
                for (int k = 0; k < NR; k += 4)
                    put(y + t * ldy + r + k,
                        reduce4(acc[k][t], acc[(k + 1) % NR][t],
                                acc[(k + 2) % NR][t], acc[(k + 3) % NR][t]),
                        4, add);
            }
        } else {
            KUNROLL
            for (int t = 0; t < NT; t++) {
                KUNROLL
                for (int k = 0; k < NR; k++) {
                    float v = hsum1(acc[k][t]);
                    float *yp = y + t * ldy + r + k;
                    *yp = add ? *yp + v : v;
                }
            }
        }
    }
}

KTARGET_AVX512 KINLINE void loop5(enum kdtype dt, int NR, int NT,
                                  const struct kmm_blk *b, int t0)
{
    const float *x = b->x + (size_t)t0 * b->ldx;
    float *y = b->y + (size_t)t0 * b->ldy;
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows5(dt, NR, NT, b, r, x, y);
    for (; NR > 4 && r + 4 <= b->r1; r += 4)
        rows5(dt, NR > 4 ? 4 : 1, NT, b, r, x, y);
    for (; r < b->r1; r++)
        rows5(dt, 1, NT, b, r, x, y);
}

/* 8 rows x 1 token, 4 x 2..4 (passes of 4 tokens): <= 32 registers. */
KTARGET_AVX512 KINLINE void block5(enum kdtype dt, const struct kmm_blk *b)
{
    if (b->nt == 1) {
        loop5(dt, 8, 1, b, 0);
        return;
    }
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: loop5(dt, 4, 1, b, t0); break;
        case 2: loop5(dt, 4, 2, b, t0); break;
        case 3: loop5(dt, 4, 3, b, t0); break;
        default: loop5(dt, 4, 4, b, t0); break;
        }
    }
}

KTARGET_AVX512 void kmm_block_q_avx512(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0)
        block5(KDT_Q8_0, b);
    else
        block5(KDT_Q4_1, b);
}
#endif
