/*
 * matmul_f8lut.c - AVX-512 VBMI block kernel for F8_E4M3 weights whose
 * scale blocks are whole 64-column groups (DeepSeek's 128 x 128).
 *
 * e4m3 -> bf16 is exact, so 64 weights widen by table: two VPERMI2B look
 * up the high and the low byte of each magnitude's bf16 in 128-entry
 * tables, a VPTERNLOG puts the sign back, two unpacks make 64 bf16 words
 * and four shift/and ops the fp32 values (11 ops per 64 weights; the
 * e4m3 -> f16 -> fp32 path of matmul_avx512.c takes 20). The widened
 * vectors hold the columns in an order of their own (see kf8l_pack), and
 * x is packed in that order, zero past cols.
 *
 * Sums: per row and token, one FMA chain per lane over each scale block
 * in column-group order (the four vectors of a group in order), then the
 * block sum times its scale is FMA'd into a running total; the lanes are
 * summed by reduce4 / hsum1 per kseg segment as elsewhere (kcpu.h). The
 * same for every NR x NT, so rows are batch invariant. matmul.c uses it
 * for every row count of a matrix it fits (kf8l_fits: a property of W).
 */
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include "avx512_sum.h"

#define KTARGET_VBMI                                                         \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,"  \
                          "f16c")))
#define NRMAX 4
#define NTMAX 4

int kf8l_fits(const struct kmat *W)
{
    return W->dtype == KDT_F8_E4M3 && W->blk % 64 == 0 && kisa_has_vbmi();
}

int kf8l_ldp(int cols)
{
    return (cols + 63) & ~63;
}

/* Column (0..63) of a 64-column group held by lane d of widened vector v
 * (0..3): unpacklo/hi split each 16-byte lane L into its low and high 8
 * bytes, the shift/and split words into even and odd. */
static inline int lane_col(int v, int d)
{
    return 16 * (d / 4) + 8 * (v / 2) + 2 * (d % 4) + (v & 1);
}

/* x [n_tok, ldx] -> xp [n_tok, ldp]: per 64 columns the four vectors'
 * columns in lane order, zero past cols. */
KTARGET_VBMI void kf8l_pack(const float *x, int ldx, int cols, int n_tok,
                            void *xpv, int ldp)
{
    float *xp = xpv;
    int idx[64];
    for (int v = 0; v < 4; v++)
        for (int d = 0; d < 16; d++)
            idx[v * 16 + d] = lane_col(v, d);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        float *pr = xp + (size_t)t * ldp;
        for (int c = 0; c < ldp; c += 64)
            for (int i = 0; i < 64; i++)
                pr[c + i] = c + idx[i] < cols ? xr[c + idx[i]] : 0.0f;
    }
}

struct lut {
    __m512i hi0, hi1, lo0, lo1;
};

/* bf16 of every e4m3 magnitude, high and low bytes (kf8e4m3_table). */
KTARGET_VBMI static void lut_init(struct lut *l)
{
    uint8_t hi[128] __attribute__((aligned(64)));
    uint8_t lo[128] __attribute__((aligned(64)));
    for (int i = 0; i < 128; i++) {
        uint32_t u;
        memcpy(&u, &kf8e4m3_table[i], 4);
        hi[i] = (uint8_t)(u >> 24);
        lo[i] = (uint8_t)(u >> 16);
    }
    l->hi0 = _mm512_load_si512((const void *)hi);
    l->hi1 = _mm512_load_si512((const void *)(hi + 64));
    l->lo0 = _mm512_load_si512((const void *)lo);
    l->lo1 = _mm512_load_si512((const void *)(lo + 64));
}

/* 64 codes -> four fp32 vectors (lane_col order). */
KTARGET_VBMI KINLINE void widen64(const struct lut *l, __m512i b,
                                  __m512 w[4])
{
    const __m512i hi16 = _mm512_set1_epi32((int)0xffff0000u);
    __m512i h = _mm512_permutex2var_epi8(l->hi0, b, l->hi1);
    __m512i o = _mm512_permutex2var_epi8(l->lo0, b, l->lo1);
    /* h | (b & 0x80): the sign */
    h = _mm512_ternarylogic_epi32(h, b, _mm512_set1_epi8((char)0x80), 0xf8);
    __m512i A = _mm512_unpacklo_epi8(o, h), B = _mm512_unpackhi_epi8(o, h);
    w[0] = _mm512_castsi512_ps(_mm512_slli_epi32(A, 16));
    w[1] = _mm512_castsi512_ps(_mm512_and_si512(A, hi16));
    w[2] = _mm512_castsi512_ps(_mm512_slli_epi32(B, 16));
    w[3] = _mm512_castsi512_ps(_mm512_and_si512(B, hi16));
}

/* Rows r..r+NR-1, tokens t < NT, segment [c0, c1) (kseg-aligned, whole
 * blocks): y (=|+=) the scaled block sums. */
KTARGET_VBMI KINLINE void seg(int NR, int NT, const struct kmm_blk *b,
                              const struct lut *l, int r, const float *x,
                              float *y, int c0, int c1, int accum)
{
    const struct kmat *W = b->W;
    const int blk = W->blk, nb = (W->cols + blk - 1) / blk;
    const size_t cols = (size_t)W->cols;
    __m512 acc[NRMAX][NTMAX], tot[NRMAX][NTMAX];
    KUNROLL
    for (int k = 0; k < NR; k++)
        KUNROLL
        for (int t = 0; t < NT; t++)
            tot[k][t] = _mm512_setzero_ps();
    for (int cb = c0; cb < c1; cb += blk) {
        int ce = c1 - cb < blk ? c1 : cb + blk;
        KUNROLL
        for (int k = 0; k < NR; k++)
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[k][t] = _mm512_setzero_ps();
        for (int c = cb; c < ce; c += 64) {
            __mmask64 m = ce - c >= 64 ? ~0ull : (1ull << (ce - c)) - 1;
            KUNROLL
            for (int k = 0; k < NR; k++) {
                const uint8_t *p = (const uint8_t *)W->data +
                                   (size_t)(r + k) * cols + c;
                __m512i bv = m == ~0ull ? _mm512_loadu_si512((const void *)p)
                                        : _mm512_maskz_loadu_epi8(m, p);
                __m512 w[4];
                widen64(l, bv, w);
                KUNROLL
                for (int t = 0; t < NT; t++) {
                    const float *xp = x + (size_t)t * b->ldx + c;
                    KUNROLL
                    for (int v = 0; v < 4; v++)
                        acc[k][t] = _mm512_fmadd_ps(
                            w[v], _mm512_load_ps(xp + 16 * v), acc[k][t]);
                }
            }
        }
        KUNROLL
        for (int k = 0; k < NR; k++) {
            __m512 sv = _mm512_set1_ps(
                W->scale[(size_t)((r + k) / blk) * nb + cb / blk]);
            KUNROLL
            for (int t = 0; t < NT; t++)
                tot[k][t] = _mm512_fmadd_ps(acc[k][t], sv, tot[k][t]);
        }
    }
    const size_t ldy = (size_t)b->ldy;
    const __m512 z = _mm512_setzero_ps();
    KUNROLL
    for (int t = 0; t < NT; t++) {
        if (NR == 4) {
            put(y + t * ldy + r, reduce4(tot[0][t], tot[1 % NR][t],
                                         tot[2 % NR][t], tot[3 % NR][t]),
                4, accum);
        } else if (NR == 2) {
            put(y + t * ldy + r, reduce4(tot[0][t], tot[1 % NR][t], z, z), 2,
                accum);
        } else {
            float v = hsum1(tot[0][t]);
            y[t * ldy + r] = accum ? y[t * ldy + r] + v : v;
        }
    }
}

KTARGET_VBMI KINLINE void rows(int NR, int NT, const struct kmm_blk *b,
                               const struct lut *l, int r, int t0)
{
    const float *x = b->x + (size_t)t0 * b->ldx;
    float *y = b->y + (size_t)t0 * b->ldy;
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        seg(NR, NT, b, l, r, x, y, cs, ce, b->accum || cs > b->c0);
    }
}

/* Rows in groups of NR, then of 2, then single, for tokens [t0, t0+NT). */
KTARGET_VBMI KINLINE void rows_loop(int NR, int NT, const struct kmm_blk *b,
                                    const struct lut *l, int t0)
{
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows(NR, NT, b, l, r, t0);
    for (; NR > 2 && r + 2 <= b->r1; r += 2)
        rows(NR > 2 ? 2 : 1, NT, b, l, r, t0);
    for (; r < b->r1; r++)
        rows(1, NT, b, l, r, t0);
}

KTARGET_VBMI void kmm_block_f8lut(const struct kmm_blk *b)
{
    struct lut l;
    lut_init(&l);
    for (int t0 = 0; t0 < b->nt; t0 += NTMAX) {
        switch (b->nt - t0) {
        case 1: /* kisa_row_stream(): one linear stream (AMD) */
            b->row1 ? rows_loop(1, 1, b, &l, t0) : rows_loop(4, 1, b, &l, t0);
            break;
        case 2:
            b->row1 ? rows_loop(1, 2, b, &l, t0) : rows_loop(4, 2, b, &l, t0);
            break;
        case 3: rows_loop(2, 3, b, &l, t0); break;
        default: rows_loop(2, 4, b, &l, t0); break;
        }
    }
}
#endif
