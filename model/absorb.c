/*
 * absorb.c - the MLA weight-absorption matrices, made once at load.
 *
 * kv_b_proj holds, per head h, W_UK (qk_nope_head_dim x kv_lora_rank) and
 * W_UV (v_head_dim x kv_lora_rank). Decoding multiplies q_nope by W_UK from
 * the left (q_c = W_UK^T q_nope) and the attended latent by W_UV. Both are
 * kept here as fp32 row-major matrices the matmul kernel can stream:
 *   ukt[h] = W_UK^T  (kv_lora x nope)     uv[h] = W_UV  (v x kv_lora)
 * Dequantizing once costs H * kv_lora * (nope + v) floats per layer (0.6%
 * of DeepSeek-V3's weights) and removes a per-call conversion that took a
 * fifth of a decode step.
 */
#include <stdlib.h>

#include "model_int.h"

int absorb_init(const struct mtpd_config *c, struct layer_w *w)
{
    int H = c->num_attention_heads, L = c->kv_lora_rank;
    int nope = c->qk_nope_head_dim, vd = c->v_head_dim;
    w->w_ukt = malloc(sizeof(float) * H * (size_t)L * nope);
    w->w_uv = malloc(sizeof(float) * H * (size_t)L * vd);
    float *row = malloc(sizeof(float) * L);
    if (!w->w_ukt || !w->w_uv || !row) {
        free(row);
        return MTPD_ENOMEM;
    }
    for (int h = 0; h < H; h++) {
        float *ukt = w->w_ukt + (size_t)h * L * nope;
        float *uv = w->w_uv + (size_t)h * vd * L;
        for (int d = 0; d < nope; d++) {
            kmat_row_f32(&w->kv_b, h * (nope + vd) + d, row);
            for (int j = 0; j < L; j++)
                ukt[(size_t)j * nope + d] = row[j];
        }
        for (int e = 0; e < vd; e++)
            kmat_row_f32(&w->kv_b, h * (nope + vd) + nope + e,
                         uv + (size_t)e * L);
    }
    free(row);
    return 0;
}

void absorb_free(struct layer_w *w)
{
    free(w->w_ukt);
    free(w->w_uv);
    w->w_ukt = w->w_uv = NULL;
}
