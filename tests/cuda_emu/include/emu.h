/*
 * emu.h - a CPU stand-in for the parts of CUDA that kernels/cuda/ uses,
 * so its kernels and host code run (slowly, exactly) where there is no
 * GPU: the runtime calls, launches, graphs, cuBLASLt's matmul, the device
 * intrinsics. Test tooling only (tests/cuda_emu/emu.cc; README there).
 *
 * Each block runs its threads as coroutines on the calling OS thread;
 * __syncthreads and the warp shuffles are barriers between them, so a
 * kernel that reads shared memory before a barrier, shuffles in a
 * divergent warp or leaves a barrier unreached fails here too (deadlocks
 * abort with a message). Launch configurations are checked as on a GPU.
 */
#ifndef MTPD_CUDA_EMU_H
#define MTPD_CUDA_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

/* ---- qualifiers ---------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static /* one copy shared by the block's coroutines */
#define CUDARTAPI
#define CUBLASWINAPI

/* ---- vector types ---------------------------------------------------- */
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d)
{
    return uint4{a, b, c, d};
}
static inline float4 make_float4(float a, float b, float c, float d)
{
    return float4{a, b, c, d};
}

/* ---- the running thread ------------------------------------------------ */
struct emu_thread {
    dim3 tid;
    int lane, warp;
    unsigned shfl; /* shuffles done: picks the exchange buffer */
};
extern emu_thread *emu_cur;
extern dim3 emu_block_idx, emu_block_dim, emu_grid_dim;
extern unsigned char emu_dyn_smem[];
#define threadIdx (emu_cur->tid)
#define blockIdx (emu_block_idx)
#define blockDim (emu_block_dim)
#define gridDim (emu_grid_dim)

void emu_syncthreads(void);
void emu_syncwarp(void);
void emu_warp_put(const void *v, size_t n, unsigned parity);
void emu_warp_get(void *v, size_t n, unsigned parity, int lane);
static inline void __syncthreads(void) { emu_syncthreads(); }

template <class T> static inline T __shfl_xor_sync(unsigned, T v, int o, int = 32)
{
    unsigned p = emu_cur->shfl++ & 1;
    emu_warp_put(&v, sizeof v, p);
    emu_syncwarp();
    T r;
    emu_warp_get(&r, sizeof r, p, emu_cur->lane ^ o);
    return r;
}

/* ---- intrinsics ------------------------------------------------------------ */
static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
template <class T> static inline T __ldg(const T *p) { return *p; }
template <class T> static inline T __ldcs(const T *p) { return *p; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }

/* ---- launches, stream work ------------------------------------------------- */
typedef struct emu_stream *cudaStream_t;
struct emu_cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t st;
};
static inline emu_cfg emu_config(dim3 g, dim3 b, size_t s = 0,
                                 cudaStream_t st = 0)
{
    return emu_cfg{g, b, s, st};
}
/* kernel arguments are copied at the launch, as CUDA does */
template <class F, class... A> static inline std::function<void()>
emu_bind(F f, A... a)
{
    return [=]() { f(a...); };
}
void emu_launch(const emu_cfg &c, std::function<void()> body);
/* stream work: run now, or recorded while the stream is captured */
void emu_enqueue(cudaStream_t st, std::function<void()> work);

#endif
