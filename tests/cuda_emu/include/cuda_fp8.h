/* cuda_fp8.h of the CPU stand-in (emu.h): e4m3 -> fp16, exact (every
 * e4m3 value is a normal fp16 value; S.1111.111 is NaN). */
#ifndef MTPD_EMU_CUDA_FP8_H
#define MTPD_EMU_CUDA_FP8_H

#include "cuda_fp16.h"

typedef unsigned char __nv_fp8_storage_t;
typedef unsigned short __nv_fp8x2_storage_t;
typedef enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 } __nv_fp8_interpretation_t;

static inline __half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t v,
                                                 __nv_fp8_interpretation_t)
{
    unsigned short s = (unsigned short)((v & 0x80) << 8);
    int e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7)
        return __half_raw{(unsigned short)(s | 0x7e00)};
    float f = e ? ldexpf(1.0f + m / 8.0f, e - 7) : ldexpf(m / 8.0f, -6);
    if (f == 0.0f)
        return __half_raw{s};
    unsigned u = __float_as_uint(f); /* rebias: exact, in fp16's range */
    unsigned he = ((u >> 23) & 0xff) - 127 + 15;
    return __half_raw{(unsigned short)(s | he << 10 | ((u >> 13) & 0x3ff))};
}

static inline __half2_raw __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t v,
                                                     __nv_fp8_interpretation_t t)
{
    return __half2_raw{__nv_cvt_fp8_to_halfraw((unsigned char)(v & 0xff), t).x,
                       __nv_cvt_fp8_to_halfraw((unsigned char)(v >> 8), t).x};
}

#endif
