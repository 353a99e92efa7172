/*
 * matmul_avx2.c - AVX2+FMA+F16C block kernel: rows [r0, r1) x nt tokens.
 *
 * Same scheme as matmul_avx512.c with 8 columns per step: two weight rows
 * at a time, each widened once and FMA'd into 2 x nt accumulators; the
 * column tail (< 8) is done in scalar code. F8 e4m3 is widened through
 * f16 (value times 2^-8, exact; the 2^8 is folded into the block scale).
 * (NaN e4m3 codes read as +-480 in the vector part; checkpoints hold none.)
 */
#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

KTARGET_AVX2 KINLINE __m256 w_load(enum kdtype dt, const void *w, int c)
{
    switch (dt) {
    case KDT_F32: return _mm256_loadu_ps((const float *)w + c);
    case KDT_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + c));
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case KDT_F16:
        return _mm256_cvtph_ps(
            _mm_loadu_si128((const __m128i *)((const uint16_t *)w + c)));
    default: {
        __m128i b = _mm_loadl_epi64((const __m128i *)((const uint8_t *)w + c));
        __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(b), 7);
        h = _mm_and_si128(h, _mm_set1_epi16((short)0xbf80));
        return _mm256_cvtph_ps(h);
    }
    }
}

/* Scalar weight, scaled like w_load (F8: value * 2^-8). */
KINLINE float w_one(enum kdtype dt, const void *w, int c)
{
    switch (dt) {
    case KDT_F32: return ((const float *)w)[c];
    case KDT_BF16: return kbf16_to_f32(((const uint16_t *)w)[c]);
    case KDT_F16: return kf16_to_f32(((const uint16_t *)w)[c]);
    default: return kf8e4m3_table[((const uint8_t *)w)[c]] * 0x1p-8f;
    }
}

/* acc[k][t] (vector) and tail[k][t] (scalar) += row k . x[t] on [c0,c1). */
KTARGET_AVX2 KINLINE void seg_dot(enum kdtype dt, int NR, int NT,
                                  const void *w0, const void *w1,
                                  const float *x, int ldx, int c0, int c1,
                                  __m256 acc[2][KMM_NT],
                                  float tail[2][KMM_NT])
{
    int c = c0;
    for (; c + 8 <= c1; c += 8) {
        __m256 a = w_load(dt, w0, c);
        __m256 b = NR > 1 ? w_load(dt, w1, c) : a;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)t * ldx + c);
            acc[0][t] = _mm256_fmadd_ps(a, xv, acc[0][t]);
            if (NR > 1)
                acc[1][t] = _mm256_fmadd_ps(b, xv, acc[1][t]);
        }
    }
    for (; c < c1; c++) {
        float a = w_one(dt, w0, c);
        float b = NR > 1 ? w_one(dt, w1, c) : a;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            float xv = x[(size_t)t * ldx + c];
            tail[0][t] += a * xv;
            if (NR > 1)
                tail[1][t] += b * xv;
        }
    }
}

KTARGET_AVX2 KINLINE float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

KTARGET_AVX2 KINLINE void rows_dot(enum kdtype dt, int NR, int NT,
                                   const struct kmat *W, int r,
                                   const float *x, int ldx, float *y, int ldy)
{
    const int cols = W->cols;
    const size_t rb = (size_t)cols * kdtype_size(dt);
    const void *w0 = (const char *)W->data + (size_t)r * rb;
    const void *w1 = (const char *)w0 + rb;
    __m256 acc[2][KMM_NT], tot[2][KMM_NT];
    float tl[2][KMM_NT], ttot[2][KMM_NT];

    KUNROLL

    for (int t = 0; t < NT; t++) {
        tot[0][t] = tot[1][t] = _mm256_setzero_ps();
        ttot[0][t] = ttot[1][t] = 0.0f;
    }
    if (dt != KDT_F8_E4M3) {
        seg_dot(dt, NR, NT, w0, w1, x, ldx, 0, cols, tot, ttot);
    } else {
        const int blk = W->blk, nb = (cols + blk - 1) / blk;
        const float *s0 = W->scale + (size_t)(r / blk) * nb;
        const float *s1 = W->scale + (size_t)((r + NR - 1) / blk) * nb;
        for (int b = 0; b < nb; b++) {
            KUNROLL
            for (int t = 0; t < NT; t++) {
                acc[0][t] = acc[1][t] = _mm256_setzero_ps();
                tl[0][t] = tl[1][t] = 0.0f;
            }
            int c1 = (b + 1) * blk < cols ? (b + 1) * blk : cols;
            seg_dot(dt, NR, NT, w0, w1, x, ldx, b * blk, c1, acc, tl);
            float fa = s0[b] * 256.0f, fb = s1[b] * 256.0f;
            __m256 sa = _mm256_set1_ps(fa), sb = _mm256_set1_ps(fb);
            KUNROLL
            for (int t = 0; t < NT; t++) {
                tot[0][t] = _mm256_fmadd_ps(acc[0][t], sa, tot[0][t]);
                ttot[0][t] += tl[0][t] * fa;
                if (NR > 1) {
                    tot[1][t] = _mm256_fmadd_ps(acc[1][t], sb, tot[1][t]);
                    ttot[1][t] += tl[1][t] * fb;
                }
            }
        }
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        y[(size_t)t * ldy + r] = hsum(tot[0][t]) + ttot[0][t];
        if (NR > 1)
            y[(size_t)t * ldy + r + 1] = hsum(tot[1][t]) + ttot[1][t];
    }
}

KTARGET_AVX2 KINLINE void block_nt(enum kdtype dt, int NT,
                                   const struct kmat *W, int r0, int r1,
                                   const float *x, int ldx, float *y, int ldy)
{
    int r = r0;
    for (; r + 2 <= r1; r += 2)
        rows_dot(dt, 2, NT, W, r, x, ldx, y, ldy);
    if (r < r1)
        rows_dot(dt, 1, NT, W, r, x, ldx, y, ldy);
}

KTARGET_AVX2 KINLINE void block_dt(enum kdtype dt, const struct kmat *W,
                                   int r0, int r1, const float *x, int ldx,
                                   float *y, int ldy, int nt)
{
    switch (nt) {
    case 1: block_nt(dt, 1, W, r0, r1, x, ldx, y, ldy); break;
    case 2: block_nt(dt, 2, W, r0, r1, x, ldx, y, ldy); break;
    case 3: block_nt(dt, 3, W, r0, r1, x, ldx, y, ldy); break;
    default: block_nt(dt, 4, W, r0, r1, x, ldx, y, ldy); break;
    }
}

KTARGET_AVX2 void kmm_block_avx2(const struct kmat *W, int r0, int r1,
                                 const float *x, int ldx, float *y, int ldy,
                                 int nt)
{
    switch (W->dtype) {
    case KDT_F32: block_dt(KDT_F32, W, r0, r1, x, ldx, y, ldy, nt); break;
    case KDT_BF16: block_dt(KDT_BF16, W, r0, r1, x, ldx, y, ldy, nt); break;
    case KDT_F16: block_dt(KDT_F16, W, r0, r1, x, ldx, y, ldy, nt); break;
    default: block_dt(KDT_F8_E4M3, W, r0, r1, x, ldx, y, ldy, nt); break;
    }
}
#endif
