/*
 * isa.c - which SIMD code path the CPU ops use.
 *
 * kisa_detect() asks cpuid once; kisa_active() is what every op dispatches
 * on: the detected ISA, or what kisa_set() forced (the program's choice,
 * mtpd_set_isa() in model.h; tests that check every path). Also the AMX
 * probes, and kisa_row_stream(): how decode matmuls walk the weights,
 * chosen by CPU vendor (kernels.h says why).
 */
#include <stdatomic.h>
#include <unistd.h>

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

int kisa_has_vnni(void)
{
#if KCPU_X86
    static atomic_int v = -1;
    int r = atomic_load_explicit(&v, memory_order_relaxed);
    if (r < 0) {
        __builtin_cpu_init();
        r = kisa_detect() == KISA_AVX512 &&
            __builtin_cpu_supports("avx512vnni");
        atomic_store_explicit(&v, r, memory_order_relaxed);
    }
    return r;
#else
    return 0;
#endif
}

#if KCPU_X86 && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* AMX_BF16 | AMX_INT8 as this process may use them: cpuid AMX-TILE (leaf
 * 7.0 EDX 24) with AMX-BF16 (EDX 22) and AVX512-BF16 (7.1 EAX 5), or
 * AMX-INT8 (EDX 25) with VNNI; the OS saving tile state (XCR0 bits 17,
 * 18); then Linux's per-process permission (without it the first tile op
 * faults), asked once. */
#define AMX_BF16 1
#define AMX_INT8 2
static int amx_probe(void)
{
    unsigned a, b, c, d, lo, hi;
    if (kisa_detect() != KISA_AVX512 || !__get_cpuid_count(7, 0, &a, &b, &c, &d) ||
        !(d & (1u << 24)))
        return 0;
    int has = 0, max_sub = (int)a;
    if ((d & (1u << 25)) && kisa_has_vnni())
        has |= AMX_INT8;
    if ((d & (1u << 22)) && max_sub >= 1 &&
        __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)))
        has |= AMX_BF16;
    if (!has || !__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
        return 0; /* no OSXSAVE */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17))
        return 0;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA))
        return 0;
    return has;
}
#else
#define AMX_BF16 1
#define AMX_INT8 2
static int amx_probe(void) { return 0; }
#endif

static atomic_int g_amx_has = -1; /* amx_probe's bits, -1 before */

static int amx_bits(void)
{
    int r = atomic_load_explicit(&g_amx_has, memory_order_relaxed);
    if (r < 0) {
        r = amx_probe();
        atomic_store_explicit(&g_amx_has, r, memory_order_relaxed);
    }
    return r;
}

int kisa_has_amx_int8(void)
{
    return (amx_bits() & AMX_INT8) != 0;
}

/* Off by default: on the default model AMX-BF16 made prefill 1.5x faster
 * but decode 0.73-0.87x (a tile unit idle between the small matmuls of a
 * decode step warms up again each time; bench_amx_fp8-2026-12-02.md).
 * mtpd_set_isa("amx") turns it on. */
static atomic_int g_amx_on = 0;

int kisa_has_amx(void)
{
    return (amx_bits() & AMX_BF16) != 0;
}

int kisa_set_amx(int on)
{
    if (on && !kisa_has_amx())
        return MTPD_K_EINVAL;
    atomic_store_explicit(&g_amx_on, on != 0, memory_order_relaxed);
    return MTPD_K_OK;
}

int kisa_amx_active(void)
{
    return atomic_load_explicit(&g_amx_on, memory_order_relaxed) &&
           kisa_active() == KISA_AVX512 && kisa_has_amx();
}

int kisa_has_avx512bf16(void)
{
#if KCPU_X86
    static atomic_int v = -1;
    int r = atomic_load_explicit(&v, memory_order_relaxed);
    if (r < 0) {
        unsigned a, b, c, d;
        r = kisa_detect() == KISA_AVX512 &&
            __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
        atomic_store_explicit(&v, r, memory_order_relaxed);
    }
    return r;
#else
    return 0;
#endif
}

int kisa_bf16_dot(void)
{
    return kisa_active() == KISA_AVX512 && kisa_has_avx512bf16();
}

int kisa_has_vbmi(void)
{
#if KCPU_X86
    static atomic_int v = -1;
    int r = atomic_load_explicit(&v, memory_order_relaxed);
    if (r < 0) {
        __builtin_cpu_init();
        r = kisa_detect() == KISA_AVX512 &&
            __builtin_cpu_supports("avx512vbmi");
        atomic_store_explicit(&v, r, memory_order_relaxed);
    }
    return r;
#else
    return 0;
#endif
}

/* -1 before the first kisa_row_stream(): then the vendor's default. */
static atomic_int g_row_stream = -1;

static int row_stream_default(void)
{
#if KCPU_X86
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u /* "Auth" */ &&
        d == 0x69746e65u /* "enti" */ && c == 0x444d4163u /* "cAMD" */)
        return 1;
#endif
    return 0;
}

int kisa_row_stream(void)
{
    int r = atomic_load_explicit(&g_row_stream, memory_order_relaxed);
    if (r < 0) {
        r = row_stream_default();
        atomic_store_explicit(&g_row_stream, r, memory_order_relaxed);
    }
    return r;
}

size_t kisa_llc_bytes(void)
{
    long b = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    b = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#ifdef _SC_LEVEL2_CACHE_SIZE
    if (b <= 0)
        b = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return b > 0 ? (size_t)b : 0;
}

size_t kisa_l2_bytes(void)
{
    static _Atomic long cached = -2; /* -2: not asked yet */
    long b = atomic_load_explicit(&cached, memory_order_relaxed);
    if (b == -2) {
        b = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
        b = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        atomic_store_explicit(&cached, b > 0 ? b : -1, memory_order_relaxed);
    }
    return b > 0 ? (size_t)b : 0;
}

void kisa_set_row_stream(int on)
{
    atomic_store_explicit(&g_row_stream, on < 0 ? -1 : on != 0,
                          memory_order_relaxed);
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
