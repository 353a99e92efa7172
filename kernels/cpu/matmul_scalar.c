/*
 * matmul_scalar.c - portable block kernel: rows [r0, r1) x nt tokens.
 * One pass over each weight row per call, all nt tokens accumulated
 * together (fp32). F8: each blk-column block is summed, then scaled.
 */
#include "kcpu.h"

/* Weight element c of a row of dtype dt, as fp32 (F8 without its scale). */
KINLINE float w_at(enum kdtype dt, const void *row, int c)
{
    switch (dt) {
    case KDT_F32: return ((const float *)row)[c];
    case KDT_BF16: return kbf16_to_f32(((const uint16_t *)row)[c]);
    case KDT_F16: return kf16_to_f32(((const uint16_t *)row)[c]);
    default: return kf8e4m3_table[((const uint8_t *)row)[c]];
    }
}

KINLINE void seg_dot(enum kdtype dt, const void *row, const float *x,
                     int ldx, int nt, int c0, int c1, float *acc)
{
    KUNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = 0.0f;
    for (int c = c0; c < c1; c++) {
        float w = w_at(dt, row, c);
        KUNROLL
        for (int t = 0; t < nt; t++)
            acc[t] += w * x[(size_t)t * ldx + c];
    }
}

KINLINE void block_dt(enum kdtype dt, const struct kmat *W, int r0, int r1,
                      const float *x, int ldx, float *y, int ldy, int nt)
{
    size_t row_bytes = (size_t)W->cols * kdtype_size(dt);
    for (int r = r0; r < r1; r++) {
        const void *row = (const char *)W->data + (size_t)r * row_bytes;
        float acc[KMM_NT] = {0}, tot[KMM_NT] = {0};
        if (dt != KDT_F8_E4M3) {
            seg_dot(dt, row, x, ldx, nt, 0, W->cols, tot);
        } else {
            int blk = W->blk, nb = (W->cols + blk - 1) / blk;
            const float *s = W->scale + (size_t)(r / blk) * nb;
            KUNROLL
            for (int t = 0; t < nt; t++)
                tot[t] = 0.0f;
            for (int b = 0; b < nb; b++) {
                int c1 = (b + 1) * blk < W->cols ? (b + 1) * blk : W->cols;
                seg_dot(dt, row, x, ldx, nt, b * blk, c1, acc);
                KUNROLL
                for (int t = 0; t < nt; t++)
                    tot[t] += acc[t] * s[b];
            }
        }
        KUNROLL
        for (int t = 0; t < nt; t++)
            y[(size_t)t * ldy + r] = tot[t];
    }
}

void kmm_block_scalar(const struct kmat *W, int r0, int r1, const float *x,
                      int ldx, float *y, int ldy, int nt)
{
    switch (W->dtype) {
    case KDT_F32: block_dt(KDT_F32, W, r0, r1, x, ldx, y, ldy, nt); break;
    case KDT_BF16: block_dt(KDT_BF16, W, r0, r1, x, ldx, y, ldy, nt); break;
    case KDT_F16: block_dt(KDT_F16, W, r0, r1, x, ldx, y, ldy, nt); break;
    default: block_dt(KDT_F8_E4M3, W, r0, r1, x, ldx, y, ldy, nt); break;
    }
}
