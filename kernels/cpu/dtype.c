/*
 * dtype.c - element types: sizes, names and exact scalar conversions.
 */
#include <math.h>
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>
#endif

size_t kdtype_size(enum kdtype t)
{
    switch (t) {
    case KDT_F32: return 4;
    case KDT_BF16: return 2;
    case KDT_F16: return 2;
    case KDT_F8_E4M3: return 1;
    case KDT_Q8_0: return 1;
    default: return 0; /* Q4_1 / Q4_S pack two per byte */
    }
}

size_t kmat_row_bytes(enum kdtype t, int cols)
{
    return t == KDT_Q4_1 || t == KDT_Q4_S || t == KDT_Q4_X8 ? (size_t)cols / 2
                                          : (size_t)cols * kdtype_size(t);
}

size_t kmat_bytes(const struct kmat *W)
{
    if (W == NULL || W->data == NULL)
        return 0;
    if (W->dtype == KDT_Q4_X8) { /* padded slabs */
        size_t sec[4];
        kq4x8_sections(W, sec);
        return sec[0] + sec[1] + sec[2] + sec[3];
    }
    size_t b = (size_t)W->rows * kmat_row_bytes(W->dtype, W->cols);
    if (W->dtype == KDT_F8_E4M3 && W->blk > 0)
        b += sizeof(float) * (size_t)((W->rows + W->blk - 1) / W->blk) *
             (size_t)((W->cols + W->blk - 1) / W->blk);
    size_t nb = (size_t)W->rows * (size_t)(W->cols / KQ_BLK);
    if (W->dtype == KDT_Q8_0)
        b += 2 * nb;
    if (W->dtype == KDT_Q4_1)
        b += 4 * nb;
    if (W->dtype == KDT_Q4_S) /* scale and min bytes, exponent pairs */
        b += 2 * nb + (size_t)W->rows * (size_t)kq4s_ex_bytes(W->cols);
    return b;
}

const char *kdtype_str(enum kdtype t)
{
    switch (t) {
    case KDT_F32: return "F32";
    case KDT_BF16: return "BF16";
    case KDT_F16: return "F16";
    case KDT_F8_E4M3: return "F8_E4M3";
    case KDT_Q8_0: return "Q8_0";
    case KDT_Q4_1: return "Q4_1";
    case KDT_Q4_S: return "Q4_S";
    case KDT_Q4_X8: return "Q4_X8";
    default: return "?";
    }
}

/* ---- Q4_S scales as Q4_1's ----------------------------------------- */

/* Blocks [j0, j1) of one row, one exponent pair: exact products, so the
 * conversion's rounding mode never matters. */
static void q4s_group_scalar(const uint8_t *sc, const int8_t *mn, int e,
                             int f, int j0, int j1, uint16_t *qd,
                             uint16_t *qm)
{
    float pe = kpow2f(e), pf = kpow2f(f);
    for (int j = j0; j < j1; j++) {
        qd[j] = kf32_to_f16((float)sc[j] * pe);
        qm[j] = kf32_to_f16((float)mn[j] * pf);
    }
}

#if KCPU_X86
KTARGET_AVX2 static void q4s_rows_avx2(const struct kmat *W, int r0, int n,
                                       uint16_t *qd, uint16_t *qm)
{
    const int nb = W->cols / KQ_BLK, ng = kq4s_ex_bytes(W->cols) / 2;
    for (int i = 0; i < n; i++) {
        size_t r = (size_t)(r0 + i);
        const uint8_t *sc = W->qsc + r * nb;
        const int8_t *mn = W->qmn + r * nb, *ex = W->qexp + r * 2 * ng;
        uint16_t *d = qd + (size_t)i * nb, *m = qm + (size_t)i * nb;
        int g = 0;
        for (; (g + 1) * KQ4S_GRP <= nb; g++) {
            int j = g * KQ4S_GRP;
            __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                _mm_loadl_epi64((const __m128i *)(sc + j))));
            __m256 t = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                _mm_loadl_epi64((const __m128i *)(mn + j))));
            s = _mm256_mul_ps(s, _mm256_set1_ps(kpow2f(ex[2 * g])));
            t = _mm256_mul_ps(t, _mm256_set1_ps(kpow2f(ex[2 * g + 1])));
            _mm_storeu_si128((__m128i *)(d + j),
                             _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
            _mm_storeu_si128((__m128i *)(m + j),
                             _mm256_cvtps_ph(t, _MM_FROUND_TO_NEAREST_INT));
        }
        if (g < ng)
            q4s_group_scalar(sc, mn, ex[2 * g], ex[2 * g + 1],
                             g * KQ4S_GRP, nb, d, m);
    }
}
#endif

void kq4s_expand(const struct kmat *W, int r0, int n, uint16_t *qd,
                 uint16_t *qm)
{
#if KCPU_X86
    if (kisa_active() != KISA_SCALAR) {
        q4s_rows_avx2(W, r0, n, qd, qm);
        return;
    }
#endif
    const int nb = W->cols / KQ_BLK, ng = kq4s_ex_bytes(W->cols) / 2;
    for (int i = 0; i < n; i++) {
        size_t r = (size_t)(r0 + i);
        const int8_t *ex = W->qexp + r * 2 * ng;
        for (int g = 0; g < ng; g++) {
            int j1 = (g + 1) * KQ4S_GRP < nb ? (g + 1) * KQ4S_GRP : nb;
            q4s_group_scalar(W->qsc + r * nb, W->qmn + r * nb, ex[2 * g],
                             ex[2 * g + 1], g * KQ4S_GRP, j1,
                             qd + (size_t)i * nb, qm + (size_t)i * nb);
        }
    }
}

int kq4s_check(const struct kmat *W)
{
    if (W == NULL || W->dtype != KDT_Q4_S || W->qexp == NULL ||
        W->cols % KQ_BLK != 0)
        return MTPD_K_EINVAL;
    size_t n = (size_t)W->rows * (size_t)kq4s_ex_bytes(W->cols);
    for (size_t i = 0; i < n; i++)
        if (W->qexp[i] < KQ4S_EMIN || W->qexp[i] > KQ4S_EMAX)
            return MTPD_K_EINVAL;
    return MTPD_K_OK;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float kbf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

/* IEEE binary16 -> binary32, exact (subnormals, inf and NaN kept). */
float kf16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;

    if (exp == 0x1f) /* inf / nan: keep payload */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero / subnormal: man * 2^-24 is exact in fp32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* e4m3fn: bias 7, no infinities, S.1111.111 is NaN, max 448. */
const float kf8e4m3_table[256] = {
    0.0f, 0x1.000p-9f, 0x1.000p-8f, 0x1.800p-8f,
    0x1.000p-7f, 0x1.400p-7f, 0x1.800p-7f, 0x1.c00p-7f,
    0x1.000p-6f, 0x1.200p-6f, 0x1.400p-6f, 0x1.600p-6f,
    0x1.800p-6f, 0x1.a00p-6f, 0x1.c00p-6f, 0x1.e00p-6f,
    0x1.000p-5f, 0x1.200p-5f, 0x1.400p-5f, 0x1.600p-5f,
    0x1.800p-5f, 0x1.a00p-5f, 0x1.c00p-5f, 0x1.e00p-5f,
    0x1.000p-4f, 0x1.200p-4f, 0x1.400p-4f, 0x1.600p-4f,
    0x1.800p-4f, 0x1.a00p-4f, 0x1.c00p-4f, 0x1.e00p-4f,
    0x1.000p-3f, 0x1.200p-3f, 0x1.400p-3f, 0x1.600p-3f,
    0x1.800p-3f, 0x1.a00p-3f, 0x1.c00p-3f, 0x1.e00p-3f,
    0x1.000p-2f, 0x1.200p-2f, 0x1.400p-2f, 0x1.600p-2f,
    0x1.800p-2f, 0x1.a00p-2f, 0x1.c00p-2f, 0x1.e00p-2f,
    0x1.000p-1f, 0x1.200p-1f, 0x1.400p-1f, 0x1.600p-1f,
    0x1.800p-1f, 0x1.a00p-1f, 0x1.c00p-1f, 0x1.e00p-1f,
    0x1.000p+0f, 0x1.200p+0f, 0x1.400p+0f, 0x1.600p+0f,
    0x1.800p+0f, 0x1.a00p+0f, 0x1.c00p+0f, 0x1.e00p+0f,
    0x1.000p+1f, 0x1.200p+1f, 0x1.400p+1f, 0x1.600p+1f,
    0x1.800p+1f, 0x1.a00p+1f, 0x1.c00p+1f, 0x1.e00p+1f,
    0x1.000p+2f, 0x1.200p+2f, 0x1.400p+2f, 0x1.600p+2f,
    0x1.800p+2f, 0x1.a00p+2f, 0x1.c00p+2f, 0x1.e00p+2f,
    0x1.000p+3f, 0x1.200p+3f, 0x1.400p+3f, 0x1.600p+3f,
    0x1.800p+3f, 0x1.a00p+3f, 0x1.c00p+3f, 0x1.e00p+3f,
    0x1.000p+4f, 0x1.200p+4f, 0x1.400p+4f, 0x1.600p+4f,
    0x1.800p+4f, 0x1.a00p+4f, 0x1.c00p+4f, 0x1.e00p+4f,
    0x1.000p+5f, 0x1.200p+5f, 0x1.400p+5f, 0x1.600p+5f,
    0x1.800p+5f, 0x1.a00p+5f, 0x1.c00p+5f, 0x1.e00p+5f,
    0x1.000p+6f, 0x1.200p+6f, 0x1.400p+6f, 0x1.600p+6f,
    0x1.800p+6f, 0x1.a00p+6f, 0x1.c00p+6f, 0x1.e00p+6f,
    0x1.000p+7f, 0x1.200p+7f, 0x1.400p+7f, 0x1.600p+7f,
    0x1.800p+7f, 0x1.a00p+7f, 0x1.c00p+7f, 0x1.e00p+7f,
    0x1.000p+8f, 0x1.200p+8f, 0x1.400p+8f, 0x1.600p+8f,
    0x1.800p+8f, 0x1.a00p+8f, 0x1.c00p+8f, NAN,
    -0.0f, -0x1.000p-9f, -0x1.000p-8f, -0x1.800p-8f,
    -0x1.000p-7f, -0x1.400p-7f, -0x1.800p-7f, -0x1.c00p-7f,
    -0x1.000p-6f, -0x1.200p-6f, -0x1.400p-6f, -0x1.600p-6f,
    -0x1.800p-6f, -0x1.a00p-6f, -0x1.c00p-6f, -0x1.e00p-6f,
    -0x1.000p-5f, -0x1.200p-5f, -0x1.400p-5f, -0x1.600p-5f,
    -0x1.800p-5f, -0x1.a00p-5f, -0x1.c00p-5f, -0x1.e00p-5f,
    -0x1.000p-4f, -0x1.200p-4f, -0x1.400p-4f, -0x1.600p-4f,
    -0x1.800p-4f, -0x1.a00p-4f, -0x1.c00p-4f, -0x1.e00p-4f,
    -0x1.000p-3f, -0x1.200p-3f, -0x1.400p-3f, -0x1.600p-3f,
    -0x1.800p-3f, -0x1.a00p-3f, -0x1.c00p-3f, -0x1.e00p-3f,
    -0x1.000p-2f, -0x1.200p-2f, -0x1.400p-2f, -0x1.600p-2f,
    -0x1.800p-2f, -0x1.a00p-2f, -0x1.c00p-2f, -0x1.e00p-2f,
    -0x1.000p-1f, -0x1.200p-1f, -0x1.400p-1f, -0x1.600p-1f,
    -0x1.800p-1f, -0x1.a00p-1f, -0x1.c00p-1f, -0x1.e00p-1f,
    -0x1.000p+0f, -0x1.200p+0f, -0x1.400p+0f, -0x1.600p+0f,
    -0x1.800p+0f, -0x1.a00p+0f, -0x1.c00p+0f, -0x1.e00p+0f,
    -0x1.000p+1f, -0x1.200p+1f, -0x1.400p+1f, -0x1.600p+1f,
    -0x1.800p+1f, -0x1.a00p+1f, -0x1.c00p+1f, -0x1.e00p+1f,
    -0x1.000p+2f, -0x1.200p+2f, -0x1.400p+2f, -0x1.600p+2f,
    -0x1.800p+2f, -0x1.a00p+2f, -0x1.c00p+2f, -0x1.e00p+2f,
    -0x1.000p+3f, -0x1.200p+3f, -0x1.400p+3f, -0x1.600p+3f,
    -0x1.800p+3f, -0x1.a00p+3f, -0x1.c00p+3f, -0x1.e00p+3f,
    -0x1.000p+4f, -0x1.200p+4f, -0x1.400p+4f, -0x1.600p+4f,
    -0x1.800p+4f, -0x1.a00p+4f, -0x1.c00p+4f, -0x1.e00p+4f,
    -0x1.000p+5f, -0x1.200p+5f, -0x1.400p+5f, -0x1.600p+5f,
    -0x1.800p+5f, -0x1.a00p+5f, -0x1.c00p+5f, -0x1.e00p+5f,
    -0x1.000p+6f, -0x1.200p+6f, -0x1.400p+6f, -0x1.600p+6f,
    -0x1.800p+6f, -0x1.a00p+6f, -0x1.c00p+6f, -0x1.e00p+6f,
    -0x1.000p+7f, -0x1.200p+7f, -0x1.400p+7f, -0x1.600p+7f,
    -0x1.800p+7f, -0x1.a00p+7f, -0x1.c00p+7f, -0x1.e00p+7f,
    -0x1.000p+8f, -0x1.200p+8f, -0x1.400p+8f, -0x1.600p+8f,
    -0x1.800p+8f, -0x1.a00p+8f, -0x1.c00p+8f, -NAN,
};

float kf8e4m3_to_f32(uint8_t v)
{
    return kf8e4m3_table[v];
}

/* Round to nearest even; NaN stays a (quiet) NaN of the same sign. */
uint16_t kf32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Round to nearest even; overflow to inf; NaN stays a quiet NaN. */
uint16_t kf32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u)
        return sign | 0x7e00;
    if (u >= 0x477ff000u) /* >= 65520: rounds to inf */
        return sign | 0x7c00;
    if (u < 0x38800000u) { /* below 2^-14: a subnormal (or 0); the scaling
                            * by 2^24 is exact, lrintf rounds to even */
        float a;
        memcpy(&a, &u, sizeof a);
        return sign | (uint16_t)lrintf(a * 0x1p24f);
    }
    u += 0xfffu + ((u >> 13) & 1);
    return sign | (uint16_t)((u - 0x38000000u) >> 13);
}
