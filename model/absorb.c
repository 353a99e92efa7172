/*
 * absorb.c - the dense form of kv_b_proj that MLA's weight absorption
 * reads, made once at load.
 *
 * kv_b_proj holds, per head h, W_UK (qk_nope_head_dim x kv_lora_rank) and
 * W_UV (v_head_dim x kv_lora_rank) as consecutive rows. Decoding computes
 * q_c = q_nope W_UK (kmatmul_pv: rows of W_UK weighted by q_nope) and
 * W_UV times the attended latent (kmatmul), both straight from those rows.
 * F32, BF16 and F16 checkpoints are read in place (kv_bd = kv_b, no copy),
 * and so is F8 when every head's W_UK and W_UV start on a scale block and
 * the blocks are a multiple of 16 columns (DeepSeek-V3: 128 + 128 rows per
 * head, 128x128 blocks): kmatmul_pv widens the codes exactly as the copy
 * held them (same bits), W_UV goes through kmatmul's F8 kernels, and the
 * copy it replaces was 4x the bytes (61 layers of DeepSeek-V3: 4 GB of
 * memory). Decode speed came out level (synthetic DeepSeek-V3-shaped
 * model with an F8 kv_b, EPYC Zen 5: 44-46 tok/s either way, 75 MB fewer
 * bytes per token against widening the codes in the kernels). Q8_0 (what
 * mtpd quantize writes for kv_b in its q8, q4 and q4_1 formats) is read in
 * place too: kmatmul_pv widens code * scale, kmatmul reads W_UV. Other
 * F8 shapes, Q4_1 and Q4_S are dequantized once to fp32.
 */
#include <stdlib.h>

#include "model_int.h"

int absorb_init(const struct mtpd_config *c, struct layer_w *w)
{
    w->kv_bd = w->kv_b;
    w->kv_b_f32 = NULL;
    if (w->kv_b.dtype == KDT_F32 || w->kv_b.dtype == KDT_BF16 ||
        w->kv_b.dtype == KDT_F16 || w->kv_b.dtype == KDT_Q8_0)
        return 0;
    int blk = w->kv_b.blk, nope = c->qk_nope_head_dim, vd = c->v_head_dim;
    if (w->kv_b.dtype == KDT_F8_E4M3 && w->kv_b.scale && blk > 0 &&
        blk % 16 == 0 && nope % blk == 0 && vd % blk == 0)
        return 0; /* every head's rows start on a scale block */
    size_t cols = (size_t)w->kv_b.cols;
    w->kv_b_f32 = malloc(sizeof(float) * (size_t)w->kv_b.rows * cols);
    if (!w->kv_b_f32)
        return MTPD_ENOMEM;
    for (int r = 0; r < w->kv_b.rows; r++)
        kmat_row_f32(&w->kv_b, r, w->kv_b_f32 + (size_t)r * cols);
    w->kv_bd = (struct kmat){.dtype = KDT_F32, .rows = w->kv_b.rows,
                             .cols = w->kv_b.cols, .data = w->kv_b_f32};
    return 0;
}

void absorb_free(struct layer_w *w)
{
    free(w->kv_b_f32);
    w->kv_b_f32 = NULL;
    w->kv_bd.data = NULL;
}
