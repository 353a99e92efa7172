/* cuda_bf16.h of the CPU stand-in (emu.h). */
#ifndef MTPD_EMU_CUDA_BF16_H
#define MTPD_EMU_CUDA_BF16_H

#include "emu.h"

struct __nv_bfloat16 { unsigned short x; };

/* round to nearest even; NaN stays a quiet NaN */
static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return __nv_bfloat16{(unsigned short)((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1);
    return __nv_bfloat16{(unsigned short)(u >> 16)};
}

#endif
