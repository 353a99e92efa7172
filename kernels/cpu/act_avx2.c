/*
 * act_avx2.c - AVX2 rmsnorm, softmax, exp-sum, argmax and SwiGLU: the
 * act_avx512.c functions for machines (or MTPD_ISA=avx2 runs) without
 * AVX-512. With the portable loops (glibc expf per element) these were
 * 13% of MTP decode on the default model (q8, EPYC Zen 5 as AVX2).
 *
 * Same arithmetic as act_avx512.c: rmsnorm and softmax sum in double and
 * scale in the portable order; exp(x) = 2^n * p(r) with the same Cody-Waite
 * reduction and Cephes polynomial; 2^n is applied as two exponent-built
 * factors (no vscalefps here), so overflow still gives inf and x below
 * ln(FLT_MIN) gives 0. Tails are masked loads and stores (no scalar
 * tail with another exp).
 */
#include <math.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

/* Lanes below left (all lanes when left >= 8) as an integer mask. */
KTARGET_AVX2 KINLINE __m256i tail8(int left)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

KTARGET_AVX2 KINLINE __m256 pow2i(__m256i n) /* 2^n, -126 <= n <= 127 */
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

KTARGET_AVX2 KINLINE __m256 exp8(__m256 x)
{
    __m256 normal = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33f), _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33f)),
                      _mm256_set1_ps(89.0f));
    __m256 n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    /* n in [-126, 129]: 2^n as 2^(n/2) * 2^(n - n/2), each normal */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    p = _mm256_mul_ps(_mm256_mul_ps(p, pow2i(h)),
                      pow2i(_mm256_sub_epi32(ni, h)));
    return _mm256_and_ps(p, normal);
}

/* 8 weights from w (dtype wt, not F8) as fp32; lanes past left are 0. */
KTARGET_AVX2 KINLINE __m256 wvec8(const void *w, enum kdtype wt, int i,
                                  int left)
{
    if (wt == KDT_F32)
        return _mm256_maskload_ps((const float *)w + i, tail8(left));
    __m128i h;
    if (left >= 8) {
        h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    } else {
        uint16_t t[8] = {0};
        for (int k = 0; k < left; k++)
            t[k] = ((const uint16_t *)w)[i + k];
        h = _mm_loadu_si128((const __m128i *)t);
    }
    if (wt == KDT_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Sum of v's 8 lanes added in double to s (two 4-lane halves). */
KTARGET_AVX2 KINLINE __m256d add_pd8(__m256d s, __m256 v)
{
    s = _mm256_add_pd(s, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(s, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

KTARGET_AVX2 KINLINE double hsum_pd(__m256d s)
{
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(s),
                           _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}

KTARGET_AVX2 void krmsnorm_avx2(float *out, const float *x, const void *w,
                                enum kdtype wt, int n, float eps)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_maskload_ps(x + i, tail8(n - i));
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double ss = hsum_pd(_mm256_add_pd(s0, s1));
    __m256 inv = _mm256_set1_ps((float)(1.0 / sqrt(ss / n + eps)));
    for (int i = 0; i < n; i += 8) {
        __m256i k = tail8(n - i);
        __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, k), inv);
        _mm256_maskstore_ps(out + i, k,
                            _mm256_mul_ps(v, wvec8(w, wt, i, n - i)));
    }
}

/* max over x[0..n), NaN ignored (max_ps returns its second operand when
 * the first is NaN); lanes past n count as -inf */
KTARGET_AVX2 static float max_nan_ignored(const float *x, int n)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 mv = ninf;
    for (int i = 0; i < n; i += 8) {
        __m256i k = tail8(n - i);
        __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, k),
                                    _mm256_castsi256_ps(k));
        mv = _mm256_max_ps(v, mv);
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(mv),
                          _mm256_extractf128_ps(mv, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* out[i] = exp(SHIFTED ? sc * x[i] - a : sc * (x[i] - a)), 0 for NaN and
 * -inf x; returns the sum in double (act_avx512.c's exp_store_sum). */
KTARGET_AVX2 KINLINE double exp_store_sum(const float *x, float *out, int n,
                                          float scale, float a, int SHIFTED)
{
    __m256 sc = _mm256_set1_ps(scale), av = _mm256_set1_ps(a);
    __m256d s = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        __m256i k = tail8(n - i);
        __m256 v = _mm256_maskload_ps(x + i, k);
        __m256 ok = _mm256_and_ps(
            _mm256_cmp_ps(v, _mm256_set1_ps(-INFINITY), _CMP_GT_OQ),
            _mm256_castsi256_ps(k));
        __m256 arg = SHIFTED ? _mm256_fmsub_ps(sc, v, av)
                             : _mm256_mul_ps(sc, _mm256_sub_ps(v, av));
        __m256 e = _mm256_and_ps(exp8(arg), ok);
        _mm256_maskstore_ps(out + i, k, e);
        s = add_pd8(s, e);
    }
    return hsum_pd(s);
}

KTARGET_AVX2 float ksoftmax_scaled_avx2(const float *x, int n, float scale,
                                        float *out)
{
    float mx = max_nan_ignored(x, n);
    double sum = exp_store_sum(x, out, n, scale, mx, 0);
    if (!(sum > 0.0))
        return mx;
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (int i = 0; i < n; i += 8) {
        __m256i k = tail8(n - i);
        _mm256_maskstore_ps(out + i, k,
                            _mm256_mul_ps(_mm256_maskload_ps(out + i, k), inv));
    }
    return mx;
}

KTARGET_AVX2 float ksoftmax_avx2(float *x, int n)
{
    return ksoftmax_scaled_avx2(x, n, 1.0f, x); /* in place is safe */
}

KTARGET_AVX2 float kexp_sum_avx2(float *x, int n, float scale, float shift)
{
    return (float)exp_store_sum(x, x, n, scale, shift, 1);
}

KTARGET_AVX2 int kargmax_avx2(const float *x, int n)
{
    float mx = max_nan_ignored(x, n);
    if (mx != mx || n <= 0)
        return -1;
    __m256 m = _mm256_set1_ps(mx);
    for (int i = 0; i < n; i += 8) {
        __m256i k = tail8(n - i);
        __m256 eq = _mm256_and_ps(
            _mm256_cmp_ps(_mm256_maskload_ps(x + i, k), m, _CMP_EQ_OQ),
            _mm256_castsi256_ps(k));
        int bits = _mm256_movemask_ps(eq);
        if (bits)
            return i + __builtin_ctz((unsigned)bits);
    }
    return -1; /* every entry NaN */
}

KTARGET_AVX2 void kswiglu_avx2(float *out, const float *gate, const float *up,
                               int n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int i = 0; i < n; i += 8) {
        __m256i k = tail8(n - i);
        __m256 g = _mm256_maskload_ps(gate + i, k);
        __m256 d = _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(),
                                                         g)));
        __m256 s = _mm256_mul_ps(_mm256_div_ps(g, d),
                                 _mm256_maskload_ps(up + i, k));
        _mm256_maskstore_ps(out + i, k, s);
    }
}
#endif
