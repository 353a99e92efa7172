/*
 * kcuda_dq.cuh - reading weights of every kdtype on the device: scalar
 * conversions and one element W[r][c] of a struct kdmat, with the exact
 * dequantisation of kmat_row_f32 (kernels.h). Device code of the .cu files
 * (weights, matmul, elementwise, absorb); internal to kernels/cuda/.
 */
#ifndef MTPD_KCUDA_DQ_CUH
#define MTPD_KCUDA_DQ_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "kcuda.h"

/* Bytes of one row of W's data (kmat_row_bytes, usable on both sides). */
__host__ __device__ static inline size_t kd_row_bytes(int dtype, int cols)
{
    switch (dtype) {
    case KDT_F32: return (size_t)cols * 4;
    case KDT_BF16:
    case KDT_F16: return (size_t)cols * 2;
    case KDT_F8_E4M3:
    case KDT_Q8_0: return (size_t)cols;
    case KDT_Q4_1:
    case KDT_Q4_S: return (size_t)cols / 2;
    default: return 0;
    }
}

__device__ __forceinline__ float kd_bf16(uint32_t h)
{
    return __uint_as_float(h << 16);
}

__device__ __forceinline__ float kd_f16(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

/* e4m3fn through the hardware conversion (NaN stays NaN as in the CPU
 * table; every other value is exact in fp16 and fp32). */
__device__ __forceinline__ float kd_f8(uint8_t v)
{
    __half_raw hr = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)v, __NV_E4M3);
    return __half2float(__half(hr));
}

/* Two e4m3 in the low 16 bits of v (the lower address in .x). */
__device__ __forceinline__ float2 kd_f8x2(uint32_t v)
{
    __half2_raw hr =
        __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(v & 0xffffu),
                                   __NV_E4M3);
    return __half22float2(__half2(hr));
}

/* W[r][c] as fp32, any dtype (F8: times its block scale; Q8_0 / Q4_1:
 * as kernels.h defines them). rb = kd_row_bytes(W.dtype, W.cols). For
 * scattered reads (embedding rows, tails, dequantisation); the matmul's
 * streaming kernel decodes 16-byte chunks itself. */
__device__ __forceinline__ float kd_get(const struct kdmat &W, size_t rb,
                                        int r, int c)
{
    const uint8_t *row = (const uint8_t *)W.data + (size_t)r * rb;
    switch (W.dtype) {
    case KDT_F32: return ((const float *)row)[c];
    case KDT_BF16: return kd_bf16(((const uint16_t *)row)[c]);
    case KDT_F16: return kd_f16(((const uint16_t *)row)[c]);
    case KDT_F8_E4M3: {
        int nbc = (W.cols + W.blk - 1) / W.blk;
        return kd_f8(row[c]) *
               W.scale[(size_t)(r / W.blk) * nbc + c / W.blk];
    }
    case KDT_Q8_0:
        return (float)(int8_t)row[c] *
               kd_f16(W.qd[(size_t)r * (W.cols / KQ_BLK) + c / KQ_BLK]);
    case KDT_Q4_1: {
        int j = c / KQ_BLK, i = c % KQ_BLK;
        uint8_t b = row[j * (KQ_BLK / 2) + (i & 15)];
        float q = (float)(i < 16 ? (b & 15) : (b >> 4));
        size_t qi = (size_t)r * (W.cols / KQ_BLK) + j;
        return fmaf(q, kd_f16(W.qd[qi]), kd_f16(W.qm[qi]));
    }
    default: return 0.0f;
    }
}

/* Element i of a 1-D vector (norm weight) of dtype t: F32, BF16, F16, or
 * F8 read unscaled (krmsnorm's rule). */
__device__ __forceinline__ float kd_vec(const void *w, int t, int i)
{
    switch (t) {
    case KDT_F32: return ((const float *)w)[i];
    case KDT_BF16: return kd_bf16(((const uint16_t *)w)[i]);
    case KDT_F16: return kd_f16(((const uint16_t *)w)[i]);
    default: return kd_f8(((const uint8_t *)w)[i]);
    }
}

/* Sum over the 32 lanes of a warp (every lane gets it). */
__device__ __forceinline__ float kd_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
