/*
 * act_avx512.c - AVX-512 rmsnorm, softmax and SwiGLU (norm.c dispatches
 * to them; they run once per row per op, on the calling thread, so at
 * T tokens they are serial work that grows with T).
 *
 * rmsnorm sums squares in double, like the portable version, and scales
 * each element in the same order ((x * inv) * w), so results match it.
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
    /* below ln(FLT_MIN) the result is 0: a denormal result (e.g. from the
     * -inf logits outside a restricted draft head) costs a microcode
     * assist per element, 10x the whole computation */
    __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33f),
                                          _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33f)),
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
    return _mm512_maskz_scalef_ps(normal, p, n);
}

KTARGET_AVX512 KINLINE __mmask16 tail_mask(int left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* 16 weights from w (dtype wt, not F8) as fp32, masked. */
KTARGET_AVX512 KINLINE __m512 wvec16(const void *w, enum kdtype wt, int i,
                                     __mmask16 k)
{
    if (wt == KDT_F32)
        return _mm512_maskz_loadu_ps(k, (const float *)w + i);
    __m256i h = _mm256_maskz_loadu_epi16(k, (const uint16_t *)w + i);
    if (wt == KDT_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

KTARGET_AVX512 void krmsnorm_avx512(float *out, const float *x, const void *w,
                                    enum kdtype wt, int n, float eps)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    __m512 inv = _mm512_set1_ps((float)(1.0 / sqrt(ss / n + eps)));
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv);
        _mm512_mask_storeu_ps(out + i, k,
                              _mm512_mul_ps(v, wvec16(w, wt, i, k)));
    }
}

/* max over x[0..n), NaN ignored (max_ps returns its second operand when
 * the first is NaN) */
KTARGET_AVX512 static float max_nan_ignored(const float *x, int n)
{
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        mv = _mm512_mask_max_ps(mv, k, _mm512_maskz_loadu_ps(k, x + i), mv);
    }
    return _mm512_reduce_max_ps(mv);
}

/* out[i] = exp(SHIFTED ? sc * x[i] - a : sc * (x[i] - a)), 0 for NaN and
 * -inf x; returns the sum in double. The two forms round differently:
 * softmax subtracts the max first, kexp_sum gets its shift pre-scaled. */
KTARGET_AVX512 KINLINE double exp_store_sum(const float *x, float *out,
                                            int n, float scale, float a,
                                            int SHIFTED)
{
    __m512 sc = _mm512_set1_ps(scale), av = _mm512_set1_ps(a);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __mmask16 ok = _mm512_mask_cmp_ps_mask(k, v, _mm512_set1_ps(-INFINITY),
                                               _CMP_GT_OQ);
        __m512 arg = SHIFTED ? _mm512_fmsub_ps(sc, v, av)
                             : _mm512_mul_ps(sc, _mm512_sub_ps(v, av));
        __m512 e = _mm512_maskz_mov_ps(ok, exp16(arg));
        _mm512_mask_storeu_ps(out + i, k, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(
                                   _mm512_extractf64x4_pd(
                                       _mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

KTARGET_AVX512 float ksoftmax_scaled_avx512(const float *x, int n,
                                            float scale, float *out)
{
    float mx = max_nan_ignored(x, n);
    double sum = exp_store_sum(x, out, n, scale, mx, 0);
    if (!(sum > 0.0))
        return mx;
    __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(out + i, k,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(k, out + i),
                                            inv));
    }
    return mx;
}

KTARGET_AVX512 float ksoftmax_avx512(float *x, int n)
{
    return ksoftmax_scaled_avx512(x, n, 1.0f, x); /* in place is safe */
}

KTARGET_AVX512 float kexp_sum_avx512(float *x, int n, float scale,
                                     float shift)
{
    return (float)exp_store_sum(x, x, n, scale, shift, 1);
}

KTARGET_AVX512 int kargmax_avx512(const float *x, int n)
{
    float mx = max_nan_ignored(x, n);
    if (mx != mx || n <= 0)
        return -1;
    __m512 m = _mm512_set1_ps(mx);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __mmask16 eq = _mm512_mask_cmp_ps_mask(
            k, _mm512_maskz_loadu_ps(k, x + i), m, _CMP_EQ_OQ);
        if (eq)
            return i + __builtin_ctz((unsigned)eq);
    }
    return -1; /* every entry NaN: mx is -inf only if all are -inf/NaN */
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
