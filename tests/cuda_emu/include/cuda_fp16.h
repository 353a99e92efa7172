/* cuda_fp16.h of the CPU stand-in (emu.h). */
#ifndef MTPD_EMU_CUDA_FP16_H
#define MTPD_EMU_CUDA_FP16_H

#include "emu.h"

struct __half_raw { unsigned short x; };
struct __half2_raw { unsigned short x, y; };
struct __half {
    unsigned short x;
    __half() = default;
    __half(__half_raw r) : x(r.x) {}
};
struct __half2 {
    __half x, y;
    __half2() = default;
    __half2(__half2_raw r) { x.x = r.x; y.x = r.y; }
};

/* IEEE binary16 -> binary32, exact */
static inline float __half2float(__half h)
{
    unsigned s = (unsigned)(h.x & 0x8000) << 16, e = (h.x >> 10) & 0x1f,
             m = h.x & 0x3ff;
    if (e == 0x1f)
        return __uint_as_float(s | 0x7f800000u | (m << 13));
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return s ? -v : v;
    }
    return __uint_as_float(s | ((e + 112) << 23) | (m << 13));
}
static inline __half __ushort_as_half(unsigned short u)
{
    return __half(__half_raw{u});
}
static inline float2 __half22float2(__half2 h)
{
    return float2{__half2float(h.x), __half2float(h.y)};
}

#endif
