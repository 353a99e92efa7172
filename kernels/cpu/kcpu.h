/*
 * kcpu.h - internals shared by the CPU backend files (not a public API).
 *
 * A matmul "block kernel" computes, for rows o in [r0, r1), tokens t < nt
 * (1 <= nt <= KMM_NT) and the column range [c0, c1), the partial dot
 * products sum_c W[o][c] * x[t][c] and stores them in y[t][o] (or adds
 * them, when accum). matmul.c tiles rows, tokens and columns and splits
 * rows across the pool; the kernels keep their accumulators in registers.
 *
 * Batch invariance: every output element is summed in one fixed order
 * whatever the token count, the row grouping or the thread split. Columns
 * are cut into segments of kseg (fixed per matrix, see kmm_kseg): within a
 * segment each SIMD lane runs one FMA chain over the columns in order (F8:
 * per blk block, then scaled into a per-segment total), the lanes are
 * summed with one tree (reduce4 on AVX-512, hsum on AVX2, a single chain in
 * scalar), and the segment sums are added to y in column order. Register
 * blocking (NR rows x NT tokens) only decides which chains run side by
 * side, never how a chain adds; matmul.c's column chunks are whole
 * segments, so a chunk boundary is a segment boundary.
 */
#ifndef MTPD_KCPU_H
#define MTPD_KCPU_H

#include <math.h>

#include "../kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define KCPU_X86 1
#define KTARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KTARGET_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#else
#define KCPU_X86 0
#endif

#define KINLINE static inline __attribute__((always_inline))
/* Fully unroll small constant loops (keeps accumulator arrays in registers). */
#define KUNROLL _Pragma("GCC unroll 8")

/* Most tokens one block kernel call handles. */
#define KMM_NT 8
/* Columns per summation segment (F8: rounded to whole blocks). The x
 * chunk of KMM_NT tokens x KMM_KSEG columns fills L1 (matmul.c). */
#define KMM_KSEG 1024
/* Block kernels prefetch weights this far ahead of the rows they read
 * (4 KiB measured best of 2..8 KiB, L3- and DRAM-resident weights). */
#define KMM_PF_BYTES 4096

struct kmm_blk {
    const struct kmat *W;
    int r0, r1;     /* output rows */
    int c0, c1;     /* columns; c0 is a multiple of kseg */
    int kseg;       /* summation segment, kmm_kseg(W) */
    const float *x; /* x[t * ldx + c], c absolute */
    int ldx;
    float *y;       /* y[t * ldy + o], o absolute */
    int ldy;
    int nt;         /* tokens, 1..KMM_NT */
    int accum;      /* 1: y += partial, 0: y = partial */
    const uint8_t *xq; /* Q8_0 / Q4_1 integer kernels: x quantized by
                        * kqa_quantize, token t at xq + t * ldq */
    size_t ldq;
    const uint8_t *xb; /* AMX: the nt (<= KQA_AMX_NT) tokens' x by
                        * kqa_amx_pack */
    int row1;          /* kisa_row_stream(), for a call of few tokens:
                        * one row per pass */
    const uint8_t *xt; /* transposed blocks (VNNI; AVX2 Q4_1): x codes by
                        * kqa_xt, token t at xt + t * ldt; or NULL */
    size_t ldt;
};

typedef void (*kmm_block_fn)(const struct kmm_blk *b);
/* Writes n_tok rows of x into xp in a kernel's own layout, ldp elements
 * a row (kmatmul_rows picks the kernel, then packs with its function). */
typedef void (*kmm_pack_fn)(const float *x, int ldx, int cols, int n_tok,
                            void *xp, int ldp);

/* Software prefetch of the block kernels that walk a group of consecutive
 * rows (BF16, F32/F16/F8 on AVX2): a core keeps only ~16 L1 misses in
 * flight, so once the FMAs take as long as the loads the hardware
 * prefetchers alone leave the stream idle part of the time. The group's
 * rows are taken as one linear range: kpf_lines, `done` bytes into it,
 * fetches one line per row KMM_PF_BYTES ahead, never past the matrix. */
struct kpf {
    uintptr_t base, end; /* the group's first row + KMM_PF_BYTES; W's end */
};

static inline struct kpf kpf_group(const struct kmat *W, const void *row0)
{
    size_t bytes = (size_t)W->rows * kmat_row_bytes(W->dtype, W->cols);
    return (struct kpf){(uintptr_t)row0 + KMM_PF_BYTES,
                        (uintptr_t)W->data + bytes};
}

KINLINE void kpf_lines(const struct kpf *p, size_t done, int nr)
{
    uintptr_t q = p->base + done;
    KUNROLL
    for (int k = 0; k < nr; k++)
        if (q + 64 * (uintptr_t)k < p->end)
            __builtin_prefetch((const void *)(q + 64 * (uintptr_t)k), 0, 3);
}

/* BF16 with x rounded to bf16 (kmat_act_bf16, matmul_bf16dp.c): x takes
 * half the bytes, so a segment twice as long fills L1 as well, and the
 * lane sums at its end cost half as much (3072x2048 at 512 tokens: 1.1x). */
#ifndef KMM_KSEG_BF16DP
#define KMM_KSEG_BF16DP (2 * KMM_KSEG)
#endif
/* Segment length for W: KMM_KSEG, for F8 a whole number of blocks, with
 * x as bf16 KMM_KSEG_BF16DP. */
static inline int kmm_kseg(const struct kmat *W)
{
    if (W->act_bf16 && kmat_act_bf16(W))
        return KMM_KSEG_BF16DP;
    if (W->dtype != KDT_F8_E4M3)
        return KMM_KSEG;
    return W->blk >= KMM_KSEG ? W->blk : KMM_KSEG - KMM_KSEG % W->blk;
}

/* End of the segment that starts at c (kseg-aligned: every caller walks
 * from c0 segment by segment), clipped to c1. No division: the one-row
 * kernels call this per row and segment. */
static inline int kmm_seg_end(const struct kmm_blk *b, int c)
{
    int e = c + b->kseg;
    return e < b->c1 ? e : b->c1;
}

void kmm_block_scalar(const struct kmm_blk *b);
/* matmul_qa.c: Q8_0 / Q4_1 weights, int8 x (b->xq); c0, c1 multiples of
 * KQ_BLK; every kernel sums as matmul_qa.c's header says (one exact int32
 * per block, sixteen float chains per segment). kqa_quantize writes row t
 * of x at q + t * ldq: cols int8 codes (Q8_0 in column order; Q4_1 per
 * group of 4 blocks the 16 low-half codes of each, then the 16 high-half
 * ones), then per block (cols / KQ_BLK each) the fp32 scales xd, the fp32
 * xd * sum(codes), the int32 sum(codes) (KQA_LDQ bytes). */
#define KQA_LDQ(cols) ((((size_t)(cols) + 12 * ((cols) / KQ_BLK)) + 63) & ~(size_t)63)
void kqa_quantize(enum kdtype dt, const float *x, int ldx, int cols,
                  int n_tok, uint8_t *q, size_t ldq);
/* Byte offset of x code i (0..31) of block j in such a row: Q8_0 column
 * order; Q4_1 per group of four blocks the low halves, then the high
 * halves (the row's last group may hold fewer blocks). */
static inline size_t xq_off(int q4, int nb, int j, int i)
{
    if (!q4)
        return (size_t)j * KQ_BLK + (size_t)i;
    int g0 = j & ~3, gn = nb - g0 < 4 ? nb - g0 : 4;
    size_t o = (size_t)g0 * KQ_BLK + 16 * (size_t)(j - g0) + (size_t)(i & 15);
    return i < 16 ? o : o + 16 * (size_t)gn;
}
void kmm_block_qa_scalar(const struct kmm_blk *b);
/* The codes of n_tok rows of q (kqa_quantize's, for dt) regrouped for
 * the transposed-block kernels: per group of 16 blocks (512 bytes, zero
 * past the row's last block) eight 64-byte vectors, vector k holding the
 * codes of columns 4k..4k+3 of block i in its dword i (the AVX2 kernel
 * reads the half of each vector that holds its 8 blocks). Row t at
 * xt + t * KQA_LDT. */
#define KQA_LDT(cols) ((size_t)(((cols) / KQ_BLK + 15) / 16) * 512)
void kqa_xt(enum kdtype dt, int cols, const uint8_t *q, size_t ldq,
            int n_tok, uint8_t *xt);
/* matmul_qa_amx.c: AMX-INT8 for Q8_0 / Q4_1 (same bits as the others).
 * kqa_amx_ok: the CPU has AMX-TILE and AMX-INT8, the OS enables them and
 * granted this process their state (asked once). kqa_amx_pack writes,
 * per KQA_AMX_NT tokens (KQA_AMX_LDB bytes, zero past n_tok), per block
 * the 32 x 16 codes as a B tile (4-byte VNNI layout, column order), then
 * xd [block][16 tokens], then xs likewise. */
#define KQA_AMX_NT 16
#define KQA_AMX_LDB(cols) ((size_t)((cols) / KQ_BLK) * 640)
int kqa_amx_ok(void);
void kqa_amx_pack(enum kdtype dt, int cols, const uint8_t *xq, size_t ldq,
                  int n_tok, uint8_t *xb);
void kmm_block_qa_amx(const struct kmm_blk *b);
#if KCPU_X86
void kmm_block_qa_avx2(const struct kmm_blk *b);
void kmm_block_qa_vnni(const struct kmm_blk *b); /* AVX-512 VNNI */
/* matmul_qa_rowlanes.c (AVX-512 VNNI): rows [r0, r1) of a Q8_0 / Q4_1 W
 * for n_tok tokens of x packed by kqa_rl_pack (KQA_RL_XBYTES bytes),
 * sixteen rows per vector, two vectors per pass; stores y (same bits as
 * the block kernels). matmul.c uses it from rl_min_tok tokens on. */
#define KQA_RL_SEG_COLS KMM_KSEG /* columns of a slab: one segment */
#define KQA_RL_ROWS 32           /* rows of a pass: two 16-row slabs */
#define KQA_RL_XBLK (40 * 8)     /* packed x: bytes per block, 8 tokens */
#define KQA_RL_XBYTES(cols, n_tok) \
    ((size_t)(((n_tok) + 7) / 8) * (size_t)((cols) / KQ_BLK) * KQA_RL_XBLK)
void kqa_rl_pack(enum kdtype dt, int cols, const uint8_t *xq, size_t ldq,
                 int n_tok, uint8_t *xr);
void kqa_rowlanes(const struct kmat *W, int r0, int r1, const uint8_t *xr,
                  int n_tok, float *y, int ldy);
/* The same with AVX2, eight rows per vector. */
void kqa_rowlanes_avx2(const struct kmat *W, int r0, int r1,
                       const uint8_t *xq, size_t ldq, int n_tok, float *y,
                       int ldy);
#endif
/* isa.c: AVX-512 VBMI present (cpuid, at first call). */
int kisa_has_vbmi(void);
#if KCPU_X86
/* matmul_f8lut.c: F8 weights with 64-column-multiple scale blocks on
 * AVX-512 VBMI (kf8l_fits: a property of W), x packed by kf8l_pack into
 * [n_tok, kf8l_ldp(cols)] (64-byte aligned). */
int kf8l_fits(const struct kmat *W);
int kf8l_ldp(int cols);
void kf8l_pack(const float *x, int ldx, int cols, int n_tok, void *xp,
               int ldp);
void kmm_block_f8lut(const struct kmm_blk *b);
#endif
/* matmul_amx.c: releases this thread's AMX tiles (the pool, before a
 * worker sleeps); a no-op without AMX. */
void kamx_idle(void);
/* isa.c: AVX-512 VNNI present (cpuid, at first call). */
int kisa_has_vnni(void);
#if KCPU_X86
void kmm_block_avx2(const struct kmm_blk *b);
void kmm_block_avx512(const struct kmm_blk *b);
/* matmul_bf16p.c: BF16 weights, x packed by kmm_pack_pairs_avx512 into
 * xp [n_tok, ldp] (ldp a multiple of 32 >= cols, 64-byte aligned): per 32
 * columns the 16 even ones, then the 16 odd ones, zero past cols. */
void kmm_block_avx512_bf16p(const struct kmm_blk *b);
void kmm_pack_pairs_avx512(const float *x, int ldx, int cols, int n_tok,
                           void *xp, int ldp);
/* matmul_bf16p_avx2.c: the same layout for AVX2, 16 columns (8 even,
 * then 8 odd) per group, ldp a multiple of 16 >= cols, 32-byte aligned
 * rows. */
void kmm_block_avx2_bf16p(const struct kmm_blk *b);
void kmm_pack_pairs_avx2(const float *x, int ldx, int cols, int n_tok,
                         void *xp, int ldp);
/* matmul_bf16dp.c (AVX512-BF16): BF16 weights with kmat.act_bf16, x
 * rounded to bf16 by kmm_pack_bf16 into xp [n_tok, ldp] (ldp a multiple
 * of 32 >= cols, 64-byte aligned rows, zero past cols); the block kernel
 * reads it through kmm_blk.x with ldx = ldp / 2 (fp32 slots). */
void kmm_block_bf16dp(const struct kmm_blk *b);
void kmm_pack_bf16(const float *x, int ldx, int cols, int n_tok,
                   void *xp, int ldp);
/* matmul_amx.c: BF16 weights on AMX tiles (kisa_amx_active()). kamx_fits:
 * W can use it (a property of W alone: BF16, cols % 32 == 0, >= 16 rows).
 * kamx_pack writes x as bf16 hi/lo pairs into xp (kamx_pack_bytes, 64-byte
 * aligned); kamx_matmul runs rows [row0, row1) on the pool. */
int kamx_fits(const struct kmat *W);
size_t kamx_pack_bytes(const struct kmat *W, int n_tok);
void kamx_pack(const struct kmat *W, const float *x, int ldx, int n_tok,
               uint32_t *xp);
void kamx_matmul(struct kpool *p, const struct kmat *W, int row0, int row1,
                 const uint32_t *xp, int n_tok, float *y, int ldy);
/* act_avx512.c: krmsnorm (w not F8) / ksoftmax / kswiglu for
 * KISA_AVX512 (n >= 1). */
void krmsnorm_avx512(float *out, const float *x, const void *w,
                     enum kdtype wt, int n, float eps);
float ksoftmax_avx512(float *x, int n);
float ksoftmax_scaled_avx512(const float *x, int n, float scale, float *out);
int kargmax_avx512(const float *x, int n);
float kexp_sum_avx512(float *x, int n, float scale, float shift);
void kswiglu_avx512(float *out, const float *gate, const float *up, int n);
/* act_avx2.c: the same for KISA_AVX2. */
void krmsnorm_avx2(float *out, const float *x, const void *w,
                   enum kdtype wt, int n, float eps);
float ksoftmax_avx2(float *x, int n);
float ksoftmax_scaled_avx2(const float *x, int n, float scale, float *out);
int kargmax_avx2(const float *x, int n);
float kexp_sum_avx2(float *x, int n, float scale, float shift);
void kswiglu_avx2(float *out, const float *gate, const float *up, int n);
#endif

/* 2^e as a float, e in [-126, 127]. */
static inline float kpow2f(int e)
{
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)(e + 127) << 23};
    return v.f;
}

/* Block j's scale d and min m of lane l of slab s of a Q4_X8 matrix, as
 * floats (exact: the values of its source, kernels.h). */
static inline void kq4x8_scale(const struct kmat *W, size_t s, size_t l,
                               size_t j, float *d, float *m)
{
    size_t nb = (size_t)(W->cols / KQ_BLK), e = (s * nb + j) * 8 + l;
    if (W->qsc == NULL) {
        *d = kf16_to_f32(W->qd[e]);
        *m = kf16_to_f32(W->qm[e]);
        return;
    }
    size_t ng = (size_t)kq4s_ex_bytes(W->cols) / 2;
    const int8_t *ex = W->qexp + (s * ng + j / KQ4S_GRP) * 16 + l;
    *d = ldexpf((float)W->qsc[e], ex[0]);
    *m = ldexpf((float)W->qmn[e], ex[8]);
}

/* The chain tree every integer kernel ends a segment with (matmul_qa.c's
 * header; kqa_tree8 in AVX2). */
static inline float kqa_chains_sum(const float c[16])
{
    float s[8];
    for (int i = 0; i < 8; i++)
        s[i] = c[i] + c[i + 8];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* Weight c of row r of a Q8_0 / Q4_1 / Q4_S matrix, exactly as every
 * kernel widens it (kernels.h). */
static inline float kq_weight(const struct kmat *W, int r, int c)
{
    size_t nb = (size_t)(W->cols / KQ_BLK), j = (size_t)(c / KQ_BLK);
    if (W->dtype == KDT_Q4_X8) { /* kernels.h: slab s, lane l */
        size_t s = (size_t)r / 8, l = (size_t)r % 8;
        int i = c % KQ_BLK, b = i % 16;
        uint8_t v = ((const uint8_t *)W->data)[(s * nb + j) * 128 +
                                               32 * (size_t)(b / 4) + 4 * l +
                                               (size_t)(b % 4)];
        float d, m;
        kq4x8_scale(W, s, l, j, &d, &m);
        return __builtin_fmaf((float)(i < 16 ? v & 15 : v >> 4), d, m);
    }
    size_t k = (size_t)r * nb + j;
    if (W->dtype == KDT_Q8_0)
        return (float)((const int8_t *)W->data)[(size_t)r * W->cols + c] *
               kf16_to_f32(W->qd[k]);
    const uint8_t *blk = (const uint8_t *)W->data + (size_t)r * W->cols / 2 +
                         j * (KQ_BLK / 2);
    int i = c % KQ_BLK;
    int q = i < KQ_BLK / 2 ? blk[i] & 15 : blk[i - KQ_BLK / 2] >> 4;
    if (W->dtype == KDT_Q4_S) {
        const int8_t *ex = W->qexp + (size_t)r * kq4s_ex_bytes(W->cols) +
                           2 * (j / KQ4S_GRP);
        return __builtin_fmaf((float)q, ldexpf((float)W->qsc[k], ex[0]),
                              ldexpf((float)W->qmn[k], ex[1]));
    }
    return __builtin_fmaf((float)q, kf16_to_f32(W->qd[k]),
                          kf16_to_f32(W->qm[k]));
}

/* matmul_q4x8.c: bytes of a Q4_X8 matrix's sections for W (Q4_S, Q4_1 or
 * Q4_X8): codes, then scales, mins, exponents (Q4_S) or fp16 scales,
 * mins, 0 (Q4_1). */
void kq4x8_sections(const struct kmat *W, size_t sec[4]);
/* Rows [row0, row1) of a Q4_X8 W for n_tok tokens of x quantized by
 * kqa_quantize (Q4_1 layout, ldq): slabs [s0, s1), AVX2 (avx2 = 1) or
 * scalar; y[t * ldy + r] stored for r in [row0, row1) only. */
void kq4x8_rows(const struct kmat *W, int s0, int s1, int row0, int row1,
                const uint8_t *xq, size_t ldq, int n_tok, float *y, int ldy,
                int avx2);

#if KCPU_X86
#include <immintrin.h>
/* The chain tree (matmul_qa.c's header) of sixteen chains of eight rows
 * in the lanes, chains from ns on taken as +0: the rows-in-lanes AVX2
 * kernels' segment sum. */
KTARGET_AVX2 KINLINE __m256 kqa_tree8(const __m256 *C, int ns)
{
    __m256 c[16], s8[8];
    for (int i = 0; i < 16; i++)
        c[i] = i < ns ? C[i] : _mm256_setzero_ps();
    for (int i = 0; i < 8; i++)
        s8[i] = _mm256_add_ps(c[i], c[i + 8]);
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s8[0], s8[4]),
                                       _mm256_add_ps(s8[2], s8[6])),
                         _mm256_add_ps(_mm256_add_ps(s8[1], s8[5]),
                                       _mm256_add_ps(s8[3], s8[7])));
}
#endif

/* fp8 e4m3fn -> fp32 for all 256 codes (dtype.c). */
extern const float kf8e4m3_table[256];

#endif
