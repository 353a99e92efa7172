/*
 * pool.c - fixed thread pool with low-latency fork/join (kpool_run).
 *
 * Workers are created once. A run publishes (fn, arg) and a 64-bit ticket
 * {generation:24, n_parts:20, next_part:20}; every thread, the caller
 * included, claims parts by CAS on the ticket, so a part is only ever
 * claimed while its own run is live (a late worker's CAS fails once the
 * generation moved on). Idle workers spin on the 32-bit generation word
 * for KPOOL_SPIN_NS, then sleep on it with a futex; the caller waits for
 * the done counter the same way. Only one thread at a time may call
 * kpool_run on a pool, and fn must not call kpool_run on the same pool.
 * Runs with more than KPOOL_MAX_PARTS parts execute on the caller.
 *
 * Contention fallback: a worker descheduled while it holds a part (other
 * processes on the cores) makes the caller wait for a whole timeslice; on
 * 2 cores with one busy process that made 2 threads 1.5x slower than 1.
 * The caller sums, over windows of KPOOL_WINDOW_NS, each run's wall time
 * and what the run would have cost it alone: its own time per part (its
 * parts run under the same conditions, descheduling included) times the
 * number of parts. On a quiet machine the first is about 1/n of the
 * second. When the wall time is the larger in two windows in a row (one
 * is a one-off: page faults on first touch, a timeslice lost now and
 * then) it runs alone for KPOOL_SOLO_NS, which lets the workers fall
 * asleep, then fans out again; the solo period doubles up to
 * KPOOL_SOLO_MAX_NS while the contention lasts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <sched.h>

#include "kcpu.h"

#define KPOOL_SPIN_NS 200000 /* spin this long before sleeping */
#define KPOOL_MAX_PARTS 0xfffff
#define GEN_MASK 0xffffffu
#define KPOOL_WINDOW_NS 20000000ull   /* 20 ms of runs */
#define KPOOL_SOLO_NS 100000000ull    /* first solo period: 0.1 s */
#define KPOOL_SOLO_MAX_NS 3200000000ull

struct kpool {
    int n_threads;
    pthread_t *threads;
    kpool_fn fn;
    void *arg;
    /* each on its own cache line: written by different threads */
    _Alignas(64) _Atomic uint64_t ticket;
    _Alignas(64) atomic_uint gen;    /* futex word: bumped per run */
    atomic_int sleepers;             /* workers in futex_wait on gen */
    _Alignas(64) atomic_uint done;   /* futex word: parts finished */
    atomic_int caller_sleeping;
    atomic_int stop;
    /* caller-only state (kpool_run has one caller at a time) */
    double win_alone, win_time; /* this window: estimated solo ns, wall ns */
    int bad_windows;     /* consecutive windows waiting too much */
    int calm_windows;    /* other windows since the last solo period */
    uint64_t solo_until; /* now_ns() before which runs go alone */
    uint64_t solo_ns;    /* length of the next solo period */
    struct kpool_stats st;
};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void futex_wait(atomic_uint *addr, unsigned val)
{
#ifdef __linux__
    syscall(SYS_futex, (void *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)addr, (void)val;
    sched_yield();
#endif
}

static void futex_wake_all(atomic_uint *addr)
{
#ifdef __linux__
    syscall(SYS_futex, (void *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL,
            NULL, 0);
#else
    (void)addr;
#endif
}

/* Spin, then sleep, until *addr != val. Returns the new value. */
static unsigned wait_change(atomic_uint *addr, unsigned val,
                            atomic_int *sleep_flag)
{
    unsigned v;
    uint64_t t0 = 0;
    for (int i = 0;; i++) {
        v = atomic_load_explicit(addr, memory_order_acquire);
        if (v != val)
            return v;
        cpu_relax();
        if ((i & 63) != 63)
            continue;
        uint64_t t = now_ns();
        if (t0 == 0)
            t0 = t;
        else if (t - t0 > KPOOL_SPIN_NS)
            break;
    }
    kamx_idle(); /* a sleeping thread's context switch saves no tiles */
    for (;;) {
        atomic_fetch_add(sleep_flag, 1);
        v = atomic_load(addr);
        if (v == val)
            futex_wait(addr, val);
        atomic_fetch_sub(sleep_flag, 1);
        v = atomic_load_explicit(addr, memory_order_acquire);
        if (v != val)
            return v;
    }
}

/* Claims and runs parts of generation gen until none is left; returns
 * how many it ran. */
static int run_parts(struct kpool *p, uint32_t gen)
{
    uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    int ran = 0;
    for (;;) {
        if ((uint32_t)(t >> 40) != (gen & GEN_MASK))
            return ran;
        int np = (int)((t >> 20) & KPOOL_MAX_PARTS);
        int part = (int)(t & KPOOL_MAX_PARTS);
        if (part >= np)
            return ran;
        if (!atomic_compare_exchange_weak_explicit(
                &p->ticket, &t, t + 1, memory_order_acq_rel,
                memory_order_acquire))
            continue;
        p->fn(p->arg, part, np);
        ran++;
        unsigned d = atomic_fetch_add(&p->done, 1) + 1; /* seq_cst: */
        if ((int)d == np && atomic_load(&p->caller_sleeping)) /* Dekker */
            futex_wake_all(&p->done);
        t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    }
}

static void *worker_main(void *arg)
{
    struct kpool *p = arg;
    unsigned seen = 0; /* gen at kpool_new: a late starter still sees runs */
    for (;;) {
        seen = wait_change(&p->gen, seen, &p->sleepers);
        if (atomic_load(&p->stop))
            return NULL;
        run_parts(p, seen);
    }
}

struct kpool *kpool_new(int n_threads)
{
    if (n_threads < 1)
        return NULL;
    struct kpool *p = aligned_alloc(64, sizeof *p);
    if (p == NULL)
        return NULL;
    *p = (struct kpool){.n_threads = n_threads, .solo_ns = KPOOL_SOLO_NS};
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (p->threads == NULL) {
            free(p);
            return NULL;
        }
    }
    for (int i = 0; i < n_threads - 1; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            p->n_threads = i + 1; /* join the ones that started */
            kpool_free(p);
            return NULL;
        }
    }
    return p;
}

void kpool_free(struct kpool *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake_all(&p->gen);
    for (int i = 0; i < p->n_threads - 1; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p);
}

int kpool_size(const struct kpool *p)
{
    return p ? p->n_threads : 1;
}

/* kpool_share's levels: percent of the units per level, all threads */
static const int share_pct[] = {70, 18, 8, 4};
#define SHARE_LEVELS (int)(sizeof share_pct / sizeof *share_pct)

int kpool_parts(const struct kpool *p, int n_units)
{
    int n = kpool_size(p);
    if (n > 1 && n * SHARE_LEVELS <= n_units)
        return n * SHARE_LEVELS;
    return n < n_units ? n : n_units; /* a plain split */
}

void kpool_share(int n_units, int part, int n_parts, int *u0, int *u1)
{
    if (n_parts <= 1 || n_parts % SHARE_LEVELS != 0) { /* plain split */
        *u0 = (int)((long)n_units * part / (n_parts > 0 ? n_parts : 1));
        *u1 = (int)((long)n_units * (part + 1) / (n_parts > 0 ? n_parts : 1));
        return;
    }
    int T = n_parts / SHARE_LEVELS, lv = part / T, i = part % T;
    long c = 0; /* percent before level lv, times T */
    for (int l = 0; l < lv; l++)
        c += (long)share_pct[l] * T;
    long a = c + (long)i * share_pct[lv], b = a + share_pct[lv];
    *u0 = (int)((long)n_units * a / (100L * T));
    *u1 = (int)((long)n_units * b / (100L * T));
}

void kpool_get_stats(const struct kpool *p, struct kpool_stats *st)
{
    *st = p ? p->st : (struct kpool_stats){0};
}

void kpool_run(struct kpool *p, kpool_fn fn, void *arg, int n_parts)
{
    if (n_parts <= 0)
        return;
    if (p)
        p->st.runs++;
    int solo = 0;
    if (p && p->solo_until) {
        solo = now_ns() < p->solo_until;
        if (!solo)
            p->solo_until = 0; /* the solo period is over */
    }
    if (p == NULL || p->n_threads == 1 || n_parts == 1 ||
        n_parts > KPOOL_MAX_PARTS || solo) {
        if (solo)
            p->st.solo_runs++;
        for (int i = 0; i < n_parts; i++)
            fn(arg, i, n_parts);
        return;
    }
    uint64_t t0 = now_ns();
    uint32_t gen = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ticket,
                          ((uint64_t)(gen & GEN_MASK) << 40) |
                              ((uint64_t)n_parts << 20),
                          memory_order_release);
    atomic_store(&p->gen, gen);
    if (atomic_load(&p->sleepers) > 0)
        futex_wake_all(&p->gen);

    int own = run_parts(p, gen);
    uint64_t t1 = now_ns();

    unsigned d = atomic_load_explicit(&p->done, memory_order_acquire);
    while ((int)d != n_parts)
        d = wait_change(&p->done, d, &p->caller_sleeping);

    uint64_t t2 = now_ns();
    if (own > 0)
        p->win_alone += (double)(t1 - t0) * n_parts / own;
    else
        p->win_alone += (double)(t2 - t0); /* all taken: no estimate */
    p->win_time += (double)(t2 - t0);
    if (p->win_time < (double)KPOOL_WINDOW_NS)
        return;
    int bad = p->win_time > p->win_alone;
    p->win_alone = p->win_time = 0.0;
    if (!bad) {
        p->bad_windows = 0;
        if (++p->calm_windows >= 8)
            p->solo_ns = KPOOL_SOLO_NS; /* the contention is over */
        return;
    }
    p->calm_windows = 0;
    if (++p->bad_windows < 2)
        return;
    p->bad_windows = 0;
    p->solo_until = t2 + p->solo_ns;
    if (p->solo_ns < KPOOL_SOLO_MAX_NS)
        p->solo_ns *= 2;
    p->st.fallbacks++;
}
