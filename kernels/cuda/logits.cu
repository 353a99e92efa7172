/*
 * logits.cu - the logits ops of the CUDA backend (kcuda.h): argmax,
 * scaled softmax, and the speculative accept step of one sequence.
 *
 * argmax and softmax: one block per row (argmax: up to 32 blocks per
 * long row, their partials merged by a second kernel, when the workspace
 * holds n_rows * 256 bytes), each thread striding over its columns, then
 * a fixed-shape reduction (deterministic: the same result whatever the
 * timing). argmax orders by (value descending, index ascending), a total
 * order, so it returns kargmax's index exactly, however it is split.
 * softmax sums in double like ksoftmax_scaled; device expf and the
 * reduction order differ from the CPU's by a few ulps.
 *
 * spec_accept: one block. The accept rule is kernels/cuda_route.h's
 * (kaccept_token, checked on the CPU against spec/accept.c); the next
 * token is drawn by inverse CDF: each thread owns a contiguous chunk of
 * ids, an exclusive scan of the chunk sums (double) gives each its start,
 * and the lowest thread whose running sum passes u * total owns the token
 * (kaccept_seq is the serial twin; the two can differ only when u * total
 * falls within rounding of a boundary).
 */
#include <limits.h>

#include "cuda_route.h"
#include "kcuda_int.h"

#define ROW_THREADS 1024
#define ROW_WARPS (ROW_THREADS / 32)

/* ---- argmax ------------------------------------------------------------ */

__device__ __forceinline__ void best_shfl(float *bv, int *bi)
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

/* Columns per block when a row is split (and at most 32 splits). */
#define ARGMAX_SPLIT_COLS 4096
#define ARGMAX_MAX_SPLIT 32

/*
 * Block (row, split) finds the best of columns [c0, c1) of its row with
 * NT threads, 4 independent loads in flight per thread. n_split == 1: the
 * answer, to out; else a partial to (pv, pi)[row * n_split + split].
 */
template <int NT>
__global__ void __launch_bounds__(NT)
argmax_kernel(const float *__restrict__ x, int ldx, int n_cols, int n_split,
              float *__restrict__ pv, int *__restrict__ pi,
              int32_t *__restrict__ out)
{
    __shared__ float s_v[NT / 32];
    __shared__ int s_i[NT / 32];
    const float *xr = x + (size_t)blockIdx.x * ldx;
    int chunk = (n_cols + n_split - 1) / n_split;
    int c0 = min(n_cols, (int)blockIdx.y * chunk), c1 = min(n_cols, c0 + chunk);
    float bv = 0.0f;
    int bi = -1;
    /* ascending ids per thread: an equal later value never replaces */
    for (int base = c0 + (int)threadIdx.x; base < c1; base += 4 * NT) {
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = base + u * NT;
            v[u] = i < c1 ? xr[i] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = base + u * NT;
            if (i < c1 && v[u] == v[u] && kroute_better(v[u], i, bv, bi)) {
                bv = v[u];
                bi = i;
            }
        }
    }
    best_shfl(&bv, &bi);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        s_v[warp] = bv;
        s_i[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        bv = lane < NT / 32 ? s_v[lane] : 0.0f;
        bi = lane < NT / 32 ? s_i[lane] : -1;
        best_shfl(&bv, &bi);
        if (lane == 0) {
            if (n_split == 1) {
                out[blockIdx.x] = bi;
            } else {
                pv[(size_t)blockIdx.x * n_split + blockIdx.y] = bv;
                pi[(size_t)blockIdx.x * n_split + blockIdx.y] = bi;
            }
        }
    }
}

/* One warp per row: the best of its n_split partials. */
__global__ void __launch_bounds__(32)
argmax_merge_kernel(const float *__restrict__ pv, const int *__restrict__ pi,
                    int n_split, int32_t *__restrict__ out)
{
    int lane = threadIdx.x;
    size_t at = (size_t)blockIdx.x * n_split + lane;
    float bv = lane < n_split ? pv[at] : 0.0f;
    int bi = lane < n_split ? pi[at] : -1;
    best_shfl(&bv, &bi);
    if (lane == 0)
        out[blockIdx.x] = bi;
}

extern "C" int kcuda_argmax(struct kcuda *g, const float *x, int ldx,
                            int n_cols, int n_rows, int32_t *out)
{
    if (!g || n_rows < 0 || n_cols < 0 || ldx < n_cols ||
        (n_rows > 0 && (!x || !out))) {
        kcuda_set_error("kcuda_argmax: bad arguments (%d x %d, ld %d)",
                        n_rows, n_cols, ldx);
        return MTPD_K_EINVAL;
    }
    if (n_rows == 0)
        return 0;
    int rc = kcuda_bind(g);
    if (rc)
        return rc;
    /* long rows (vocabularies) over several blocks when the workspace
     * holds their partials; else one block per row */
    int n_split = (n_cols + ARGMAX_SPLIT_COLS - 1) / ARGMAX_SPLIT_COLS;
    n_split = n_split < 1 ? 1
              : n_split < ARGMAX_MAX_SPLIT ? n_split : ARGMAX_MAX_SPLIT;
    size_t part = (size_t)n_rows * ARGMAX_MAX_SPLIT;
    if (n_split > 1 &&
        (!g->ws || g->ws_bytes < part * (sizeof(float) + sizeof(int))))
        n_split = 1;
    if (n_split == 1) {
        argmax_kernel<ROW_THREADS><<<n_rows, ROW_THREADS, 0, g->stream>>>(
            x, ldx, n_cols, 1, (float *)NULL, (int *)NULL, out);
        return kcuda_launched("kcuda_argmax");
    }
    float *pv = (float *)g->ws;
    int *pi = (int *)(pv + part);
    argmax_kernel<256><<<dim3(n_rows, n_split), 256, 0, g->stream>>>(
        x, ldx, n_cols, n_split, pv, pi, out);
    if ((rc = kcuda_launched("kcuda_argmax")))
        return rc;
    argmax_merge_kernel<<<n_rows, 32, 0, g->stream>>>(pv, pi, n_split, out);
    return kcuda_launched("kcuda_argmax: merge");
}

/* ---- softmax ----------------------------------------------------------- */

/* Block-wide reductions over ROW_THREADS threads; every thread gets the
 * result. s: ROW_WARPS scratch entries; the trailing barrier lets the
 * caller reuse s at once. */
__device__ __forceinline__ float block_max(float v, float *s)
{
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0)
        s[warp] = v;
    __syncthreads();
    v = s[lane];
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    __syncthreads();
    return v;
}

__device__ __forceinline__ double block_sum(double v, double *s)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0)
        s[warp] = v;
    __syncthreads();
    v = s[lane];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

__global__ void __launch_bounds__(ROW_THREADS)
softmax_kernel(const float *x, int ldx, int n_cols, float scale, float *out,
               int ldo)
{
    __shared__ float s_f[ROW_WARPS];
    __shared__ double s_d[ROW_WARPS];
    /* no __restrict__: out may be x (each thread rewrites only the
     * entries it read, after the max is known) */
    const float *xr = x + (size_t)blockIdx.x * ldx;
    float *orow = out + (size_t)blockIdx.x * ldo;
    /* 4 loads in flight per thread: one block streams a whole row */
    float mx = -INFINITY;
    for (int b = threadIdx.x; b < n_cols; b += 4 * ROW_THREADS) {
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = b + u * ROW_THREADS;
            v[u] = i < n_cols ? xr[i] : -INFINITY;
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
            mx = v[u] > mx ? v[u] : mx; /* NaN compares false */
    }
    mx = block_max(mx, s_f);
    double sum = 0.0;
    for (int b = threadIdx.x; b < n_cols; b += 4 * ROW_THREADS) {
        float v[4]; /* all read before any write: out may be x */
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = b + u * ROW_THREADS;
            v[u] = i < n_cols ? xr[i] : -INFINITY;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = b + u * ROW_THREADS;
            float e = v[u] > -INFINITY ? expf(scale * (v[u] - mx)) : 0.0f;
            if (i < n_cols)
                orow[i] = e;
            sum += e;
        }
    }
    sum = block_sum(sum, s_d);
    if (sum > 0.0) {
        float inv = (float)(1.0 / sum);
        for (int i = threadIdx.x; i < n_cols; i += ROW_THREADS)
            orow[i] *= inv;
    }
}

extern "C" int kcuda_softmax(struct kcuda *g, const float *x, int ldx,
                             int n_cols, int n_rows, float scale, float *out,
                             int ldo)
{
    if (!g || n_rows < 0 || n_cols < 0 || ldx < n_cols || ldo < n_cols ||
        !(scale > 0.0f) || (n_rows > 0 && (!x || !out)) ||
        (x == out && ldx != ldo && n_rows > 1)) {
        kcuda_set_error("kcuda_softmax: bad arguments (%d x %d)", n_rows,
                        n_cols);
        return MTPD_K_EINVAL;
    }
    if (n_rows == 0)
        return 0;
    int rc = kcuda_bind(g);
    if (rc)
        return rc;
    softmax_kernel<<<n_rows, ROW_THREADS, 0, g->stream>>>(x, ldx, n_cols,
                                                           scale, out, ldo);
    return kcuda_launched("kcuda_softmax");
}

/* ---- accept ------------------------------------------------------------ */

__global__ void __launch_bounds__(ROW_THREADS)
spec_accept_kernel(const float *__restrict__ p, const float *__restrict__ q,
                   const int32_t *__restrict__ draft,
                   const float *__restrict__ u, int k, int V,
                   int32_t *__restrict__ out)
{
    __shared__ double s_tot[ROW_WARPS];
    __shared__ int s_claim, s_last;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    /* the accepted count: k tests, done by every thread (k is small; the
     * loads are broadcasts) */
    int a = 0;
    while (a < k) {
        int d = draft[a];
        if (d < 0 || d >= V ||
            !kaccept_token((double)u[a], p[(size_t)a * V + d],
                           q[(size_t)a * V + d]))
            break;
        a++;
    }
    const float *pr = p + (size_t)a * V;
    const float *qr = a < k ? q + (size_t)a * V : NULL;
    int any = 0;
    for (int i = tid; qr && i < V && !any; i += ROW_THREADS)
        any = kaccept_residual(pr[i], qr[i]) > 0.0f;
    int use_res = __syncthreads_or(any);

    /* thread tid owns ids [i0, i1) */
    int chunk = (V + ROW_THREADS - 1) / ROW_THREADS;
    int i0 = min(V, tid * chunk), i1 = min(V, i0 + chunk);
    double mine = 0.0;
    for (int i = i0; i < i1; i++)
        mine += kaccept_dist(pr, qr, use_res, i);
    /* exclusive scan of the chunk sums in thread order */
    double incl = mine;
    for (int o = 1; o < 32; o <<= 1) {
        double y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o)
            incl += y;
    }
    if (lane == 31)
        s_tot[warp] = incl;
    if (tid == 0) {
        s_claim = INT_MAX;
        s_last = -1;
    }
    __syncthreads();
    if (warp == 0) {
        double t = s_tot[lane];
        for (int o = 1; o < 32; o <<= 1) {
            double y = __shfl_up_sync(0xffffffffu, t, o);
            if (lane >= o)
                t += y;
        }
        s_tot[lane] = t; /* inclusive totals of warps 0..lane */
    }
    __syncthreads();
    double excl = (warp > 0 ? s_tot[warp - 1] : 0.0) + (incl - mine);
    double target = (double)u[k] * s_tot[ROW_WARPS - 1];
    /* the first id of the chunk where the running sum passes target */
    double cum = excl;
    int claim = -1, last = -1;
    for (int i = i0; i < i1; i++) {
        float v = kaccept_dist(pr, qr, use_res, i);
        if (v <= 0.0f)
            continue;
        last = i; /* only used when no thread claims */
        cum += v;
        if (target < cum) {
            claim = i;
            break;
        }
    }
    if (claim >= 0)
        atomicMin(&s_claim, claim); /* min / max: order-free */
    if (last >= 0)
        atomicMax(&s_last, last);
    __syncthreads();
    if (tid == 0) {
        int next = s_claim != INT_MAX ? s_claim : s_last >= 0 ? s_last : 0;
        out[0] = a;
        out[1] = next;
    }
}

extern "C" int kcuda_spec_accept(struct kcuda *g, const float *p,
                                 const float *q, const int32_t *draft,
                                 const float *u, int k, int V, int32_t *out)
{
    if (!g || k < 0 || V <= 0 || !p || !u || !out ||
        (k > 0 && (!q || !draft))) {
        kcuda_set_error("kcuda_spec_accept: bad arguments (k %d V %d)", k,
                        V);
        return MTPD_K_EINVAL;
    }
    int rc = kcuda_bind(g);
    if (rc)
        return rc;
    spec_accept_kernel<<<1, ROW_THREADS, 0, g->stream>>>(p, q, draft, u, k,
                                                         V, out);
    return kcuda_launched("kcuda_spec_accept");
}
