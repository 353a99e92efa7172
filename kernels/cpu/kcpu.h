/*
 * kcpu.h - internals shared by the CPU backend files (not a public API).
 *
 * A matmul "block kernel" computes y[t][o] for rows o in [r0, r1) and
 * t < nt (1 <= nt <= KMM_NT) tokens; matmul.c tiles rows and tokens and
 * splits them across the pool, then calls the kernel of the active ISA.
 */
#ifndef MTPD_KCPU_H
#define MTPD_KCPU_H

#include "../kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define KCPU_X86 1
#define KTARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KTARGET_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#else
#define KCPU_X86 0
#endif

#define KINLINE static inline __attribute__((always_inline))
/* Fully unroll small constant loops (keeps accumulator arrays in registers). */
#define KUNROLL _Pragma("GCC unroll 8")

/* Most tokens a block kernel handles at once (accumulators in registers). */
#define KMM_NT 4

typedef void (*kmm_block_fn)(const struct kmat *W, int r0, int r1,
                             const float *x, int ldx, float *y, int ldy,
                             int nt);

void kmm_block_scalar(const struct kmat *W, int r0, int r1, const float *x,
                      int ldx, float *y, int ldy, int nt);
#if KCPU_X86
void kmm_block_avx2(const struct kmat *W, int r0, int r1, const float *x,
                    int ldx, float *y, int ldy, int nt);
void kmm_block_avx512(const struct kmat *W, int r0, int r1, const float *x,
                      int ldx, float *y, int ldy, int nt);
#endif

/* fp8 e4m3fn -> fp32 for all 256 codes (dtype.c). */
extern const float kf8e4m3_table[256];

#endif
