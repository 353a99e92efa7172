/*
 * matmul_avx2.c - AVX2+FMA+F16C block kernel (see struct kmm_blk, kcpu.h)
 * for F32, F16 and F8 weights (BF16: matmul_bf16p_avx2.c).
 *
 * Same scheme as matmul_avx512.c with 8 columns per step and 16 registers:
 * NR x NT = 4x1..4x2 and 2x3..2x4 (larger token counts in passes of 4);
 * F8, which needs a second set of accumulators, 4x1 and 2x2. Column tails:
 * weights widened into a zero-padded stack vector, x by vmaskmovps.
 * F8 e4m3 is widened through f16 (value times 2^-8, exact; the 2^8 is
 * folded into the block scale).
 * (NaN e4m3 codes read as +-480 in full steps; checkpoints hold none.)
 * Weights are prefetched KMM_PF_BYTES ahead in each row group's linear
 * range, as matmul_bf16p.c does (EPYC Zen 5, AVX2, 2 threads, BF16 at one
 * token when this kernel still took it, medians of 8 interleaved runs:
 * rows of 3072 / 7168 columns 1.3x / 1.6x, 2048 columns 1.04x; two tokens
 * 1.0-1.1x).
 */
#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

#define NRMAX 4
#define NTMAX 4

KTARGET_AVX2 KINLINE __m256 w_load(enum kdtype dt, const void *w, int c)
{
    switch (dt) {
    case KDT_F32: return _mm256_loadu_ps((const float *)w + c);
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

/* Weights c..c+n-1 (n < 8) widened like w_load, zero padded. */
KTARGET_AVX2 KINLINE __m256 w_tail(enum kdtype dt, const void *w, int c,
                                   int n)
{
    float v[8] = {0};
    for (int i = 0; i < n; i++) {
        switch (dt) {
        case KDT_F32: v[i] = ((const float *)w)[c + i]; break;
        case KDT_F16: v[i] = kf16_to_f32(((const uint16_t *)w)[c + i]); break;
        default:
            v[i] = kf8e4m3_table[((const uint8_t *)w)[c + i]] * 0x1p-8f;
        }
    }
    return _mm256_loadu_ps(v);
}

KTARGET_AVX2 KINLINE void step(enum kdtype dt, int NR, int NT,
                               const void *const *w, const float *x, int ldx,
                               int c, int n, __m256 acc[NRMAX][NTMAX])
{
    __m256 wv[NRMAX];
    __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n),
                                   _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    KUNROLL
    for (int k = 0; k < NR; k++)
        wv[k] = n == 8 ? w_load(dt, w[k], c) : w_tail(dt, w[k], c, n);
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const float *xp = x + (size_t)t * ldx + c;
        __m256 xv = n == 8 ? _mm256_loadu_ps(xp) : _mm256_maskload_ps(xp, m);
        KUNROLL
        for (int k = 0; k < NR; k++)
            acc[k][t] = _mm256_fmadd_ps(wv[k], xv, acc[k][t]);
    }
}

KTARGET_AVX2 KINLINE void seg_dot(enum kdtype dt, int NR, int NT,
                                  const void *const *w, const float *x,
                                  int ldx, int c0, int c1,
                                  __m256 acc[NRMAX][NTMAX],
                                  const struct kpf *pf, int pc0)
{
    KUNROLL
    for (int k = 0; k < NR; k++) {
        KUNROLL
        for (int t = 0; t < NT; t++)
            acc[k][t] = _mm256_setzero_ps();
    }
    const size_t es = kdtype_size(dt);
    int c = c0;
    for (; c + 8 <= c1; c += 8) {
        /* a line per row every 64 bytes of a row (pc0: the call's c0) */
        if (((size_t)c * es) % 64 == 0)
            kpf_lines(pf, (size_t)(c - pc0) * es * NR, NR);
        step(dt, NR, NT, w, x, ldx, c, 8, acc);
    }
    if (c < c1)
        step(dt, NR, NT, w, x, ldx, c, c1 - c, acc);
}

KTARGET_AVX2 KINLINE float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y[t][r + k] (=|+=) rows r..r+NR-1 . x[t] over the segment [c0, c1). */
KTARGET_AVX2 KINLINE void seg_rows(enum kdtype dt, int NR, int NT,
                                   const struct kmm_blk *b, int r,
                                   const void *const *w, const float *x,
                                   float *y, int c0, int c1, int accum)
{
    const struct kmat *W = b->W;
    __m256 acc[NRMAX][NTMAX], tot[NRMAX][NTMAX];

    const struct kpf pf = kpf_group(W, w[0]);
    if (dt != KDT_F8_E4M3) {
        seg_dot(dt, NR, NT, w, x, b->ldx, c0, c1, tot, &pf, b->c0);
    } else {
        const int blk = W->blk, nb = (W->cols + blk - 1) / blk;
        const float *s[NRMAX];
        KUNROLL
        for (int k = 0; k < NR; k++) {
            s[k] = W->scale + (size_t)((r + k) / blk) * nb;
            KUNROLL
            for (int t = 0; t < NT; t++)
                tot[k][t] = _mm256_setzero_ps();
        }
        for (int c = c0; c < c1; c += blk) {
            int ce = c1 - c < blk ? c1 : c + blk;
            seg_dot(dt, NR, NT, w, x, b->ldx, c, ce, acc, &pf, b->c0);
            KUNROLL
            for (int k = 0; k < NR; k++) {
                __m256 sv = _mm256_set1_ps(s[k][c / blk] * 256.0f);
                KUNROLL
                for (int t = 0; t < NT; t++)
                    tot[k][t] = _mm256_fmadd_ps(acc[k][t], sv, tot[k][t]);
            }
        }
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        KUNROLL
        for (int k = 0; k < NR; k++) {
            float *yp = y + (size_t)t * b->ldy + r + k;
            float v = hsum(tot[k][t]);
            *yp = accum ? *yp + v : v;
        }
    }
}

/* Rows r..r+NR-1 over [c0, c1), one segment at a time (kcpu.h). */
KTARGET_AVX2 KINLINE void rows_dot(enum kdtype dt, int NR, int NT,
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

KTARGET_AVX2 KINLINE void rows_loop(enum kdtype dt, int NR, int NT,
                                    const struct kmm_blk *b, int t0)
{
    const float *x = b->x + (size_t)t0 * b->ldx;
    float *y = b->y + (size_t)t0 * b->ldy;
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows_dot(dt, NR, NT, b, r, x, y);
    for (; r < b->r1; r++)
        rows_dot(dt, 1, NT, b, r, x, y);
}

KTARGET_AVX2 KINLINE void block_dense(enum kdtype dt, const struct kmm_blk *b)
{
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: /* kisa_row_stream(): one linear stream (AMD) */
            b->row1 ? rows_loop(dt, 1, 1, b, t0) : rows_loop(dt, 4, 1, b, t0);
            break;
        case 2: rows_loop(dt, 4, 2, b, t0); break;
        case 3: rows_loop(dt, 2, 3, b, t0); break;
        default: rows_loop(dt, 2, 4, b, t0); break;
        }
    }
}

KTARGET_AVX2 static void block_f8(const struct kmm_blk *b)
{
    const enum kdtype dt = KDT_F8_E4M3;
    if (b->nt == 1) { /* kisa_row_stream(): one linear stream (AMD) */
        b->row1 ? rows_loop(dt, 1, 1, b, 0) : rows_loop(dt, 4, 1, b, 0);
        return;
    }
    for (int t0 = 0; t0 < b->nt; t0 += 2) {
        if (b->nt - t0 == 1)
            rows_loop(dt, 2, 1, b, t0);
        else
            rows_loop(dt, 2, 2, b, t0);
    }
}

KTARGET_AVX2 void kmm_block_avx2(const struct kmm_blk *b)
{
    switch (b->W->dtype) {
    case KDT_F32: block_dense(KDT_F32, b); break;
    case KDT_F16: block_dense(KDT_F16, b); break;
    case KDT_F8_E4M3: block_f8(b); break;
    default: break; /* BF16: matmul_bf16p_avx2.c (matmul.c packs x) */
    }
}
#endif
