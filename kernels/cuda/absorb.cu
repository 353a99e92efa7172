/*
 * absorb.cu - MLA weight absorption on the device, all heads in one launch
 * (model/mla.c's mla_absorb_q and mla_head_out). kv_b is dense
 * [H * (nope + v), L] (F32, BF16 or F16); head h's W_UK is its rows
 * h * (nope + v) + [0, nope), its W_UV the next v rows.
 *
 * absorb_q: qc[r][h][j] = sum_i q[r][h*qk + i] * W_UK_h[i][j] (kmatmul_pv:
 *   the rows of W_UK weighted by q_nope), then q_pe copied after it. A
 *   block takes 256 columns j of one head for up to 8 rows of q: each
 *   thread one column, reading W_UK down that column (a warp reads a
 *   contiguous piece of each row), the rows' q_nope staged in shared
 *   memory and read as broadcasts. W_UK is read once per 8 rows.
 * head_out: attn[r][h*v + o] = W_UV_h[o] . oc[r][h] (kmatmul): a warp per
 *   output o, its lanes striding the row, up to 8 rows of oc staged in
 *   shared memory, a shuffle sum at the end.
 */
#include "kcuda_dq.cuh"
#include "kcuda_int.h"

#define AB_THREADS 256
#define AB_RT 8 /* rows of q / oc per block */

template <int DT>
__device__ __forceinline__ float elem(const void *p, size_t i)
{
    if (DT == KDT_F32)
        return ((const float *)p)[i];
    if (DT == KDT_BF16)
        return kd_bf16(((const uint16_t *)p)[i]);
    return kd_f16(((const uint16_t *)p)[i]);
}

template <int DT>
__global__ void __launch_bounds__(AB_THREADS)
absorb_q_k(const void *__restrict__ kvb, int L, int H, int nope, int rope,
           int v, const float *__restrict__ q, int ldq, float *__restrict__ qc,
           int n_rows, int rt)
{
    extern __shared__ float qs[]; /* [rt][nope] */
    const int h = blockIdx.y, r0 = blockIdx.z * rt;
    const int nr = min(rt, n_rows - r0);
    const int qk = nope + rope, rf = L + rope;
    for (int k = threadIdx.x; k < nr * nope; k += blockDim.x) {
        int rr = k / nope, i = k % nope;
        qs[k] = q[(size_t)(r0 + rr) * ldq + (size_t)h * qk + i];
    }
    __syncthreads();
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < L) {
        float acc[AB_RT];
#pragma unroll
        for (int rr = 0; rr < AB_RT; rr++)
            acc[rr] = 0.0f;
        const size_t w0 = (size_t)h * (nope + v) * L + j;
        for (int i = 0; i < nope; i++) {
            float w = elem<DT>(kvb, w0 + (size_t)i * L);
#pragma unroll
            for (int rr = 0; rr < AB_RT; rr++)
                if (rr < nr)
                    acc[rr] = fmaf(qs[rr * nope + i], w, acc[rr]);
        }
#pragma unroll
        for (int rr = 0; rr < AB_RT; rr++)
            if (rr < nr)
                qc[((size_t)(r0 + rr) * H + h) * rf + j] = acc[rr];
    }
    if (blockIdx.x == 0) /* q_pe after the latent part */
        for (int k = threadIdx.x; k < nr * rope; k += blockDim.x) {
            int rr = k / rope, e = k % rope;
            qc[((size_t)(r0 + rr) * H + h) * rf + L + e] =
                q[(size_t)(r0 + rr) * ldq + (size_t)h * qk + nope + e];
        }
}

template <int DT>
__global__ void __launch_bounds__(AB_THREADS)
head_out_k(const void *__restrict__ kvb, int L, int H, int nope, int v,
           const float *__restrict__ oc, float *__restrict__ attn, int lda,
           int n_rows, int rt)
{
    extern __shared__ float os[]; /* [rt][L] */
    const int h = blockIdx.y, r0 = blockIdx.z * rt;
    const int nr = min(rt, n_rows - r0);
    for (int k = threadIdx.x; k < nr * L; k += blockDim.x) {
        int rr = k / L, j = k % L;
        os[k] = oc[((size_t)(r0 + rr) * H + h) * L + j];
    }
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (AB_THREADS / 32) + (threadIdx.x >> 5);
    if (o >= v) /* warp-uniform */
        return;
    const size_t w0 = ((size_t)h * (nope + v) + nope + o) * L;
    float acc[AB_RT];
#pragma unroll
    for (int rr = 0; rr < AB_RT; rr++)
        acc[rr] = 0.0f;
    for (int j = lane; j < L; j += 32) {
        float w = elem<DT>(kvb, w0 + j);
#pragma unroll
        for (int rr = 0; rr < AB_RT; rr++)
            if (rr < nr)
                acc[rr] = fmaf(w, os[rr * L + j], acc[rr]);
    }
#pragma unroll
    for (int rr = 0; rr < AB_RT; rr++) {
        if (rr >= nr)
            break;
        float s = kd_warp_sum(acc[rr]);
        if (lane == 0)
            attn[(size_t)(r0 + rr) * lda + (size_t)h * v + o] = s;
    }
}

/* Rows per block so that rt * per_row floats fit 48 KiB of shared memory
 * (0 if not even one does). */
static int rows_per_block(int per_row)
{
    int rt = AB_RT;
    while (rt > 0 && (size_t)rt * per_row * sizeof(float) > 48 * 1024)
        rt--;
    return rt;
}

static int check_kvb(const struct kdmat *kv_b, int H, int nope, int v,
                     const char *what)
{
    if (kv_b == NULL || kv_b->data == NULL || H <= 0 || nope < 0 || v < 0 ||
        (kv_b->dtype != KDT_F32 && kv_b->dtype != KDT_BF16 &&
         kv_b->dtype != KDT_F16) ||
        (long)kv_b->rows != (long)H * (nope + v)) {
        kcuda_set_error("%s: kv_b must be dense F32/BF16/F16 "
                        "[H * (nope + v), kv_lora]",
                        what);
        return MTPD_K_EINVAL;
    }
    return 0;
}

extern "C" int kcuda_mla_absorb_q(struct kcuda *g, const struct kdmat *kv_b,
                                  int H, int nope, int rope, int v,
                                  const float *q, int ldq, float *qc,
                                  int n_rows)
{
    int rc = check_kvb(kv_b, H, nope, v, "kcuda_mla_absorb_q");
    if (rc)
        return rc;
    if (n_rows == 0)
        return 0;
    const int L = kv_b->cols;
    int rt = rows_per_block(nope);
    if (q == NULL || qc == NULL || n_rows < 0 || rope < 0 ||
        ldq < H * (nope + rope) || rt == 0 || L == 0 ||
        (n_rows + rt - 1) / rt > 65535 || H > 65535) {
        kcuda_set_error("kcuda_mla_absorb_q: bad arguments");
        return MTPD_K_EINVAL;
    }
    dim3 grid((L + AB_THREADS - 1) / AB_THREADS, H, (n_rows + rt - 1) / rt);
    size_t sh = (size_t)rt * nope * sizeof(float);
    switch (kv_b->dtype) {
    case KDT_F32:
        absorb_q_k<KDT_F32><<<grid, AB_THREADS, sh, g->stream>>>(
            kv_b->data, L, H, nope, rope, v, q, ldq, qc, n_rows, rt);
        break;
    case KDT_BF16:
        absorb_q_k<KDT_BF16><<<grid, AB_THREADS, sh, g->stream>>>(
            kv_b->data, L, H, nope, rope, v, q, ldq, qc, n_rows, rt);
        break;
    default:
        absorb_q_k<KDT_F16><<<grid, AB_THREADS, sh, g->stream>>>(
            kv_b->data, L, H, nope, rope, v, q, ldq, qc, n_rows, rt);
        break;
    }
    return kcuda_launched("kcuda_mla_absorb_q");
}

extern "C" int kcuda_mla_head_out(struct kcuda *g, const struct kdmat *kv_b,
                                  int H, int nope, int v, const float *oc,
                                  float *attn, int lda, int n_rows)
{
    int rc = check_kvb(kv_b, H, nope, v, "kcuda_mla_head_out");
    if (rc)
        return rc;
    if (n_rows == 0 || v == 0)
        return 0;
    const int L = kv_b->cols;
    int rt = rows_per_block(L);
    if (oc == NULL || attn == NULL || n_rows < 0 || lda < H * v || rt == 0 ||
        (n_rows + rt - 1) / rt > 65535 || H > 65535) {
        kcuda_set_error("kcuda_mla_head_out: bad arguments");
        return MTPD_K_EINVAL;
    }
    const int wpb = AB_THREADS / 32;
    dim3 grid((v + wpb - 1) / wpb, H, (n_rows + rt - 1) / rt);
    size_t sh = (size_t)rt * L * sizeof(float);
    switch (kv_b->dtype) {
    case KDT_F32:
        head_out_k<KDT_F32><<<grid, AB_THREADS, sh, g->stream>>>(
            kv_b->data, L, H, nope, v, oc, attn, lda, n_rows, rt);
        break;
    case KDT_BF16:
        head_out_k<KDT_BF16><<<grid, AB_THREADS, sh, g->stream>>>(
            kv_b->data, L, H, nope, v, oc, attn, lda, n_rows, rt);
        break;
    default:
        head_out_k<KDT_F16><<<grid, AB_THREADS, sh, g->stream>>>(
            kv_b->data, L, H, nope, v, oc, attn, lda, n_rows, rt);
        break;
    }
    return kcuda_launched("kcuda_mla_head_out");
}
