/*
 * isa.c - which SIMD code path the CPU ops use.
 *
 * kisa_detect() asks cpuid once; kisa_active() is what every op dispatches
 * on: the detected ISA, or what kisa_set() forced (the program's choice,
 * mtpd_set_isa() in model.h; tests that check every path).
 */
#include <stdatomic.h>

#include "kcpu.h"

#if KCPU_X86
#include <cpuid.h>

/* CPUID.1:ECX.F16C[bit 29] (clang's __builtin_cpu_supports lacks "f16c"). */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

static atomic_int g_detected = -1;
static atomic_int g_active = -1;

enum kisa kisa_detect(void)
{
    int d = atomic_load_explicit(&g_detected, memory_order_relaxed);
    if (d >= 0)
        return (enum kisa)d;
    d = KISA_SCALAR;
#if KCPU_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        has_f16c())
        d = KISA_AVX2;
    if (d == KISA_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        d = KISA_AVX512;
#endif
    atomic_store_explicit(&g_detected, d, memory_order_relaxed);
    return (enum kisa)d;
}

const char *kisa_str(enum kisa isa)
{
    switch (isa) {
    case KISA_SCALAR: return "scalar";
    case KISA_AVX2: return "avx2";
    case KISA_AVX512: return "avx512";
    default: return "?";
    }
}

enum kisa kisa_active(void)
{
    int a = atomic_load_explicit(&g_active, memory_order_relaxed);
    return a >= 0 ? (enum kisa)a : kisa_detect();
}

int kisa_set(enum kisa isa)
{
    if ((int)isa < 0 || isa >= KISA_COUNT || isa > kisa_detect())
        return MTPD_K_EINVAL;
    atomic_store_explicit(&g_active, (int)isa, memory_order_relaxed);
    return MTPD_K_OK;
}
