/*
 * cuda_sim.h - just enough of CUDA to run kernels/cuda/mla_attn_dev.cuh
 * on the CPU (tests only): every thread of a CTA is a coroutine
 * (ucontext); a thread runs until it reaches __syncthreads or a warp
 * operation (shuffle, ldmatrix, mma); a warp operation runs once all 32
 * lanes of the warp wait at one, with the operands of every lane, as the
 * PTX manual defines it; a barrier opens once every thread of the CTA
 * waits at it. A barrier some threads never reach, or lanes of a warp at
 * different operations, stop the run with a message. Shared memory is
 * one static buffer, filled with 0xff (NaN) before each CTA, and writes
 * past the CTA's dynamic size are reported; ldmatrix and cp.async check
 * their addresses (shared memory, 16-byte aligned). cp.async copies land
 * at the wait that must see them, or at once (cp_early below): the two
 * ends of what the hardware may do.
 */
#ifndef MTPD_CUDA_SIM_H
#define MTPD_CUDA_SIM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)

struct sim_dim3 {
    unsigned x, y, z;
};
struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
struct uint4 {
    unsigned x, y, z, w;
};
inline float2 make_float2(float a, float b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d)
{
    return {a, b, c, d};
}
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d)
{
    return {a, b, c, d};
}
template <class T> inline T __ldg(const T *p) { return *p; }

struct __nv_bfloat16 {
    uint16_t x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
inline uint16_t sim_f2bf(float f) /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
inline float sim_bf2f(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {sim_f2bf(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b)
{
    return {{sim_f2bf(a)}, {sim_f2bf(b)}};
}
inline float __low2float(__nv_bfloat162 v) { return sim_bf2f(v.x.x); }
inline float __high2float(__nv_bfloat162 v) { return sim_bf2f(v.y.x); }

namespace sim {

enum { RUN, WARP, BAR, DONE };
enum { OP_SHFL, OP_LDM, OP_MMA };

struct thr {
    ucontext_t ctx;
    int state, op;
    uint32_t v;  /* shuffle value */
    int arg;     /* shuffle lane mask; ldmatrix matrices */
    int trans;
    const void *addr;
    uint32_t a[4], b[2];
    float c[4];
    uint32_t out[4];
    /* cp.async: copies of the open group, committed groups oldest first */
    std::vector<std::pair<void *, const void *>> open;
    std::vector<std::vector<std::pair<void *, const void *>>> groups;
};

constexpr size_t SMEM = 240 * 1024;
constexpr size_t STACK = 256 * 1024;

struct cta {
    std::vector<thr> t;
    ucontext_t sched;
    unsigned cur, bx, bdim, gdim;
    std::function<void()> body;
    char *stacks = nullptr;
    size_t n_stacks = 0;
};

inline cta *g = nullptr;
/* the kernel's `extern __shared__` array (the includer defines it, in the
 * kernel's namespace, and points this at it before launching) */
inline unsigned char *smem_buf = nullptr;

[[noreturn]] inline void fail(const char *what)
{
    fprintf(stderr, "cuda_sim: CTA %u thread %u: %s\n", g->bx, g->cur, what);
    abort();
}

inline thr &me() { return g->t[g->cur]; }

/* When cp.async copies land: "late" (default), at the wait that must see
 * them, so reading a stage before its wait and barrier reads poison;
 * "early" (CUDA_SIM_CP_ASYNC=early), at once, so overwriting a stage
 * another warp still reads changes what it reads. */
inline int cp_early()
{
    static int e = -1;
    if (e < 0) {
        const char *v = getenv("CUDA_SIM_CP_ASYNC");
        e = v && strcmp(v, "early") == 0;
    }
    return e;
}

inline void cp_land(std::vector<std::pair<void *, const void *>> &v)
{
    for (auto &c : v)
        memcpy(c.first, c.second, 16);
    v.clear();
}

inline void wait_here(int state)
{
    me().state = state;
    swapcontext(&me().ctx, &g->sched);
}

inline void trampoline()
{
    g->body();
    if (!me().open.empty() || !me().groups.empty())
        fail("exited with cp.async copies not waited for");
    me().state = DONE;
    swapcontext(&me().ctx, &g->sched);
    fail("a finished thread resumed");
}

inline int in_smem(const void *p, size_t n)
{
    const unsigned char *c = (const unsigned char *)p;
    return c >= smem_buf && c + n <= smem_buf + SMEM;
}

/* Runs the warp operation all lanes of warp w wait at. */
inline void warp_op(unsigned w)
{
    thr *l = &g->t[w * 32];
    int op = l[0].op;
    for (int i = 1; i < 32; i++)
        if (l[i].op != op || (op != OP_MMA && l[i].arg != l[0].arg) ||
            (op == OP_LDM && l[i].trans != l[0].trans)) {
            g->cur = w * 32 + i;
            fail("lanes of a warp at different operations");
        }
    if (op == OP_SHFL) {
        uint32_t v[32];
        for (int i = 0; i < 32; i++)
            v[i] = l[i].v;
        for (int i = 0; i < 32; i++)
            l[i].out[0] = v[(i ^ l[0].arg) & 31];
    } else if (op == OP_LDM) {
        int n = l[0].arg;
        const uint16_t *row[4][8];
        for (int j = 0; j < n; j++)
            for (int r = 0; r < 8; r++) {
                const void *p = l[8 * j + r].addr;
                if (!in_smem(p, 16) || ((uintptr_t)p & 15)) {
                    g->cur = w * 32 + 8 * j + r;
                    fail("ldmatrix row address not 16-byte aligned shared "
                         "memory");
                }
                row[j][r] = (const uint16_t *)p;
            }
        for (int i = 0; i < 32; i++) {
            int gi = i >> 2, q = i & 3;
            for (int j = 0; j < n; j++) {
                uint16_t lo, hi;
                if (l[0].trans) {
                    lo = row[j][2 * q][gi];
                    hi = row[j][2 * q + 1][gi];
                } else {
                    lo = row[j][gi][2 * q];
                    hi = row[j][gi][2 * q + 1];
                }
                l[i].out[j] = lo | (uint32_t)hi << 16;
            }
        }
    } else { /* mma.m16n8k16 row.col f32.bf16.bf16.f32 */
        float A[16][16], B[16][8], C[16][8];
        for (int i = 0; i < 32; i++) {
            int gi = i >> 2, q = i & 3;
            for (int h = 0; h < 2; h++) {
                A[gi][2 * q + h] = sim_bf2f(l[i].a[0] >> (16 * h));
                A[gi + 8][2 * q + h] = sim_bf2f(l[i].a[1] >> (16 * h));
                A[gi][2 * q + 8 + h] = sim_bf2f(l[i].a[2] >> (16 * h));
                A[gi + 8][2 * q + 8 + h] = sim_bf2f(l[i].a[3] >> (16 * h));
                B[2 * q + h][gi] = sim_bf2f(l[i].b[0] >> (16 * h));
                B[2 * q + 8 + h][gi] = sim_bf2f(l[i].b[1] >> (16 * h));
                C[gi][2 * q + h] = l[i].c[h];
                C[gi + 8][2 * q + h] = l[i].c[2 + h];
            }
        }
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 8; c++)
                for (int k = 0; k < 16; k++)
                    C[r][c] += A[r][k] * B[k][c];
        for (int i = 0; i < 32; i++) {
            int gi = i >> 2, q = i & 3;
            for (int h = 0; h < 2; h++) {
                l[i].c[h] = C[gi][2 * q + h];
                l[i].c[2 + h] = C[gi + 8][2 * q + h];
            }
        }
    }
    for (int i = 0; i < 32; i++)
        l[i].state = RUN;
}

/* Runs grid CTAs of block threads one after the other, each over the
 * same static shared memory of which the kernel may use smem bytes. */
inline void launch(unsigned grid, unsigned block, size_t smem,
                   std::function<void()> body)
{
    if (block % 32 || smem > SMEM) {
        fprintf(stderr, "cuda_sim: bad launch (%u threads, %zu bytes)\n",
                block, smem);
        abort();
    }
    cta c;
    c.bdim = block;
    c.gdim = grid;
    c.body = body;
    c.stacks = (char *)malloc(STACK * block);
    if (!c.stacks)
        abort();
    g = &c;
    /* the CTA index lives in c (memory), not in a register swapcontext
     * could clobber */
    for (c.bx = 0; c.bx < grid; c.bx++) {
        memset(smem_buf, 0xff, SMEM);
        c.t.assign(block, thr());
        for (unsigned i = 0; i < block; i++) {
            thr &t = c.t[i];
            getcontext(&t.ctx);
            t.ctx.uc_stack.ss_sp = c.stacks + STACK * i;
            t.ctx.uc_stack.ss_size = STACK;
            t.ctx.uc_link = nullptr;
            makecontext(&t.ctx, trampoline, 0);
            t.state = RUN;
        }
        for (;;) {
            int progress = 0, run = 0, bar = 0, done = 0;
            for (unsigned i = 0; i < block; i++)
                if (c.t[i].state == RUN) {
                    c.cur = i;
                    swapcontext(&c.sched, &c.t[i].ctx);
                    progress = 1;
                }
            for (unsigned w = 0; w < block / 32; w++) {
                int nw = 0;
                for (int i = 0; i < 32; i++)
                    nw += c.t[w * 32 + i].state == WARP;
                if (nw == 32) {
                    warp_op(w);
                    progress = 1;
                } else if (nw) {
                    c.cur = w * 32;
                    fail("part of a warp at a warp operation, the rest "
                         "not");
                }
            }
            for (unsigned i = 0; i < block; i++) {
                run += c.t[i].state == RUN;
                bar += c.t[i].state == BAR;
                done += c.t[i].state == DONE;
            }
            if (done == (int)block)
                break;
            if (run == 0 && bar + done == (int)block) {
                if (done) {
                    c.cur = 0;
                    fail("a barrier that exited threads never reach");
                }
                for (unsigned i = 0; i < block; i++)
                    c.t[i].state = RUN;
                progress = 1;
            }
            if (!progress) {
                c.cur = 0;
                fail("no thread can go on");
            }
        }
        for (size_t i = smem; i < SMEM; i++)
            if (smem_buf[i] != 0xff) {
                fprintf(stderr, "cuda_sim: CTA %u wrote shared memory at "
                        "%zu, past its %zu bytes\n", c.bx, i, smem);
                abort();
            }
    }
    free(c.stacks);
    g = nullptr;
}

} /* namespace sim */

#define threadIdx (sim_dim3{sim::g->cur, 0, 0})
#define blockIdx (sim_dim3{sim::g->bx, 0, 0})
#define blockDim (sim_dim3{sim::g->bdim, 1, 1})
#define gridDim (sim_dim3{sim::g->gdim, 1, 1})

inline void __syncthreads() { sim::wait_here(sim::BAR); }

inline float __shfl_xor_sync(unsigned mask, float v, int lanes)
{
    (void)mask; /* all 32 lanes take part, as in the kernels */
    sim::thr &t = sim::me();
    t.op = sim::OP_SHFL;
    memcpy(&t.v, &v, 4);
    t.arg = lanes;
    sim::wait_here(sim::WARP);
    float r;
    memcpy(&r, &sim::me().out[0], 4);
    return r;
}

#endif
