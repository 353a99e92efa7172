/*
 * emu_extra.h - intrinsics the MoE kernels use that the CUDA emulator
 * (tests/cuda_emu/include/emu.h) lacked when this was written (and
 * logits.cu's __syncthreads_or): forced in
 * after cuda_runtime.h (g++ -include) by run.sh, so emu.h stays as it is.
 * Drop whatever emu.h grows itself.
 */
#ifndef MTPD_EMU_EXTRA_H
#define MTPD_EMU_EXTRA_H

#include "cuda_runtime.h"

static inline void __syncwarp(unsigned = 0xffffffffu) { emu_syncwarp(); }

/* lanes of the running thread's warp that exist (a partial last warp) */
static inline int emu_x_warp_lanes(void)
{
    int n = (int)(emu_block_dim.x * emu_block_dim.y * emu_block_dim.z) -
            emu_cur->warp * 32;
    return n < 32 ? n : 32;
}
template <class T> static inline T emu_x_shfl_lane(T v, int src)
{
    unsigned p = emu_cur->shfl++ & 1;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    T r;
    emu_warp_get(&r, sizeof r, p, src);
    return r;
}
template <class T>
static inline T __shfl_sync(unsigned, T v, int src, int = 32)
{
    return emu_x_shfl_lane(v, src & 31);
}
template <class T>
static inline T __shfl_up_sync(unsigned, T v, unsigned d, int = 32)
{
    int l = emu_cur->lane - (int)d;
    return emu_x_shfl_lane(v, l < 0 ? emu_cur->lane : l);
}
template <class T>
static inline T __shfl_down_sync(unsigned, T v, unsigned d, int = 32)
{
    int l = emu_cur->lane + (int)d;
    return emu_x_shfl_lane(v, l > 31 ? emu_cur->lane : l);
}
static inline unsigned __ballot_sync(unsigned, int pred)
{
    unsigned p = emu_cur->shfl++ & 1;
    int v = pred != 0;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    unsigned m = 0;
    for (int l = 0; l < emu_x_warp_lanes(); l++) {
        int o;
        emu_warp_get(&o, sizeof o, p, l);
        m |= (unsigned)(o != 0) << l;
    }
    return m;
}
template <class T> static inline unsigned __match_any_sync(unsigned, T v)
{
    unsigned p = emu_cur->shfl++ & 1;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    unsigned m = 0;
    for (int l = 0; l < emu_x_warp_lanes(); l++) {
        T o;
        emu_warp_get(&o, sizeof o, p, l);
        m |= (unsigned)(o == v) << l;
    }
    return m;
}
static inline int __syncthreads_or(int pred)
{
    static int acc;
    int first = threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
    emu_syncthreads();
    if (first)
        acc = 0;
    emu_syncthreads();
    if (pred)
        acc = 1;
    emu_syncthreads();
    int r = acc;
    emu_syncthreads();
    return r;
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
/* one OS thread runs every emulated thread: a plain update is atomic */
template <class T> static inline T atomicAdd(T *p, T v)
{
    T o = *p;
    *p = o + v;
    return o;
}
template <class T> static inline T atomicMin(T *p, T v)
{
    T o = *p;
    *p = v < o ? v : o;
    return o;
}
template <class T> static inline T atomicMax(T *p, T v)
{
    T o = *p;
    *p = v > o ? v : o;
    return o;
}
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n,
                                     cudaMemcpyKind)
{
    memmove(d, s, n);
    return cudaSuccess;
}
#define __align__(n) __attribute__((aligned(n)))

#endif
