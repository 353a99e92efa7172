/*
 * matmul_amx.c - BF16 weights on AMX-BF16 tiles (kisa_amx_active()).
 *
 * TDPBF16PS C += A . B: A is 16 weight rows x 32 bf16 columns, loaded
 * straight from W with the row pitch (no repacking); B is 16 column pairs
 * x nb tokens of x in the bf16-pair layout (kamx_pack); C is 16 rows x nb
 * tokens of fp32. One pass keeps up to four C tiles (64 rows) for one
 * block of up to 16 tokens and runs them over all columns.
 *
 * Precision: tiles multiply bf16 by bf16, so x is split into two bf16
 * terms, hi = bf16(x) and lo = bf16(x - hi) (about 17 bits of x, relative
 * error <= 2^-17), and each 32-column step runs TDPBF16PS with hi, then
 * with lo, into the same C. Weights are exact. (The tiles treat denormal
 * inputs as zero and flush denormal results: lo of x below ~1e-36 is lost.)
 *
 * Batch invariance: an element C[m][n] depends only on row m of A, column
 * n of B and its own value, never on the other rows or tokens of the tile
 * or on nb, and every call runs the columns in the same order. So a row's
 * result is the same whatever the token count, the row grouping (a short
 * last group is loaded from 16 rows that end at the matrix's last row and
 * only its own rows stored) or the thread split. matmul.c uses this kernel
 * for a BF16 matrix at every row count or at none (kamx_fits: a property
 * of W), as its sums differ from the AVX-512 kernel's.
 */
#include <stdint.h>
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

#define KTARGET_AMX                                                          \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,"  \
                          "avx512bf16,avx2,fma,f16c")))

#define NB 16 /* tokens per B tile */

/* Tiles: C 0..3, A 4 and 5 (alternating), B hi 6, B lo 7. */
struct tilecfg {
    uint8_t palette, start_row;
    uint8_t rsv[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

int kamx_fits(const struct kmat *W)
{
    return W->dtype == KDT_BF16 && W->cols % 32 == 0 && W->rows >= 16;
}

size_t kamx_pack_bytes(int cols, int n_tok)
{
    int n_tb = (n_tok + NB - 1) / NB;
    return (size_t)n_tb * 2 * (size_t)cols * NB * 2; /* 2 terms, bf16 */
}

/* 16x16 dwords: r[i] (row i) -> r[j] (column j). */
KTARGET_AMX static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
        r[4 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0x88);
        r[12 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0xdd);
    }
}

/* Columns [c, c + 32) of row xr: hi and lo terms as 16 bf16 pairs. */
KTARGET_AMX static inline void split32(const float *xr, __m512i *hi,
                                       __m512i *lo)
{
    __m512 a = _mm512_loadu_ps(xr), b = _mm512_loadu_ps(xr + 16);
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    __m512 ah = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    __m512 bh = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    *hi = h;
    *lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, bh),
                                       _mm512_sub_ps(a, ah));
}

/*
 * x [n_tok, ldx] (cols a multiple of 32) -> xp: per block of NB tokens
 * (the last has nb = n_tok % NB or NB), the hi term then the lo term, each
 * [cols / 2 pairs][nb tokens] of bf16 pairs (B tiles with a 4 * nb pitch).
 */
KTARGET_AMX void kamx_pack(const float *x, int ldx, int cols, int n_tok,
                           uint32_t *xp)
{
    const size_t P = (size_t)cols / 2;
    for (int t0 = 0; t0 < n_tok; t0 += NB) {
        int nb = n_tok - t0 < NB ? n_tok - t0 : NB;
        uint32_t *hp = xp + (size_t)(t0 / NB) * 2 * P * NB, *lp = hp + P * nb;
        const float *xb = x + (size_t)t0 * ldx;
        if (nb == 1) {
            for (int c = 0; c < cols; c += 32) {
                __m512i h, l;
                split32(xb + c, &h, &l);
                _mm512_storeu_si512(hp + c / 2, h);
                _mm512_storeu_si512(lp + c / 2, l);
            }
            continue;
        }
        const __mmask16 m = (__mmask16)((1u << nb) - 1);
        for (int c = 0; c < cols; c += 32) {
            __m512i h[16], l[16];
            for (int t = 0; t < 16; t++) {
                if (t < nb) {
                    split32(xb + (size_t)t * ldx + c, &h[t], &l[t]);
                } else {
                    h[t] = _mm512_setzero_si512();
                    l[t] = h[t];
                }
            }
            transpose16(h);
            transpose16(l);
            size_t p0 = (size_t)c / 2;
            for (int p = 0; p < 16; p++) {
                _mm512_mask_storeu_epi32(hp + (p0 + p) * nb, m, h[p]);
                _mm512_mask_storeu_epi32(lp + (p0 + p) * nb, m, l[p]);
            }
        }
    }
}

KTARGET_AMX static void tile_config(int nb)
{
    struct tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = (uint16_t)(i == 4 || i == 5 ? 64 : 4 * nb);
    }
    _tile_loadconfig(&cfg);
}

#define TDP2(C, A)                                                           \
    do {                                                                     \
        _tile_dpbf16ps(C, A, 6);                                             \
        _tile_dpbf16ps(C, A, 7);                                             \
    } while (0)

/* G groups of 16 rows (w[g]: row 0 of group g) over all columns, one
 * token block (hp, lp: its hi and lo terms, nb tokens); C tile g is stored
 * to out[g] (16 rows x 64 bytes). */
KTARGET_AMX KINLINE void pass(int G, const uint16_t *const w[4], size_t pitch,
                              const uint32_t *hp, const uint32_t *lp, int nb,
                              int cols, float out[4][16 * 16])
{
    const size_t bs = 4 * (size_t)nb;
    _tile_zero(0);
    if (G > 1)
        _tile_zero(1);
    if (G > 2)
        _tile_zero(2);
    if (G > 3)
        _tile_zero(3);
    for (int c = 0; c < cols; c += 32) {
        _tile_loadd(6, hp + (size_t)c / 2 * nb, bs);
        _tile_loadd(7, lp + (size_t)c / 2 * nb, bs);
        _tile_loadd(4, w[0] + c, pitch);
        TDP2(0, 4);
        if (G > 1) {
            _tile_loadd(5, w[1] + c, pitch);
            TDP2(1, 5);
        }
        if (G > 2) {
            _tile_loadd(4, w[2] + c, pitch);
            TDP2(2, 4);
        }
        if (G > 3) {
            _tile_loadd(5, w[3] + c, pitch);
            TDP2(3, 5);
        }
    }
    _tile_stored(0, out[0], 64);
    if (G > 1)
        _tile_stored(1, out[1], 64);
    if (G > 2)
        _tile_stored(2, out[2], 64);
    if (G > 3)
        _tile_stored(3, out[3], 64);
}

/*
 * y[t * ldy + o] = W[o] . x[t] for o in [r0, r1), t < n_tok, x packed by
 * kamx_pack. kamx_fits(W) must hold. Runs on the calling thread.
 */
KTARGET_AMX void kamx_rows(const struct kmat *W, int r0, int r1,
                           const uint32_t *xp, int n_tok, float *y, int ldy)
{
    const size_t P = (size_t)W->cols / 2, pitch = (size_t)W->cols * 2;
    const uint16_t *wd = (const uint16_t *)W->data;
    float out[4][16 * 16] __attribute__((aligned(64)));
    int cfg_nb = 0;

    for (int r = r0; r < r1; r += 64) {
        int G = (r1 - r + 15) / 16;
        if (G > 4)
            G = 4;
        const uint16_t *w[4];
        int base[4];
        for (int g = 0; g < 4; g++) {
            int b = r + 16 * g;
            if (b + 16 > W->rows) /* the matrix's last 16 rows */
                b = W->rows - 16;
            base[g] = b;
            w[g] = wd + (size_t)b * W->cols;
        }
        for (int t0 = 0; t0 < n_tok; t0 += NB) {
            int nb = n_tok - t0 < NB ? n_tok - t0 : NB;
            if (nb != cfg_nb) {
                tile_config(nb);
                cfg_nb = nb;
            }
            const uint32_t *hp = xp + (size_t)(t0 / NB) * 2 * P * NB;
            const uint32_t *lp = hp + P * nb;
            switch (G) {
            case 1: pass(1, w, pitch, hp, lp, nb, W->cols, out); break;
            case 2: pass(2, w, pitch, hp, lp, nb, W->cols, out); break;
            case 3: pass(3, w, pitch, hp, lp, nb, W->cols, out); break;
            default: pass(4, w, pitch, hp, lp, nb, W->cols, out); break;
            }
            for (int g = 0; g < G; g++) {
                int lo = r + 16 * g, hi = lo + 16 < r1 ? lo + 16 : r1;
                for (int o = lo; o < hi; o++) {
                    const float *c = out[g] + (o - base[g]) * 16;
                    for (int t = 0; t < nb; t++)
                        y[(size_t)(t0 + t) * ldy + o] = c[t];
                }
            }
        }
    }
    if (cfg_nb)
        _tile_release();
}

struct amx_job {
    const struct kmat *W;
    int row0, row1;
    const uint32_t *xp;
    int n_tok;
    float *y;
    int ldy;
};

/* Part `part` of n_parts: a contiguous share of 16-row groups. */
static void amx_part(void *arg, int part, int n_parts)
{
    const struct amx_job *j = arg;
    long groups = (j->row1 - j->row0 + 15) / 16;
    int r0 = j->row0 + (int)(groups * part / n_parts) * 16;
    int r1 = j->row0 + (int)(groups * (part + 1) / n_parts) * 16;
    if (r1 > j->row1)
        r1 = j->row1;
    if (r0 < r1)
        kamx_rows(j->W, r0, r1, j->xp, j->n_tok, j->y, j->ldy);
}

void kamx_matmul(struct kpool *p, const struct kmat *W, int row0, int row1,
                 const uint32_t *xp, int n_tok, float *y, int ldy)
{
    struct amx_job j = {W, row0, row1, xp, n_tok, y, ldy};
    int parts = kpool_size(p), groups = (row1 - row0 + 15) / 16;
    kpool_run(p, amx_part, &j, parts < groups ? parts : groups);
}
#endif
