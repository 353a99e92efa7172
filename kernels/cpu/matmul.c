/*
 * matmul.c - kmatmul / kmatmul_rows / kmat_row_f32: argument checks,
 * tiling and the split across the thread pool. The arithmetic lives in the
 * per-ISA block kernels (matmul_scalar.c, matmul_avx2.c, matmul_avx512.c).
 *
 * Decode (n_tok <= KMM_NT): each part streams its weight rows from memory
 * once, every row dotted with all tokens from registers. Larger n_tok:
 * each part walks its rows in tiles of about KMM_TILE_BYTES of weights,
 * and runs every KMM_NT-token block over a tile while it is in L2, so
 * weights still come from DRAM once.
 */
#include "kcpu.h"

#define KMM_TILE_BYTES (256 * 1024)
#define KMM_ROW_ALIGN 16 /* parts start on multiples of this many rows */

struct mm_job {
    const struct kmat *W;
    int row0, row1;
    const float *x;
    int ldx;
    float *y;
    int ldy;
    int n_tok;
    kmm_block_fn fn;
};

static kmm_block_fn block_fn(void)
{
    switch (kisa_active()) {
#if KCPU_X86
    case KISA_AVX512: return kmm_block_avx512;
    case KISA_AVX2: return kmm_block_avx2;
#endif
    default: return kmm_block_scalar;
    }
}

/* Rows [r0, r1) for all tokens of the job, tiled as described above. */
static void mm_range(const struct mm_job *j, int r0, int r1)
{
    if (j->n_tok <= KMM_NT) {
        j->fn(j->W, r0, r1, j->x, j->ldx, j->y, j->ldy, j->n_tok);
        return;
    }
    size_t row_bytes = (size_t)j->W->cols * kdtype_size(j->W->dtype);
    int tile = (int)(KMM_TILE_BYTES / row_bytes);
    tile = tile < 2 ? 2 : tile & ~1;
    for (int r = r0; r < r1; r += tile) {
        int re = r1 - r < tile ? r1 : r + tile;
        for (int t = 0; t < j->n_tok; t += KMM_NT) {
            int nt = j->n_tok - t < KMM_NT ? j->n_tok - t : KMM_NT;
            j->fn(j->W, r, re, j->x + (size_t)t * j->ldx, j->ldx,
                  j->y + (size_t)t * j->ldy, j->ldy, nt);
        }
    }
}

/* Part `part` of n_parts takes a contiguous, KMM_ROW_ALIGN-aligned share. */
static void mm_part(void *arg, int part, int n_parts)
{
    const struct mm_job *j = arg;
    int rows = j->row1 - j->row0;
    long chunks = (rows + KMM_ROW_ALIGN - 1) / KMM_ROW_ALIGN;
    int c0 = (int)(chunks * part / n_parts);
    int c1 = (int)(chunks * (part + 1) / n_parts);
    int r0 = j->row0 + c0 * KMM_ROW_ALIGN;
    int r1 = j->row0 + c1 * KMM_ROW_ALIGN;
    if (r1 > j->row1)
        r1 = j->row1;
    if (r0 < r1)
        mm_range(j, r0, r1);
}

static int kmat_check(const struct kmat *W)
{
    if (W == NULL || W->data == NULL || W->rows <= 0 || W->cols <= 0 ||
        (int)W->dtype < 0 || W->dtype >= KDT_COUNT)
        return MTPD_K_EINVAL;
    if (W->dtype == KDT_F8_E4M3 && (W->scale == NULL || W->blk <= 0))
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

    struct mm_job j = {W, row0, row1, x, ldx, y, ldy, n_tok, block_fn()};
    int chunks = (row1 - row0 + KMM_ROW_ALIGN - 1) / KMM_ROW_ALIGN;
    int parts = kpool_size(p);
    if (parts > chunks)
        parts = chunks;
    kpool_run(p, mm_part, &j, parts);
    return MTPD_K_OK;
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
    const char *row = (const char *)W->data + (size_t)r * n *
                                                  kdtype_size(W->dtype);
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
    default: return MTPD_K_EINVAL;
    }
    return MTPD_K_OK;
}
