/*
 * kernels.h - the backend-neutral math interface used by model/.
 *
 * Everything the forward pass computes goes through these calls. The CPU
 * backend (kernels/cpu/) implements all of them; the CUDA backend
 * (kernels/cuda/) implements the same contract on device memory.
 *
 * Conventions
 * - Activations are fp32, row-major, one row per token: x[t * ld + i].
 * - Weights are stored as the checkpoint holds them (F32, BF16, F16,
 *   F8_E4M3 with a per-128x128-block fp32 scale, or mtpd's own Q8_0 /
 *   Q4_1 with an fp16 scale (and min) per 32 weights of a row, or Q4_S,
 *   Q4_1's codes with 8-bit scales and mins per 32), row-major
 *   [rows, cols], i.e. a torch nn.Linear weight [out_features,
 *   in_features]. Quantized weights are widened inside the kernels; no
 *   full-precision copy is made.
 * - All accumulation is fp32.
 * - Functions return 0 on success and a negative MTPD_K_E* code on error.
 *
 * Threading: a kpool is a fixed set of worker threads created once. Ops
 * that take a pool split their work across it; pool == NULL runs on the
 * calling thread. The decode loop never creates threads or allocates.
 */
#ifndef MTPD_KERNELS_H
#define MTPD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kdtype {
    KDT_F32 = 0,
    KDT_BF16,
    KDT_F16,
    KDT_F8_E4M3, /* needs a block scale (weight_scale_inv) */
    KDT_Q8_0,    /* int8, fp16 scale per KQ_BLK weights (qd) */
    KDT_Q4_1,    /* 4-bit, fp16 scale and min per KQ_BLK weights (qd, qm) */
    KDT_Q4_S,    /* Q4_1's codes; 8-bit scale and min per KQ_BLK weights,
                  * two power-of-two exponents per KQ4S_GRP blocks (qsc,
                  * qmn, qexp): 4.51 bits per weight */
    KDT_Q4_X8,   /* Q4_S or Q4_1 with eight rows interleaved (kq4x8_pack):
                  * a CPU layout made at load for AVX2, never in a file */
    KDT_COUNT
};

/* Weights per Q8_0 / Q4_1 / Q4_S block (along a row; cols a multiple of
 * it). */
#define KQ_BLK 32
/* Q4_S blocks per exponent pair (a row's last group may be shorter). */
#define KQ4S_GRP 8
/* Q4_S exponents: e in [KQ4S_EMIN, KQ4S_EMAX], so that sc * 2^e and
 * mn * 2^f are exact fp16 numbers (subnormal ones included). */
#define KQ4S_EMIN (-24)
#define KQ4S_EMAX 7
/* Q4_S exponent bytes of a row of cols columns: one pair per group. */
static inline int kq4s_ex_bytes(int cols)
{
    return 2 * ((cols / KQ_BLK + KQ4S_GRP - 1) / KQ4S_GRP);
}

/* Bytes per element of a dtype (1 for F8_E4M3 and Q8_0; 0 for the packed
 * Q4_1 / Q4_S: use kmat_row_bytes). Scales are not counted. */
size_t kdtype_size(enum kdtype t);
const char *kdtype_str(enum kdtype t);
/* Bytes of one weight row of cols elements in data (scales not counted). */
size_t kmat_row_bytes(enum kdtype t, int cols);

enum {
    MTPD_K_OK = 0,
    MTPD_K_EINVAL = -1, /* bad argument (shape, dtype, missing scale) */
    MTPD_K_ENOMEM = -2,
};

/*
 * A 2-D weight matrix as the checkpoint stores it. data usually points
 * into an mmap'd safetensors file; the struct owns nothing.
 * For KDT_F8_E4M3, scale is fp32 [ceil(rows/blk), ceil(cols/blk)] and the
 * real weight is W[r][c] = fp8(data[r][c]) * scale[r/blk][c/blk]
 * (DeepSeek's weight_scale_inv multiplies, despite its name).
 * Q8_0 (cols % KQ_BLK == 0): data int8 [rows, cols], qd fp16
 * [rows, cols / KQ_BLK]; W[r][c] = q[r][c] * qd[r][c / KQ_BLK] (exact in
 * fp32).
 * Q4_1 (cols % KQ_BLK == 0): data [rows, cols / 2] bytes; block j of a
 * row is bytes 16j..16j+15, byte i holding weight 32j+i in its low nibble
 * and weight 32j+16+i in its high one (as ggml's Q4_1); qd, qm fp16
 * [rows, cols / KQ_BLK]; W[r][c] = fmaf(q, qd, qm) rounded once to fp32.
 * Q4_S (cols % KQ_BLK == 0): data as Q4_1; per block j of row r an
 * unsigned scale qsc[r][j] and a signed min qmn[r][j] (bytes, [rows, nb],
 * nb = cols / KQ_BLK), per group g of KQ4S_GRP blocks two exponents
 * e = qexp[r][2g], f = qexp[r][2g + 1] ([rows, 2 * ceil(nb / KQ4S_GRP)]):
 * the block's scale is d = qsc * 2^e and its min m = qmn * 2^f, both exact
 * in fp16, and W[r][c] = fmaf(q, d, m) - a Q4_1 weight with those fp16
 * values (kq4s_expand), so every Q4_1 kernel computes Q4_S bit for bit.
 */
struct kmat {
    enum kdtype dtype;
    int rows;           /* out_features */
    int cols;           /* in_features */
    const void *data;   /* the rows, row-major, contiguous */
    const float *scale; /* F8 only: block scales, else NULL */
    int blk;            /* F8 only: block edge (128), else 0 */
    const uint16_t *qd; /* Q8_0 / Q4_1: fp16 block scales, else NULL */
    const uint16_t *qm; /* Q4_1: fp16 block mins, else NULL */
    int resident;       /* a hint: 1 when W stays in the CPU caches from
                         * one call to the next (a small model): the row
                         * stream (kisa_row_stream), a layout for weights
                         * read from memory, is then not used */
    int act_bf16;       /* BF16 only, an option: x is rounded to bf16 for
                         * the products where the CPU has AVX512-BF16
                         * (kmat_act_bf16), as llama.cpp and torch's bf16
                         * do: twice the multiply-adds per instruction,
                         * results ~1e-3 relative from the exact fp32 sums;
                         * ignored elsewhere (AVX2, scalar, AMX tiles) */
    const uint8_t *qsc; /* Q4_S: block scales, else NULL */
    const int8_t *qmn;  /* Q4_S: block mins, else NULL */
    const int8_t *qexp; /* Q4_S: exponent pairs, else NULL */
};

/* 1 when W's matmuls round x to bf16 now: W->act_bf16, BF16, the active
 * ISA is KISA_AVX512 on a CPU with AVX512-BF16 (kisa_bf16_dot) and AMX
 * tiles do not take W. A property of W and the ISA settings, never of a
 * call's token count. */
int kmat_act_bf16(const struct kmat *W);
/* The ISA part of it: KISA_AVX512 active on a CPU with AVX512-BF16. */
int kisa_bf16_dot(void);

/* Bytes W reads: data plus scales (and mins). */
size_t kmat_bytes(const struct kmat *W);

/* Rows [r0, r0 + n) of a Q4_S matrix as Q4_1 scales and mins: qd, qm
 * [n, cols / KQ_BLK] fp16, exact (kmat). The matmul expands a few rows at
 * a time into L1 and runs the Q4_1 kernels on them; the CUDA upload
 * expands whole matrices. Uses the active ISA's vectors. */
void kq4s_expand(const struct kmat *W, int r0, int n, uint16_t *qd,
                 uint16_t *qm);
/*
 * Q4_X8: a Q4_S or Q4_1 matrix with eight rows in the lanes of a vector,
 * so that AVX2 needs no horizontal sums (matmul_q4x8.c). Rows are taken
 * in slabs of 8 (the last one padded with zero rows); nb = cols / KQ_BLK,
 * ng = ceil(nb / KQ4S_GRP). data: per slab s and block j, 128 bytes at
 * (s * nb + j) * 128: four 32-byte vectors, vector v holding in its dword
 * l bytes 4v..4v+3 of row 8s+l's block j (Q4_1's 16 bytes). Scales, per
 * slab and block 8 entries (lane l: row 8s+l): from Q4_S qsc, qmn bytes
 * ([slab][nb][8]) and qexp ([slab][ng][16]: the 8 rows' e, then their f);
 * from Q4_1 qd, qm fp16 ([slab][nb][8]). The same weights and the same
 * sums in the same order as the source: bit-identical results.
 * kq4x8_bytes: the bytes kq4x8_pack writes for W (Q4_S or Q4_1), or 0 for
 * another dtype. kq4x8_pack: writes them to buf (64-byte aligned) and
 * sets *out to the Q4_X8 matrix pointing into buf (resident kept).
 */
size_t kq4x8_bytes(const struct kmat *W);
int kq4x8_pack(const struct kmat *W, void *buf, struct kmat *out);
/* 0 when W's Q4_S exponents are all in [KQ4S_EMIN, KQ4S_EMAX], else
 * MTPD_K_EINVAL (a loader's check of a checkpoint). */
int kq4s_check(const struct kmat *W);

/* ---- run-time CPU feature selection -------------------------------- */

enum kisa {
    KISA_SCALAR = 0, /* portable C, always available */
    KISA_AVX2,       /* AVX2 + FMA + F16C */
    KISA_AVX512,     /* AVX-512F (+BW) */
    KISA_COUNT
};

/* Best ISA this CPU supports (cpuid at first call). */
enum kisa kisa_detect(void);
/* The ISA ops use now: kisa_detect() unless kisa_set() chose another. */
enum kisa kisa_active(void);
/* Force an ISA (programs through mtpd_set_isa() in model.h; tests to check
 * every path). Returns MTPD_K_EINVAL if the CPU lacks it. Not thread-safe
 * with running ops. */
int kisa_set(enum kisa isa);
const char *kisa_str(enum kisa isa);

/*
 * AMX-BF16 tiles for BF16 weights, on top of KISA_AVX512 (matmul_amx.c).
 * kisa_has_amx: the CPU has AMX-TILE, AMX-BF16 and AVX512-BF16 and Linux
 * granted the tile state (asked once). kisa_set_amx(on) turns it on or off
 * (default off: see isa.c; MTPD_K_EINVAL to turn on without it);
 * kisa_amx_active: has, on, and kisa_active() is KISA_AVX512. AMX adds in
 * another order than the AVX-512 kernel, so it is used for every row count
 * of a matrix or for none (batch invariance). Not thread-safe with ops.
 */
int kisa_has_amx(void);
/* The CPU has AVX512-BF16 (vdpbf16ps; kmat.act_bf16 uses it). */
int kisa_has_avx512bf16(void);
int kisa_set_amx(int on);
int kisa_amx_active(void);
/* AMX-INT8 tiles for Q8_0 / Q4_1 weights in calls of several tokens
 * (matmul_qa_amx.c). They give the vector kernels' bits, so they are
 * picked by token count and need no batch-invariance care: in use when
 * the active ISA is KISA_AVX512, the CPU and OS have AMX-INT8 and
 * kisa_set_amx_int8 did not turn them off (default on; independent of
 * kisa_set_amx, which is about BF16). For tests and benchmarks. */
int kisa_amx_int8(void);
/* The CPU has AMX-INT8 (and VNNI), the OS tile state, and Linux granted
 * it to this process (kisa_has_amx is the same for AMX-BF16). */
int kisa_has_amx_int8(void);
int kisa_set_amx_int8(int on);
/* How matmuls of few tokens (decode, short verifies) walk the weights:
 * 1 = one row at a time, a single linear stream per thread; 0 = several
 * rows side by side (2-8 streams). With 1 token on AMD Zen 5 the single
 * stream reads 1.2-1.7x faster (BF16, Q8_0, Q4_1, F8); it is used for up
 * to 2 tokens (BF16, F8) or 1 (Q8_0, Q4_1: with several, the VNNI
 * kernel, and AVX2 for Q4_1, take transposed blocks, a row at a time by
 * construction), where it measured faster, and the vector kernels only
 * (not AMX). The Intel Xeons measured before were tuned with rows side
 * by side (docs/model.md, "Weight streams"). Default: 1 on AMD CPUs, 0
 * elsewhere. Every row is
 * summed in the same order either way, so results are identical;
 * kisa_set_row_stream (1, 0, or -1 for the default) is for tests and
 * benchmarks. Not thread-safe with ops. */
int kisa_row_stream(void);
void kisa_set_row_stream(int on);
/* Bytes of the last-level cache (L3, else L2) as the OS reports it, or 0
 * when unknown. */
size_t kisa_llc_bytes(void);
/* One core's L2 in bytes (sysconf, asked once); 0 when unknown. */
size_t kisa_l2_bytes(void);

/* ---- thread pool --------------------------------------------------- */

struct kpool;

/* Starts n_threads - 1 workers (the caller is the n-th). NULL on failure. */
struct kpool *kpool_new(int n_threads);
void kpool_free(struct kpool *p);
int kpool_size(const struct kpool *p);

/* Runs fn(arg, i, n) for i in [0, n) across the pool and returns when all
 * are done. n is the number of parts (usually the pool size).
 * On a machine busy with other work a worker can be descheduled holding a
 * part, and the caller then waits for it: when, over two 20 ms windows in
 * a row, the runs took longer than the caller alone would have (pool.c),
 * the pool runs the next runs on the caller alone (workers asleep) and
 * then tries again. */
typedef void (*kpool_fn)(void *arg, int part, int n_parts);
void kpool_run(struct kpool *p, kpool_fn fn, void *arg, int n_parts);

/* Guided shares of n_units work units (rows, row chunks) for a run of
 * kpool_parts(p, n_units) parts: the first n_threads parts take 70% of the units
 * between them (one long stream of weights per thread), the next
 * n_threads 18%, then 8%, then 4%, in unit order; parts are claimed in
 * order, so a thread that finishes early takes the next smaller share.
 * With one share per thread the threads' speeds, which differ by a few
 * percent from run to run even on a quiet machine, made the first to
 * finish wait for the other: 6% of a memory-bound decode step on two
 * threads (pool.c's caller waited on its worker for 12-17% of its time).
 * Part `part` gets units [*u0, *u1) (possibly empty). */
int kpool_parts(const struct kpool *p, int n_units); /* fewer units than
                                 * the guided parts: one or more a thread */
void kpool_share(int n_units, int part, int n_parts, int *u0, int *u1);

struct kpool_stats {
    long runs;      /* kpool_run calls */
    long solo_runs; /* of them run on the caller alone after a fallback */
    long fallbacks; /* times the runs went solo for a while */
};
void kpool_get_stats(const struct kpool *p, struct kpool_stats *st);

/* ---- ops ------------------------------------------------------------ */

/*
 * y[t][o] = sum_i x[t][i] * W[o][i]      for t < n_tok, o < W->rows
 * x: [n_tok, ldx] fp32 (ldx >= W->cols), y: [n_tok, ldy] fp32.
 * Reads each weight element once for all n_tok rows (the point of
 * batched verification). Output rows are split across the pool.
 * x 64-byte aligned with ldx a multiple of 16 avoids a staging copy.
 * Batch invariant: y[t] is bitwise the same whatever n_tok, t's place in
 * x, the other rows, the pool size or the row range asked (kmatmul_rows);
 * it depends only on W, x[t] and the active ISA. MTPD_K_ENOMEM when a
 * staging buffer the kernel needs cannot be allocated.
 */
int kmatmul(struct kpool *p, const struct kmat *W, const float *x, int ldx,
            float *y, int ldy, int n_tok);

/* Same, restricted to output rows [row0, row1). y is still indexed by the
 * absolute row (y[t * ldy + o], o in [row0, row1)), so ldy >= row1. */
int kmatmul_rows(struct kpool *p, const struct kmat *W, int row0, int row1,
                 const float *x, int ldx, float *y, int ldy, int n_tok);

/*
 * y[t][j] = sum_i x[t][i] * V[i][j]      for t < n_tok, j < n_cols,
 *                                        i < V->rows
 * The rows of V weighted by x: attention's probabilities times the value
 * rows, or q_nope times W_UK. Only the first n_cols (<= V->cols) columns
 * are computed; V->cols is the row length. x: [n_tok, ldx] fp32
 * (ldx >= V->rows), y: [n_tok, ldy] fp32 (ldy >= n_cols). V: F32, BF16,
 * F16, F8_E4M3 (blk a multiple of 16) or Q8_0, rows >= 0 (0 rows:
 * y = 0). Each V element is read once per 8 tokens. Runs on the calling
 * thread. Batch invariant like kmatmul: y[t] depends only on V, n_cols,
 * x[t] and the ISA.
 */
int kmatmul_pv(const struct kmat *V, int n_cols, const float *x, int ldx,
               float *y, int ldy, int n_tok);

/* Dequantize weight row r of W into out[W->cols] fp32 (every dtype). */
int kmat_row_f32(const struct kmat *W, int r, float *out);

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], n elements, in place ok.
 * w may be any dtype but F8 (norm weights are bf16/f32 in checkpoints). */
void krmsnorm(float *out, const float *x, const void *w, enum kdtype wt,
              int n, float eps);

/* Interleaved RoPE (DeepSeek layout): pairs (x[2i], x[2i+1]) rotated by
 * angle pos * inv_freq[i], with cos/sin multiplied by mscale.
 * x has dim elements (dim even), inv_freq dim/2. */
void krope(float *x, int dim, int pos, const float *inv_freq, float mscale);
/* The same in two steps, for many vectors at one position (all heads, all
 * layers): krope_cs writes cs[2i], cs[2i+1] = cos, sin of that angle
 * times mscale (dim floats); krope_apply rotates x by it. Together they
 * give krope's results exactly. */
void krope_cs(float *cs, int dim, int pos, const float *inv_freq,
              float mscale);
void krope_apply(float *x, int dim, const float *cs);

/* In place softmax over n elements; returns the max logit seen. */
float ksoftmax(float *x, int n);

/* out[i] = softmax(scale * x)[i] over the entries that are not NaN; NaN
 * and -inf entries get exactly 0 (scale > 0). Returns the max x, -inf when
 * no entry is finite (out then all 0). Sampling from logits rows. */
float ksoftmax_scaled(const float *x, int n, float scale, float *out);

/* Index of the largest entry, the lowest one on ties, NaN ignored; -1 when
 * every entry is NaN (or n <= 0). */
int kargmax(const float *x, int n);

/* x[i] = exp(scale * x[i] - shift) in place (0 for NaN and -inf x);
 * returns the sum (accumulated in double). The online softmax of split
 * attention. */
float kexp_sum(float *x, int n, float scale, float shift);

/* out[i] = silu(gate[i]) * up[i]. */
void kswiglu(float *out, const float *gate, const float *up, int n);

/* Dot product / axpy on fp32 vectors, SIMD-dispatched (attention uses them). */
float kdot(const float *a, const float *b, int n);
void kaxpy(float *y, float a, const float *x, int n); /* y += a * x */

/* Scalar conversions, exact. */
float kbf16_to_f32(uint16_t h);
float kf16_to_f32(uint16_t h);
float kf8e4m3_to_f32(uint8_t v);
uint16_t kf32_to_bf16(float f); /* round to nearest even */
uint16_t kf32_to_f16(float f);  /* round to nearest even, inf on overflow */

#ifdef __cplusplus
}
#endif
#endif
