/*
 * matmul_bf16p_avx2.c - AVX2 block kernel for BF16 weights with x packed
 * in pairs (kmm_pack_pairs_avx2): per 16 columns the 8 even ones, then the
 * 8 odd ones, zero past cols.
 *
 * A 32-byte load of 16 bf16 weights then widens with one op per 8
 * weights and no shuffle (w << 16: the even weights, w & 0xffff0000: the
 * odd ones), as matmul_bf16p.c does with 512-bit vectors. The even and
 * odd products go to two accumulators, so each row and token runs two
 * FMA chains per lane: one chain (matmul_avx2.c, 8 columns per FMA) held
 * a row read alone (the row stream of AMD CPUs, kisa_row_stream) to one
 * FMA latency per 16 bytes, about half of what memory delivers there.
 * At a segment end (kcpu.h) the two are added, then summed by hsum's
 * tree; register blocking never changes a chain, so a row's result does
 * not depend on the token count, the row grouping or the thread split.
 *
 * Measured against the one-chain kernel (EPYC Zen 5 with MTPD_ISA=avx2, 2
 * threads, medians of interleaved runs): one token 1.2-1.35x, the
 * synthetic DeepSeek-V3-shaped model's decode 18-20 -> 22-25 tok/s,
 * prefill level; 2-4 tokens 1.3-1.4x on 2048-column rows but 0.7-0.9x on
 * 7168-column ones (fewer rows side by side), the default model's MTP
 * auto 1.0-1.3x.
 *
 * NR rows x NT tokens: 4x1 (1x1 with b->row1), 2x2, 1x3..1x4 (more tokens
 * in passes of 4): 2 * NR * NT accumulators, the widened weights and two
 * x vectors in 16 registers. Weights are prefetched KMM_PF_BYTES ahead in
 * the group's linear range. Column tails: weights copied into a zero
 * padded stack vector.
 */
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

#define NRMAX 4
#define NTMAX 4

/* One 16-column step: acc[k][t][0] += even products, [1] += odd ones. */
KTARGET_AVX2 KINLINE void pstep2(int NR, int NT, const uint16_t *const *w,
                                 const float *x, size_t ldx, int c, int n,
                                 __m256 acc[NRMAX][NTMAX][2])
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256 we[NRMAX], wo[NRMAX];
    KUNROLL
    for (int k = 0; k < NR; k++) {
        __m256i v;
        if (n == 16) {
            v = _mm256_loadu_si256((const __m256i *)(w[k] + c));
        } else { /* tail: zero padded */
            uint16_t tmp[16] = {0};
            memcpy(tmp, w[k] + c, (size_t)n * sizeof *tmp);
            v = _mm256_loadu_si256((const __m256i *)tmp);
        }
        we[k] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        wo[k] = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const float *xp = x + t * ldx + c;
        __m256 xe = _mm256_load_ps(xp), xo = _mm256_load_ps(xp + 8);
        KUNROLL
        for (int k = 0; k < NR; k++) {
            acc[k][t][0] = _mm256_fmadd_ps(we[k], xe, acc[k][t][0]);
            acc[k][t][1] = _mm256_fmadd_ps(wo[k], xo, acc[k][t][1]);
        }
    }
}

KTARGET_AVX2 KINLINE float hsum2(__m256 a, __m256 b)
{
    __m256 v = _mm256_add_ps(a, b);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y[t][r + k] (=|+=) rows r..r+NR-1 . x[t] over [c0, c1), one kseg
 * segment at a time. */
KTARGET_AVX2 KINLINE void prows2(int NR, int NT, const struct kmm_blk *b,
                                 int r, const float *x, float *y)
{
    const uint16_t *w[NRMAX];
    __m256 acc[NRMAX][NTMAX][2];
    const size_t cols = (size_t)b->W->cols, ldx = (size_t)b->ldx;
    KUNROLL
    for (int k = 0; k < NR; k++)
        w[k] = (const uint16_t *)b->W->data + (size_t)(r + k) * cols;
    const struct kpf pf = kpf_group(b->W, w[0]);
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        KUNROLL
        for (int k = 0; k < NR; k++) {
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[k][t][0] = acc[k][t][1] = _mm256_setzero_ps();
        }
        int c = cs;
        for (; c + 16 <= ce; c += 16) {
            if ((c & 31) == 0) /* a line per row every 32 columns */
                kpf_lines(&pf, (size_t)(c - b->c0) * 2 * NR, NR);
            pstep2(NR, NT, w, x, ldx, c, 16, acc);
        }
        if (c < ce)
            pstep2(NR, NT, w, x, ldx, c, ce - c, acc);
        int accum = b->accum || cs > b->c0;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            KUNROLL
            for (int k = 0; k < NR; k++) {
                float *yp = y + t * (size_t)b->ldy + r + k;
                float v = hsum2(acc[k][t][0], acc[k][t][1]);
                *yp = accum ? *yp + v : v;
            }
        }
    }
}

KTARGET_AVX2 KINLINE void prows2_loop(int NR, int NT, const struct kmm_blk *b,
                                      int t0)
{
    const float *x = b->x + (size_t)t0 * b->ldx;
    float *y = b->y + (size_t)t0 * b->ldy;
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        prows2(NR, NT, b, r, x, y);
    for (; r < b->r1; r++)
        prows2(1, NT, b, r, x, y);
}

KTARGET_AVX2 void kmm_block_avx2_bf16p(const struct kmm_blk *b)
{
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: /* kisa_row_stream(): one linear stream (AMD) */
            b->row1 ? prows2_loop(1, 1, b, t0) : prows2_loop(4, 1, b, t0);
            break;
        case 2: prows2_loop(2, 2, b, t0); break;
        case 3: prows2_loop(1, 3, b, t0); break;
        default: prows2_loop(1, 4, b, t0); break;
        }
    }
}

KTARGET_AVX2 void kmm_pack_pairs_avx2(const float *x, int ldx, int cols,
                                      int n_tok, void *xpv, int ldp)
{
    float *xp = xpv;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        float *pr = xp + (size_t)t * ldp;
        for (int c = 0; c < ldp; c += 16) {
            __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - c), lane);
            __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - c - 8),
                                            lane);
            __m256 a = _mm256_maskload_ps(xr + c, m0);
            __m256 b = _mm256_maskload_ps(xr + c + 8, m1);
            /* a0 a2 b0 b2 | a4 a6 b4 b6, then 64-bit lanes 0 2 1 3 */
            __m256 e = _mm256_shuffle_ps(a, b, 0x88);
            __m256 o = _mm256_shuffle_ps(a, b, 0xdd);
            _mm256_store_ps(pr + c, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                        _mm256_castps_pd(e), 0xd8)));
            _mm256_store_ps(pr + c + 8, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                            _mm256_castps_pd(o), 0xd8)));
        }
    }
}
#endif
