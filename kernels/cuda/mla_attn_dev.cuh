/*
 * mla_attn_dev.cuh - the device code of mla_attn.cu (its top comment says
 * what it does): the kernels, their arguments and the PTX helpers. Kept
 * apart so that tests/unit/test_mla_sim.cc can run the same kernel code
 * on the CPU in a simulator (MLA_SIM defined: the PTX helpers come from
 * the simulator, with the semantics the PTX manual gives them).
 * Included once, by mla_attn.cu (or the simulator).
 */
#ifndef MTPD_MLA_ATTN_DEV_CUH
#define MTPD_MLA_ATTN_DEV_CUH

#include "cuda_plan.h"
#include "kcuda.h"

namespace mla {


constexpr int PAIRS = KCUDA_MLA_PAIRS; /* query pairs per block */
constexpr int BN = 32;                 /* positions per cache tile */
constexpr int STAGES = 3;              /* cache tiles in shared memory */
constexpr int PST = BN + 8;            /* P row stride, elements */
constexpr float LOG2E = 1.4426950408889634f;

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

struct attn_args {
    const float *qc; /* [n_rows, H, D] */
    float *oc;       /* [n_rows, H, L] */
    const int32_t *row_pos;
    const int32_t *seq_page0;
    void *const *pages;
    size_t layer_off, row_bytes;
    int page_shift, page_mask;
    int H, L, D, DP; /* DP: shared memory row stride, elements */
    float sl2;       /* softmax scale * log2 e */
    const struct kcuda_mla_hdr *hdr;
    const int32_t *part_begin;
    const struct kcuda_mla_block *blocks;
    const struct kcuda_mla_merge *merges;
    float *ws_o, *ws_m, *ws_l; /* partial slots */
};

#ifdef MLA_SIM
/* tests/unit/mla_sim.h: the same operations, on the CPU */
#include "mla_sim_ops.h"
#else
__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                     smem_addr(dst)),
                 "l"(src)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldm_x4(uint32_t *r, const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, "
                 "[%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

__device__ __forceinline__ void ldm_x2(uint32_t *r, const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p))
                 : "memory");
}

__device__ __forceinline__ void ldm_x4_t(uint32_t *r, const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
                 "{%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

__device__ __forceinline__ void ldm_x2_t(uint32_t *r, const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, "
                 "[%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p))
                 : "memory");
}

/* c += a b: a 16 x 16 (row), b 16 x 8 (col), bf16; c fp32. */
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a,
                                         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                   "r"(b1));
}
#endif

/* Cache row of position t of the block's sequence (page0: its table). */
__device__ __forceinline__ const char *cache_row(const attn_args &a,
                                                 int page0, int t)
{
    return (const char *)a.pages[page0 + (t >> a.page_shift)] + a.layer_off +
           (size_t)(t & a.page_mask) * a.row_bytes;
}

/* bf16 cache: starts the copy of tile `it` of the block (positions
 * t0 + it * BN ..) into kt; rows past t1 are zeroed (their probabilities
 * are 0, and 0 x stale data could be NaN). */
__device__ __forceinline__ void tile_issue(const attn_args &a, bf16 *kt,
                                           const kcuda_mla_block &b,
                                           int page0, int it)
{
    const int cpr = a.D / 8; /* 16-byte pieces per row */
    const int base = b.t0 + it * BN;
    for (int i = threadIdx.x; i < BN * cpr; i += blockDim.x) {
        int r = i / cpr, c = i - r * cpr, t = base + r;
        bf16 *dst = kt + r * a.DP + c * 8;
        if (t < b.t1)
            cp_async16(dst, cache_row(a, page0, t) + c * 16);
        else
            *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
}

/* f32 cache: loads tile `it` into kt as bf16 (synchronously). */
__device__ __forceinline__ void tile_load_f32(const attn_args &a, bf16 *kt,
                                              const kcuda_mla_block &b,
                                              int page0, int it)
{
    const int cpr = a.D / 4; /* 16-byte pieces per row */
    const int base = b.t0 + it * BN;
    for (int i = threadIdx.x; i < BN * cpr; i += blockDim.x) {
        int r = i / cpr, c = i - r * cpr, t = base + r;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (t < b.t1)
            v = __ldg((const float4 *)(cache_row(a, page0, t) + c * 16));
        bf162 *dst = (bf162 *)(kt + r * a.DP + c * 4);
        dst[0] = __floats2bfloat162_rn(v.x, v.y);
        dst[1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

/*
 * The attention kernel (see the top of the file). NS: column slices of
 * L (warps = 4 * NS); F32: the cache is f32, else bf16.
 * Register budget: 128 per thread (4 / NS CTAs of 128 * NS threads per
 * SM), O takes 64 of them.
 */
template <int NS, bool F32>
__global__ void __launch_bounds__(128 * NS, 4 / NS)
mla_attn(const attn_args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem;              /* [PAIRS][DP] */
    bf16 *sK = sQ + PAIRS * a.DP;         /* [STAGES][BN][DP] */
    bf16 *sP = sK + STAGES * BN * a.DP;   /* [PAIRS][PST] */
    float *sMax = (float *)(sP + PAIRS * PST); /* [4][PAIRS] */
    float *sSum = sMax + 4 * PAIRS;       /* [4][PAIRS] */
    float *sAlpha = sSum + 4 * PAIRS;     /* [PAIRS] */
    float *sM = sAlpha + PAIRS;           /* [PAIRS] */
    int *sPos = (int *)(sM + PAIRS);      /* [PAIRS] */

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, tq = lane & 3; /* mma fragment coordinates */
    /* O side: warp (mt, cs) holds pairs mt*16 .. +16, columns c0 .. +W */
    const int mt = warp & 3, cs = warp >> 2;
    const int W = a.L / NS, nt = W / 8, c0 = cs * W;
    const int pr0 = mt * 16 + g, pr1 = pr0 + 8;

    const int bend = a.part_begin[blockIdx.x + 1];
    for (int bi = a.part_begin[blockIdx.x]; bi < bend; bi++) {
        const kcuda_mla_block b = a.blocks[bi];
        const int np = b.n_rows * b.n_heads;
        const int page0 = a.seq_page0[b.seq];
        const int ntile = (b.t1 - b.t0 + BN - 1) / BN;
        /* O warps whose 16 pairs are all past np skip the products */
        const bool live = mt * 16 < np;
        /* S side: the lm live row tiles' scores [16 x 32] are computed by
         * G warps each (4 / G n8 tiles of positions a warp): 4 warps in
         * all (3 for 3 row tiles), one per SM sub-partition, and each row
         * tile's queries read from shared memory by as few warps as that
         * allows (the queries are most of the shared memory traffic). */
        const int lm = (np + 15) / 16;
        const int G = lm == 1 ? 4 : lm == 2 ? 2 : 1, nts = 4 / G;
        const bool sw = warp < lm * G;
        const int smt = warp / G, sg = warp % G, n0 = sg * nts * 8;
        const int sp0 = smt * 16 + g, sp1 = sp0 + 8; /* S-side pairs */

        if (!F32) { /* prologue: tiles 0 and 1 (a group each, maybe
                     * empty), in flight while the queries load */
            tile_issue(a, sK, b, page0, 0);
            cp_async_commit();
            if (ntile > 1)
                tile_issue(a, sK + BN * a.DP, b, page0, 1);
            cp_async_commit();
        }

        /* queries and row positions; visible to all at the first tile's
         * barrier. The previous block's last reads of sQ, sPos and sK
         * were before its closing barrier. */
        for (int p = threadIdx.x; p < PAIRS; p += blockDim.x)
            sPos[p] = p < np ? a.row_pos[b.row0 + p / b.n_heads] : -1;
        const int d4 = a.D / 4;
        for (int i = threadIdx.x; i < PAIRS * d4; i += blockDim.x) {
            int p = i / d4, c = (i - p * d4) * 4;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (p < np) {
                int r = b.row0 + p / b.n_heads, h = b.head0 + p % b.n_heads;
                v = *(const float4 *)(a.qc + ((size_t)r * a.H + h) * a.D + c);
            }
            bf162 *dst = (bf162 *)(sQ + p * a.DP + c);
            dst[0] = __floats2bfloat162_rn(v.x, v.y);
            dst[1] = __floats2bfloat162_rn(v.z, v.w);
        }
        float o[16][4];
#pragma unroll
        for (int j = 0; j < 16; j++)
            o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
        /* S warps: running max and (their positions') sum of rows sp0, sp1 */
        float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

        for (int it = 0; it < ntile; it++) {
            bf16 *kt = sK + (it % STAGES) * BN * a.DP;
            if (F32)
                tile_load_f32(a, kt, b, page0, it); /* stage last read at
                                                       tile it - 3 */
            else
                cp_async_wait<1>(); /* this thread's pieces of tile it */
            __syncthreads(); /* (1) tile it, Q, positions visible; every
                                warp done with tile it - 1 */
            if (!F32) { /* tile it + 2 into the stage tile it - 1 used */
                if (it + 2 < ntile)
                    tile_issue(a, sK + ((it + 2) % STAGES) * BN * a.DP, b,
                               page0, it + 2);
                cp_async_commit();
            }

            /* S = Q K^T: pairs smt*16 .. +16, positions n0 .. + 8 * nts */
            float s[4][4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            if (sw) {
                const bf16 *qa = sQ + (smt * 16 + (lane & 15)) * a.DP +
                                 (lane >> 4) * 8;
                const bf16 *kb = kt + (n0 + (lane & 7)) * a.DP +
                                 ((lane >> 3) & 1) * 8;
                /* k steps of 16 elements. With 1 or 2 n8 tiles the
                 * accumulators of the other tiles are free: even and odd
                 * steps go to different ones (two mma chains in flight,
                 * summed after the loop); 4 tiles are 4 chains already */
                int kk = 0;
                if (nts == 1) {
                    for (; kk + 16 < a.D; kk += 32) {
                        uint32_t af[4], bf[2];
                        ldm_x4(af, qa + kk);
                        ldm_x2(bf, kb + kk);
                        mma16816(s[0], af, bf[0], bf[1]);
                        ldm_x4(af, qa + kk + 16);
                        ldm_x2(bf, kb + kk + 16);
                        mma16816(s[1], af, bf[0], bf[1]);
                    }
                    if (kk < a.D) {
                        uint32_t af[4], bf[2];
                        ldm_x4(af, qa + kk);
                        ldm_x2(bf, kb + kk);
                        mma16816(s[0], af, bf[0], bf[1]);
                    }
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        s[0][e] += s[1][e];
                } else {
                    /* n8 tiles 2jj, 2jj + 1 from one ldmatrix.x4: (tile,
                     * k half) = (0, lo), (0, hi), (1, lo), (1, hi) */
                    const bf16 *kb2 = kb + ((lane >> 4) * 8) * a.DP;
                    for (; kk < a.D; kk += 16) {
                        uint32_t af[4], bf[4];
                        ldm_x4(af, qa + kk);
                        if (nts == 2) { /* even steps s[0..1], odd s[2..3] */
                            const int o = (kk >> 4) & 1;
                            ldm_x4(bf, kb2 + kk);
                            if (o) {
                                mma16816(s[2], af, bf[0], bf[1]);
                                mma16816(s[3], af, bf[2], bf[3]);
                            } else {
                                mma16816(s[0], af, bf[0], bf[1]);
                                mma16816(s[1], af, bf[2], bf[3]);
                            }
                        } else {
#pragma unroll
                            for (int jj = 0; jj < 2; jj++) {
                                ldm_x4(bf, kb2 + jj * 16 * a.DP + kk);
                                mma16816(s[2 * jj], af, bf[0], bf[1]);
                                mma16816(s[2 * jj + 1], af, bf[2], bf[3]);
                            }
                        }
                    }
                    if (nts == 2)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            s[0][e] += s[2][e];
                            s[1][e] += s[3][e];
                        }
                }
                /* scale, mask (block range, causal), row maxima */
                const int tb = b.t0 + it * BN + n0;
                const int p0 = sPos[sp0], p1 = sPos[sp1];
                float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        int t = tb + j * 8 + tq * 2 + e;
                        bool in = j < nts && t < b.t1;
                        s[j][e] = in && t <= p0 ? s[j][e] * a.sl2
                                                : -INFINITY;
                        s[j][2 + e] = in && t <= p1 ? s[j][2 + e] * a.sl2
                                                    : -INFINITY;
                        mx0 = fmaxf(mx0, s[j][e]);
                        mx1 = fmaxf(mx1, s[j][2 + e]);
                    }
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
                if (tq == 0) {
                    sMax[sg * PAIRS + sp0] = mx0;
                    sMax[sg * PAIRS + sp1] = mx1;
                }
            }
            __syncthreads(); /* (2) every S warp's row maxima */
            if (sw) {
                float n0m = m0, n1m = m1;
                for (int c = 0; c < G; c++) {
                    n0m = fmaxf(n0m, sMax[c * PAIRS + sp0]);
                    n1m = fmaxf(n1m, sMax[c * PAIRS + sp1]);
                }
                /* nothing seen yet: subtract 0 (exp2(-inf) = 0 anyway) */
                const float u0 = n0m == -INFINITY ? 0.0f : n0m;
                const float u1 = n1m == -INFINITY ? 0.0f : n1m;
                const float al0 = exp2f(m0 - u0), al1 = exp2f(m1 - u1);
                m0 = n0m;
                m1 = n1m;
                l0 *= al0;
                l1 *= al1;
                /* P (bf16) to shared memory; sums of the rounded values,
                 * as P V uses them */
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (j >= nts)
                        break;
                    bf162 q0 = __floats2bfloat162_rn(exp2f(s[j][0] - u0),
                                                     exp2f(s[j][1] - u0));
                    bf162 q1 = __floats2bfloat162_rn(exp2f(s[j][2] - u1),
                                                     exp2f(s[j][3] - u1));
                    l0 += __low2float(q0) + __high2float(q0);
                    l1 += __low2float(q1) + __high2float(q1);
                    int col = n0 + j * 8 + tq * 2;
                    *(bf162 *)(sP + sp0 * PST + col) = q0;
                    *(bf162 *)(sP + sp1 * PST + col) = q1;
                }
                if (sg == 0 && tq == 0) {
                    sAlpha[sp0] = al0;
                    sAlpha[sp1] = al1;
                }
            }
            __syncthreads(); /* (3) P and the rescale factors complete */

            if (live) {
                /* O = O * alpha + P V: V = the tile's first L columns */
                const float al0 = sAlpha[pr0], al1 = sAlpha[pr1];
#pragma unroll
                for (int j = 0; j < 16; j++) {
                    o[j][0] *= al0;
                    o[j][1] *= al0;
                    o[j][2] *= al1;
                    o[j][3] *= al1;
                }
#pragma unroll
                for (int ks = 0; ks < BN / 16; ks++) {
                    uint32_t af[4];
                    ldm_x4(af, sP + (mt * 16 + (lane & 15)) * PST + ks * 16 +
                                   (lane >> 4) * 8);
                    const bf16 *vr = kt + (ks * 16 + (lane & 7) +
                                           ((lane >> 3) & 1) * 8) * a.DP + c0;
#pragma unroll
                    for (int jj = 0; jj < 8; jj++) {
                        uint32_t bf[4];
                        if (2 * jj + 1 < nt) {
                            ldm_x4_t(bf, vr + jj * 16 + (lane >> 4) * 8);
                            mma16816(o[2 * jj], af, bf[0], bf[1]);
                            mma16816(o[2 * jj + 1], af, bf[2], bf[3]);
                        } else if (2 * jj < nt) {
                            ldm_x2_t(bf, vr + jj * 16);
                            mma16816(o[2 * jj], af, bf[0], bf[1]);
                        }
                    }
                }
            }
        }
        if (!F32)
            cp_async_wait<0>(); /* only empty groups can be left */

        /* S warps: the sums over their positions and the final max */
        if (sw) {
            l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
            l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
            l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
            l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
            if (tq == 0) {
                sSum[sg * PAIRS + sp0] = l0;
                sSum[sg * PAIRS + sp1] = l1;
                if (sg == 0) {
                    sM[sp0] = m0;
                    sM[sp1] = m1;
                }
            }
        }
        __syncthreads(); /* sums and maxima; and every warp is done with
                            sQ, sK, sP, sAlpha and sPos: the next block
                            may overwrite them */
        if (!live)
            continue;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int p = half ? pr1 : pr0;
            if (p >= np)
                continue;
            float l = 0.0f;
            for (int c = 0; c < G; c++)
                l += sSum[c * PAIRS + p];
            const int r = b.row0 + p / b.n_heads, h = b.head0 + p % b.n_heads;
            float *dst, f;
            if (b.slot < 0) {
                dst = a.oc + ((size_t)r * a.H + h) * a.L;
                f = l > 0.0f ? 1.0f / l : 0.0f;
            } else {
                size_t sl = (size_t)b.slot * PAIRS + p;
                dst = a.ws_o + sl * a.L;
                f = 1.0f;
                if (cs == 0 && tq == 0) {
                    a.ws_m[sl] = sM[p];
                    a.ws_l[sl] = l;
                }
            }
#pragma unroll
            for (int j = 0; j < 16; j++)
                if (j < nt)
                    *(float2 *)(dst + c0 + j * 8 + tq * 2) =
                        make_float2(o[j][2 * half] * f,
                                    o[j][2 * half + 1] * f);
        }
    }
}

/* The merge entries of the plan, a CTA each (grid-stride), a warp per
 * pair: its slots' max, sum weights, then the latents 4 columns a lane. */
__global__ void mla_combine(const attn_args a)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5, nm = a.hdr->n_merges;
    for (int e = blockIdx.x; e < nm; e += gridDim.x) {
        const kcuda_mla_merge mg = a.merges[e];
        const int np = mg.n_rows * mg.n_heads;
        for (int p = warp; p < np; p += nw) {
            float M = -INFINITY, l = 0.0f;
            for (int k = 0; k < mg.n_splits; k++)
                M = fmaxf(M, a.ws_m[(size_t)(mg.slot0 + k) * PAIRS + p]);
            const float u = M == -INFINITY ? 0.0f : M;
            for (int k = 0; k < mg.n_splits; k++) {
                size_t sl = (size_t)(mg.slot0 + k) * PAIRS + p;
                l += exp2f(a.ws_m[sl] - u) * a.ws_l[sl]; /* -inf: 0 */
            }
            const float f = l > 0.0f ? 1.0f / l : 0.0f;
            const int r = mg.row0 + p / mg.n_heads;
            const int h = mg.head0 + p % mg.n_heads;
            float *dst = a.oc + ((size_t)r * a.H + h) * a.L;
            for (int c = lane * 4; c < a.L; c += 128) {
                float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                for (int k = 0; k < mg.n_splits; k++) {
                    size_t sl = (size_t)(mg.slot0 + k) * PAIRS + p;
                    float w = exp2f(a.ws_m[sl] - u);
                    if (w == 0.0f)
                        continue; /* a split this pair sees nothing of */
                    float4 v = *(const float4 *)(a.ws_o + sl * a.L + c);
                    acc.x += w * v.x;
                    acc.y += w * v.y;
                    acc.z += w * v.z;
                    acc.w += w * v.w;
                }
                *(float4 *)(dst + c) =
                    make_float4(acc.x * f, acc.y * f, acc.z * f, acc.w * f);
            }
        }
    }
}

/* One block per row: its c_kv and k_pe into its slot of the layer. */
template <bool F32>
__global__ void __launch_bounds__(128)
kv_write(const int32_t *row_seq, const int32_t *row_pos,
         const int32_t *seq_page0, void *const *pages, size_t layer_off,
         size_t row_bytes, int page_shift, int page_mask, const float *kva,
         int ldk, int D)
{
    const int r = blockIdx.x, t = row_pos[r];
    char *dst = (char *)pages[seq_page0[row_seq[r]] + (t >> page_shift)] +
                layer_off + (size_t)(t & page_mask) * row_bytes;
    const float *src = kva + (size_t)r * ldk;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        if (F32)
            ((float *)dst)[i] = src[i];
        else
            ((bf16 *)dst)[i] = __float2bfloat16_rn(src[i]);
    }
}

/* log2 of a power of two */
inline int page_shift(int page_pos)
{
    int s = 0;
    while ((1 << s) < page_pos)
        s++;
    return s;
}

/* The kernels' arguments for a call (host side): the plan image on the
 * device, the partial slots at the start of the workspace ws. */
inline attn_args attn_args_make(const struct kcuda_rows *rw, int layer,
                                int H, const float *qc, float *oc,
                                float scale,
                                const struct kcuda_mla_plan *plan, void *ws)
{
    const char *img = (const char *)plan->dev;
    attn_args a;
    a.qc = qc;
    a.oc = oc;
    a.row_pos = rw->row_pos;
    a.seq_page0 = rw->seq_page0;
    a.pages = rw->pages;
    a.layer_off = (size_t)layer * rw->layer_bytes;
    a.row_bytes = rw->row_bytes;
    a.page_shift = page_shift(rw->page_pos);
    a.page_mask = rw->page_pos - 1;
    a.H = H;
    a.L = rw->kv_lora;
    a.D = rw->kv_lora + rw->rope;
    a.DP = a.D + 8;
    a.sl2 = scale * LOG2E;
    a.hdr = (const struct kcuda_mla_hdr *)img;
    a.part_begin = (const int32_t *)(img + plan->off_part);
    a.blocks = (const struct kcuda_mla_block *)(img + plan->off_blocks);
    a.merges = (const struct kcuda_mla_merge *)(img + plan->off_merges);
    size_t slots = (size_t)plan->cap_slots * KCUDA_MLA_PAIRS;
    a.ws_o = (float *)ws;
    a.ws_m = a.ws_o + slots * a.L;
    a.ws_l = a.ws_m + slots;
    return a;
}

} /* namespace mla */
#endif
