/*
 * matmul.cu - kcuda_matmul: y[t][o] = sum_i x[t][i] * W[o][i].
 *
 * Skinny path (n_tok <= KCUDA_SKINNY_ROWS: decode and verify). Memory
 * bound: the weights are read once, for all rows, so the kernel is built
 * to keep HBM busy:
 * - A block of 256 threads owns R consecutive output rows (R = 1, 2 or 4)
 *   and splits their K dimension over all of its threads in 16-byte
 *   chunks: thread i reads chunks i, i + 256, ... of each of its R rows
 *   (a warp reads 512 contiguous bytes of a row per load: coalesced,
 *   full 128-byte lines). Each load is a 16-byte ld.global.cs (streamed,
 *   evict-first: the weights are used once and must not push x out of L1).
 * - Splitting K inside the block (rather than one warp per row) keeps
 *   every SM busy even for matrices with few rows and long rows (kv_a:
 *   576 x 7168), and a block reads R * row_bytes (>= 16 KiB where the
 *   matrix allows), enough to amortise its start and its reduction.
 *   R grows with n_tok too: each x value fetched from L1 then serves R
 *   rows, which matters when 16 rows of x are read per weight.
 * - Per thread 2 chunks per row are loaded before any is used (U = 2 for
 *   n_tok <= 4), so 32-128 bytes per thread and tens of KiB per SM are in
 *   flight, which is what a ~4.8 TB/s memory with ~0.7 us latency needs
 *   (about 25 KiB per SM).
 * - Weights are decoded in registers to fp32 exactly as kmat_row_f32
 *   does (F8 times its 128x128 block scale, Q8_0 q * d, Q4_1
 *   fmaf(q, d, m)), then multiplied with fp32 x and accumulated in fp32:
 *   per thread over its chunks, then a warp shuffle sum and a sum of the
 *   8 warps through shared memory.
 * - Templates: dtype x NT (1, 2, 4, 8, 16: n_tok rounded up; rows past
 *   n_tok are skipped with block-uniform branches). R is a run-time value
 *   (<= 4): registers are sized for 4 rows, unused ones cost nothing.
 * - Columns that do not fill a whole 16-byte chunk (F32 cols % 4, BF16 /
 *   F16 cols % 8, F8 cols % 16), rows not 16-byte aligned, or F8 blocks
 *   that are not a power of two >= 16 go through a scalar loop (kd_get),
 *   correct but slow. x is read with float4 only when x is 16-byte
 *   aligned and ldx % 4 == 0.
 * At n_tok = 1 a 16-byte chunk costs about 8-16 FMAs and as many decode
 * instructions per 16 bytes, far under what an SM issues per byte of HBM
 * bandwidth; at n_tok = 16 the FMAs (16 per weight) make BF16 nearly
 * compute bound on the fp32 cores, so expect well under the copy rate
 * there (never measured: no GPU when this was written).
 *
 * Wide path (more rows: prefill): cuBLASLt, bf16 x bf16 -> fp32 with fp32
 * accumulation. x is rounded to bf16 in the workspace; BF16 weights are
 * used in place (when 16-byte aligned rows); F16 / F8 / Q8_0 / Q4_1
 * weights are dequantised to bf16 in row chunks that fit the workspace,
 * one GEMM per chunk (x in token chunks too when it does not fit). F32
 * weights run an fp32 GEMM on x directly (CUBLAS_COMPUTE_32F, no TF32):
 * exact fp32 like the CPU. Layout: y row-major [n_tok, ldy] is the
 * column-major C (rows x n_tok, ldc = ldy) = A^T B with A = W
 * (column-major cols x rows) and B = x (column-major cols x n_tok). The
 * algorithm cuBLASLt picks is cached per problem; where it has none (odd
 * alignments) the skinny kernel runs 16 rows of x at a time instead.
 * Workspace: a quarter (at most 32 MiB) for cuBLASLt, the rest for x and
 * the weight chunks in bf16.
 */
#include <stdint.h>
#include <string.h>

#include <mutex>

#include <cuda_bf16.h>

#include "kcuda_dq.cuh"
#include "kcuda_int.h"

#define MM_THREADS 256
#define MM_WARPS (MM_THREADS / 32)
#define MM_RMAX 4

/* Columns per 16-byte chunk of a row. */
__host__ __device__ constexpr int chunk_cols(int dt)
{
    return dt == KDT_F32                           ? 4
           : dt == KDT_BF16 || dt == KDT_F16       ? 8
           : dt == KDT_F8_E4M3 || dt == KDT_Q8_0   ? 16
                                                   : 32;
}

__device__ __forceinline__ uint32_t word(const uint4 &w, int i)
{
    return i == 0 ? w.x : i == 1 ? w.y : i == 2 ? w.z : w.w;
}

/* Weights 4 gi .. 4 gi + 3 of a chunk as fp32. s: the F8 block scale or
 * the Q8_0 / Q4_1 scale of the chunk's block; m: the Q4_1 min. gi is a
 * compile-time constant after unrolling, so word() is a register pick. */
template <int DT>
__device__ __forceinline__ void dec4(const uint4 &w, int gi, float s, float m,
                                     float f[4])
{
    if (DT == KDT_F32) {
        f[0] = __uint_as_float(w.x);
        f[1] = __uint_as_float(w.y);
        f[2] = __uint_as_float(w.z);
        f[3] = __uint_as_float(w.w);
    } else if (DT == KDT_BF16) {
        uint32_t a = word(w, 2 * gi), b = word(w, 2 * gi + 1);
        f[0] = __uint_as_float(a << 16);
        f[1] = __uint_as_float(a & 0xffff0000u);
        f[2] = __uint_as_float(b << 16);
        f[3] = __uint_as_float(b & 0xffff0000u);
    } else if (DT == KDT_F16) {
        uint32_t a = word(w, 2 * gi), b = word(w, 2 * gi + 1);
        f[0] = kd_f16((uint16_t)a);
        f[1] = kd_f16((uint16_t)(a >> 16));
        f[2] = kd_f16((uint16_t)b);
        f[3] = kd_f16((uint16_t)(b >> 16));
    } else if (DT == KDT_F8_E4M3) {
        uint32_t a = word(w, gi);
        float2 lo = kd_f8x2(a), hi = kd_f8x2(a >> 16);
        f[0] = lo.x * s;
        f[1] = lo.y * s;
        f[2] = hi.x * s;
        f[3] = hi.y * s;
    } else if (DT == KDT_Q8_0) {
        uint32_t a = word(w, gi);
        f[0] = (float)((int32_t)(a << 24) >> 24) * s;
        f[1] = (float)((int32_t)(a << 16) >> 24) * s;
        f[2] = (float)((int32_t)(a << 8) >> 24) * s;
        f[3] = (float)((int32_t)a >> 24) * s;
    } else { /* Q4_1: sub-groups 0-3 low nibbles of words 0-3 (weights
              * 0-15 of the block), 4-7 their high nibbles (16-31) */
        uint32_t a = word(w, gi & 3) >> (gi >> 2 ? 4 : 0);
        f[0] = fmaf((float)(a & 15), s, m);
        f[1] = fmaf((float)((a >> 8) & 15), s, m);
        f[2] = fmaf((float)((a >> 16) & 15), s, m);
        f[3] = fmaf((float)((a >> 24) & 15), s, m);
    }
}

__device__ __forceinline__ float4 ldx4(const float *p, int xvec)
{
    if (xvec)
        return __ldg((const float4 *)p);
    return make_float4(__ldg(p), __ldg(p + 1), __ldg(p + 2), __ldg(p + 3));
}

/*
 * Rows [blockIdx.x * R, + R) of y for the nt (<= NT) rows of x.
 * nchunks: whole 16-byte chunks per row done vectorised (0 = all scalar);
 * bshift: log2(W.blk) for F8.
 */
/* Registers: <= 64 at n_tok = 1 (4 blocks, 1024 threads per SM), <= 85 at
 * 2, <= 128 from 4 on (64 accumulators per thread at 16); no spills. */
template <int DT, int NT>
__global__ void __launch_bounds__(MM_THREADS, NT == 1 ? 4 : NT == 2 ? 3 : 2)
mm_skinny(const struct kdmat W, size_t rb, int nchunks, int bshift, int R,
          const float *__restrict__ x, int ldx, int xvec,
          float *__restrict__ y, int ldy, int nt)
{
    constexpr int CC = chunk_cols(DT);
    constexpr int U = NT <= 4 ? 2 : 1;
    const int tid = threadIdx.x;
    const int row0 = blockIdx.x * R;
    const int nr = min(R, W.rows - row0); /* >= 1: grid = ceil(rows / R) */
    const uint8_t *base = (const uint8_t *)W.data + (size_t)row0 * rb;
    const int nq = W.cols / KQ_BLK; /* Q8_0 / Q4_1 blocks per row */
    const int nbc = DT == KDT_F8_E4M3 ? (W.cols + W.blk - 1) / W.blk : 0;

    float acc[MM_RMAX][NT];
#pragma unroll
    for (int r = 0; r < MM_RMAX; r++)
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[r][t] = 0.0f;

    for (int c0 = tid; c0 < nchunks; c0 += MM_THREADS * U) {
        uint4 w[U][MM_RMAX];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < MM_RMAX; r++) {
                int c = c0 + u * MM_THREADS;
                w[u][r] = r < nr && c < nchunks
                              ? __ldcs((const uint4 *)(base + r * rb) + c)
                              : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u * MM_THREADS;
            if (c >= nchunks)
                break;
            const int col = c * CC;
            float s[MM_RMAX], m[MM_RMAX];
#pragma unroll
            for (int r = 0; r < MM_RMAX; r++) {
                s[r] = 1.0f;
                m[r] = 0.0f;
                if (r >= nr)
                    continue;
                size_t qr = (size_t)(row0 + r) * nq;
                if (DT == KDT_F8_E4M3)
                    s[r] = __ldg(W.scale + (size_t)((row0 + r) >> bshift) * nbc +
                                 (col >> bshift));
                else if (DT == KDT_Q8_0)
                    s[r] = kd_f16(__ldg(W.qd + qr + (c >> 1)));
                else if (DT == KDT_Q4_1) {
                    s[r] = kd_f16(__ldg(W.qd + qr + c));
                    m[r] = kd_f16(__ldg(W.qm + qr + c));
                }
            }
#pragma unroll
            for (int gi = 0; gi < CC / 4; gi++) {
                float f[MM_RMAX][4];
#pragma unroll
                for (int r = 0; r < MM_RMAX; r++)
                    dec4<DT>(w[u][r], gi, s[r], m[r], f[r]);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t >= nt)
                        break;
                    float4 xv = ldx4(x + (size_t)t * ldx + col + 4 * gi, xvec);
#pragma unroll
                    for (int r = 0; r < MM_RMAX; r++) {
                        float a = acc[r][t];
                        a = fmaf(f[r][0], xv.x, a);
                        a = fmaf(f[r][1], xv.y, a);
                        a = fmaf(f[r][2], xv.z, a);
                        a = fmaf(f[r][3], xv.w, a);
                        acc[r][t] = a;
                    }
                }
            }
        }
    }

    /* columns past the whole chunks, one element at a time */
    for (int col = nchunks * CC + tid; col < W.cols; col += MM_THREADS) {
        float xv[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            xv[t] = t < nt ? __ldg(x + (size_t)t * ldx + col) : 0.0f;
#pragma unroll
        for (int r = 0; r < MM_RMAX; r++) {
            if (r >= nr)
                break;
            float wv = kd_get(W, rb, row0 + r, col);
#pragma unroll
            for (int t = 0; t < NT; t++)
                acc[r][t] = fmaf(wv, xv[t], acc[r][t]);
        }
    }

    __shared__ float red[MM_WARPS][MM_RMAX * NT];
    const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
    for (int r = 0; r < MM_RMAX; r++) {
        if (r >= nr) /* block-uniform: whole warps take the shuffles */
            break;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= nt)
                break;
            float v = kd_warp_sum(acc[r][t]);
            if (lane == 0)
                red[warp][r * NT + t] = v;
        }
    }
    __syncthreads();
    if (tid < nr * NT) {
        const int r = tid / NT, t = tid % NT;
        if (t < nt) {
            float sum = 0.0f;
#pragma unroll
            for (int k = 0; k < MM_WARPS; k++)
                sum += red[k][tid];
            y[(size_t)t * ldy + row0 + r] = sum;
        }
    }
}

/* Rows per block: more with more rows of x (each x value read serves R
 * weight rows) and for short rows (a block should read >= 16 KiB), fewer
 * when there would be under 4 blocks per SM. */
static int pick_rows(int nt, size_t rb, int rows, int sms)
{
    int r = nt >= 8 ? 4 : nt >= 2 ? 2 : 1;
    while (r < MM_RMAX && rb * r < 16384)
        r *= 2;
    while (r > 1 && (rows + r - 1) / r < 4 * (sms > 0 ? sms : 1))
        r /= 2;
    return r;
}

template <int DT>
static void launch_skinny(struct kcuda *g, const struct kdmat *W, size_t rb,
                          int nchunks, int bshift, int R, const float *x,
                          int ldx, int xvec, float *y, int ldy, int nt)
{
    dim3 grid((unsigned)((W->rows + R - 1) / R)), block(MM_THREADS);
    cudaStream_t st = g->stream;
    if (nt <= 1)
        mm_skinny<DT, 1><<<grid, block, 0, st>>>(*W, rb, nchunks, bshift, R,
                                                  x, ldx, xvec, y, ldy, nt);
    else if (nt <= 2)
        mm_skinny<DT, 2><<<grid, block, 0, st>>>(*W, rb, nchunks, bshift, R,
                                                  x, ldx, xvec, y, ldy, nt);
    else if (nt <= 4)
        mm_skinny<DT, 4><<<grid, block, 0, st>>>(*W, rb, nchunks, bshift, R,
                                                  x, ldx, xvec, y, ldy, nt);
    else if (nt <= 8)
        mm_skinny<DT, 8><<<grid, block, 0, st>>>(*W, rb, nchunks, bshift, R,
                                                  x, ldx, xvec, y, ldy, nt);
    else
        mm_skinny<DT, 16><<<grid, block, 0, st>>>(*W, rb, nchunks, bshift, R,
                                                   x, ldx, xvec, y, ldy, nt);
}

static int skinny(struct kcuda *g, const struct kdmat *W, const float *x,
                  int ldx, float *y, int ldy, int n_tok)
{
    const int dt = W->dtype;
    size_t rb = kd_row_bytes(dt, W->cols);
    int aligned = (uintptr_t)W->data % 16 == 0 && rb % 16 == 0;
    int bshift = 0;
    if (dt == KDT_F8_E4M3) { /* chunks need a power-of-two block >= 16 */
        while ((1 << bshift) < W->blk)
            bshift++;
        if ((1 << bshift) != W->blk || W->blk < 16)
            aligned = 0;
    }
    int nchunks = aligned ? W->cols / chunk_cols(dt) : 0;
    int xvec = (uintptr_t)x % 16 == 0 && ldx % 4 == 0;
    int R = pick_rows(n_tok, rb, W->rows, g->sm_count);
    switch (dt) {
    case KDT_F32:
        launch_skinny<KDT_F32>(g, W, rb, nchunks, bshift, R, x, ldx, xvec, y,
                               ldy, n_tok);
        break;
    case KDT_BF16:
        launch_skinny<KDT_BF16>(g, W, rb, nchunks, bshift, R, x, ldx, xvec, y,
                                ldy, n_tok);
        break;
    case KDT_F16:
        launch_skinny<KDT_F16>(g, W, rb, nchunks, bshift, R, x, ldx, xvec, y,
                               ldy, n_tok);
        break;
    case KDT_F8_E4M3:
        launch_skinny<KDT_F8_E4M3>(g, W, rb, nchunks, bshift, R, x, ldx, xvec,
                                   y, ldy, n_tok);
        break;
    case KDT_Q8_0:
        launch_skinny<KDT_Q8_0>(g, W, rb, nchunks, bshift, R, x, ldx, xvec, y,
                                ldy, n_tok);
        break;
    default:
        launch_skinny<KDT_Q4_1>(g, W, rb, nchunks, bshift, R, x, ldx, xvec, y,
                                ldy, n_tok);
        break;
    }
    return kcuda_launched("kcuda_matmul (skinny)");
}

/* ---- wide path: cuBLASLt ---------------------------------------------- */

/* x rows [0, n) -> bf16 rows of ldb elements. */
__global__ void x_to_bf16(const float *__restrict__ x, int ldx,
                          __nv_bfloat16 *__restrict__ xb, int ldb, int cols,
                          int n)
{
    size_t total = (size_t)n * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / cols, c = i % cols;
        xb[t * ldb + c] = __float2bfloat16_rn(x[t * ldx + c]);
    }
}

/* W rows [r0, r0 + n) dequantised (kd_get) -> bf16 rows of ldb elements. */
__global__ void w_to_bf16(const struct kdmat W, size_t rb, int r0, int n,
                          __nv_bfloat16 *__restrict__ wb, int ldb)
{
    size_t total = (size_t)n * W.cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / W.cols, c = i % W.cols;
        wb[r * ldb + c] =
            __float2bfloat16_rn(kd_get(W, rb, r0 + (int)r, (int)c));
    }
}

static unsigned conv_blocks(struct kcuda *g, size_t n)
{
    size_t b = (n + 255) / 256, cap = (size_t)(g->sm_count > 0 ? g->sm_count : 1) * 8;
    return (unsigned)(b < cap ? (b ? b : 1) : cap);
}

/* Largest power of two <= 256 dividing the address. */
static uint32_t ptr_align(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && a % al)
        al >>= 1;
    return al;
}

/* lt_gemm's answer when cuBLASLt has no algorithm for the shape and
 * alignments (kcuda_matmul then runs the skinny kernel instead). */
#define LT_NO_ALGO 1

/*
 * cuBLASLt's choice per problem, cached: the heuristic costs tens of
 * microseconds of host time and gives the same answer for the same shape,
 * types, alignments and workspace. Keyed by device and handle too; a
 * small table replaced round robin, shared by all threads (mutex).
 */
struct algo_key {
    int dev;
    cublasLtHandle_t lt;
    int ab, m, n, k, lda, ldb, ldc;
    uint32_t al[3];
    size_t ws;
};
struct algo_ent {
    struct algo_key key;
    cublasLtMatmulAlgo_t algo;
    int found; /* 0: cuBLASLt had none */
};
#define ALGO_CACHE 64
static struct algo_ent algo_cache[ALGO_CACHE];
static int algo_used, algo_next;
static std::mutex algo_mu;

static int algo_get(const struct algo_key *k, cublasLtMatmulAlgo_t *a,
                    int *found)
{
    std::lock_guard<std::mutex> lock(algo_mu);
    for (int i = 0; i < algo_used; i++)
        if (memcmp(&algo_cache[i].key, k, sizeof *k) == 0) {
            *a = algo_cache[i].algo;
            *found = algo_cache[i].found;
            return 1;
        }
    return 0;
}

static void algo_put(const struct algo_key *k, const cublasLtMatmulAlgo_t *a,
                     int found)
{
    std::lock_guard<std::mutex> lock(algo_mu);
    struct algo_ent *e = &algo_cache[algo_next];
    algo_next = (algo_next + 1) % ALGO_CACHE;
    if (algo_used < ALGO_CACHE)
        algo_used++;
    e->key = *k;
    e->algo = *a;
    e->found = found;
}

/* C (m x n, column-major, ldc, fp32) = op(A)^T-style TN product:
 * A column-major k x m (lda), B column-major k x n (ldb), both of type ab. */
static int lt_gemm(struct kcuda *g, cudaDataType_t ab, const void *A, int lda,
                   const void *B, int ldb, float *C, int ldc, int m, int n,
                   int k, void *lws, size_t lws_bytes)
{
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    uint32_t al_a = ptr_align(A), al_b = ptr_align(B), al_c = ptr_align(C);
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    const float one = 1.0f, zero = 0.0f;
    struct algo_key key;
    memset(&key, 0, sizeof key); /* padding too: compared with memcmp */
    key.dev = g->dev;
    key.lt = g->lt;
    key.ab = (int)ab;
    key.m = m, key.n = n, key.k = k;
    key.lda = lda, key.ldb = ldb, key.ldc = ldc;
    key.al[0] = al_a, key.al[1] = al_b, key.al[2] = al_c;
    key.ws = lws_bytes;
    memset(&res, 0, sizeof res);
    int cached = algo_get(&key, &res.algo, &nres);
    if (cached && nres == 0)
        return LT_NO_ALGO;

    int rc = kcuda_blas_err(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F,
                                                     CUDA_R_32F),
                            "cublasLtMatmulDescCreate");
    if (rc == 0)
        rc = kcuda_blas_err(
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA,
                                           &ta, sizeof ta),
            "cublasLt TRANSA");
    if (rc == 0)
        rc = kcuda_blas_err(
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB,
                                           &tb, sizeof tb),
            "cublasLt TRANSB");
    if (rc == 0)
        rc = kcuda_blas_err(cublasLtMatrixLayoutCreate(&la, ab, k, m, lda),
                            "cublasLt layout A");
    if (rc == 0)
        rc = kcuda_blas_err(cublasLtMatrixLayoutCreate(&lb, ab, k, n, ldb),
                            "cublasLt layout B");
    if (rc == 0)
        rc = kcuda_blas_err(
            cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc),
            "cublasLt layout C");
    if (rc == 0 && !cached)
        rc = kcuda_blas_err(cublasLtMatmulPreferenceCreate(&pref),
                            "cublasLtMatmulPreferenceCreate");
    if (rc == 0 && !cached)
        rc = kcuda_blas_err(
            cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lws_bytes,
                sizeof lws_bytes),
            "cublasLt workspace preference");
    /* the heuristic assumes 256-byte aligned pointers unless told */
    if (rc == 0 && !cached)
        rc = kcuda_blas_err(
            cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                sizeof al_a),
            "cublasLt alignment A");
    if (rc == 0 && !cached)
        rc = kcuda_blas_err(
            cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                sizeof al_b),
            "cublasLt alignment B");
    if (rc == 0 && !cached)
        rc = kcuda_blas_err(
            cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                sizeof al_c),
            "cublasLt alignment C");
    if (rc == 0 && !cached)
        rc = kcuda_blas_err(
            cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                sizeof al_c),
            "cublasLt alignment D");
    if (rc == 0 && !cached) {
        rc = kcuda_blas_err(cublasLtMatmulAlgoGetHeuristic(g->lt, op, la, lb,
                                                           lc, lc, pref, 1,
                                                           &res, &nres),
                            "cublasLtMatmulAlgoGetHeuristic");
        if (rc == 0)
            algo_put(&key, &res.algo, nres > 0);
    }
    if (rc == 0 && nres == 0)
        rc = LT_NO_ALGO; /* not an error: the caller falls back */
    if (rc == 0)
        rc = kcuda_blas_err(cublasLtMatmul(g->lt, op, &one, A, la, B, lb,
                                           &zero, C, lc, C, lc, &res.algo,
                                           lws, lws_bytes, g->stream),
                            "cublasLtMatmul");
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (lc)
        cublasLtMatrixLayoutDestroy(lc);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (op)
        cublasLtMatmulDescDestroy(op);
    return rc;
}

#define WS_ALIGN 256
static size_t align_up(size_t n)
{
    return (n + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
}

static int wide(struct kcuda *g, const struct kdmat *W, const float *x,
                int ldx, float *y, int ldy, int n_tok)
{
    const int rows = W->rows, cols = W->cols;
    /* the cuBLASLt share: a quarter of the workspace, at most 32 MiB (the
     * size NVIDIA recommends on Hopper) */
    size_t lt_b = g->ws_bytes / 4;
    if (lt_b > ((size_t)32 << 20))
        lt_b = (size_t)32 << 20;
    lt_b = lt_b / WS_ALIGN * WS_ALIGN;
    char *ws = (char *)g->ws;
    if (W->dtype == KDT_F32) /* fp32 GEMM on x as it is */
        return lt_gemm(g, CUDA_R_32F, W->data, cols, x, ldx, y, ldy, rows,
                       n_tok, cols, ws, ws ? lt_b : 0);
    /* BF16 weights are used in place when their rows are 16-byte aligned
     * (what the tensor-core kernels need); otherwise copied like the
     * other dtypes into aligned rows */
    const int in_place = W->dtype == KDT_BF16 &&
                         (uintptr_t)W->data % 16 == 0 && cols % 8 == 0;

    const int ldb = (cols + 7) / 8 * 8; /* bf16 rows 16-byte aligned */
    const size_t row_b = (size_t)ldb * 2;
    size_t rest = g->ws_bytes > lt_b ? g->ws_bytes - lt_b : 0;
    size_t x_need = align_up(row_b * n_tok);
    size_t x_b = in_place ? rest : rest / 2;
    if (x_b > x_need)
        x_b = x_need;
    x_b = x_b / WS_ALIGN * WS_ALIGN; /* so wb below stays aligned */
    size_t tok_chunk = x_b / row_b;
    size_t w_b = rest - x_b;
    size_t row_chunk = in_place ? (size_t)rows : w_b / row_b;
    if (row_chunk >= 128)
        row_chunk = row_chunk / 128 * 128;
    if (tok_chunk == 0 || row_chunk == 0) {
        kcuda_set_error("kcuda_matmul: workspace of %zu bytes too small for "
                        "a %d-column matrix in the cuBLASLt path",
                        g->ws_bytes, cols);
        return MTPD_K_ENOMEM;
    }
    __nv_bfloat16 *xb = (__nv_bfloat16 *)(ws + lt_b);
    __nv_bfloat16 *wb = (__nv_bfloat16 *)(ws + lt_b + x_b);
    const size_t rb = kd_row_bytes(W->dtype, cols);
    int rc = 0;
    for (int t0 = 0; t0 < n_tok && rc == 0; t0 += (int)tok_chunk) {
        int nt = n_tok - t0 < (int)tok_chunk ? n_tok - t0 : (int)tok_chunk;
        x_to_bf16<<<conv_blocks(g, (size_t)nt * cols), 256, 0, g->stream>>>(
            x + (size_t)t0 * ldx, ldx, xb, ldb, cols, nt);
        rc = kcuda_launched("kcuda_matmul: x to bf16");
        if (rc == 0 && in_place)
            rc = lt_gemm(g, CUDA_R_16BF, W->data, cols, xb, ldb,
                         y + (size_t)t0 * ldy, ldy, rows, nt, cols, ws, lt_b);
        for (int r0 = 0; !in_place && r0 < rows && rc == 0;
             r0 += (int)row_chunk) {
            int nr = rows - r0 < (int)row_chunk ? rows - r0 : (int)row_chunk;
            w_to_bf16<<<conv_blocks(g, (size_t)nr * cols), 256, 0,
                        g->stream>>>(*W, rb, r0, nr, wb, ldb);
            rc = kcuda_launched("kcuda_matmul: weights to bf16");
            if (rc == 0)
                rc = lt_gemm(g, CUDA_R_16BF, wb, ldb, xb, ldb,
                             y + (size_t)t0 * ldy + r0, ldy, nr, nt, cols, ws,
                             lt_b);
        }
    }
    return rc;
}

extern "C" int kcuda_matmul(struct kcuda *g, const struct kdmat *W,
                            const float *x, int ldx, float *y, int ldy,
                            int n_tok)
{
    if (W == NULL || W->data == NULL || W->rows < 0 || W->cols < 0 ||
        W->dtype < 0 || W->dtype >= KDT_COUNT || n_tok < 0 ||
        (n_tok > 0 && (x == NULL || y == NULL || ldx < W->cols ||
                       ldy < W->rows)) ||
        (W->dtype == KDT_F8_E4M3 && (W->scale == NULL || W->blk <= 0)) ||
        ((W->dtype == KDT_Q8_0 || W->dtype == KDT_Q4_1) &&
         (W->cols % KQ_BLK || W->qd == NULL)) ||
        (W->dtype == KDT_Q4_1 && W->qm == NULL)) {
        kcuda_set_error("kcuda_matmul: bad arguments");
        return MTPD_K_EINVAL;
    }
    if (n_tok == 0 || W->rows == 0)
        return 0;
    if (W->cols == 0) /* empty sums */
        return kcuda_err(cudaMemset2DAsync(y, (size_t)ldy * sizeof(float), 0,
                                           (size_t)W->rows * sizeof(float),
                                           n_tok, g->stream),
                         "kcuda_matmul: zero");
    if (n_tok <= KCUDA_SKINNY_ROWS)
        return skinny(g, W, x, ldx, y, ldy, n_tok);
    int rc = wide(g, W, x, ldx, y, ldy, n_tok);
    /* no cuBLASLt algorithm (an odd alignment): the skinny kernel, 16 rows
     * of x at a time, gives the same result in fp32, only slower */
    for (int t0 = 0; rc == LT_NO_ALGO && t0 < n_tok; t0 += KCUDA_SKINNY_ROWS) {
        int nt = n_tok - t0 < KCUDA_SKINNY_ROWS ? n_tok - t0
                                                : KCUDA_SKINNY_ROWS;
        int r = skinny(g, W, x + (size_t)t0 * ldx, ldx, y + (size_t)t0 * ldy,
                       ldy, nt);
        if (r || t0 + nt >= n_tok)
            rc = r;
    }
    return rc;
}
