/*
 * kcuda.h - the CUDA backend: one GPU, one stream on it, device memory,
 * CUDA graphs, and the ops of the device forward pass (model/dev_*.c).
 *
 * Contract (the CPU twin of each op is named; semantics match it, results
 * within fp32/bf16 rounding, not bitwise):
 * - Pointers marked (dev) are device memory; everything else is host.
 * - Every op is asynchronous on the backend's stream and capturable in a
 *   CUDA graph: no allocation, no host sync, no host-visible result inside
 *   an op. Scratch comes from the workspace given at kcuda_open.
 * - Activations are fp32 row-major with a leading dimension (ld*) in
 *   elements, as in kernels.h. Weights keep their checkpoint dtype on the
 *   device (struct kdmat), dequantised inside the kernels.
 * - Returns 0 or a negative MTPD_K_E* (kernels.h); a CUDA error is
 *   MTPD_K_EDEV and kcuda_last_error() says which.
 *
 * The .cu files of kernels/cuda/ implement this (built only when nvcc is found;
 * MTPD_CUDA=1 then). kernels/cuda_plan.c (plain C, always built, tested on
 * the CPU) holds the host-side planning the ops take as input.
 */
#ifndef MTPD_KCUDA_H
#define MTPD_KCUDA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MTPD_K_EDEV (-3) /* a CUDA / cuBLAS call failed */

/* ---- device, stream, memory --------------------------------------- */

struct kcuda;

/* Devices visible (0 when none, no driver, or built without CUDA). */
int kcuda_device_count(void);
/* Opens device `dev` with one stream, a cuBLASLt handle and
 * workspace_bytes of scratch for the ops. err gets one line on failure. */
int kcuda_open(int dev, size_t workspace_bytes, struct kcuda **out, char *err,
               size_t errlen);
void kcuda_close(struct kcuda *g);
/* "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" */
const char *kcuda_describe(const struct kcuda *g);
int kcuda_sm_count(const struct kcuda *g);
/* Free and total device memory, bytes. */
int kcuda_mem_info(const struct kcuda *g, size_t *free_b, size_t *total_b);
/* The last CUDA error seen by this thread, as text ("" if none). */
const char *kcuda_last_error(void);

/* cudaMalloc / cudaFree (NULL on failure; freeing NULL is a no-op).
 * Not for use inside a forward pass (not capturable). */
void *kcuda_malloc(struct kcuda *g, size_t bytes);
void kcuda_free(struct kcuda *g, void *p);
/* Pinned host memory, for the per-step uploads and downloads. */
void *kcuda_host_alloc(struct kcuda *g, size_t bytes);
void kcuda_host_free(struct kcuda *g, void *p);
/* Asynchronous copies on the stream (src must stay valid until the next
 * kcuda_sync; pinned memory for overlap); kcuda_sync waits for the stream
 * and returns the first error it had. */
int kcuda_h2d(struct kcuda *g, void *dst_dev, const void *src, size_t n);
int kcuda_d2h(struct kcuda *g, void *dst, const void *src_dev, size_t n);
int kcuda_d2d(struct kcuda *g, void *dst_dev, const void *src_dev, size_t n);
int kcuda_memset(struct kcuda *g, void *dst_dev, int byte, size_t n);
int kcuda_sync(struct kcuda *g);

/* ---- CUDA graphs ---------------------------------------------------- */

struct kcuda_graph;
/* Ops between begin and end are captured, not run; end instantiates them.
 * A capture that saw an error returns it from end (no graph). */
int kcuda_graph_begin(struct kcuda *g);
int kcuda_graph_end(struct kcuda *g, struct kcuda_graph **out);
int kcuda_graph_launch(struct kcuda *g, struct kcuda_graph *gr);
void kcuda_graph_free(struct kcuda_graph *gr);

/* ---- weights -------------------------------------------------------- */

/* A weight matrix on the device: struct kmat's fields, device pointers. */
struct kdmat {
    enum kdtype dtype;
    int rows, cols;
    const void *data;   /* (dev) */
    const float *scale; /* (dev) F8 block scales, else NULL */
    int blk;
    const uint16_t *qd, *qm; /* (dev) Q8_0 / Q4_1 scales (and mins) */
};
/* Copies a host matrix (any dtype) to new device memory; kcuda_mat_free
 * frees it. Blocks until copied. */
int kcuda_mat_upload(struct kcuda *g, const struct kmat *h, struct kdmat *d);
void kcuda_mat_free(struct kcuda *g, struct kdmat *d);
/* Same for a 1-D vector (norm weight, bias) of n elements of dtype t:
 * returns the device copy or NULL. */
void *kcuda_vec_upload(struct kcuda *g, const void *h, enum kdtype t, int n);

/* ---- dense ops ------------------------------------------------------ */

/* kmatmul: y[t][o] = sum_i x[t][i] * W[o][i], t < n_tok. Few rows (decode,
 * verify: n_tok <= KCUDA_SKINNY_ROWS) run a weight-streaming kernel that
 * reads W once for all rows with fp32 activations; more rows go through
 * cuBLASLt (bf16 x bf16 -> fp32 accumulate; x rounded to bf16 then, FP8 /
 * Q8 / Q4 weights dequantised to bf16 tiles first). */
#define KCUDA_SKINNY_ROWS 16
int kcuda_matmul(struct kcuda *g, const struct kdmat *W, const float *x,
                 int ldx, float *y, int ldy, int n_tok);
/* y += x, n elements (residual). */
int kcuda_add(struct kcuda *g, float *y, const float *x, size_t n);
/* out[r] = rmsnorm(x[r]) * w, n_rows rows of n_cols (krmsnorm); w (dev)
 * of dtype wt; in place ok. */
int kcuda_rmsnorm(struct kcuda *g, float *out, int ldo, const float *x,
                  int ldx, const void *w, enum kdtype wt, int n_cols,
                  int n_rows, float eps);
/* out = silu(gate) * up over n_rows rows of n_cols (kswiglu). */
int kcuda_swiglu(struct kcuda *g, float *out, int ldo, const float *gate,
                 int ldg, const float *up, int ldu, int n_cols, int n_rows);
/* out[r] = E[ids[r]] as fp32 (kmat_row_f32), n rows; ids (dev). When
 * zero_pos (dev) is not NULL, row r is zeros where zero_pos[r] == 0 (the
 * MTP embedding at absolute position 0). */
int kcuda_embed(struct kcuda *g, const struct kdmat *E, const int32_t *ids,
                int n, float *out, int ldo, const int32_t *zero_pos);
/* Interleaved DeepSeek RoPE (krope) on n_rows rows at positions pos[r]
 * (dev): in each row, vectors at off + h * stride for h < n_vec, dim
 * elements each; inv_freq (dev) [dim / 2]; cos/sin times mscale. */
int kcuda_rope(struct kcuda *g, float *x, int ldx, int off, int stride,
               int n_vec, int dim, const int32_t *pos, int n_rows,
               const float *inv_freq, float mscale);

/* ---- MLA over the paged latent cache -------------------------------- */

/*
 * The device KV pool has the CPU pool's layout (model_int.h): a page holds
 * page_pos positions for every layer; layer l's rows start at
 * page + l * layer_bytes, row_bytes apart, each row kv_lora normed c_kv
 * then rope roped k_pe, of dtype KDT_F32 or KDT_BF16. A call describes its
 * rows and their sequences with device arrays it uploads once per step
 * (the same for every layer):
 */
struct kcuda_rows {
    int n_rows, n_seqs;
    const int32_t *row_seq;   /* (dev) [n_rows] sequence of each row */
    const int32_t *row_pos;   /* (dev) [n_rows] absolute position */
    const int32_t *seq_row0;  /* (dev) [n_seqs + 1] first row of each seq */
    const int32_t *seq_len;   /* (dev) [n_seqs] positions after the call */
    void *const *pages;       /* (dev) all page tables, concatenated */
    const int32_t *seq_page0; /* (dev) [n_seqs] its table's start in pages */
    int page_pos;             /* power of two */
    size_t layer_bytes, row_bytes;
    enum kdtype kv_dtype;     /* KDT_F32 or KDT_BF16 */
    int kv_lora, rope;
};
/* Writes each row's c_kv (kva[r][0..L) already normed) and k_pe
 * (kva[r][L..L+R) already roped) into its slot of layer `layer`. */
int kcuda_kv_write(struct kcuda *g, const struct kcuda_rows *rw, int layer,
                   const float *kva, int ldk);

/* Weight absorption, all heads at once (mla_absorb_q / mla_head_out):
 * kv_b (dev, dtype F32/BF16/F16) is [H * (nope + v), kv_lora];
 * absorb_q: qc[r][h][0..L) = q[r][h*qk .. +nope) . W_UK_h  and
 *           qc[r][h][L..L+R) = q[r][h*qk + nope ..) (the roped q_pe);
 *           q [n_rows, H * qk] (ldq), qc [n_rows, H, L + R] contiguous.
 * head_out: attn[r][h*v ..] = W_UV_h oc[r][h][0..L); oc [n_rows, H, L],
 *           attn [n_rows, H * v] (lda). */
int kcuda_mla_absorb_q(struct kcuda *g, const struct kdmat *kv_b, int H,
                       int nope, int rope, int v, const float *q, int ldq,
                       float *qc, int n_rows);
int kcuda_mla_head_out(struct kcuda *g, const struct kdmat *kv_b, int H,
                       int nope, int v, const float *oc, float *attn,
                       int lda, int n_rows);

/*
 * Decode / verify / prefill attention for every row and head of a call
 * (attn_chunk + attn_merge): row r (sequence s, position p) attends to
 * positions [0, p] of s in layer `layer`:
 *   score_j = scale * (qc[r][h][0..L) . c_kv_j + qc[r][h][L..) . k_pe_j)
 *   oc[r][h] = sum_j softmax(score)_j c_kv_j           ([n_rows, H, L])
 * The work is split by a plan (kcuda_mla_plan, host) into blocks of one
 * sequence x a range of its positions x all its rows for a group of
 * heads; partial results (max, sum, latents) go to the workspace and a
 * second kernel merges them in block order.
 */
struct kcuda_mla_plan; /* kernels/cuda_plan.c */
int kcuda_mla_attend(struct kcuda *g, const struct kcuda_rows *rw, int layer,
                     int H, const float *qc, float *oc, float scale,
                     const struct kcuda_mla_plan *plan);

/* ---- MoE ------------------------------------------------------------- */

/* Router (moe.c's route): logits [n_tok, E] (ldl) -> top-k expert ids and
 * weights [n_tok, k]. scoring 0 = sigmoid, 1 = softmax; method 0 =
 * noaux_tc (bias (dev) added for the choice only, group score = top-2
 * sum), 1 = greedy, 2 = group_limited_greedy (group score = max). Weights
 * normalised when norm, times scale (methods 1 and 2 with norm and k > 1:
 * normalised, not scaled, as moe.c: kroute_finish in cuda_route.h). */
struct kcuda_route {
    int n_experts, k, n_group, topk_group;
    int scoring, method, norm;
    float scale;
    const float *bias; /* (dev) [E] or NULL */
};
int kcuda_moe_route(struct kcuda *g, const struct kcuda_route *rt,
                    const float *logits, int ldl, int n_tok, int32_t *idx,
                    float *w);

/* All routed experts of one layer: device tables of their matrices (same
 * dtype and shape each), made once at upload. */
struct kcuda_experts;
int kcuda_experts_new(struct kcuda *g, int n, const struct kdmat *gate,
                      const struct kdmat *up, const struct kdmat *down,
                      struct kcuda_experts **out);
void kcuda_experts_free(struct kcuda *g, struct kcuda_experts *e);
/* y[t] += sum_j w[t][j] * down_e(silu(gate_e x[t]) * up_e x[t]),
 * e = idx[t][j] (dev, from kcuda_moe_route). Rows are grouped by expert
 * on the device (counting sort, no host sync) and each expert's weights
 * are read once per call (grouped GEMM). The shared expert is not here:
 * it is kcuda_matmul + kcuda_swiglu + kcuda_matmul. */
int kcuda_moe_ffn(struct kcuda *g, const struct kcuda_experts *e,
                  const float *x, int ldx, int n_tok, const int32_t *idx,
                  const float *w, int k, float *y, int ldy);
/* Workspace bytes kcuda_moe_ffn takes for n_tok rows of k experts each
 * (hidden, inter: the experts' shape): the workspace given at kcuda_open
 * must hold the largest call's (kcuda_moe_ffn fails with MTPD_K_EINVAL
 * otherwise). k <= KCUDA_MOE_MAX_K. */
#define KCUDA_MOE_MAX_K 64
size_t kcuda_moe_ffn_workspace(int n_tok, int k, int hidden, int inter);

/* ---- logits ----------------------------------------------------------- */

/* out[r] = kargmax(x[r]) (lowest index on ties, NaN ignored, -1 if none).
 * Splits long rows over several blocks when the workspace holds
 * n_rows * 256 bytes (else one block per row: slower, same result). */
int kcuda_argmax(struct kcuda *g, const float *x, int ldx, int n_cols,
                 int n_rows, int32_t *out);
/* out[r] = ksoftmax_scaled(x[r], scale) (NaN / -inf entries 0). */
int kcuda_softmax(struct kcuda *g, const float *x, int ldx, int n_cols,
                  int n_rows, float scale, float *out, int ldo);
/*
 * The rejection-sampling accept step of one sequence (spec/accept.c):
 * p (dev) [k + 1, V] target probabilities of the verify rows, q (dev)
 * [k, V] draft probabilities, draft (dev) [k] the drafted tokens, u (dev)
 * [k + 1] uniforms in [0, 1). Draft i is accepted while
 * u[i] < min(1, p[i][t] / q[i][t]); at the first rejection the token is
 * drawn from norm(max(0, p[i] - q[i])) with u[k]'s stream, after all k
 * from p[k]. out (dev) [2]: accepted count, next token.
 */
int kcuda_spec_accept(struct kcuda *g, const float *p, const float *q,
                      const int32_t *draft, const float *u, int k, int V,
                      int32_t *out);

/* ---- measurement ----------------------------------------------------- */

/* Device-to-device copy bandwidth in GB/s (read + write counted once
 * each) over bytes, best of reps: the ceiling the benchmarks compare
 * against. Synchronous. */
int kcuda_copy_bandwidth(struct kcuda *g, size_t bytes, int reps,
                         double *gbps);

#ifdef __cplusplus
}
#endif
#endif
