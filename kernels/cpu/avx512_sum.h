/*
 * avx512_sum.h - horizontal sums and result stores shared by the AVX-512
 * matmul kernels (matmul_avx512.c, matmul_bf16p.c, matmul_bf16dp.c).
 * Internal.
 */
#ifndef MTPD_AVX512_SUM_H
#define MTPD_AVX512_SUM_H

#include <immintrin.h>

#include "kcpu.h"

/* Sums of a, b, c, d as one vector {sum a, sum b, sum c, sum d}. */
KTARGET_AVX512 KINLINE __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b),
                              _mm512_unpackhi_ps(a, b)); /* a0 b0 a1 b1 */
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d),
                              _mm512_unpackhi_ps(c, d));
    __m512 s = _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab),
                                            _mm512_castps_pd(cd))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab),
                                            _mm512_castps_pd(cd))));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(
                                 _mm512_castps_pd(s), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Sum of a by the same tree reduce4 uses for each of its inputs (lane 0
 * of reduce4(a, 0, 0, 0)), so a row summed alone or in a group of four
 * gets the same bits. (_mm512_reduce_add_ps adds in another order.) */
KTARGET_AVX512 KINLINE float hsum1(__m512 a)
{
    __m512 z = _mm512_setzero_ps();
    return _mm_cvtss_f32(reduce4(a, z, z, z));
}

/* Stores (or adds) n <= 4 results v to y[0..n). */
KTARGET_AVX512 KINLINE void put(float *y, __m128 v, int n, int accum)
{
    __mmask8 m = (__mmask8)((1u << n) - 1);
    if (accum)
        v = _mm_add_ps(v, _mm_maskz_loadu_ps(m, y));
    _mm_mask_storeu_ps(y, m, v);
}

/* Stores (accum: adds) the lane sums of acc[0..NR)[t] to y[t][r..r+NR),
 * four rows per reduce4 (the block kernels of matmul_bf16p.c and
 * matmul_bf16dp.c). */
#define KPUT_NRMAX 8
KTARGET_AVX512 KINLINE void kput_rows(int NR, int NT, const struct kmm_blk *b,
                                      int r, float *y,
                                      __m512 acc[KPUT_NRMAX][KMM_NT],
                                      int accum)
{
    const size_t ldy = (size_t)b->ldy;
    const __m512 z = _mm512_setzero_ps();
    KUNROLL
    for (int t = 0; t < NT; t++) {
        float *yp = y + t * ldy + r;
        KUNROLL
        for (int k0 = 0; k0 < NR; k0 += 4) {
            int n = NR - k0 < 4 ? NR - k0 : 4;
            put(yp + k0,
                reduce4(acc[k0][t], n > 1 ? acc[(k0 + 1) % NR][t] : z,
                        n > 2 ? acc[(k0 + 2) % NR][t] : z,
                        n > 3 ? acc[(k0 + 3) % NR][t] : z),
                n, accum);
        }
    }
}

#endif
