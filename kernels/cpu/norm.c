/*
 * norm.c - small per-token ops: rmsnorm, rope, softmax, swiglu.
 * O(n) work; plain C (the compiler vectorises what matters), with sums
 * of many terms kept in double so they match the reference to ~1e-7.
 * rmsnorm, softmax, exp-sum, argmax and SwiGLU have AVX-512 and AVX2
 * versions (act_avx512.c, act_avx2.c), used when kisa_active() is
 * KISA_AVX512 or KISA_AVX2.
 */
#include <math.h>

#include "kcpu.h"

/* Element i of a norm weight vector of dtype wt. F8 is read unscaled. */
static float wget(const void *w, enum kdtype wt, int i)
{
    switch (wt) {
    case KDT_F32: return ((const float *)w)[i];
    case KDT_BF16: return kbf16_to_f32(((const uint16_t *)w)[i]);
    case KDT_F16: return kf16_to_f32(((const uint16_t *)w)[i]);
    default: return kf8e4m3_table[((const uint8_t *)w)[i]];
    }
}

void krmsnorm(float *out, const float *x, const void *w, enum kdtype wt,
              int n, float eps)
{
#if KCPU_X86
    if (n > 0 && wt != KDT_F8_E4M3 && kisa_active() == KISA_AVX512) {
        krmsnorm_avx512(out, x, w, wt, n, eps);
        return;
    }
    if (n > 0 && wt != KDT_F8_E4M3 && kisa_active() == KISA_AVX2) {
        krmsnorm_avx2(out, x, w, wt, n, eps);
        return;
    }
#endif
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    if (wt == KDT_F32) {
        const float *wf = w;
        for (int i = 0; i < n; i++)
            out[i] = x[i] * inv * wf[i];
    } else if (wt == KDT_BF16) {
        const uint16_t *wb = w;
        for (int i = 0; i < n; i++)
            out[i] = x[i] * inv * kbf16_to_f32(wb[i]);
    } else {
        for (int i = 0; i < n; i++)
            out[i] = x[i] * inv * wget(w, wt, i);
    }
}

/*
 * The angle is the fp32 product pos * inv_freq[i], as the reference
 * computes it (torch.outer on fp32); cos/sin of that angle in double.
 */
void krope_cs(float *cs, int dim, int pos, const float *inv_freq,
              float mscale)
{
    for (int i = 0; i < dim / 2; i++) {
        float ang = (float)pos * inv_freq[i];
        cs[2 * i] = (float)cos((double)ang) * mscale;
        cs[2 * i + 1] = (float)sin((double)ang) * mscale;
    }
}

void krope_apply(float *x, int dim, const float *cs)
{
    for (int i = 0; i < dim / 2; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

void krope(float *x, int dim, int pos, const float *inv_freq, float mscale)
{
    for (int i = 0; i < dim / 2; i++) {
        float cs[2];
        krope_cs(cs, 2, pos, inv_freq + i, mscale);
        krope_apply(x + 2 * i, 2, cs);
    }
}

float ksoftmax(float *x, int n)
{
    if (n <= 0)
        return -INFINITY;
#if KCPU_X86
    if (kisa_active() == KISA_AVX512)
        return ksoftmax_avx512(x, n);
    if (kisa_active() == KISA_AVX2)
        return ksoftmax_avx2(x, n);
#endif
    float mx = x[0];
    for (int i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
    return mx;
}

float ksoftmax_scaled(const float *x, int n, float scale, float *out)
{
#if KCPU_X86
    if (kisa_active() == KISA_AVX512)
        return ksoftmax_scaled_avx512(x, n, scale, out);
    if (kisa_active() == KISA_AVX2)
        return ksoftmax_scaled_avx2(x, n, scale, out);
#endif
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx; /* NaN compares false */
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        out[i] = x[i] > -INFINITY ? expf(scale * (x[i] - mx)) : 0.0f;
        sum += out[i];
    }
    if (sum > 0.0) {
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < n; i++)
            out[i] *= inv;
    }
    return mx;
}

float kexp_sum(float *x, int n, float scale, float shift)
{
#if KCPU_X86
    if (kisa_active() == KISA_AVX512)
        return kexp_sum_avx512(x, n, scale, shift);
    if (kisa_active() == KISA_AVX2)
        return kexp_sum_avx2(x, n, scale, shift);
#endif
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = x[i] > -INFINITY ? expf(scale * x[i] - shift) : 0.0f;
        sum += x[i];
    }
    return (float)sum;
}

int kargmax(const float *x, int n)
{
#if KCPU_X86
    if (kisa_active() == KISA_AVX512)
        return kargmax_avx512(x, n);
    if (kisa_active() == KISA_AVX2)
        return kargmax_avx2(x, n);
#endif
    int best = -1;
    for (int i = 0; i < n; i++)
        if (x[i] == x[i] && (best < 0 || x[i] > x[best]))
            best = i;
    return best;
}

void kswiglu(float *out, const float *gate, const float *up, int n)
{
#if KCPU_X86
    if (kisa_active() == KISA_AVX512) {
        kswiglu_avx512(out, gate, up, n);
        return;
    }
    if (kisa_active() == KISA_AVX2) {
        kswiglu_avx2(out, gate, up, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
