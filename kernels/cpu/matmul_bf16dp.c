/*
 * matmul_bf16dp.c - AVX512-BF16 block kernel for BF16 weights whose
 * kmat.act_bf16 is set: x rounded to bf16 (kmm_pack_bf16, round to
 * nearest even) and multiplied with vdpbf16ps, 32 weight x activation
 * pairs per instruction, twice the multiply-adds of an fp32 FMA and no
 * widening of the weights. This is what llama.cpp and a torch bf16 model
 * compute; x loses its low 16 bits (relative error <= 2^-9 per element),
 * so results differ from the exact fp32 kernels (matmul_bf16p.c) by about
 * 1e-3 relative. A load option chooses it (mtpd_load_opts.act_bf16).
 *
 * Sums: lane j of an accumulator adds, per 32-column step and in column
 * order, the products of columns 2j+1 and 2j (the instruction's fixed
 * order, products exact, fp32 adds with denormals flushed); at a segment
 * end (kcpu.h) the lanes go through reduce4's tree. Register blocking
 * never changes a chain, so a row's result does not depend on the token
 * count, the row grouping or the thread split (batch invariance).
 *
 * NR rows x NT tokens: the NR * NT accumulators, NR weight vectors and one
 * x vector fit the 32 registers (8x1..8x2, 4x3..4x6, 3x7..3x8; 1x1, 1x2
 * with b->row1); NR = 4 or 8 fill reduce4's four slots. (8x3 and 6x4,
 * one or two registers short, spilled: 3-5 verify rows of the default
 * model cost 1.2-1.6x more than with the fp32 kernel.) Column tails: masked weight loads (packed x is zero
 * past cols, up to a multiple of 32).
 */
#include "kcpu.h"

#if KCPU_X86
#include "avx512_sum.h"

#define KTARGET_BF16DP                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma," \
                          "f16c")))

#define NRMAX KPUT_NRMAX

/* One 32-column step: acc[k][t] += row k . x[t] over the step's pairs. */
KTARGET_BF16DP KINLINE void dstep(int NR, int NT, const uint16_t *const *w,
                                  const uint16_t *x, size_t ldx, int c,
                                  __mmask32 m, int masked,
                                  __m512 acc[NRMAX][KMM_NT])
{
    __m512i wv[NRMAX];
    KUNROLL
    for (int k = 0; k < NR; k++)
        wv[k] = masked ? _mm512_maskz_loadu_epi16(m, w[k] + c)
                       : _mm512_loadu_si512((const void *)(w[k] + c));
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m512i xv = _mm512_load_si512((const void *)(x + t * ldx + c));
        KUNROLL
        for (int k = 0; k < NR; k++)
            acc[k][t] = _mm512_dpbf16_ps(acc[k][t], (__m512bh)wv[k],
                                         (__m512bh)xv);
    }
}

/* y[t][r + k] (=|+=) rows r..r+NR-1 . x[t] over [c0, c1), t < NT, one
 * kseg segment at a time. x: bf16, token t at x + t * ldx elements. */
KTARGET_BF16DP KINLINE void drows(int NR, int NT, const struct kmm_blk *b,
                                  int r, const uint16_t *x, size_t ldx)
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
            dstep(NR, NT, w, x, ldx, c, 0, 0, acc);
        }
        if (c < ce)
            dstep(NR, NT, w, x, ldx, c,
                  (__mmask32)((1ull << (ce - c)) - 1), 1, acc);
        kput_rows(NR, NT, b, r, b->y, acc, b->accum || cs > b->c0);
    }
}

/* Rows [r0, r1) in groups of NR (then single rows), NT tokens. */
KTARGET_BF16DP KINLINE void drows_loop(int NR, int NT,
                                       const struct kmm_blk *b)
{
    /* b->x holds bf16 x; ldx counts fp32 slots, two bf16 each */
    const uint16_t *x = (const uint16_t *)b->x;
    const size_t ldx = 2 * (size_t)b->ldx;
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        drows(NR, NT, b, r, x, ldx);
    for (; r < b->r1; r++)
        drows(1, NT, b, r, x, ldx);
}

#ifndef KBF16DP_NR8 /* rows per group at 7-8 tokens, for measurements */
#define KBF16DP_NR8 3
#endif

KTARGET_BF16DP void kmm_block_bf16dp(const struct kmm_blk *b)
{
    switch (b->nt) {
    case 1: b->row1 ? drows_loop(1, 1, b) : drows_loop(8, 1, b); break;
    case 2: b->row1 ? drows_loop(1, 2, b) : drows_loop(8, 2, b); break;
    case 3: drows_loop(4, 3, b); break;
    case 4: drows_loop(4, 4, b); break;
    case 5: drows_loop(4, 5, b); break;
    case 6: drows_loop(4, 6, b); break;
    case 7: drows_loop(3, 7, b); break;
    default: drows_loop(KBF16DP_NR8, 8, b); break;
    }
}

KTARGET_BF16DP void kmm_pack_bf16(const float *x, int ldx, int cols,
                                  int n_tok, void *xpv, int ldp)
{
    uint16_t *xp = xpv;
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        uint16_t *pr = xp + (size_t)t * ldp;
        for (int c = 0; c < ldp; c += 32) {
            int l0 = cols - c, l1 = cols - c - 16;
            __mmask16 m0 = l0 >= 16 ? 0xffff : l0 > 0 ? (__mmask16)((1u << l0) - 1) : 0;
            __mmask16 m1 = l1 >= 16 ? 0xffff : l1 > 0 ? (__mmask16)((1u << l1) - 1) : 0;
            __m512 lo = _mm512_maskz_loadu_ps(m0, xr + c);
            __m512 hi = _mm512_maskz_loadu_ps(m1, xr + c + 16);
            /* columns c..c+15 from the second operand, then c+16.. */
            _mm512_store_si512((void *)(pr + c),
                               (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}
#endif
