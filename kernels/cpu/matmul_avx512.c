/*
 * matmul_avx512.c - AVX-512 block kernel (see struct kmm_blk in kcpu.h).
 *
 * NR weight rows x NT tokens per pass, 16 columns per step: each weight
 * vector is loaded and widened once and FMA'd into NT accumulators, each
 * x vector is loaded once for NR rows, so weights stream from memory once
 * for all tokens. NR x NT: 8x1 (eight FMA chains: short, cache-resident
 * matrices such as attention scores are latency-bound with four), 4x2..4x4
 * and 2x5..2x8 (F8 needs a second set
 * of accumulators, so it runs 4x1..4x2 and 2x3..2x4, and splits larger
 * token counts). Column tails use masked loads.
 *
 * Widening: bf16 by zero-extend + shift; f16 by vcvtph2ps; f8 e4m3 by
 * rebuilding it as an f16 (sign-extend, shift, mask; the value times 2^-8,
 * exact) and vcvtph2ps, the 2^8 folded into the block scale. F8 sums each
 * blk-column block, then FMAs it with its scale into a running total.
 * (NaN e4m3 codes 0x7f/0xff read as +-480 here; checkpoints hold none.)
 */
#include "kcpu.h"

#if KCPU_X86
#include "avx512_sum.h"

#define NRMAX 8

/* 16 weights of row w from element c as fp32 (F8: times 2^-8). */
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

/* One 16-column step (masked when m is partial) for NR rows x NT tokens. */
KTARGET_AVX512 KINLINE void step(enum kdtype dt, int NR, int NT,
                                 const void *const *w, const float *x,
                                 int ldx, int c, __mmask16 m, int masked,
                                 __m512 acc[NRMAX][KMM_NT])
{
    __m512 wv[NRMAX];
    KUNROLL
    for (int k = 0; k < NR; k++)
        wv[k] = w_load(dt, w[k], c, m, masked);
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const float *xp = x + (size_t)t * ldx + c;
        __m512 xv = masked ? _mm512_maskz_loadu_ps(m, xp) : _mm512_loadu_ps(xp);
        KUNROLL
        for (int k = 0; k < NR; k++)
            acc[k][t] = _mm512_fmadd_ps(wv[k], xv, acc[k][t]);
    }
}

/* acc[k][t] = W[row k][c0..c1) . x[t][c0..c1). */
KTARGET_AVX512 KINLINE void seg_dot(enum kdtype dt, int NR, int NT,
                                    const void *const *w, const float *x,
                                    int ldx, int c0, int c1,
                                    __m512 acc[NRMAX][KMM_NT])
{
    KUNROLL
    for (int k = 0; k < NR; k++) {
        KUNROLL
        for (int t = 0; t < NT; t++)
            acc[k][t] = _mm512_setzero_ps();
    }
    int c = c0;
    for (; c + 16 <= c1; c += 16)
        step(dt, NR, NT, w, x, ldx, c, 0, 0, acc);
    if (c < c1)
        step(dt, NR, NT, w, x, ldx, c, (__mmask16)((1u << (c1 - c)) - 1), 1,
             acc);
}

/* y[t][r + k] (=|+=) rows r..r+NR-1 . x[t] over the segment [c0, c1),
 * t < NT. Every row's lanes are summed by reduce4's tree, whatever NR. */
KTARGET_AVX512 KINLINE void seg_rows(enum kdtype dt, int NR, int NT,
                                     const struct kmm_blk *b, int r,
                                     const void *const *w, const float *x,
                                     float *y, int c0, int c1, int accum)
{
    const struct kmat *W = b->W;
    __m512 acc[NRMAX][KMM_NT], tot[NRMAX][KMM_NT];

    if (dt != KDT_F8_E4M3) {
        seg_dot(dt, NR, NT, w, x, b->ldx, c0, c1, tot);
    } else {
        const int blk = W->blk, nb = (W->cols + blk - 1) / blk;
        const float *s[NRMAX];
        KUNROLL
        for (int k = 0; k < NR; k++) {
            s[k] = W->scale + (size_t)((r + k) / blk) * nb;
            KUNROLL
            for (int t = 0; t < NT; t++)
                tot[k][t] = _mm512_setzero_ps();
        }
        for (int c = c0; c < c1; c += blk) {
            int ce = c1 - c < blk ? c1 : c + blk;
            seg_dot(dt, NR, NT, w, x, b->ldx, c, ce, acc);
            KUNROLL
            for (int k = 0; k < NR; k++) {
                __m512 sv = _mm512_set1_ps(s[k][c / blk] * 256.0f);
                KUNROLL
                for (int t = 0; t < NT; t++)
                    tot[k][t] = _mm512_fmadd_ps(acc[k][t], sv, tot[k][t]);
            }
        }
    }
    const size_t ldy = (size_t)b->ldy;
    if (NR == 8) {
        KUNROLL
        for (int t = 0; t < NT; t++) {
            put(y + t * ldy + r, reduce4(tot[0][t], tot[1][t], tot[2][t],
                                         tot[3][t]), 4, accum);
            put(y + t * ldy + r + 4, reduce4(tot[4 % NR][t], tot[5 % NR][t],
                                             tot[6 % NR][t], tot[7 % NR][t]),
                4, accum);
        }
    } else if (NR == 4) {
        KUNROLL
        for (int t = 0; t < NT; t++)
            put(y + t * ldy + r, reduce4(tot[0][t], tot[1][t], tot[2][t],
                                         tot[3][t]), 4, accum);
    } else if (NR == 2) {
        KUNROLL
        for (int t = 0; t + 1 < NT; t += 2) {
            __m128 v = reduce4(tot[0][t], tot[1][t], tot[0][t + 1],
                               tot[1][t + 1]);
            put(y + t * ldy + r, v, 2, accum);
            put(y + (t + 1) * ldy + r, _mm_movehl_ps(v, v), 2, accum);
        }
        if (NT & 1) {
            __m512 z = _mm512_setzero_ps();
            put(y + (NT - 1) * ldy + r,
                reduce4(tot[0][NT - 1], tot[1][NT - 1], z, z), 2, accum);
        }
    } else {
        KUNROLL
        for (int t = 0; t < NT; t++) {
            float v = hsum1(tot[0][t]);
            y[t * ldy + r] = accum ? y[t * ldy + r] + v : v;
        }
    }
}

/* Rows r..r+NR-1 over [c0, c1), one segment at a time (kcpu.h). */
KTARGET_AVX512 KINLINE void rows_dot(enum kdtype dt, int NR, int NT,
                                     const struct kmm_blk *b, int r,
                                     const float *x, float *y)
{
    const size_t rb = (size_t)b->W->cols * kdtype_size(dt);
    const void *w[NRMAX];
    KUNROLL
    for (int k = 0; k < NR; k++)
        w[k] = (const char *)b->W->data + (size_t)(r + k) * rb;
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        seg_rows(dt, NR, NT, b, r, w, x, y, cs, ce, b->accum || cs > b->c0);
    }
}

/* Rows [r0, r1) in groups of NR (then of 4 when NR is 8, then single
 * rows) for tokens [t0, t0+NT). */
KTARGET_AVX512 KINLINE void rows_loop(enum kdtype dt, int NR, int NT,
                                      const struct kmm_blk *b, int t0)
{
    const float *x = b->x + (size_t)t0 * b->ldx;
    float *y = b->y + (size_t)t0 * b->ldy;
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows_dot(dt, NR, NT, b, r, x, y);
    for (; NR > 4 && r + 4 <= b->r1; r += 4)
        rows_dot(dt, NR > 4 ? 4 : 1, NT, b, r, x, y);
    for (; r < b->r1; r++)
        rows_dot(dt, 1, NT, b, r, x, y);
}

KTARGET_AVX512 KINLINE void block_dense(enum kdtype dt,
                                        const struct kmm_blk *b)
{
    switch (b->nt) {
    case 1: rows_loop(dt, 8, 1, b, 0); break;
    case 2: rows_loop(dt, 4, 2, b, 0); break;
    case 3: rows_loop(dt, 4, 3, b, 0); break;
    case 4: rows_loop(dt, 4, 4, b, 0); break;
    case 5: rows_loop(dt, 2, 5, b, 0); break;
    case 6: rows_loop(dt, 2, 6, b, 0); break;
    case 7: rows_loop(dt, 2, 7, b, 0); break;
    default: rows_loop(dt, 2, 8, b, 0); break;
    }
}

/* F8: at most 4 tokens per pass (acc + tot must fit the 32 registers). */
KTARGET_AVX512 static void block_f8(const struct kmm_blk *b)
{
    const enum kdtype dt = KDT_F8_E4M3;
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: rows_loop(dt, 4, 1, b, t0); break;
        case 2: rows_loop(dt, 4, 2, b, t0); break;
        case 3: rows_loop(dt, 2, 3, b, t0); break;
        default: rows_loop(dt, 2, 4, b, t0); break;
        }
    }
}

KTARGET_AVX512 void kmm_block_avx512(const struct kmm_blk *b)
{
    switch (b->W->dtype) {
    case KDT_F32: block_dense(KDT_F32, b); break;
    case KDT_BF16: block_dense(KDT_BF16, b); break;
    case KDT_F16: block_dense(KDT_F16, b); break;
    default: block_f8(b); break;
    }
}
#endif
