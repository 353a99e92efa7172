/*
 * matmul.c - kmatmul / kmatmul_rows / kmat_row_f32: argument checks,
 * tiling and the split across the thread pool. The arithmetic lives in the
 * per-ISA block kernels (matmul_scalar.c, matmul_avx2.c, matmul_avx512.c).
 *
 * Each part (a contiguous row range) walks its rows in tiles of about
 * KMM_TILE_BYTES of weights; per tile, for each block of <= KMM_NT tokens,
 * it runs the kernel over column chunks small enough that the chunk of x
 * (nt x chunk fp32) stays in L1. So every weight byte comes from DRAM once
 * per call (later token blocks find the tile in L2), x is read from L1,
 * and for decode (n_tok <= KMM_NT) weights simply stream.
 *
 * Batch invariance (kcpu.h): a row's result depends only on W, the row
 * and its x, never on n_tok, the row range or the pool size. Threads split
 * output rows only (never columns); chunks are whole summation segments;
 * Q8_0 / Q4_1 quantize x per row to int8 first (matmul_qa.c), a function
 * of that row alone;
 * the kernel for a dtype and ISA is chosen from W alone (BF16 on AVX-512
 * always packs x, for AMX tiles (matmul_amx.c), as bf16 (kmat.act_bf16,
 * matmul_bf16dp.c) or in pairs, and on AVX2 in pairs
 * (matmul_bf16p_avx2.c); F8 with 64-column scale blocks on VBMI packs it
 * for matmul_f8lut.c; if the scratch cannot be had the call fails with
 * MTPD_K_ENOMEM rather than fall back to a kernel that adds
 * differently).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kcpu.h"

#define KMM_TILE_BYTES (256 * 1024) /* weight tile reused from L2 */
#define KMM_X_BYTES (32 * 1024)     /* x chunk kept in L1 */
/* Calls of at most KMM_XS_MAX_TOK (one token block: verify passes, small
 * batches, not prefill) tokens on weights streamed from memory
 * (not kmat.resident) take whole rows when x fits in 3/8 of the L2
 * (kisa_l2_bytes; 192 KiB when unknown): x is read from L2 instead of L1,
 * and each row stays one linear stream (in kc-column chunks a tile's rows
 * were read piecewise, 2-4 tokens cost 1.4-3x one on 7168-column rows).
 * Chunking never changes a sum (kcpu.h), so the cache size may decide.
 * bench_kernels, medians of interleaved runs, EPYC Zen 5 (1 MiB L2):
 * BF16 2048x7168 at 2 / 3 / 4 tokens 1.53x / 1.18x / 1.22x faster
 * (AVX2: 1.10x / 2.2x / 2.2x), 1024x18432 at 2 tokens 1.75x, at 3-4 with
 * 3/8 MiB against 192 KiB AVX2 2.6x, AVX-512 level; Q4_S 4 tokens
 * 1.3x; at 5-8 tokens BF16 0.9-1.07x (AVX2 1.4-1.7x), Q4_S 1.2-1.3x. */
#ifndef KMM_XS_MAX_TOK
#define KMM_XS_MAX_TOK 8
#endif

static size_t xs_bytes(void)
{
    size_t l2 = kisa_l2_bytes();
    return l2 ? l2 / 8 * 3 : 192 * 1024;
}
#define KMM_ROW_ALIGN 16            /* parts start on multiples of this */
/* BF16 on AVX-512 packs x in pairs (matmul_bf16p.c) from this many
 * columns on; narrower matrices keep the unpacked kernel (tests exercise
 * both). A property of W only: the row range must not pick the kernel. */
#define KMM_PAIR_MIN_COLS 32
/* Q8_0 / Q4_1 calls with at least this many tokens use AMX where
 * kisa_amx_int8() (the tile kernel gives the vector kernel's bits, so the
 * token count may choose). Below, the VNNI kernel is faster: AMX's float
 * epilogue costs about what VNNI spends on 7 tokens (Q8_0; Q4_1 also
 * widens nibbles), measured in bench/results/bench_quant_kernels-2026-12-02b.md. */
#define KQA_AMX_MIN_TOK_Q8 8
#define KQA_AMX_MIN_TOK_Q4 16
/* kisa_row_stream() applies to calls of at most this many tokens, whose
 * weights stream from memory once (the kernels that measured faster with
 * it: kernels.h); longer calls (prefill) reuse each tile from L2 for many
 * token blocks and keep rows side by side, which share the loads of x
 * (Q8_0 prefill at one row: 0.66x). */
#define KMM_ROW1_MAX_TOK 2
/* Q8_0 / Q4_1 calls of at least this many tokens use transposed blocks
 * on VNNI (and on AVX2 for long rows): same bits; matmul_qa.c. */
#ifndef KQA_XT_MIN_TOK
#define KQA_XT_MIN_TOK 2
#endif
/* Rows of at most this many columns (16 blocks, one group) pay the
 * transpose for few tokens: rows side by side were faster there
 * (cache-resident, EPYC Zen 5, 2 threads, 12-block rows: Q8_0 1.45x at
 * 2 tokens, 1.14x at 3, level at 4; Q4_1 1.35x, 1.15x; 5-block rows
 * 1.2-1.7x), so VNNI transposes them from 4 tokens; AVX2 (8-block
 * groups) never does (Q4_1 1.1-1.4x at 2..32 tokens) and transposes
 * longer rows from 2 tokens (Q8_0, bench_kernels, 2 threads: 1.3-2x at
 * 2-3 tokens, 1.24-1.84x at 4, 1.4x at 64). */
#define KQA_XT_SHORT_COLS 512
static int xt_min_tok(int cols)
{
    return cols <= KQA_XT_SHORT_COLS ? 4 : KQA_XT_MIN_TOK;
}
#if KCPU_X86
/* Q8_0 / Q4_1 calls take the rows-in-lanes kernel on VNNI
 * (matmul_qa_rowlanes.c) from this many tokens on: its transpose of the
 * weights pays off sooner the shorter the rows. Measured against the
 * transposed blocks (bench_kernels, EPYC Zen 5, 2 threads, DRAM-resident
 * weights): 5 blocks a row ahead from 4 tokens (1.2x; 3.5x at 32), 12
 * blocks from 16 (1.1-1.2x; 1.7x at 32, 2.4x at 256). Longer rows (a
 * slab per segment, two per pass): 1024 and 3072 columns ahead from 16-24
 * tokens (0.73x the time at 24, 0.63-0.70x at 40), 2048 columns from
 * 24-32 (0.81-0.88x at 32-40, 1.19x at 24). */
/* The same for the AVX2 version (against its block kernel, or for Q4_1
 * the transposed blocks of rows over 16 blocks; same machine,
 * cache-resident). Q4_1: 5 blocks ~4x from 4 tokens, 12 blocks level at 4
 * and 1.55x at 8, 2.2x at 64; 32 blocks 0.85x at 8, 1.07x at 16, 1.23x
 * at 32. Q8_0: 5 blocks 1.4x at 4 tokens (0.75x at 2), 12 blocks level at
 * 4, 1.5x at 8, 2.6x at 32; 32 blocks 0.85x at 4, 1.3x at 8, 1.7x at
 * 16. Longer rows, a slab per segment (DRAM-resident, 2048 and 3072
 * columns): Q8_0 0.73-0.99x the speed at 8 tokens, 1.2-1.5x at 16,
 * 1.4-2x at 32-64; Q4_1 0.8-1.0x at 16, 1.1-1.3x at 32-64. */
static int rl2_min_tok(enum kdtype dt, int cols)
{
#ifdef KQA_RL2_MIN_TOK
    (void)dt, (void)cols;
    return KQA_RL2_MIN_TOK; /* a fixed threshold, for measurements */
#else
    int nb = cols / KQ_BLK;
    if (dt == KDT_Q8_0) /* against rows side by side (no AVX2 transpose) */
        return nb <= 8 ? 4 : nb <= 32 ? 8 : 16;
    return nb <= 8 ? 4 : nb <= 16 ? 8 : nb <= 32 ? 16 : 32;
#endif
}

#ifndef KQA_RL_LONG_MIN_TOK
#define KQA_RL_LONG_MIN_TOK 24
#endif
static int rl_min_tok(int cols)
{
#ifdef KQA_RL_MIN_TOK
    (void)cols;
    return KQA_RL_MIN_TOK; /* a fixed threshold, for measurements */
#else
    int nb = cols / KQ_BLK;
    return nb <= 8 ? 4 : nb <= 16 ? 16 : KQA_RL_LONG_MIN_TOK;
#endif
}
#endif


struct mm_job {
    const struct kmat *W;
    int row0, row1;
    const float *x;
    int ldx;
    float *y;
    int ldy;
    int n_tok;
    kmm_block_fn fn;
    const uint8_t *xq; /* integer kernels: quantized x */
    size_t ldq;
    const uint8_t *xb; /* AMX: x as B tiles, KQA_AMX_NT tokens per ldb */
    size_t ldb;
    const uint8_t *xt; /* transposed blocks: kqa_xt's codes, or NULL */
    size_t ldt;
    const uint8_t *xr; /* VNNI rows in lanes: kqa_rl_pack's x, or NULL */
    const struct kmat *q4s; /* a Q4_S matrix, else NULL */
    int q4x;                /* 1: mm_range expands q4s's scales for the
                             * kernel (W: q4s's shape as Q4_1) */
};

/* Q4_S rows expanded to Q4_1 scales at a time (KQ4S_ROWS, fewer when
 * rows are long: the fp16 scales and mins fill at most KQ4S_EX entries
 * of a stack buffer). At 4 bytes a block against the rows' 16, the
 * expansion stays in L1 next to the rows, and 16 rows are one slab of the
 * rows-in-lanes kernels. */
#define KQ4S_ROWS 16
#define KQ4S_EX (16 * 1024)

static int q4s_group(const struct kmat *S, int most)
{
    int nb = S->cols / KQ_BLK, g = KQ4S_EX / (2 * nb);
    return g < most ? g : most;
}

/* Rows [r, r + n) of j->q4s as a Q4_1 matrix whose row 0 is row r (rows
 * past n are left for the prefetch's bound, without scales); ex holds
 * KQ4S_EX entries. */
static const struct kmat *q4s_rows(const struct mm_job *j, int r, int n,
                                   uint16_t *ex, struct kmat *v)
{
    const struct kmat *S = j->q4s;
    size_t nb = (size_t)(S->cols / KQ_BLK);
    kq4s_expand(S, r, n, ex, ex + (size_t)n * nb);
    *v = (struct kmat){.dtype = KDT_Q4_1, .cols = S->cols,
                       .resident = S->resident};
    v->rows = S->rows - r;
    v->data = (const uint8_t *)S->data + (size_t)r * (S->cols / 2);
    v->qd = ex;
    v->qm = ex + (size_t)n * nb;
    return v;
}

static kmm_block_fn block_fn(const struct kmat *W)
{
    if (W->dtype == KDT_Q8_0 || W->dtype == KDT_Q4_1) {
        switch (kisa_active()) {
#if KCPU_X86
        case KISA_AVX512:
            return kisa_has_vnni() ? kmm_block_qa_vnni : kmm_block_qa_avx2;
        case KISA_AVX2: return kmm_block_qa_avx2;
#endif
        default: return kmm_block_qa_scalar;
        }
    }
    switch (kisa_active()) {
#if KCPU_X86
    case KISA_AVX512: return kmm_block_avx512;
    case KISA_AVX2: return kmm_block_avx2;
#endif
    default: return kmm_block_scalar;
    }
}

/* Columns per chunk for a block of nt tokens of a call of n_tok: x chunk
 * in L1, whole summation segments (kcpu.h), so the chunking never changes
 * a sum's order; whole rows for short calls on streamed weights (above).
 * The integer kernels read 1 + 12 / 32 bytes of x per column, the others
 * 4. */
static int chunk_cols(const struct kmat *W, int nt, int n_tok)
{
    int seg = kmm_kseg(W);
    int q = W->dtype == KDT_Q8_0 || W->dtype == KDT_Q4_1 ||
            W->dtype == KDT_Q4_S;
    size_t xb = q ? (size_t)W->cols * 11 / 8 * nt : (size_t)W->cols * 4 * nt;
    if (!W->resident && n_tok <= KMM_XS_MAX_TOK && xb <= xs_bytes())
        return W->cols; /* streamed weights, few tokens: whole rows */
    int kc = q ? KMM_X_BYTES * 8 / (11 * nt) : KMM_X_BYTES / (4 * nt);
    kc = kc < seg ? seg : kc - kc % seg;
    if (W->cols <= kc + kc / 4)
        kc = W->cols; /* no small last chunk */
    return kc;
}

/* Rows [r0, r1) for all tokens of the job, tiled as described above. */
static void mm_range(const struct mm_job *j, int r0, int r1)
{
    const struct kmat *W = j->W;
    size_t row_bytes = kmat_row_bytes(W->dtype, W->cols);
    int tile = (int)(KMM_TILE_BYTES / row_bytes) & ~3;
    if (tile < 4)
        tile = 4;
    int n_tb = (j->n_tok + KMM_NT - 1) / KMM_NT; /* equal token blocks */
    int tb = (j->n_tok + n_tb - 1) / n_tb;
    if (j->xb != NULL) { /* AMX: 16 rows x 16 tokens per tile product */
        tile = tile < 16 ? 16 : tile & ~15;
        tb = KQA_AMX_NT;
    }
    struct kmm_blk b = {.W = W, .ldx = j->ldx, .ldy = j->ldy,
                        .kseg = kmm_kseg(W), .row1 = !W->resident && kisa_row_stream() &&
                                  j->n_tok <= KMM_ROW1_MAX_TOK};

    struct kmat v;
    uint16_t ex[j->q4x ? KQ4S_EX : 1];
    if (j->q4x)
        tile = q4s_group(j->q4s, KQ4S_ROWS);
    for (int r = r0; r < r1; r += tile) {
        b.r0 = r;
        b.r1 = r1 - r < tile ? r1 : r + tile;
        size_t yoff = 0;
        if (j->q4x) { /* these rows as Q4_1, rows 0.. of b.W */
            b.W = q4s_rows(j, r, b.r1 - r, ex, &v);
            b.r0 = 0, b.r1 -= r, yoff = (size_t)r;
        }
        for (int t = 0; t < j->n_tok; t += tb) {
            b.nt = j->n_tok - t < tb ? j->n_tok - t : tb;
            b.x = j->x + (size_t)t * j->ldx;
            b.xq = j->xq ? j->xq + (size_t)t * j->ldq : NULL;
            b.ldq = j->ldq;
            b.xb = j->xb ? j->xb + (size_t)(t / KQA_AMX_NT) * j->ldb : NULL;
            b.xt = j->xt ? j->xt + (size_t)t * j->ldt : NULL;
            b.ldt = j->ldt;
            b.y = j->y + (size_t)t * j->ldy + yoff;
            int kc = chunk_cols(W, b.nt, j->n_tok);
            for (int c = 0; c < W->cols; c += kc) {
                b.c0 = c;
                b.c1 = W->cols - c < kc ? W->cols : c + kc;
                b.accum = c > 0;
                j->fn(&b);
            }
        }
    }
}

/*
 * Per-thread scratch for an aligned copy of x: unaligned 64-byte loads
 * split cache lines and cost the kernels ~30%. Grows on demand (so the
 * decode loop allocates only on its first calls), freed at thread exit.
 */
struct scratch {
    void *p;
    size_t cap;
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_free(void *arg)
{
    struct scratch *s = arg;
    free(s->p);
    free(s);
}

static void scratch_init(void)
{
    scratch_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* A 64-byte aligned buffer of >= bytes for this thread, or NULL. */
static void *scratch_get(size_t bytes)
{
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_ok)
        return NULL;
    struct scratch *s = pthread_getspecific(scratch_key);
    if (s == NULL) {
        if ((s = calloc(1, sizeof *s)) == NULL)
            return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < bytes) {
        size_t cap = (bytes + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(64, cap);
        if (p == NULL)
            return NULL;
        free(s->p);
        s->p = p;
        s->cap = cap;
    }
    return s->p;
}

/* Part `part` of n_parts takes a contiguous, KMM_ROW_ALIGN-aligned share
 * (kpool_share). */
static void part_rows(const struct mm_job *j, int part, int n_parts,
                      int *r0, int *r1)
{
    int rows = j->row1 - j->row0;
    int chunks = (rows + KMM_ROW_ALIGN - 1) / KMM_ROW_ALIGN, c0, c1;
    kpool_share(chunks, part, n_parts, &c0, &c1);
    *r0 = j->row0 + c0 * KMM_ROW_ALIGN;
    *r1 = j->row0 + c1 * KMM_ROW_ALIGN;
    if (*r1 > j->row1)
        *r1 = j->row1;
}

static void mm_part(void *arg, int part, int n_parts)
{
    const struct mm_job *j = arg;
    int r0, r1;
    part_rows(j, part, n_parts, &r0, &r1);
    if (r0 < r1)
        mm_range(j, r0, r1);
}

#if KCPU_X86
/* Q8_0 / Q4_1 rows, many tokens: sixteen rows per vector (VNNI,
 * kqa_rowlanes, x packed by kqa_rl_pack) or eight (kqa_rowlanes_avx2),
 * a slab per summation segment. Q4_S: groups of rows with their scales
 * expanded (q4s_rows), KQA_RL_ROWS at a time for the VNNI kernel's
 * passes. */
static void rl_rows(const struct mm_job *j, int part, int n_parts, int vnni)
{
    int r0, r1;
    part_rows(j, part, n_parts, &r0, &r1);
    if (j->q4s == NULL) {
        if (r0 >= r1)
            return;
        if (vnni)
            kqa_rowlanes(j->W, r0, r1, j->xr, j->n_tok, j->y, j->ldy);
        else
            kqa_rowlanes_avx2(j->W, r0, r1, j->xq, j->ldq, j->n_tok, j->y,
                              j->ldy);
        return;
    }
    uint16_t ex[KQ4S_EX];
    struct kmat v;
    int g = q4s_group(j->q4s, vnni ? KQA_RL_ROWS : KQ4S_ROWS);
    for (int r = r0; r < r1; r += g) {
        int n = r1 - r < g ? r1 - r : g;
        const struct kmat *V = q4s_rows(j, r, n, ex, &v);
        if (vnni)
            kqa_rowlanes(V, 0, n, j->xr, j->n_tok, j->y + r, j->ldy);
        else
            kqa_rowlanes_avx2(V, 0, n, j->xq, j->ldq, j->n_tok, j->y + r,
                              j->ldy);
    }
}

static void rl_part(void *arg, int part, int n_parts)
{
    rl_rows(arg, part, n_parts, 1);
}

static void rl2_part(void *arg, int part, int n_parts)
{
    rl_rows(arg, part, n_parts, 0);
}
#endif

/* Q4_X8 (matmul_q4x8.c): x quantized once, slabs split across the pool. */
struct x8_job {
    const struct kmat *W;
    int row0, row1, n_tok, ldy, avx2;
    const uint8_t *xq;
    size_t ldq;
    float *y;
};

static void x8_part(void *arg, int part, int n_parts)
{
    const struct x8_job *j = arg;
    int sa = j->row0 / 8, sb = (j->row1 + 7) / 8, c0, c1;
    kpool_share(sb - sa, part, n_parts, &c0, &c1);
    if (c0 < c1)
        kq4x8_rows(j->W, sa + c0, sa + c1, j->row0, j->row1, j->xq, j->ldq,
                   j->n_tok, j->y, j->ldy, j->avx2);
}

static int x8_matmul(struct kpool *p, const struct kmat *W, int row0,
                     int row1, const float *x, int ldx, float *y, int ldy,
                     int n_tok)
{
    size_t ldq = KQA_LDQ(W->cols);
    uint8_t *xq = scratch_get((size_t)n_tok * ldq);
    if (xq == NULL)
        return MTPD_K_ENOMEM;
    kqa_quantize(KDT_Q4_1, x, ldx, W->cols, n_tok, xq, ldq);
    struct x8_job j = {W, row0, row1, n_tok, ldy,
                       kisa_active() >= KISA_AVX2, xq, ldq, y};
    int slabs = (row1 + 7) / 8 - row0 / 8;
    kpool_run(p, x8_part, &j, kpool_parts(p, slabs));
    return MTPD_K_OK;
}

static int kmat_check(const struct kmat *W)
{
    if (W == NULL || W->data == NULL || W->rows <= 0 || W->cols <= 0 ||
        (int)W->dtype < 0 || W->dtype >= KDT_COUNT)
        return MTPD_K_EINVAL;
    if (W->dtype == KDT_F8_E4M3 && (W->scale == NULL || W->blk <= 0))
        return MTPD_K_EINVAL;
    if ((W->dtype == KDT_Q8_0 || W->dtype == KDT_Q4_1) &&
        (W->qd == NULL || W->cols % KQ_BLK != 0))
        return MTPD_K_EINVAL;
    if (W->dtype == KDT_Q4_1 && W->qm == NULL)
        return MTPD_K_EINVAL;
    if (W->dtype == KDT_Q4_S &&
        (W->qsc == NULL || W->qmn == NULL || W->qexp == NULL ||
         W->cols % KQ_BLK != 0 || W->cols / KQ_BLK > KQ4S_EX / 2))
        return MTPD_K_EINVAL;
    if (W->dtype == KDT_Q4_X8 &&
        (W->cols % KQ_BLK != 0 || ((uintptr_t)W->data & 31) ||
         (W->qsc ? !W->qmn || !W->qexp : !W->qd || !W->qm)))
        return MTPD_K_EINVAL;
    return MTPD_K_OK;
}

/*
 * y[t * ldy + o] for o in [row0, row1): y is indexed by the absolute row,
 * like kmatmul, so ldy must be >= row1 when n_tok > 1.
 */
int kmatmul_rows(struct kpool *p, const struct kmat *W, int row0, int row1,
                 const float *x, int ldx, float *y, int ldy, int n_tok)
{
    if (kmat_check(W) != 0 || x == NULL || y == NULL || n_tok < 0 ||
        row0 < 0 || row1 > W->rows || row0 > row1)
        return MTPD_K_EINVAL;
    if (n_tok > 1 && (ldx < W->cols || ldy < row1))
        return MTPD_K_EINVAL;
    if (n_tok == 0 || row0 == row1)
        return MTPD_K_OK;
    if (W->dtype == KDT_Q4_X8)
        return x8_matmul(p, W, row0, row1, x, ldx, y, ldy, n_tok);
    /* Q4_S: Q4_1's kernels. The AVX2 / VNNI block kernels read its scales
     * in place; the scalar and AMX ones (mm_range) and rows in lanes run on
     * a few rows at a time with the scales expanded (exact, q4s_rows). The
     * decisions below see W as Q4_1. */
    const struct kmat *q4s = NULL;
    struct kmat q4v;
    if (W->dtype == KDT_Q4_S) {
        q4s = W;
        q4v = (struct kmat){.dtype = KDT_Q4_1, .rows = W->rows,
                            .cols = W->cols, .data = W->data,
                            .resident = W->resident};
        W = &q4v;
    }

    kmm_block_fn fn = block_fn(W);
    int packed = 0;
    kpool_fn rl = NULL; /* the rows-in-lanes part function, when taken */
    uint8_t *xq = NULL, *xb = NULL, *xt = NULL, *xr = NULL;
    size_t ldq = 0, ldb = 0, ldt = 0;
    if (W->dtype == KDT_Q8_0 || W->dtype == KDT_Q4_1) {
        int vnni = 0, avx2 = 0; /* which vector kernel (x86 only) */
#if KCPU_X86
        vnni = fn == kmm_block_qa_vnni;
        avx2 = fn == kmm_block_qa_avx2;
#endif
        int amx = n_tok >= (W->dtype == KDT_Q8_0 ? KQA_AMX_MIN_TOK_Q8
                                                 : KQA_AMX_MIN_TOK_Q4) &&
                  vnni && kisa_amx_int8();
        /* short rows, many tokens: rows in the lanes (no horizontal
         * sums at all; matmul_qa_rowlanes.c) */
#if KCPU_X86
        if (!amx && vnni && n_tok >= rl_min_tok(W->cols))
            rl = rl_part;
        if (avx2 && n_tok >= rl2_min_tok(W->dtype, W->cols))
            rl = rl2_part;
#endif
        /* several tokens: transposed blocks (no horizontal sums per
         * row and token; matmul_qa.c) */
        int tr = !amx && !rl && n_tok >= KQA_XT_MIN_TOK &&
                 ((vnni && n_tok >= xt_min_tok(W->cols)) ||
                  (avx2 && W->cols > KQA_XT_SHORT_COLS));
        ldq = KQA_LDQ(W->cols);
        ldb = amx ? KQA_AMX_LDB(W->cols) : 0;
        ldt = tr ? KQA_LDT(W->cols) : 0;
        size_t nq = (size_t)n_tok * ldq;
        size_t nb = (size_t)(n_tok + KQA_AMX_NT - 1) / KQA_AMX_NT * ldb;
        size_t nr = 0;
#if KCPU_X86
        if (rl == rl_part)
            nr = KQA_RL_XBYTES(W->cols, n_tok);
#endif
        xq = scratch_get(nq + nb + (size_t)n_tok * ldt + nr);
        if (xq == NULL)
            return MTPD_K_ENOMEM;
        kqa_quantize(W->dtype, x, ldx, W->cols, n_tok, xq, ldq);
#if KCPU_X86
        if (nr) {
            xr = xq + nq + nb + (size_t)n_tok * ldt;
            kqa_rl_pack(W->dtype, W->cols, xq, ldq, n_tok, xr);
        }
#endif
        if (tr) {
            xt = xq + nq + nb;
            kqa_xt(W->dtype, W->cols, xq, ldq, n_tok, xt);
        }
        if (amx) { /* same bits as the vector kernel (matmul_qa_amx.c) */
            xb = xq + nq;
            kqa_amx_pack(W->dtype, W->cols, xq, ldq, n_tok, xb);
            fn = kmm_block_qa_amx;
        }
        packed = 1; /* x itself is not read */
    }
#if KCPU_X86
    if (fn == kmm_block_avx512 && kamx_fits(W) && kisa_amx_active()) {
        /* AMX for every row count of W, or never (matmul_amx.c) */
        uint32_t *xp = scratch_get(kamx_pack_bytes(W, n_tok));
        if (xp == NULL)
            return MTPD_K_ENOMEM;
        kamx_pack(W, x, ldx, n_tok, xp);
        kamx_matmul(p, W, row0, row1, xp, n_tok, y, ldy);
        return MTPD_K_OK;
    }
    /* kernels that read x in a layout of their own: which one (a property
     * of W and the ISA settings), then one scratch and one pack. No
     * fallback without the scratch: another kernel would add in another
     * order. */
    kmm_block_fn pfn = NULL;
    kmm_pack_fn pack = NULL;
    int ld = 0;           /* packed row, elements */
    size_t es = sizeof(float);
    if (fn == kmm_block_avx512 && kmat_act_bf16(W)) { /* x as bf16 */
        pfn = kmm_block_bf16dp, pack = kmm_pack_bf16;
        ld = (W->cols + 31) & ~31, es = sizeof(uint16_t);
    } else if (fn == kmm_block_avx512 && kf8l_fits(W)) { /* F8 table */
        pfn = kmm_block_f8lut, pack = kf8l_pack, ld = kf8l_ldp(W->cols);
    } else if (fn == kmm_block_avx512 && W->dtype == KDT_BF16 &&
               W->cols >= KMM_PAIR_MIN_COLS) { /* pairs */
        pfn = kmm_block_avx512_bf16p, pack = kmm_pack_pairs_avx512;
        ld = (W->cols + 31) & ~31;
    } else if (fn == kmm_block_avx2 && W->dtype == KDT_BF16) { /* pairs */
        pfn = kmm_block_avx2_bf16p, pack = kmm_pack_pairs_avx2;
        ld = (W->cols + 15) & ~15;
    }
    if (pfn != NULL) {
        void *xp = scratch_get((size_t)n_tok * (size_t)ld * es);
        if (xp == NULL)
            return MTPD_K_ENOMEM;
        pack(x, ldx, W->cols, n_tok, xp, ld);
        x = xp; /* kmm_blk.x: fp32 slots (bf16: two per slot) */
        ldx = (int)((size_t)ld * es / sizeof(float));
        fn = pfn;
        packed = 1;
    }
#endif
    if (!packed && (((uintptr_t)x & 63) || (n_tok > 1 && ldx % 16)) &&
        row1 - row0 >= 32) { /* copy x to aligned rows, if we can */
        int ld = (W->cols + 15) & ~15;
        float *xa = scratch_get((size_t)n_tok * ld * sizeof(float));
        if (xa != NULL) {
            for (int t = 0; t < n_tok; t++)
                memcpy(xa + (size_t)t * ld, x + (size_t)t * ldx,
                       (size_t)W->cols * sizeof(float));
            x = xa;
            ldx = ld;
        }
    }
    struct mm_job j = {W, row0, row1, x, ldx, y, ldy, n_tok, fn, xq, ldq,
                       xb, ldb, xt, ldt, xr, q4s, 0};
    if (q4s != NULL) { /* the vector kernels read Q4_S in place */
        j.q4x = fn == kmm_block_qa_scalar || xb != NULL;
        if (!j.q4x)
            j.W = q4s;
    }
    int chunks = (row1 - row0 + KMM_ROW_ALIGN - 1) / KMM_ROW_ALIGN;
    int parts = kpool_parts(p, chunks);
    if (rl) {
        kpool_run(p, rl, &j, parts);
        return MTPD_K_OK;
    }
    kpool_run(p, mm_part, &j, parts);
    return MTPD_K_OK;
}

int kmat_act_bf16(const struct kmat *W)
{
#if KCPU_X86
    return W != NULL && W->act_bf16 && W->dtype == KDT_BF16 &&
           kisa_bf16_dot() && !(kamx_fits(W) && kisa_amx_active());
#else
    (void)W;
    return 0;
#endif
}

int kmatmul(struct kpool *p, const struct kmat *W, const float *x, int ldx,
            float *y, int ldy, int n_tok)
{
    if (kmat_check(W) != 0)
        return MTPD_K_EINVAL;
    return kmatmul_rows(p, W, 0, W->rows, x, ldx, y, ldy, n_tok);
}

int kmat_row_f32(const struct kmat *W, int r, float *out)
{
    if (kmat_check(W) != 0 || out == NULL || r < 0 || r >= W->rows)
        return MTPD_K_EINVAL;
    size_t n = (size_t)W->cols;
    const char *row = (const char *)W->data +
                      (size_t)r * kmat_row_bytes(W->dtype, W->cols);
    switch (W->dtype) {
    case KDT_F32:
        for (size_t i = 0; i < n; i++)
            out[i] = ((const float *)row)[i];
        break;
    case KDT_BF16:
        for (size_t i = 0; i < n; i++)
            out[i] = kbf16_to_f32(((const uint16_t *)row)[i]);
        break;
    case KDT_F16:
        for (size_t i = 0; i < n; i++)
            out[i] = kf16_to_f32(((const uint16_t *)row)[i]);
        break;
    case KDT_F8_E4M3: {
        size_t nb = (n + (size_t)W->blk - 1) / (size_t)W->blk;
        const float *s = W->scale + (size_t)(r / W->blk) * nb;
        for (size_t i = 0; i < n; i++)
            out[i] = kf8e4m3_table[((const uint8_t *)row)[i]] *
                     s[i / (size_t)W->blk];
        break;
    }
    case KDT_Q8_0:
    case KDT_Q4_1:
    case KDT_Q4_S:
    case KDT_Q4_X8:
        for (int c = 0; c < W->cols; c++)
            out[c] = kq_weight(W, r, c);
        break;
    default: return MTPD_K_EINVAL;
    }
    return MTPD_K_OK;
}
