/*
 * dtype.c - element types: sizes, names and exact scalar conversions.
 */
#include <math.h>
#include <string.h>

#include "kcpu.h"

size_t kdtype_size(enum kdtype t)
{
    switch (t) {
    case KDT_F32: return 4;
    case KDT_BF16: return 2;
    case KDT_F16: return 2;
    case KDT_F8_E4M3: return 1;
    default: return 0;
    }
}

const char *kdtype_str(enum kdtype t)
{
    switch (t) {
    case KDT_F32: return "F32";
    case KDT_BF16: return "BF16";
    case KDT_F16: return "F16";
    case KDT_F8_E4M3: return "F8_E4M3";
    default: return "?";
    }
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
