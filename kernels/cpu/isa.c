/*
 * isa.c - which SIMD code path the CPU ops use.
 *
 * kisa_detect() asks cpuid once; kisa_active() is what every op dispatches
 * on: the detected ISA, or MTPD_ISA=scalar|avx2|avx512 from the
 * environment (clamped to what the CPU has), or what kisa_set() forced.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The ISA named by MTPD_ISA, or -1 when unset or unknown. */
static int isa_from_env(void)
{
    const char *s = getenv("MTPD_ISA");
    if (s == NULL || *s == '\0')
        return -1;
    for (int i = 0; i < KISA_COUNT; i++)
        if (strcmp(s, kisa_str((enum kisa)i)) == 0)
            return i;
    fprintf(stderr, "mtpd: ignoring unknown MTPD_ISA=%s\n", s);
    return -1;
}

enum kisa kisa_active(void)
{
    int a = atomic_load_explicit(&g_active, memory_order_relaxed);
    if (a >= 0)
        return (enum kisa)a;
    int best = (int)kisa_detect();
    a = isa_from_env();
    if (a > best) {
        fprintf(stderr, "mtpd: MTPD_ISA=%s not supported, using %s\n",
                kisa_str((enum kisa)a), kisa_str((enum kisa)best));
        a = best;
    }
    if (a < 0)
        a = best;
    atomic_store_explicit(&g_active, a, memory_order_relaxed);
    return (enum kisa)a;
}

int kisa_set(enum kisa isa)
{
    if ((int)isa < 0 || isa >= KISA_COUNT || isa > kisa_detect())
        return MTPD_K_EINVAL;
    atomic_store_explicit(&g_active, (int)isa, memory_order_relaxed);
    return MTPD_K_OK;
}
