/*
 * matmul_avx512.c - AVX-512 block kernel: rows [r0, r1) x nt tokens.
 *
 * Two weight rows at a time, 16 columns per step: each weight vector is
 * loaded and widened once and FMA'd into 2 x nt fp32 accumulators, so a
 * weight byte is read from memory once for all tokens. Column tails use
 * masked loads. Widening: bf16 by zero-extend + shift, f16 by vcvtph2ps,
 * f8 e4m3 by rebuilding it as an f16 (sign-extend, shift, mask: the value
 * times 2^-8, exact) and vcvtph2ps; the 2^8 is folded into the block
 * scale. F8 sums each blk-column block, then FMAs it with its scale.
 * (NaN e4m3 codes 0x7f/0xff read as +-480 here; checkpoints hold none.)
 */
#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

/* 16 weights of row w (element offset c) as fp32; masked when m != full. */
KTARGET_AVX512 KINLINE __m512 w_load(enum kdtype dt, const void *w, int c,
                                     __mmask16 m, int masked)
{
    switch (dt) {
    case KDT_F32: {
        const float *p = (const float *)w + c;
        return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
    }
    case KDT_BF16:
    case KDT_F16: {
        const uint16_t *p = (const uint16_t *)w + c;
        __m256i h = masked ? _mm256_maskz_loadu_epi16(m, p)
                           : _mm256_loadu_si256((const __m256i *)p);
        if (dt == KDT_F16)
            return _mm512_cvtph_ps(h);
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    default: {
        const uint8_t *p = (const uint8_t *)w + c;
        __m128i b = masked ? _mm_maskz_loadu_epi8(m, p)
                           : _mm_loadu_si128((const __m128i *)p);
        __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7);
        h = _mm256_and_si256(h, _mm256_set1_epi16((short)0xbf80));
        return _mm512_cvtph_ps(h);
    }
    }
}

/* acc[k][t] += W[row k][c0..c1) . x[t][c0..c1), k < NR, t < NT. */
KTARGET_AVX512 KINLINE void seg_dot(enum kdtype dt, int NR, int NT,
                                    const void *w0, const void *w1,
                                    const float *x, int ldx, int c0, int c1,
                                    __m512 acc[2][KMM_NT])
{
    int c = c0;
    for (; c + 16 <= c1; c += 16) {
        __m512 a = w_load(dt, w0, c, 0, 0);
        __m512 b = NR > 1 ? w_load(dt, w1, c, 0, 0) : a;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)t * ldx + c);
            acc[0][t] = _mm512_fmadd_ps(a, xv, acc[0][t]);
            if (NR > 1)
                acc[1][t] = _mm512_fmadd_ps(b, xv, acc[1][t]);
        }
    }
    if (c < c1) {
        __mmask16 m = (__mmask16)((1u << (c1 - c)) - 1);
        __m512 a = w_load(dt, w0, c, m, 1);
        __m512 b = NR > 1 ? w_load(dt, w1, c, m, 1) : a;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)t * ldx + c);
            acc[0][t] = _mm512_fmadd_ps(a, xv, acc[0][t]);
            if (NR > 1)
                acc[1][t] = _mm512_fmadd_ps(b, xv, acc[1][t]);
        }
    }
}

/* y[t][r + k] for k < NR, t < NT. */
KTARGET_AVX512 KINLINE void rows_dot(enum kdtype dt, int NR, int NT,
                                     const struct kmat *W, int r,
                                     const float *x, int ldx, float *y,
                                     int ldy)
{
    const int cols = W->cols;
    const size_t rb = (size_t)cols * kdtype_size(dt);
    const void *w0 = (const char *)W->data + (size_t)r * rb;
    const void *w1 = (const char *)w0 + rb;
    __m512 acc[2][KMM_NT], tot[2][KMM_NT];

    KUNROLL

    for (int t = 0; t < NT; t++)
        tot[0][t] = tot[1][t] = _mm512_setzero_ps();
    if (dt != KDT_F8_E4M3) {
        seg_dot(dt, NR, NT, w0, w1, x, ldx, 0, cols, tot);
    } else {
        const int blk = W->blk, nb = (cols + blk - 1) / blk;
        const float *s0 = W->scale + (size_t)(r / blk) * nb;
        const float *s1 = W->scale + (size_t)((r + NR - 1) / blk) * nb;
        for (int b = 0; b < nb; b++) {
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[0][t] = acc[1][t] = _mm512_setzero_ps();
            int c1 = (b + 1) * blk < cols ? (b + 1) * blk : cols;
            seg_dot(dt, NR, NT, w0, w1, x, ldx, b * blk, c1, acc);
            __m512 sa = _mm512_set1_ps(s0[b] * 256.0f);
            __m512 sb = _mm512_set1_ps(s1[b] * 256.0f);
            KUNROLL
            for (int t = 0; t < NT; t++) {
                tot[0][t] = _mm512_fmadd_ps(acc[0][t], sa, tot[0][t]);
                if (NR > 1)
                    tot[1][t] = _mm512_fmadd_ps(acc[1][t], sb, tot[1][t]);
            }
        }
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        y[(size_t)t * ldy + r] = _mm512_reduce_add_ps(tot[0][t]);
        if (NR > 1)
            y[(size_t)t * ldy + r + 1] = _mm512_reduce_add_ps(tot[1][t]);
    }
}

KTARGET_AVX512 KINLINE void block_nt(enum kdtype dt, int NT,
                                     const struct kmat *W, int r0, int r1,
                                     const float *x, int ldx, float *y,
                                     int ldy)
{
    int r = r0;
    for (; r + 2 <= r1; r += 2)
        rows_dot(dt, 2, NT, W, r, x, ldx, y, ldy);
    if (r < r1)
        rows_dot(dt, 1, NT, W, r, x, ldx, y, ldy);
}

KTARGET_AVX512 KINLINE void block_dt(enum kdtype dt, const struct kmat *W,
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

KTARGET_AVX512 void kmm_block_avx512(const struct kmat *W, int r0, int r1,
                                     const float *x, int ldx, float *y,
                                     int ldy, int nt)
{
    switch (W->dtype) {
    case KDT_F32: block_dt(KDT_F32, W, r0, r1, x, ldx, y, ldy, nt); break;
    case KDT_BF16: block_dt(KDT_BF16, W, r0, r1, x, ldx, y, ldy, nt); break;
    case KDT_F16: block_dt(KDT_F16, W, r0, r1, x, ldx, y, ldy, nt); break;
    default: block_dt(KDT_F8_E4M3, W, r0, r1, x, ldx, y, ldy, nt); break;
    }
}
#endif
