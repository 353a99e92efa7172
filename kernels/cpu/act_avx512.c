/*
 * act_avx512.c - AVX-512 softmax and SwiGLU (norm.c dispatches to them).
 *
 * exp(x) = 2^n * p(r), n = round(x log2 e), r = x - n ln2 in two steps
 * (Cody-Waite), p the Cephes expf polynomial (~1 ulp on |r| <= ln2/2);
 * vscalefps applies 2^n with correct overflow to inf and underflow to 0.
 * Softmax sums in double, like the portable version.
 */
#include <math.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

KTARGET_AVX512 KINLINE __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)),
                      _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

KTARGET_AVX512 KINLINE __mmask16 tail_mask(int left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

KTARGET_AVX512 float ksoftmax_avx512(float *x, int n)
{
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16)
        mv = _mm512_mask_max_ps(mv, tail_mask(n - i), mv,
                                _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    float mx = _mm512_reduce_max_ps(mv);
    __m512 m = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = _mm512_maskz_mov_ps(
            k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m)));
        _mm512_mask_storeu_ps(x + i, k, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(
                                   _mm512_extractf64x4_pd(
                                       _mm512_castps_pd(e), 1))));
    }
    __m512 inv = _mm512_set1_ps(
        (float)(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(s0, s1))));
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i),
                                            inv));
    }
    return mx;
}

KTARGET_AVX512 void kswiglu_avx512(float *out, const float *gate,
                                   const float *up, int n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
        __m512 d = _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(),
                                                          g)));
        __m512 s = _mm512_mul_ps(_mm512_div_ps(g, d),
                                 _mm512_maskz_loadu_ps(k, up + i));
        _mm512_mask_storeu_ps(out + i, k, s);
    }
}
#endif
