/*
 * matmul_scalar.c - portable block kernel (see struct kmm_blk, kcpu.h).
 * One pass over each weight row segment per call, all nt tokens
 * accumulated together (fp32), one sequential chain per kseg segment
 * (kcpu.h). F8: each blk-column block is summed, then scaled.
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
    for (int t = 0; t < nt; t++)
        acc[t] = 0.0f;
    for (int c = c0; c < c1; c++) {
        float w = w_at(dt, row, c);
        for (int t = 0; t < nt; t++)
            acc[t] += w * x[(size_t)t * ldx + c];
    }
}

KINLINE void block_dt(enum kdtype dt, const struct kmm_blk *b)
{
    const struct kmat *W = b->W;
    size_t row_bytes = (size_t)W->cols * kdtype_size(dt);
    for (int r = b->r0; r < b->r1; r++) {
        const void *row = (const char *)W->data + (size_t)r * row_bytes;
        /* one sum per segment, added to y in order (kcpu.h) */
        for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
            ce = kmm_seg_end(b, cs);
            float acc[KMM_NT] = {0}, tot[KMM_NT] = {0};
            if (dt != KDT_F8_E4M3) {
                seg_dot(dt, row, b->x, b->ldx, b->nt, cs, ce, tot);
            } else {
                int blk = W->blk, nb = (W->cols + blk - 1) / blk;
                const float *s = W->scale + (size_t)(r / blk) * nb;
                for (int c = cs; c < ce; c += blk) {
                    int cb = ce - c < blk ? ce : c + blk;
                    seg_dot(dt, row, b->x, b->ldx, b->nt, c, cb, acc);
                    for (int t = 0; t < b->nt; t++)
                        tot[t] += acc[t] * s[c / blk];
                }
            }
            int add = b->accum || cs > b->c0;
            for (int t = 0; t < b->nt; t++) {
                float *yp = b->y + (size_t)t * b->ldy + r;
                *yp = add ? *yp + tot[t] : tot[t];
            }
        }
    }
}

void kmm_block_scalar(const struct kmm_blk *b)
{
    switch (b->W->dtype) {
    case KDT_F32: block_dt(KDT_F32, b); break;
    case KDT_BF16: block_dt(KDT_BF16, b); break;
    case KDT_F16: block_dt(KDT_F16, b); break;
    default: block_dt(KDT_F8_E4M3, b); break;
    }
}
