/*
 * matmul_bf16p.c - AVX-512 block kernel for BF16 weights with x packed in
 * pairs (see kmm_pack_pairs in matmul.c).
 *
 * In packed x every 32 columns hold the 16 even columns, then the 16 odd
 * ones. A 64-byte load of 32 bf16 weights then widens with one op per 16
 * weights and no shuffle: w << 16 is the even weights as fp32 (the low
 * half of each dword), w & 0xffff0000 the odd ones, matching the packed
 * x halves lane for lane. (matmul_avx512.c widens 16 weights with a
 * zero-extend and a shift, two ops on the same ports as the FMAs.)
 * Products are exact and sums fp32 as elsewhere; only the order of the
 * additions differs.
 *
 * Weights are also prefetched KMM_PF_BYTES ahead (kpf_lines, kcpu.h;
 * pycode-mtp-tiny, T=4: matmuls 0.98 -> 0.75 ms).
 *
 * NR rows x NT tokens: 8x1, 4x2..4x4, 3x5..3x6, 2x7..2x8 (1x1, 1x2 with
 * b->row1). Each lane adds its even product, then its odd one, into one
 * accumulator for every NR x
 * NT, so a row's sum does not depend on the token count (kcpu.h).
 * Column tails: masked weight loads (packed x is zero-padded to a multiple
 * of 32 columns).
 */
#include "kcpu.h"

#if KCPU_X86
#include "avx512_sum.h"

#define NRMAX KPUT_NRMAX

/* One 32-column step: acc[k][t] += row k . x[t], the even product first,
 * then the odd one, into the same accumulator (one chain per lane). */
KTARGET_AVX512 KINLINE void pstep(int NR, int NT, const uint16_t *const *w,
                                  const float *x, int ldx, int c, __mmask32 m,
                                  int masked, __m512 acc[NRMAX][KMM_NT])
{
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 we[NRMAX], wo[NRMAX];
    KUNROLL
    for (int k = 0; k < NR; k++) {
        __m512i v = masked ? _mm512_maskz_loadu_epi16(m, w[k] + c)
                           : _mm512_loadu_si512((const void *)(w[k] + c));
        we[k] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        wo[k] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const float *xp = x + (size_t)t * ldx + c;
        __m512 xe = _mm512_load_ps(xp), xo = _mm512_load_ps(xp + 16);
        KUNROLL
        for (int k = 0; k < NR; k++) {
            acc[k][t] = _mm512_fmadd_ps(we[k], xe, acc[k][t]);
            acc[k][t] = _mm512_fmadd_ps(wo[k], xo, acc[k][t]);
        }
    }
}

/* y[t][r + k] (=|+=) rows r..r+NR-1 . x[t] over [c0, c1), t < NT, one
 * kseg segment at a time (kcpu.h). */
KTARGET_AVX512 KINLINE void prows(int NR, int NT, const struct kmm_blk *b,
                                  int r, const float *x, float *y)
{
    const uint16_t *w[NRMAX];
    __m512 acc[NRMAX][KMM_NT];
    const size_t cols = (size_t)b->W->cols;

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
                acc[k][t] = _mm512_setzero_ps();
        }
        int c = cs;
        for (; c + 32 <= ce; c += 32) {
            kpf_lines(&pf, (size_t)(c - b->c0) * 2 * NR, NR);
            pstep(NR, NT, w, x, b->ldx, c, 0, 0, acc);
        }
        if (c < ce)
            pstep(NR, NT, w, x, b->ldx, c,
                  (__mmask32)((1ull << (ce - c)) - 1), 1, acc);
        kput_rows(NR, NT, b, r, y, acc, b->accum || cs > b->c0);
    }
}

/* Rows [r0, r1) in groups of NR (then single rows), NT tokens. */
KTARGET_AVX512 KINLINE void prows_loop(int NR, int NT, const struct kmm_blk *b)
{
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        prows(NR, NT, b, r, b->x, b->y);
    for (; r < b->r1; r++)
        prows(1, NT, b, r, b->x, b->y);
}

/* NR x NT: accumulators plus 2*NR widened weights and 2 x vectors fit the
 * 32 registers; eight rows at one token keep eight FMA chains going. */
KTARGET_AVX512 void kmm_block_avx512_bf16p(const struct kmm_blk *b)
{
    switch (b->nt) {
    case 1: /* kisa_row_stream(): one linear stream (AMD) or eight */
        b->row1 ? prows_loop(1, 1, b) : prows_loop(8, 1, b);
        break;
    case 2: b->row1 ? prows_loop(1, 2, b) : prows_loop(4, 2, b); break;
    case 3: prows_loop(4, 3, b); break; /* one row: mixed, kept */
    case 4: prows_loop(4, 4, b); break;
    case 5: prows_loop(3, 5, b); break;
    case 6: prows_loop(3, 6, b); break;
    case 7: prows_loop(2, 7, b); break;
    default: prows_loop(2, 8, b); break;
    }
}

KTARGET_AVX512 void kmm_pack_pairs_avx512(const float *x, int ldx, int cols,
                                          int n_tok, void *xpv, int ldp)
{
    float *xp = xpv;
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18,
                                         20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        float *pr = xp + (size_t)t * ldp;
        for (int c = 0; c < ldp; c += 32) {
            int l0 = cols - c, l1 = cols - c - 16;
            __mmask16 m0 = l0 >= 16 ? 0xffff : l0 > 0 ? (__mmask16)((1u << l0) - 1) : 0;
            __mmask16 m1 = l1 >= 16 ? 0xffff : l1 > 0 ? (__mmask16)((1u << l1) - 1) : 0;
            __m512 a = _mm512_maskz_loadu_ps(m0, xr + c);
            __m512 b = _mm512_maskz_loadu_ps(m1, xr + c + 16);
            _mm512_store_ps(pr + c, _mm512_permutex2var_ps(a, ev, b));
            _mm512_store_ps(pr + c + 16, _mm512_permutex2var_ps(a, od, b));
        }
    }
}
#endif
