/*
 * absorb.c - the dense form of kv_b_proj that MLA's weight absorption
 * reads, made once at load.
 *
 * kv_b_proj holds, per head h, W_UK (qk_nope_head_dim x kv_lora_rank) and
 * W_UV (v_head_dim x kv_lora_rank) as consecutive rows. Decoding computes
 * q_c = q_nope W_UK (kmatmul_pv: rows of W_UK weighted by q_nope) and
 * W_UV times the attended latent (kmatmul), both straight from those rows.
 * F32, BF16 and F16 checkpoints are read in place (kv_bd = kv_b, no copy);
 * F8 is dequantized once to fp32, because a head's rows need not start on
 * a scale block (0.6% of DeepSeek-V3's weights, fp32).
 */
#include <stdlib.h>

#include "model_int.h"

int absorb_init(const struct mtpd_config *c, struct layer_w *w)
{
    (void)c;
    w->kv_bd = w->kv_b;
    w->kv_b_f32 = NULL;
    if (w->kv_b.dtype == KDT_F32 || w->kv_b.dtype == KDT_BF16 ||
        w->kv_b.dtype == KDT_F16)
        return 0; /* F8, Q8_0, Q4_1: kmatmul_pv reads only float rows */
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
