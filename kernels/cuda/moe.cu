/*
 * moe.cu - the MoE ops of the CUDA backend (kcuda.h): the router
 * (kcuda_moe_route), the routed experts' device tables
 * (kcuda_experts_new / _free) and their FFN over a batch (kcuda_moe_ffn).
 *
 * Router: one warp per row. The per-element math and the order that picks
 * experts and groups are kernels/cuda_route.h's (tested on the CPU against
 * model/moe.c); the warp scans its lanes' experts with kroute_better and
 * reduces with it, which picks the element the serial scan picks because
 * (value descending, index ascending) is a total order.
 *
 * FFN, four kernels on the stream, no host sync, grids fixed by
 * (n_tok, k, E, shapes) so that the call can be captured in a graph:
 *  1. sort (one block): counting sort of the n_tok * k (row, slot) pairs
 *     by expert, stable (pairs of one expert keep their order): off[e]
 *     (first position of expert e), active[] (experts with rows, in
 *     ascending id), perm[pos] = pair, inv[pair] = pos.
 *  2. gate+up+SwiGLU, 3. down: one weight-streaming kernel. Block
 *     (x, y) = (tile of output rows, y-th active expert); blocks past the
 *     number of active experts exit at once. The block's 8 warps own RW
 *     consecutive output rows each (gate+up: 16 rows of both matrices per
 *     block; down: 32 rows), so every weight row of an active expert is
 *     streamed by exactly one warp, once per group of up to 8 of the
 *     expert's rows (decode: one group, the weights are read once). The
 *     group's activation rows are staged in shared memory by chunks of
 *     1024 columns; each lane reads 16 bytes of each of its weight rows
 *     per step (4 to 32 weights by dtype), dequantises them in registers
 *     and multiplies them with every staged row; a warp shuffle sum then
 *     gives each output. A row's result does not depend on the other rows
 *     of its group or call (batch invariant). Many rows per expert
 *     (prefill) re-read the weights per group of 8 from L2 / HBM on CUDA
 *     cores; a tensor-core grouped GEMM for that case is not written yet.
 *  4. combine: one block per row, y[t] += w * out_e in ascending expert id
 *     (as moe.c), fp32 fma.
 * Scratch: kcuda_moe_ffn_workspace bytes of the backend workspace.
 */
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <limits.h>
#include <stdlib.h>

#include "cuda_route.h"
#include "kcuda_int.h"

/* ---- router ---------------------------------------------------------- */

#define ROUTE_WARPS 4 /* rows per block; smem 3 E floats per warp */

/* The best (value, index) over the warp, in every lane. */
__device__ __forceinline__ void warp_best(float *bv, int *bi)
{
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, *bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, *bi, o);
        if (kroute_better(ov, oi, *bv, *bi)) {
            *bv = ov;
            *bi = oi;
        }
    }
}

__global__ void __launch_bounds__(ROUTE_WARPS * 32)
route_kernel(struct kcuda_route rt, const float *__restrict__ logits,
             int ldl, int n_tok, int32_t *__restrict__ idx,
             float *__restrict__ w)
{
    extern __shared__ float route_sm[];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * ROUTE_WARPS + warp;
    if (row >= n_tok) /* whole warps; no block barrier below */
        return;
    int E = rt.n_experts, G = rt.n_group, K = rt.k, per = E / G;
    float *s = route_sm + (size_t)warp * 3 * E; /* scores */
    float *c = s + E;                           /* choice scores */
    float *aux = c + E; /* group scores, then the chosen weights */
    const float *lg = logits + (size_t)row * ldl;

    if (rt.scoring == KROUTE_SIGMOID) {
        for (int e = lane; e < E; e += 32)
            s[e] = kroute_sigmoid(lg[e]);
    } else {
        float mx = -INFINITY;
        for (int e = lane; e < E; e += 32)
            mx = lg[e] > mx ? lg[e] : mx;
        for (int o = 16; o > 0; o >>= 1) {
            float om = __shfl_xor_sync(0xffffffffu, mx, o);
            mx = om > mx ? om : mx;
        }
        double sum = 0.0;
        for (int e = lane; e < E; e += 32) {
            s[e] = kroute_softmax_exp(lg[e], mx);
            sum += s[e];
        }
        for (int o = 16; o > 0; o >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        float inv = kroute_softmax_inv(sum);
        for (int e = lane; e < E; e += 32)
            s[e] *= inv;
    }
    for (int e = lane; e < E; e += 32)
        c[e] = kroute_choice(&rt, s[e], rt.bias, e);
    __syncwarp();

    if (kroute_grouped(&rt)) {
        for (int g = lane; g < G; g += 32) {
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int i = 0; i < per; i++)
                kroute_top2(c[g * per + i], &m1, &m2);
            aux[g] = kroute_group_score(&rt, m1, m2, per);
        }
        __syncwarp();
        /* the topk_group best groups; a kept group's score becomes NaN
         * (by the lane that owns it: g % 32), as kroute_row does */
        for (int j = 0; j < rt.topk_group; j++) {
            float bv = 0.0f;
            int bi = -1;
            for (int g = lane; g < G; g += 32)
                if (aux[g] == aux[g] && kroute_better(aux[g], g, bv, bi)) {
                    bv = aux[g];
                    bi = g;
                }
            warp_best(&bv, &bi);
            if (bi < 0)
                break; /* warp-uniform: only NaN scores left */
            if ((bi & 31) == lane)
                aux[bi] = NAN;
            __syncwarp();
        }
        __syncwarp();
        for (int e = lane; e < E; e += 32)
            if (aux[e / per] == aux[e / per]) /* group not kept */
                c[e] = -INFINITY;
        __syncwarp();
    }

    /* top-k; aux now holds the chosen scores (aux[j] for j < K) */
    int32_t *ir = idx + (size_t)row * K;
    for (int j = 0; j < K; j++) {
        float bv = 0.0f;
        int bi = -1;
        for (int e = lane; e < E; e += 32)
            if (c[e] == c[e] && kroute_better(c[e], e, bv, bi)) {
                bv = c[e];
                bi = e;
            }
        warp_best(&bv, &bi);
        __syncwarp(); /* every lane has read aux / c of this round */
        if (lane == 0) {
            ir[j] = bi;
            aux[j] = bi >= 0 ? s[bi] : 0.0f;
        }
        if (bi >= 0 && (bi & 31) == lane)
            c[bi] = NAN; /* used */
        __syncwarp();
    }
    if (lane == 0) {
        kroute_finish(&rt, aux);
        float *wr = w + (size_t)row * K;
        for (int j = 0; j < K; j++)
            wr[j] = aux[j];
    }
}

extern "C" int kcuda_moe_route(struct kcuda *g, const struct kcuda_route *rt,
                               const float *logits, int ldl, int n_tok,
                               int32_t *idx, float *w)
{
    if (!g || !rt || n_tok < 0 || (n_tok > 0 && (!logits || !idx || !w)) ||
        kroute_check(rt) != 0 || ldl < rt->n_experts) {
        kcuda_set_error("kcuda_moe_route: bad arguments (E %d k %d groups "
                        "%d/%d)", rt ? rt->n_experts : 0, rt ? rt->k : 0,
                        rt ? rt->topk_group : 0, rt ? rt->n_group : 0);
        return MTPD_K_EINVAL;
    }
    if (n_tok == 0)
        return 0;
    int rc = kcuda_bind(g);
    if (rc)
        return rc;
    size_t smem = (size_t)ROUTE_WARPS * 3 * rt->n_experts * sizeof(float);
    int blocks = (n_tok + ROUTE_WARPS - 1) / ROUTE_WARPS;
    route_kernel<<<blocks, ROUTE_WARPS * 32, smem, g->stream>>>(
        *rt, logits, ldl, n_tok, idx, w);
    return kcuda_launched("kcuda_moe_route");
}

/* ---- expert tables -------------------------------------------------- */

/* One matrix's device pointers (struct kdmat without the shape). */
struct moe_mat {
    const void *data;
    const float *scale;
    const uint16_t *qd, *qm;
};

struct kcuda_experts {
    int n, hidden, inter;
    enum kdtype dt_up, dt_down; /* gate and up share one */
    int blk_up, blk_down;       /* F8 block edge, else 0 */
    struct moe_mat *tab;        /* (dev) [3][n]: gate, up, down */
};

/* Weights per 16-byte load, by dtype (0: unsupported). */
__host__ __device__ constexpr int moe_epl(int dt)
{
    return dt == KDT_F32 ? 4
           : dt == KDT_BF16 || dt == KDT_F16 ? 8
           : dt == KDT_F8_E4M3 || dt == KDT_Q8_0 ? 16
           : dt == KDT_Q4_1 ? 32
                            : 0;
}

/* Byte offset of column c in a row (c a multiple of moe_epl). */
__host__ __device__ constexpr size_t moe_col_bytes(int dt, size_t c)
{
    return dt == KDT_F32 ? c * 4
           : dt == KDT_BF16 || dt == KDT_F16 ? c * 2
           : dt == KDT_Q4_1 ? c / 2
                            : c;
}

/* What the streaming kernel needs of a matrix: 16-byte loads that never
 * straddle a row or an F8 scale block. Returns an error text or NULL. */
static const char *moe_mat_bad(const struct kdmat *m, enum kdtype dt,
                               int rows, int cols, int blk)
{
    if (m->dtype != dt)
        return "experts of different dtypes";
    if (m->rows != rows || m->cols != cols)
        return "experts of different shapes";
    if (moe_epl(dt) == 0)
        return "unsupported dtype";
    if (cols % moe_epl(dt) != 0)
        return "columns not a multiple of the 16-byte load";
    if (!m->data || ((uintptr_t)m->data & 15))
        return "weights not 16-byte aligned";
    if (dt == KDT_F8_E4M3 &&
        (!m->scale || m->blk <= 0 || m->blk % 16 != 0 || m->blk != blk))
        return "F8 without scales, or a block edge not a multiple of 16";
    if ((dt == KDT_Q8_0 || dt == KDT_Q4_1) && !m->qd)
        return "Q8_0 / Q4_1 without scales";
    if (dt == KDT_Q4_1 && !m->qm)
        return "Q4_1 without mins";
    return NULL;
}

extern "C" int kcuda_experts_new(struct kcuda *g, int n,
                                 const struct kdmat *gate,
                                 const struct kdmat *up,
                                 const struct kdmat *down,
                                 struct kcuda_experts **out)
{
    *out = NULL;
    if (!g || n <= 0 || n > KROUTE_MAX_EXPERTS || !gate || !up || !down) {
        kcuda_set_error("kcuda_experts_new: bad arguments (n %d)", n);
        return MTPD_K_EINVAL;
    }
    int inter = gate[0].rows, hidden = gate[0].cols;
    enum kdtype du = gate[0].dtype, dd = down[0].dtype;
    int bu = du == KDT_F8_E4M3 ? gate[0].blk : 0;
    int bd = dd == KDT_F8_E4M3 ? down[0].blk : 0;
    for (int i = 0; i < n; i++) {
        const char *why = moe_mat_bad(&gate[i], du, inter, hidden, bu);
        if (!why)
            why = moe_mat_bad(&up[i], du, inter, hidden, bu);
        if (!why)
            why = moe_mat_bad(&down[i], dd, hidden, inter, bd);
        if (why) {
            kcuda_set_error("kcuda_experts_new: expert %d: %s", i, why);
            return MTPD_K_EINVAL;
        }
    }
    struct kcuda_experts *e =
        (struct kcuda_experts *)calloc(1, sizeof(*e));
    struct moe_mat *h = (struct moe_mat *)calloc(3 * (size_t)n, sizeof(*h));
    if (!e || !h) {
        free(e);
        free(h);
        return MTPD_K_ENOMEM;
    }
    const struct kdmat *src[3] = {gate, up, down};
    for (int m = 0; m < 3; m++)
        for (int i = 0; i < n; i++) {
            const struct kdmat *d = &src[m][i];
            h[m * n + i] = (struct moe_mat){d->data, d->scale, d->qd, d->qm};
        }
    size_t bytes = 3 * (size_t)n * sizeof(*h);
    int rc = kcuda_bind(g);
    if (rc == 0)
        rc = kcuda_err(cudaMalloc((void **)&e->tab, bytes),
                       "kcuda_experts_new: cudaMalloc");
    if (rc == 0)
        rc = kcuda_err(cudaMemcpyAsync(e->tab, h, bytes,
                                       cudaMemcpyHostToDevice, g->stream),
                       "kcuda_experts_new: cudaMemcpy");
    if (rc == 0) /* h is freed next */
        rc = kcuda_err(cudaStreamSynchronize(g->stream),
                       "kcuda_experts_new: upload");
    free(h);
    if (rc) {
        if (e->tab)
            cudaFree(e->tab);
        free(e);
        return rc;
    }
    e->n = n;
    e->hidden = hidden;
    e->inter = inter;
    e->dt_up = du;
    e->dt_down = dd;
    e->blk_up = bu;
    e->blk_down = bd;
    *out = e;
    return 0;
}

extern "C" void kcuda_experts_free(struct kcuda *g, struct kcuda_experts *e)
{
    if (!e)
        return;
    if (g && kcuda_bind(g) == 0)
        cudaFree(e->tab);
    free(e);
}

/* ---- workspace -------------------------------------------------------- */

/* The FFN's scratch, carved from the backend workspace in this order. */
struct moe_ws {
    int32_t *off;      /* [MAX_EXPERTS + 1] first position of each expert */
    int32_t *active;   /* [MAX_EXPERTS] experts with rows, ascending */
    int32_t *n_active; /* [1] */
    int32_t *perm;     /* [n_pairs] position -> pair (t * k + j) */
    int32_t *inv;      /* [n_pairs] pair -> position, -1 if skipped */
    float *h;          /* [n_pairs, inter] silu(gate x) * up x */
    float *yo;         /* [n_pairs, hidden] down h */
};

static size_t al256(size_t b)
{
    return (b + 255) & ~(size_t)255;
}

/* Lays the scratch out at base (NULL: just measures); returns its bytes. */
static size_t moe_ws_layout(char *base, size_t n_pairs, int hidden,
                            int inter, struct moe_ws *ws)
{
    size_t at = 0;
    size_t sz[7] = {
        sizeof(int32_t) * (KROUTE_MAX_EXPERTS + 1),
        sizeof(int32_t) * KROUTE_MAX_EXPERTS,
        sizeof(int32_t),
        sizeof(int32_t) * n_pairs,
        sizeof(int32_t) * n_pairs,
        sizeof(float) * n_pairs * (size_t)inter,
        sizeof(float) * n_pairs * (size_t)hidden,
    };
    void *p[7];
    for (int i = 0; i < 7; i++) {
        p[i] = base ? base + at : NULL;
        at += al256(sz[i]);
    }
    if (ws) {
        ws->off = (int32_t *)p[0];
        ws->active = (int32_t *)p[1];
        ws->n_active = (int32_t *)p[2];
        ws->perm = (int32_t *)p[3];
        ws->inv = (int32_t *)p[4];
        ws->h = (float *)p[5];
        ws->yo = (float *)p[6];
    }
    return at;
}

extern "C" size_t kcuda_moe_ffn_workspace(int n_tok, int k, int hidden,
                                          int inter)
{
    if (n_tok < 0 || k < 0 || hidden < 0 || inter < 0)
        return 0;
    return moe_ws_layout(NULL, (size_t)n_tok * k, hidden, inter, NULL);
}

/* ---- 1. counting sort of (row, slot) pairs by expert ------------------- */

#define SORT_THREADS 256

__global__ void __launch_bounds__(SORT_THREADS)
moe_sort_kernel(const int32_t *__restrict__ idx, int n_pairs, int E,
                struct moe_ws ws)
{
    __shared__ int cnt[KROUTE_MAX_EXPERTS]; /* counts, then next slot */
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        cnt[e] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) {
        int e = idx[i];
        if (e >= 0 && e < E)
            atomicAdd(&cnt[e], 1); /* counts only: order-free */
    }
    __syncthreads();
    if (threadIdx.x >= 32)
        return;
    /* warp 0: exclusive scan -> off, the active list, then a stable
     * placement 32 pairs at a time (lanes of one expert rank by lane) */
    int lane = threadIdx.x;
    unsigned lt = (1u << lane) - 1;
    int base = 0, nact = 0;
    for (int e0 = 0; e0 < E; e0 += 32) {
        int e = e0 + lane;
        int v = e < E ? cnt[e] : 0, x = v;
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o)
                x += y;
        }
        if (e < E) {
            ws.off[e] = base + x - v;
            cnt[e] = base + x - v;
        }
        unsigned has = __ballot_sync(0xffffffffu, v > 0);
        if (v > 0)
            ws.active[nact + __popc(has & lt)] = e;
        nact += __popc(has);
        base += __shfl_sync(0xffffffffu, x, 31);
    }
    if (lane == 0) {
        ws.off[E] = base;
        *ws.n_active = nact;
    }
    __syncwarp();
    for (int b0 = 0; b0 < n_pairs; b0 += 32) {
        int i = b0 + lane;
        int e = i < n_pairs ? idx[i] : -1;
        int ok = e >= 0 && e < E;
        unsigned peers = __match_any_sync(0xffffffffu, ok ? e : -1);
        int rank = __popc(peers & lt);
        int pos = ok ? cnt[e] + rank : -1;
        __syncwarp(); /* all read cnt[e] before its leader moves it */
        if (ok && rank == 0)
            cnt[e] += __popc(peers);
        __syncwarp();
        if (i < n_pairs) {
            ws.inv[i] = pos;
            if (ok)
                ws.perm[pos] = i;
        }
    }
}

/* ---- 2, 3. weight-streaming expert GEMMs ----------------------------- */

#define FFN_WARPS 8
#define FFN_NR 8     /* activation rows per group (max) */
#define FFN_KC 1024  /* staged columns per chunk */

struct ffn_args {
    const struct moe_mat *tab; /* M tables of E entries, matrix m at m*E */
    int E, k;
    const int32_t *off, *active, *n_active, *perm;
    const float *x; /* gate+up: the call's x (rows by token, ldx);
                     * down: h (rows by position, ldx = inter) */
    int ldx;
    float *out;     /* [n_pairs, rows] by position */
    int rows, cols, blk;
};

/* 4 dequantised weights: columns c0 + 4q .. + 3 of the 16 bytes r that
 * start at column c0 (Q4_1: q < 4 low nibbles of word q, q >= 4 high
 * nibbles of word q - 4, which are columns 16 + 4(q - 4).. as ggml lays
 * them out). sc: F8 block scale or Q scale, mn: Q4_1 min. */
__device__ __forceinline__ uint32_t moe_word(const uint4 &r, int i)
{
    return i == 0 ? r.x : i == 1 ? r.y : i == 2 ? r.z : r.w;
}

template <int DT>
__device__ __forceinline__ float4 moe_dq4(const uint4 &r, int q, float sc,
                                          float mn)
{
    if (DT == KDT_F32) {
        return make_float4(__uint_as_float(r.x), __uint_as_float(r.y),
                           __uint_as_float(r.z), __uint_as_float(r.w));
    } else if (DT == KDT_BF16) {
        uint32_t a = moe_word(r, 2 * q), b = moe_word(r, 2 * q + 1);
        return make_float4(__uint_as_float(a << 16),
                           __uint_as_float(a & 0xffff0000u),
                           __uint_as_float(b << 16),
                           __uint_as_float(b & 0xffff0000u));
    } else if (DT == KDT_F16) {
        uint32_t a = moe_word(r, 2 * q), b = moe_word(r, 2 * q + 1);
        return make_float4(
            __half2float(__ushort_as_half((unsigned short)(a & 0xffffu))),
            __half2float(__ushort_as_half((unsigned short)(a >> 16))),
            __half2float(__ushort_as_half((unsigned short)(b & 0xffffu))),
            __half2float(__ushort_as_half((unsigned short)(b >> 16))));
    } else if (DT == KDT_F8_E4M3) {
        uint32_t a = moe_word(r, q);
        float2 lo = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(
            (__nv_fp8x2_storage_t)(a & 0xffffu), __NV_E4M3)));
        float2 hi = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(
            (__nv_fp8x2_storage_t)(a >> 16), __NV_E4M3)));
        return make_float4(lo.x * sc, lo.y * sc, hi.x * sc, hi.y * sc);
    } else if (DT == KDT_Q8_0) {
        uint32_t a = moe_word(r, q);
        return make_float4((float)(int8_t)(a & 0xff) * sc,
                           (float)(int8_t)((a >> 8) & 0xff) * sc,
                           (float)(int8_t)((a >> 16) & 0xff) * sc,
                           (float)(int8_t)(a >> 24) * sc);
    } else { /* KDT_Q4_1 */
        uint32_t a = q < 4 ? moe_word(r, q) : moe_word(r, q - 4) >> 4;
        return make_float4(fmaf((float)(a & 15), sc, mn),
                           fmaf((float)((a >> 8) & 15), sc, mn),
                           fmaf((float)((a >> 16) & 15), sc, mn),
                           fmaf((float)((a >> 24) & 15), sc, mn));
    }
}

/* Scale (and min) of the 16 bytes of row o at column c (any column of
 * the load: it never straddles a block). */
template <int DT>
__device__ __forceinline__ void moe_meta(const struct moe_mat &m, int o,
                                         int c, int cols, int blk, float *sc,
                                         float *mn)
{
    *sc = 1.0f;
    *mn = 0.0f;
    if (DT == KDT_F8_E4M3) {
        int nbc = (cols + blk - 1) / blk;
        *sc = m.scale[(size_t)(o / blk) * nbc + c / blk];
    } else if (DT == KDT_Q8_0 || DT == KDT_Q4_1) {
        size_t qi = (size_t)o * (cols / KQ_BLK) + c / KQ_BLK;
        *sc = __half2float(__ushort_as_half(m.qd[qi]));
        if (DT == KDT_Q4_1)
            *mn = __half2float(__ushort_as_half(m.qm[qi]));
    }
}

/*
 * One group of nr (<= NR) rows of one expert starting at position p0:
 * warp rows o_base .. o_base + RW of the M matrices. All threads of the
 * block call it (it has block barriers). M == 2: gate and up, writes
 * silu(gate) * up; M == 1: down.
 */
template <int DT, int M, int RW, int NR>
__device__ __forceinline__ void ffn_group(const struct ffn_args &a,
                                          const struct moe_mat *mats,
                                          int p0, int nr, int o_base,
                                          float *xs, const float **srow)
{
    constexpr int EPL = moe_epl(DT);
    const int lane = threadIdx.x & 31;
    if (threadIdx.x < NR) { /* the group's activation rows */
        int r = threadIdx.x;
        const float *src = NULL;
        if (r < nr)
            src = M == 2 ? a.x + (size_t)(a.perm[p0 + r] / a.k) * a.ldx
                         : a.x + (size_t)(p0 + r) * a.ldx;
        srow[r] = src;
    }
    float acc[M][RW][NR];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < RW; j++)
#pragma unroll
            for (int r = 0; r < NR; r++)
                acc[m][j][r] = 0.0f;
    const size_t rb = moe_col_bytes(DT, (size_t)a.cols);

    for (int kc0 = 0; kc0 < a.cols; kc0 += FFN_KC) {
        int len = min(FFN_KC, a.cols - kc0);
        __syncthreads(); /* srow written; the previous chunk consumed */
        for (int t = threadIdx.x; t < NR * len; t += blockDim.x) {
            int r = t / len, c = t - r * len;
            xs[r * FFN_KC + c] = r < nr ? srow[r][kc0 + c] : 0.0f;
        }
        __syncthreads();
        const float4 *xs4 = (const float4 *)xs;
        for (int c0 = lane * EPL; c0 < len; c0 += 32 * EPL) {
            uint4 raw[M][RW];
            float sc[M][RW], mn[M][RW];
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int j = 0; j < RW; j++) {
                    int o = o_base + j;
                    raw[m][j] = make_uint4(0, 0, 0, 0);
                    sc[m][j] = 0.0f;
                    mn[m][j] = 0.0f;
                    if (o < a.rows) {
                        const char *p = (const char *)mats[m].data +
                                        (size_t)o * rb +
                                        moe_col_bytes(DT, kc0 + c0);
                        raw[m][j] = __ldg((const uint4 *)p);
                        moe_meta<DT>(mats[m], o, kc0 + c0, a.cols, a.blk,
                                     &sc[m][j], &mn[m][j]);
                    }
                }
#pragma unroll
            for (int q = 0; q < EPL / 4; q++) {
                float4 xv[NR];
#pragma unroll
                for (int r = 0; r < NR; r++)
                    xv[r] = xs4[r * (FFN_KC / 4) + (c0 >> 2) + q];
#pragma unroll
                for (int m = 0; m < M; m++)
#pragma unroll
                    for (int j = 0; j < RW; j++) {
                        float4 wv = moe_dq4<DT>(raw[m][j], q, sc[m][j],
                                                mn[m][j]);
#pragma unroll
                        for (int r = 0; r < NR; r++) {
                            float s = acc[m][j][r];
                            s = fmaf(wv.x, xv[r].x, s);
                            s = fmaf(wv.y, xv[r].y, s);
                            s = fmaf(wv.z, xv[r].z, s);
                            s = fmaf(wv.w, xv[r].w, s);
                            acc[m][j][r] = s;
                        }
                    }
            }
        }
    }
    /* sums over the warp; lane r writes row r of the group */
#pragma unroll
    for (int j = 0; j < RW; j++) {
        int o = o_base + j;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float v[M];
#pragma unroll
            for (int m = 0; m < M; m++) {
                float s = acc[m][j][r];
                for (int off = 16; off > 0; off >>= 1)
                    s += __shfl_xor_sync(0xffffffffu, s, off);
                v[m] = s;
            }
            if (lane == r && r < nr && o < a.rows) {
                float res = v[0];
                if (M == 2) /* kswiglu: silu(gate) * up */
                    res = v[0] / (1.0f + expf(-v[0])) * v[M - 1];
                a.out[(size_t)(p0 + r) * a.rows + o] = res;
            }
        }
    }
}

/* Block (tile, slot): output rows [tile * 8 RW, + 8 RW) of the slot-th
 * active expert, for all its rows in groups of up to NRMAX (the host picks
 * NRMAX from n_tok, so that decode runs the register-light one-row code
 * at full occupancy). At least 2 blocks per SM: that caps the 8-row
 * variants at 128 registers (ptxas, sm_90: no spills for F32 / BF16 /
 * F16, 8 bytes for F8, 36-104 for Q8_0 / Q4_1; uncapped they took
 * 116-201, one block per SM). */
template <int DT, int M, int RW, int NRMAX>
__global__ void __launch_bounds__(FFN_WARPS * 32, 2)
moe_ffn_kernel(struct ffn_args a)
{
    __shared__ __align__(16) float xs[NRMAX * FFN_KC];
    __shared__ const float *srow[NRMAX];
    int slot = blockIdx.y;
    if (slot >= *a.n_active) /* block-uniform */
        return;
    int e = a.active[slot];
    int p_begin = a.off[e], cnt = a.off[e + 1] - p_begin;
    struct moe_mat mats[M];
#pragma unroll
    for (int m = 0; m < M; m++)
        mats[m] = a.tab[m * a.E + e];
    int o_base = blockIdx.x * (FFN_WARPS * RW) + (threadIdx.x >> 5) * RW;
    for (int g0 = 0; g0 < cnt; g0 += NRMAX) {
        int nr = min(NRMAX, cnt - g0), p0 = p_begin + g0;
        if constexpr (NRMAX >= 8) {
            if (nr > 4) {
                ffn_group<DT, M, RW, 8>(a, mats, p0, nr, o_base, xs, srow);
                continue;
            }
        }
        if constexpr (NRMAX >= 4) {
            if (nr > 2) {
                ffn_group<DT, M, RW, 4>(a, mats, p0, nr, o_base, xs, srow);
                continue;
            }
        }
        if constexpr (NRMAX >= 2) {
            if (nr == 2) {
                ffn_group<DT, M, RW, 2>(a, mats, p0, nr, o_base, xs, srow);
                continue;
            }
        }
        ffn_group<DT, M, RW, 1>(a, mats, p0, nr, o_base, xs, srow);
    }
}

#define UP_RW 2   /* gate+up: 2 rows of each matrix per warp */
#define DOWN_RW 4 /* down: 4 rows per warp */

/* Launches the streaming kernel for dtype dt (runtime) over grid. */
template <int M, int RW, int NRMAX>
static void ffn_launch_nr(int dt, dim3 grid, cudaStream_t st,
                          const struct ffn_args &a)
{
    dim3 block(FFN_WARPS * 32);
    switch (dt) {
    case KDT_F32:
        moe_ffn_kernel<KDT_F32, M, RW, NRMAX><<<grid, block, 0, st>>>(a);
        break;
    case KDT_BF16:
        moe_ffn_kernel<KDT_BF16, M, RW, NRMAX><<<grid, block, 0, st>>>(a);
        break;
    case KDT_F16:
        moe_ffn_kernel<KDT_F16, M, RW, NRMAX><<<grid, block, 0, st>>>(a);
        break;
    case KDT_F8_E4M3:
        moe_ffn_kernel<KDT_F8_E4M3, M, RW, NRMAX><<<grid, block, 0, st>>>(a);
        break;
    case KDT_Q8_0:
        moe_ffn_kernel<KDT_Q8_0, M, RW, NRMAX><<<grid, block, 0, st>>>(a);
        break;
    default: /* KDT_Q4_1 (kcuda_experts_new checked the dtype) */
        moe_ffn_kernel<KDT_Q4_1, M, RW, NRMAX><<<grid, block, 0, st>>>(a);
        break;
    }
}

/* nrmax: rows per group, from the most rows an expert can have (n_tok
 * when a row's experts are distinct; more rows just take more groups). */
template <int M, int RW>
static int ffn_launch(int dt, int n_tok, dim3 grid, cudaStream_t st,
                      const struct ffn_args &a)
{
    if (n_tok > 4)
        ffn_launch_nr<M, RW, 8>(dt, grid, st, a);
    else if (n_tok > 2)
        ffn_launch_nr<M, RW, 4>(dt, grid, st, a);
    else if (n_tok == 2)
        ffn_launch_nr<M, RW, 2>(dt, grid, st, a);
    else
        ffn_launch_nr<M, RW, 1>(dt, grid, st, a);
    return kcuda_launched(M == 2 ? "kcuda_moe_ffn: gate+up"
                                 : "kcuda_moe_ffn: down");
}

/* ---- 4. combine -------------------------------------------------------- */

#define COMBINE_THREADS 256

__global__ void __launch_bounds__(COMBINE_THREADS)
moe_combine_kernel(const int32_t *__restrict__ idx,
                   const float *__restrict__ w,
                   const int32_t *__restrict__ inv,
                   const float *__restrict__ yo, int k, int hidden,
                   float *__restrict__ y, int ldy)
{
    __shared__ int s_e[KCUDA_MOE_MAX_K], s_pos[KCUDA_MOE_MAX_K];
    __shared__ float s_w[KCUDA_MOE_MAX_K];
    __shared__ int o_pos[KCUDA_MOE_MAX_K];
    __shared__ float o_w[KCUDA_MOE_MAX_K];
    __shared__ int n_ok;
    int t = blockIdx.x;
    if ((int)threadIdx.x < k) {
        int j = threadIdx.x;
        s_e[j] = idx[(size_t)t * k + j];
        s_pos[j] = inv[(size_t)t * k + j];
        s_w[j] = w[(size_t)t * k + j];
    }
    __syncthreads();
    /* slot j's place in (expert id, slot) order among the placed slots */
    if ((int)threadIdx.x < k) {
        int j = threadIdx.x, rank = 0, ok = 0;
        for (int i = 0; i < k; i++)
            if (s_pos[i] >= 0) {
                ok++;
                rank += s_e[i] < s_e[j] || (s_e[i] == s_e[j] && i < j);
            }
        if (s_pos[j] >= 0) {
            o_pos[rank] = s_pos[j];
            o_w[rank] = s_w[j];
        }
        if (j == 0)
            n_ok = ok;
    }
    __syncthreads();
    int n = n_ok;
    float *yr = y + (size_t)t * ldy;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        float acc = yr[c];
        for (int s = 0; s < n; s++)
            acc = fmaf(o_w[s], yo[(size_t)o_pos[s] * hidden + c], acc);
        yr[c] = acc;
    }
}

/* ---- the op --------------------------------------------------------- */

extern "C" int kcuda_moe_ffn(struct kcuda *g, const struct kcuda_experts *e,
                             const float *x, int ldx, int n_tok,
                             const int32_t *idx, const float *w, int k,
                             float *y, int ldy)
{
    if (!g || !e || n_tok < 0 || k <= 0 || k > KCUDA_MOE_MAX_K ||
        (n_tok > 0 && (!x || !idx || !w || !y)) || ldx < e->hidden ||
        ldy < e->hidden) {
        kcuda_set_error("kcuda_moe_ffn: bad arguments (n_tok %d k %d)",
                        n_tok, k);
        return MTPD_K_EINVAL;
    }
    if (n_tok == 0)
        return 0;
    size_t n_pairs = (size_t)n_tok * k;
    size_t need = kcuda_moe_ffn_workspace(n_tok, k, e->hidden, e->inter);
    if (need > g->ws_bytes) {
        kcuda_set_error("kcuda_moe_ffn: needs %zu bytes of workspace, has "
                        "%zu", need, g->ws_bytes);
        return MTPD_K_EINVAL;
    }
    int rc = kcuda_bind(g);
    if (rc)
        return rc;
    struct moe_ws ws;
    moe_ws_layout((char *)g->ws, n_pairs, e->hidden, e->inter, &ws);

    moe_sort_kernel<<<1, SORT_THREADS, 0, g->stream>>>(idx, (int)n_pairs,
                                                        e->n, ws);
    if ((rc = kcuda_launched("kcuda_moe_ffn: sort")))
        return rc;

    int max_active = (int)(n_pairs < (size_t)e->n ? n_pairs : e->n);
    struct ffn_args a = {};
    a.E = e->n;
    a.k = k;
    a.off = ws.off;
    a.active = ws.active;
    a.n_active = ws.n_active;
    a.perm = ws.perm;

    a.tab = e->tab; /* gate at 0, up at E */
    a.x = x;
    a.ldx = ldx;
    a.out = ws.h;
    a.rows = e->inter;
    a.cols = e->hidden;
    a.blk = e->blk_up;
    dim3 gu((e->inter + FFN_WARPS * UP_RW - 1) / (FFN_WARPS * UP_RW),
            max_active);
    if ((rc = ffn_launch<2, UP_RW>(e->dt_up, n_tok, gu, g->stream, a)))
        return rc;

    a.tab = e->tab + 2 * (size_t)e->n; /* down */
    a.x = ws.h;
    a.ldx = e->inter;
    a.out = ws.yo;
    a.rows = e->hidden;
    a.cols = e->inter;
    a.blk = e->blk_down;
    dim3 gd((e->hidden + FFN_WARPS * DOWN_RW - 1) / (FFN_WARPS * DOWN_RW),
            max_active);
    if ((rc = ffn_launch<1, DOWN_RW>(e->dt_down, n_tok, gd, g->stream, a)))
        return rc;

    moe_combine_kernel<<<n_tok, COMBINE_THREADS, 0, g->stream>>>(
        idx, w, ws.inv, ws.yo, k, e->hidden, y, ldy);
    return kcuda_launched("kcuda_moe_ffn: combine");
}
