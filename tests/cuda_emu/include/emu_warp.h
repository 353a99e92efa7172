/*
 * emu_warp.h - the warp / block intrinsics kernels/cuda/moe.cu and
 * logits.cu use on top of the CPU stand-in's emu.h (tests/cuda_emu):
 * __shfl_sync, __shfl_up_sync, __ballot_sync, __match_any_sync,
 * __syncwarp, __syncthreads_or, __popc, shared-memory atomics, __align__.
 * Built the way emu.h builds __shfl_xor_sync: each lane publishes its
 * value in the warp's exchange buffer (two, alternating), a warp barrier,
 * then reads. Block threads run as coroutines on one OS thread and switch
 * only at barriers, so the atomics are plain read-modify-writes. Forced
 * into the emulated build of test_kcuda_moe (-include); if emu.h grows
 * the same names, drop them here.
 */
#ifndef MTPD_EMU_WARP_H
#define MTPD_EMU_WARP_H

#include <limits.h>

#include "emu.h"

#define __align__(n) __attribute__((aligned(n)))
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_syncwarp(); }
template <class T> static inline T __shfl_sync(unsigned, T v, int src, int = 32)
{
    unsigned p = emu_cur->shfl++ & 1;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    T r;
    emu_warp_get(&r, sizeof r, p, src & 31);
    return r;
}
template <class T> static inline T __shfl_up_sync(unsigned, T v, int d, int = 32)
{
    unsigned p = emu_cur->shfl++ & 1;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    T r;
    int src = emu_cur->lane >= d ? emu_cur->lane - d : emu_cur->lane;
    emu_warp_get(&r, sizeof r, p, src);
    return r;
}
static inline unsigned __ballot_sync(unsigned, int pred)
{
    unsigned p = emu_cur->shfl++ & 1;
    int v = pred != 0;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    unsigned m = 0;
    for (int l = 0; l < 32; l++) {
        int o;
        emu_warp_get(&o, sizeof o, p, l);
        m |= (unsigned)(o != 0) << l;
    }
    return m;
}
static inline unsigned __match_any_sync(unsigned, int v)
{
    unsigned p = emu_cur->shfl++ & 1;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    unsigned m = 0;
    for (int l = 0; l < 32; l++) {
        int o;
        emu_warp_get(&o, sizeof o, p, l);
        m |= (unsigned)(o == v) << l;
    }
    return m;
}
static inline int __syncthreads_or(int pred)
{
    static int acc;
    emu_syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)
        acc = 0;
    emu_syncthreads();
    if (pred)
        acc = 1;
    emu_syncthreads();
    int r = acc;
    emu_syncthreads();
    return r;
}
static inline int atomicAdd(int *p, int v)
{
    int o = *p;
    *p = o + v;
    return o;
}
static inline int atomicMin(int *p, int v)
{
    int o = *p;
    *p = v < o ? v : o;
    return o;
}
static inline int atomicMax(int *p, int v)
{
    int o = *p;
    *p = v > o ? v : o;
    return o;
}

#endif
