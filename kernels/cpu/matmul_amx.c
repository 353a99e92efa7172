/*
 * matmul_amx.c - BF16 weights on AMX-BF16 tiles (kisa_amx_active()).
 *
 * TDPBF16PS C += A . B: A is 16 weight rows x 32 bf16 columns, loaded
 * straight from W with the row pitch (no repacking); B is 16 column pairs
 * x 2 * nb columns of x in the bf16-pair layout (kamx_pack, up to NB = 8
 * tokens); C is 16 rows x 2 * nb fp32. Up to 8 tokens (decode, verify
 * rows) run one 16-row group at a time over all columns (pass41, G = 1:
 * fewer rows streamed at once); more tokens run 2 groups x 2 token blocks
 * (pass22) or 4 groups x 1 block.
 *
 * Precision: tiles multiply bf16 by bf16, so x is split into two bf16
 * terms, hi = bf16(x) and lo = bf16(x - hi) (about 17 bits of x, relative
 * error <= 2^-17), placed side by side in B: C column t accumulates the
 * hi products of token t, column nb + t its lo products, and y = the two
 * added once at the end (put). Weights are exact. (The tiles treat
 * denormal inputs as zero and flush denormal results: lo of x below
 * ~1e-36 is lost.)
 *
 * Batch invariance: an element C[m][n] depends only on row m of A, column
 * n of B and its own value, never on the other rows or tokens of the tile
 * or on nb, and every call runs the columns in the same order (the shift
 * below depends on W only). So a row's result is the same whatever the
 * token count, the row grouping (a short last group is loaded from 16 rows
 * that end at the matrix's last row and only its own rows stored) or the
 * thread split. matmul.c uses this kernel for a BF16 matrix at every row
 * count or at none (kamx_fits: a property of W), as its sums differ from
 * the AVX-512 kernel's.
 */
#include <stdint.h>
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

#define KTARGET_AMX                                                          \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,"  \
                          "avx512bf16,avx2,fma,f16c")))

#define NB 8 /* tokens per B tile (hi and lo: 16 columns) */
#define GDEC 1 /* groups per pass for <= NB tokens (see kamx_rows) */

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

/* Columns W's rows start past a 64-byte line (safetensors data is only
 * element-aligned): the tiles then start that many columns before each
 * 32-column block, so every tile row is one aligned line (a tile load of
 * rows that straddle lines runs at less than half the speed). */
static int wshift(const struct kmat *W)
{
    return (int)(((uintptr_t)W->data % 64) / 2);
}

/* Columns of x as the tiles see it: shift zeros, x, zeros to a multiple
 * of 32. */
static int xcols(const struct kmat *W)
{
    return (W->cols + wshift(W) + 31) & ~31;
}

size_t kamx_pack_bytes(const struct kmat *W, int n_tok)
{
    int n_tb = (n_tok + NB - 1) / NB;
    return (size_t)n_tb * (size_t)xcols(W) / 2 * 2 * NB * 4;
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

/* Columns [c, c + 32) of row xr (zero outside [0, cols)): hi and lo
 * terms as 16 bf16 pairs. */
KTARGET_AMX static inline void split32(const float *xr, int c, int cols,
                                       __m512i *hi, __m512i *lo)
{
    __m512 a, b;
    if (c >= 0 && c + 32 <= cols) {
        a = _mm512_loadu_ps(xr + c);
        b = _mm512_loadu_ps(xr + c + 16);
    } else { /* masked lanes are not read */
        int l0 = c < 0 ? -c : 0, l1 = cols - c < 32 ? cols - c : 32;
        uint64_t mk = ((1ull << l1) - 1) & ~((1ull << l0) - 1);
        const float *p = (const float *)((uintptr_t)xr + (intptr_t)c * 4);
        a = _mm512_maskz_loadu_ps((__mmask16)mk, p);
        b = _mm512_maskz_loadu_ps((__mmask16)(mk >> 16), p + 16);
    }
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
 * x [n_tok, ldx] -> xp: x shifted right by wshift(W) columns, zero-padded
 * to xcols(W); per block of NB tokens (the last has nb = n_tok % NB or
 * NB), [xcols / 2 pairs][2 * nb] bf16 pairs: the hi terms of the nb
 * tokens, then their lo terms (a B tile of 2 * nb columns, pitch 8 * nb).
 */
KTARGET_AMX void kamx_pack(const struct kmat *W, const float *x, int ldx,
                           int n_tok, uint32_t *xp)
{
    const int cols = W->cols, sh = wshift(W), K = xcols(W);
    const size_t P = (size_t)K / 2;
    const __m512i i0 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20,
                                         5, 21, 6, 22, 7, 23);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(8));
    for (int t0 = 0; t0 < n_tok; t0 += NB) {
        int nb = n_tok - t0 < NB ? n_tok - t0 : NB;
        uint32_t *bp = xp + (size_t)(t0 / NB) * P * 2 * NB;
        const float *xb = x + (size_t)t0 * ldx;
        if (nb == 1) { /* rows [hi, lo]: interleave */
            for (int c = 0; c < K; c += 32) {
                __m512i h, l;
                split32(xb, c - sh, cols, &h, &l);
                _mm512_storeu_si512(bp + c, _mm512_permutex2var_epi32(h, i0, l));
                _mm512_storeu_si512(bp + c + 16,
                                    _mm512_permutex2var_epi32(h, i1, l));
            }
            continue;
        }
        const __mmask16 m = (__mmask16)((1u << (2 * nb)) - 1);
        for (int c = 0; c < K; c += 32) {
            __m512i v[16];
            for (int t = 0; t < 16; t++)
                v[t] = _mm512_setzero_si512();
            for (int t = 0; t < nb; t++)
                split32(xb + (size_t)t * ldx, c - sh, cols, &v[t], &v[nb + t]);
            transpose16(v);
            uint32_t *q = bp + (size_t)c / 2 * 2 * nb;
            for (int p = 0; p < 16; p++)
                _mm512_mask_storeu_epi32(q + (size_t)p * 2 * nb, m, v[p]);
        }
    }
}

/*
 * A tiles: 16 rows from w (a group's row 0, shifted) at column c. The two
 * tiles that would reach outside W (before row 0, past the last row: the
 * shift) are copied with those columns zeroed: memory there may hold
 * anything, and 0 * NaN is NaN. Always for the same tiles of a row, so a
 * row's sums stay the same whatever the call.
 */
struct aload {
    const uint16_t *lo, *hi; /* W's first and one-past-last element */
    size_t cols;
    uint16_t *buf; /* 16 x 32, 64-byte aligned */
};

KTARGET_AMX static const void *astage(struct aload *a, const uint16_t *w,
                                      int c)
{
    for (int m = 0; m < 16; m++) {
        const uint16_t *p = (const uint16_t *)((uintptr_t)w +
                                               (m * a->cols + (size_t)c) * 2);
        intptr_t b = ((intptr_t)a->lo - (intptr_t)p) / 2;
        intptr_t e = ((intptr_t)a->hi - (intptr_t)p) / 2;
        int l0 = b > 0 ? (int)b : 0, l1 = e < 32 ? (int)e : 32;
        uint64_t mk = l1 > l0 ? ((1ull << l1) - 1) & ~((1ull << l0) - 1) : 0;
        _mm512_store_si512((void *)(a->buf + m * 32),
                           _mm512_maskz_loadu_epi16((__mmask32)mk, p));
    }
    return a->buf;
}

/* The tile at (w, c) reads outside W. */
static inline int aout(const struct aload *a, const uint16_t *w, int c)
{
    uintptr_t p0 = (uintptr_t)w + (size_t)c * 2;
    uintptr_t p1 = p0 + (15 * a->cols + 32) * 2;
    return p0 < (uintptr_t)a->lo || p1 > (uintptr_t)a->hi;
}

#define ALOAD(T, a, w, c, pitch, edge)                                       \
    do {                                                                     \
        if ((edge) && aout(a, w, c))                                         \
            _tile_loadd(T, astage(a, w, c), 64);                             \
        else                                                                 \
            _tile_loadd(T, (const char *)(w) + (size_t)(c) * 2, pitch);      \
    } while (0)

/* Tiles: C 0..3 (16 rows x 2 * nb fp32); A 4, 5 (16 rows x 32 bf16); B 6,
 * 7 (16 pairs x 2 * nb). */
/* Loads the configuration for nb tokens unless the tiles have it already.
 * Tiles stay configured between calls (a release and a reload cost more
 * than a small matmul); the pool releases them before a worker sleeps
 * (kamx_idle), so a context switch need not save them. Comparing with the
 * live configuration, not a flag of ours, also covers other AMX users. */
KTARGET_AMX static void tile_config(int nb)
{
    struct tilecfg cfg, cur;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = (uint16_t)(i == 4 || i == 5 ? 64 : 8 * nb);
    }
    _tile_storeconfig(&cur);
    if (memcmp(&cur, &cfg, sizeof cfg) != 0)
        _tile_loadconfig(&cfg);
}

KTARGET_AMX static void tiles_release(void)
{
    _tile_release();
}

void kamx_idle(void)
{
    if (kisa_has_amx())
        tiles_release();
}

/* One 32-column step of pass41: B tile TB, A tiles TA0 (even groups) and
 * TA1 (odd groups). */
#define STEP41(TB, TA0, TA1)                                                 \
    do {                                                                     \
        int e = edge && (c == 0 || c + 32 >= cols);                          \
        _tile_loadd(TB, bp + (size_t)c / 2 * 2 * nb, bs);                    \
        ALOAD(TA0, al, w[0], c, pitch, e);                                   \
        _tile_dpbf16ps(0, TA0, TB);                                          \
        if (G > 1) {                                                         \
            ALOAD(TA1, al, w[1], c, pitch, e);                               \
            _tile_dpbf16ps(1, TA1, TB);                                      \
        }                                                                    \
        if (G > 2) {                                                         \
            ALOAD(TA0, al, w[2], c, pitch, e);                               \
            _tile_dpbf16ps(2, TA0, TB);                                      \
        }                                                                    \
        if (G > 3) {                                                         \
            ALOAD(TA1, al, w[3], c, pitch, e);                               \
            _tile_dpbf16ps(3, TA1, TB);                                      \
        }                                                                    \
    } while (0)

/* G groups of 16 rows (w[g]: row 0 of group g) x one token block (bp, nb
 * tokens), all columns; C tile g is stored to out[g]. Consecutive steps
 * load into other A and B tiles (tiles are not renamed: a load into a
 * tile the previous step's product still reads would wait for it). */
KTARGET_AMX KINLINE void pass41(int G, const uint16_t *const w[4],
                                size_t pitch, const uint32_t *bp, int nb,
                                int cols, struct aload *al, int edge,
                                float out[4][16 * 16])
{
    const size_t bs = 8 * (size_t)nb;
    _tile_zero(0);
    if (G > 1)
        _tile_zero(1);
    if (G > 2)
        _tile_zero(2);
    if (G > 3)
        _tile_zero(3);
    int c = 0;
    for (; c + 64 <= cols; c += 64) {
        STEP41(6, 4, 5);
        c += 32;
        STEP41(7, 5, 4);
        c -= 32;
    }
    if (c < cols)
        STEP41(6, 4, 5);
    _tile_stored(0, out[0], 64);
    if (G > 1)
        _tile_stored(1, out[1], 64);
    if (G > 2)
        _tile_stored(2, out[2], 64);
    if (G > 3)
        _tile_stored(3, out[3], 64);
}

/* G (1 or 2) groups x two full token blocks (b0, b1): C tile 2g + j is
 * group g, block j, stored to out[2g + j]. */
KTARGET_AMX KINLINE void pass22(int G, const uint16_t *const w[2],
                                size_t pitch, const uint32_t *b0,
                                const uint32_t *b1, int cols,
                                struct aload *al, int edge,
                                float out[4][16 * 16])
{
    _tile_zero(0);
    _tile_zero(1);
    if (G > 1) {
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int c = 0; c < cols; c += 32) {
        int e = edge && (c == 0 || c + 32 >= cols);
        _tile_loadd(6, b0 + (size_t)c * NB, 64);
        _tile_loadd(7, b1 + (size_t)c * NB, 64);
        ALOAD(4, al, w[0], c, pitch, e);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (G > 1) {
            ALOAD(5, al, w[1], c, pitch, e);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, out[0], 64);
    _tile_stored(1, out[1], 64);
    if (G > 1) {
        _tile_stored(2, out[2], 64);
        _tile_stored(3, out[3], 64);
    }
}

/* y[t * ldy + m] = c[m * 16 + t] + c[m * 16 + nb + t] (the hi and lo
 * terms) for t < nb, m in [m0, m1): the C tile transposed in registers,
 * then one masked store per token (strided scalar stores of a column
 * thrash L1 sets when ldy is a multiple of 4 KiB). */
KTARGET_AMX static inline void put(const float *c, int nb, size_t ldy,
                                   float *y, int m0, int m1)
{
    const __mmask16 k = (__mmask16)(((1u << m1) - 1) & ~((1u << m0) - 1));
    if (nb == 1) { /* column 0 + column 1 */
        const __m512i i0 = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112,
                                             128, 144, 160, 176, 192, 208,
                                             224, 240);
        __m512 h = _mm512_i32gather_ps(i0, c, 4);
        __m512 l = _mm512_i32gather_ps(i0, c + 1, 4);
        _mm512_mask_storeu_ps(y, k, _mm512_add_ps(h, l));
        return;
    }
    __m512i v[16];
    for (int m = 0; m < 16; m++)
        v[m] = _mm512_load_si512((const void *)(c + m * 16));
    transpose16(v);
    for (int t = 0; t < nb; t++)
        _mm512_mask_storeu_ps(y + t * ldy, k,
                              _mm512_add_ps(_mm512_castsi512_ps(v[t]),
                                            _mm512_castsi512_ps(v[nb + t])));
}

/* First row of the 16-row group that holds row r: r itself, or for the
 * last group of the matrix the last 16 rows (only r's own rows are
 * stored). */
static inline int group_base(const struct kmat *W, int r)
{
    return r + 16 > W->rows ? W->rows - 16 : r;
}

/*
 * y[t * ldy + o] = W[o] . x[t] for o in [r0, r1), t < n_tok, x packed by
 * kamx_pack. kamx_fits(W) must hold. Runs on the calling thread.
 */
KTARGET_AMX void kamx_rows(const struct kmat *W, int r0, int r1,
                           const uint32_t *xp, int n_tok, float *y, int ldy)
{
    const int K = xcols(W), sh = wshift(W);
    const size_t pitch = (size_t)W->cols * 2;
    const size_t bstep = (size_t)K / 2 * 2 * NB; /* dwords per token block */
    const uint16_t *wd = (const uint16_t *)W->data;
    float out[4][16 * 16] __attribute__((aligned(64)));
    uint16_t abuf[16 * 32] __attribute__((aligned(64)));
    struct aload al = {wd, wd + (size_t)W->rows * W->cols, (size_t)W->cols,
                       abuf};
    int cfg_nb = 0;

    /* groups per pass: decode streams fewer rows at once */
    const int GM = n_tok <= NB ? GDEC : 4;
    for (int r = r0; r < r1; r += 16 * GM) {
        int G = (r1 - r + 15) / 16;
        if (G > GM)
            G = GM;
        const uint16_t *w[4]; /* may point before W: see aload */
        int base[4], edge = 0;
        for (int g = 0; g < G; g++) {
            base[g] = group_base(W, r + 16 * g);
            w[g] = (const uint16_t *)((uintptr_t)wd +
                                      ((size_t)base[g] * W->cols - sh) * 2);
            edge |= sh && (base[g] == 0 || base[g] + 16 == W->rows);
        }
        int t0 = 0;
        if (n_tok - t0 >= 2 * NB && cfg_nb != NB) {
            tile_config(NB);
            cfg_nb = NB;
        }
        for (; n_tok - t0 >= 2 * NB; t0 += 2 * NB) { /* two full blocks */
            const uint32_t *b0 = xp + (size_t)(t0 / NB) * bstep;
            for (int g = 0; g < G; g += 2) {
                int g2 = G - g < 2 ? 1 : 2;
                if (g2 == 2)
                    pass22(2, w + g, pitch, b0, b0 + bstep, K, &al, edge, out);
                else
                    pass22(1, w + g, pitch, b0, b0 + bstep, K, &al, edge, out);
                for (int i = 0; i < 2 * g2; i++) {
                    int gg = g + i / 2, j = i % 2;
                    int lo = r + 16 * gg, hi = lo + 16 < r1 ? lo + 16 : r1;
                    put(out[i], NB, (size_t)ldy,
                        y + (size_t)(t0 + j * NB) * ldy + base[gg],
                        lo - base[gg], hi - base[gg]);
                }
            }
        }
        for (; t0 < n_tok; t0 += NB) { /* one block at a time */
            int nb = n_tok - t0 < NB ? n_tok - t0 : NB;
            if (nb != cfg_nb) {
                tile_config(nb);
                cfg_nb = nb;
            }
            const uint32_t *bp = xp + (size_t)(t0 / NB) * bstep;
            switch (G) {
            case 1: pass41(1, w, pitch, bp, nb, K, &al, edge, out); break;
            case 2: pass41(2, w, pitch, bp, nb, K, &al, edge, out); break;
            case 3: pass41(3, w, pitch, bp, nb, K, &al, edge, out); break;
            default: pass41(4, w, pitch, bp, nb, K, &al, edge, out); break;
            }
            for (int g = 0; g < G; g++) {
                int lo = r + 16 * g, hi = lo + 16 < r1 ? lo + 16 : r1;
                put(out[g], nb, (size_t)ldy, y + (size_t)t0 * ldy + base[g],
                    lo - base[g], hi - base[g]);
            }
        }
    }
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
#else
void kamx_idle(void)
{
}
#endif
