/*
 * matmul_qa_rowlanes.c - Q8_0 / Q4_1 times int8 x for short rows and many
 * tokens on AVX-512 VNNI: sixteen output rows in the sixteen lanes.
 *
 * The other kernels put a row's blocks in the lanes (lane = chain), so
 * every (row, token) ends with a horizontal sum and a scalar store, and a
 * row of 12 blocks (384 columns) fills 3/4 of the lanes, of 5 blocks
 * (160 columns, the default model's expert down projections) 5/16: at
 * prefill those rows ran slower than the fp32 kernel on bf16 weights.
 * Here a slab of 16 rows is transposed once per call (per block, eight
 * vectors whose dword r holds 4 weight bytes of row r) and every token's
 * x codes come as dword broadcasts, so eight dpbusd give block j's exact
 * int32 sum for 16 rows at once. The float steps are matmul_qa.c's, per
 * lane: chain g = j mod 16 takes fma((float)isum, d_j * xd_j, c_g) (Q4_1:
 * then fma(m_j, xs_j, c_g)) in block order, the chains are kept in a
 * small buffer, and the same tree (s_i = c_i + c_{i+8}, ...) is one
 * vertical add per step. A row has at most KQA_RL_MAX_COLS columns, one
 * summation segment, so the bits are those of every other Q kernel
 * (tests/unit/test_kernels.c: isa_equal, invariance).
 *
 * The transpose costs about as much as eight tokens' worth of dot
 * products, so matmul.c uses this kernel from a token count that depends
 * on the row length (rl_min_tok). An AVX2 version (8 rows per vector) is
 * at the end (rl2_min_tok).
 */
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

#define KTARGET_VNNI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

#define RL_NB (KQA_RL_MAX_COLS / KQ_BLK) /* most blocks per row */

/* Block j's fp16 scale (hd) and, for Q4_1, min (hm) of rows r .. r+n-1,
 * zero up to width rows (the lanes of a slab past its last row). */
static void slab_scales(const struct kmat *W, int r, int n, int width, int j,
                        uint16_t *hd, uint16_t *hm)
{
    const int nb = W->cols / KQ_BLK;
    for (int i = 0; i < width; i++) {
        size_t k = (size_t)(r + i) * nb + j;
        hd[i] = i < n ? W->qd[k] : 0;
        hm[i] = i < n && W->qm && W->dtype == KDT_Q4_1 ? W->qm[k] : 0;
    }
}
#define RL_NT 8                           /* tokens per pass */
#define KQA_RL_PF 2048 /* weight prefetch distance, bytes */

/* One slab: the transposed weights and the rows' scales. */
struct rl_slab {
    __m512i w[RL_NB][8]; /* w[j][k] dword r: codes 4k..4k+3 of block j,
                          * row r (Q8_0 + 128 as unsigned bytes) */
    __m512 d[RL_NB], m[RL_NB]; /* lane r: d_j, m_j of row r */
    uint8_t raw[16 * KQA_RL_MAX_COLS + 64]; /* the rows as stored */
};

/*
 * 16 x 16 dwords transposed in place: four butterfly levels; level s
 * swaps index bit s between vector and lane (for i with bit s clear,
 * v[i] keeps its lanes with bit s clear and takes v[i + s]'s below them,
 * v[i + s] the other way round).
 */
KTARGET_VNNI KINLINE void transpose16(__m512i v[16])
{
    /* per level: lanes of (v[i], v[i + s]) for v[i], then for v[i + s] */
    static const int32_t idx[4][2][16] __attribute__((aligned(64))) = {
        {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
         {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}},
        {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
         {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}},
        {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
         {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}},
        {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
         {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}},
    };
    KUNROLL
    for (int l = 0; l < 4; l++) {
        const int s = 1 << l;
        const __m512i il = _mm512_load_si512((const void *)idx[l][0]);
        const __m512i ih = _mm512_load_si512((const void *)idx[l][1]);
        KUNROLL
        for (int i = 0; i < 16; i++) {
            if (i & s)
                continue;
            __m512i a = v[i], b = v[i + s];
            v[i] = _mm512_permutex2var_epi32(a, il, b);
            v[i + s] = _mm512_permutex2var_epi32(a, ih, b);
        }
    }
}

/* Rows r .. r+n-1 (n <= 16; rows past n are zero) of W into sl. */
KTARGET_VNNI static void slab_load(const struct kmat *W, int r, int n,
                                   struct rl_slab *sl)
{
    const int q4 = W->dtype == KDT_Q4_1, nb = W->cols / KQ_BLK;
    const size_t rb = kmat_row_bytes(W->dtype, W->cols);
    const uint8_t *w0 = (const uint8_t *)W->data + (size_t)r * rb;
    /* the slab's rows are one contiguous run of n * rb bytes: copied in
     * address order (one stream the hardware prefetcher follows into the
     * next slab), then transposed from L1; reading it block by block
     * across the 16 rows waited for memory (1.5-3x slower at few tokens) */
    const size_t nby = (size_t)n * rb;
    size_t o = 0;
    for (; o + 64 <= nby; o += 64) {
        _mm_prefetch((const char *)(w0 + o + KQA_RL_PF), _MM_HINT_T0);
        _mm512_store_si512((void *)(sl->raw + o),
                           _mm512_loadu_si512((const void *)(w0 + o)));
    }
    if (o < nby)
        _mm512_store_si512((void *)(sl->raw + o),
                           _mm512_maskz_loadu_epi8(((__mmask64)1 << (nby - o)) - 1,
                                                   w0 + o));
    const int per = q4 ? 4 : 2; /* blocks per 64-byte load */
    const int bb = q4 ? 16 : 32; /* bytes per block */
    for (int j = 0; j < nb; j += per) {
        int nbytes = (nb - j < per ? nb - j : per) * bb;
        __mmask64 mk = nbytes >= 64 ? ~(__mmask64)0
                                    : ((__mmask64)1 << nbytes) - 1;
        __m512i v[16];
        for (int i = 0; i < 16; i++)
            v[i] = i < n ? _mm512_maskz_loadu_epi8(
                               mk, sl->raw + (size_t)i * rb + (size_t)j * bb)
                         : _mm512_setzero_si512();
        transpose16(v); /* v[m] lane i: dword m of row i's 64 bytes */
        if (!q4) {
            const __m512i s80 = _mm512_set1_epi8((char)0x80);
            for (int m = 0; m < 16 && j + m / 8 < nb; m++)
                sl->w[j + m / 8][m % 8] = _mm512_xor_si512(v[m], s80);
        } else {
            const __m512i f = _mm512_set1_epi8(15);
            for (int m = 0; m < 16 && j + m / 4 < nb; m++) {
                sl->w[j + m / 4][m % 4] = _mm512_and_si512(v[m], f);
                sl->w[j + m / 4][4 + m % 4] =
                    _mm512_and_si512(_mm512_srli_epi16(v[m], 4), f);
            }
        }
    }
    for (int j = 0; j < nb; j++) {
        uint16_t hd[16], hm[16];
        slab_scales(W, r, n, 16, j, hd, hm);
        sl->d[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)hd));
        sl->m[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)hm));
    }
}

/* Tokens t0 .. t0+NT-1 against the slab: y rows r .. r+n-1. */
KTARGET_VNNI KINLINE void rl_pass(int q4, int NT, const struct rl_slab *sl,
                                  int nb, int cols, const uint8_t *xq,
                                  size_t ldq, int t0, float *y, int ldy,
                                  int r, int n)
{
    __m512 C[RL_NT][16];
    const uint8_t *xr[RL_NT];
    const float *xd[RL_NT], *xs[RL_NT];
    const int32_t *xc[RL_NT];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        xr[t] = xq + (size_t)(t0 + t) * ldq;
        xd[t] = (const float *)(xr[t] + cols);
        xs[t] = xd[t] + nb;
        xc[t] = (const int32_t *)(xs[t] + nb);
    }
    for (int j = 0; j < nb; j++) {
        __m512i w[8];
        KUNROLL
        for (int k = 0; k < 8; k++)
            w[k] = sl->w[j][k];
        /* x codes 4k..4k+3 of block j: Q4_1 keeps the halves apart */
        const size_t lo = xq_off(q4, nb, j, 0), hi = xq_off(q4, nb, j, 16);
        const int g = j & 15;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *a = xr[t] + lo, *b = xr[t] + hi;
            __m512i s0 = q4 ? _mm512_setzero_si512()
                            : _mm512_set1_epi32(-(xc[t][j] * 128));
            __m512i s1 = _mm512_setzero_si512();
            KUNROLL
            for (int k = 0; k < 4; k++) {
                int32_t ea, eb;
                memcpy(&ea, a + 4 * k, 4);
                memcpy(&eb, b + 4 * k, 4);
                s0 = _mm512_dpbusd_epi32(s0, w[k], _mm512_set1_epi32(ea));
                s1 = _mm512_dpbusd_epi32(s1, w[4 + k], _mm512_set1_epi32(eb));
            }
            __m512 c = j < 16 ? _mm512_setzero_ps() : C[t][g];
            c = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)),
                _mm512_mul_ps(sl->d[j], _mm512_set1_ps(xd[t][j])), c);
            if (q4)
                c = _mm512_fmadd_ps(sl->m[j], _mm512_set1_ps(xs[t][j]), c);
            C[t][g] = c;
        }
    }
    const __mmask16 mk = (__mmask16)((1u << n) - 1);
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m512 c[16], s[8];
        for (int g = 0; g < 16; g++)
            c[g] = g < nb ? C[t][g] : _mm512_setzero_ps();
        for (int i = 0; i < 8; i++)
            s[i] = _mm512_add_ps(c[i], c[i + 8]);
        __m512 v = _mm512_add_ps(
            _mm512_add_ps(_mm512_add_ps(s[0], s[4]), _mm512_add_ps(s[2], s[6])),
            _mm512_add_ps(_mm512_add_ps(s[1], s[5]), _mm512_add_ps(s[3], s[7])));
        _mm512_mask_storeu_ps(y + (size_t)(t0 + t) * ldy + r, mk, v);
    }
}

KTARGET_VNNI KINLINE void rl_rows(int q4, const struct kmat *W, int r0,
                                  int r1, const uint8_t *xq, size_t ldq,
                                  int n_tok, float *y, int ldy)
{
    const int nb = W->cols / KQ_BLK;
    _Alignas(64) struct rl_slab sl;
    for (int r = r0; r < r1; r += 16) {
        int n = r1 - r < 16 ? r1 - r : 16;
        slab_load(W, r, n, &sl);
        int t = 0;
        for (; t + RL_NT <= n_tok; t += RL_NT)
            rl_pass(q4, RL_NT, &sl, nb, W->cols, xq, ldq, t, y, ldy, r, n);
        for (; t < n_tok; t++)
            rl_pass(q4, 1, &sl, nb, W->cols, xq, ldq, t, y, ldy, r, n);
    }
}

KTARGET_VNNI void kqa_rowlanes(const struct kmat *W, int r0, int r1,
                               const uint8_t *xq, size_t ldq, int n_tok,
                               float *y, int ldy)
{
    if (W->dtype == KDT_Q4_1)
        rl_rows(1, W, r0, r1, xq, ldq, n_tok, y, ldy);
    else
        rl_rows(0, W, r0, r1, xq, ldq, n_tok, y, ldy);
}
/* ---- AVX2: eight rows in the lanes ----------------------------------
 * The same layout with 8 rows per slab: per block eight vectors whose
 * dword r holds four codes of row r. Q4_1 (low halves for k < 4, high
 * ones for k >= 4): maddubs of the codes (unsigned, <= 15) with the x
 * dword broadcast gives two products per int16 (<= 3810), so the eight
 * of a block add up in int16 (<= 30480) and one madd leaves block j's
 * exact sum for each row. Q8_0: maddubs takes unsigned times signed, so
 * the slab keeps |w| and w, and each broadcast x dword takes w's signs
 * (vpsignb) first; a pair is then at most 2 * 128 * 127 and each k needs
 * its own madd. */

struct rl2_slab {
    __m256i w[RL_NB][8];  /* Q4_1 codes; Q8_0 |w| (unsigned) */
    __m256i ws[RL_NB][8]; /* Q8_0: w itself, whose signs go onto x */
    __m256 d[RL_NB], m[RL_NB];
    uint8_t raw[8 * KQA_RL_MAX_COLS + 32];
};

/* 8 x 8 dwords transposed in place (v[m] lane i <- v[i] lane m). */
KTARGET_AVX2 KINLINE void transpose8(__m256i v[8])
{
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        v[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* Rows r .. r+n-1 (n <= 8; rows past n are zero) of W into sl. */
KTARGET_AVX2 static void slab2_load(const struct kmat *W, int r, int n,
                                    struct rl2_slab *sl)
{
    const int nb = W->cols / KQ_BLK, q4 = W->dtype == KDT_Q4_1;
    const size_t rb = kmat_row_bytes(W->dtype, W->cols);
    const uint8_t *w0 = (const uint8_t *)W->data + (size_t)r * rb;
    const size_t nby = (size_t)n * rb;
    memcpy(sl->raw, w0, nby); /* in address order, as the VNNI slab */
    const __m256i f = _mm256_set1_epi8(15);
    for (int j = 0; !q4 && j < nb; j++) { /* Q8_0: a block, 32 bytes */
        __m256i v[8];
        for (int i = 0; i < 8; i++)
            v[i] = i < n ? _mm256_loadu_si256((const __m256i *)(
                               sl->raw + (size_t)i * rb + (size_t)j * 32))
                         : _mm256_setzero_si256();
        transpose8(v); /* v[k] lane i: codes 4k..4k+3 of row i */
        for (int k = 0; k < 8; k++) {
            sl->w[j][k] = _mm256_abs_epi8(v[k]); /* -128 -> 128 unsigned */
            sl->ws[j][k] = v[k];
        }
    }
    for (int j = 0; q4 && j < nb; j += 2) { /* two blocks: 32 bytes a row */
        __m256i v[8];
        for (int i = 0; i < 8; i++) {
            if (i >= n) {
                v[i] = _mm256_setzero_si256();
                continue;
            }
            const uint8_t *p = sl->raw + (size_t)i * rb + (size_t)j * 16;
            v[i] = j + 1 < nb
                ? _mm256_loadu_si256((const __m256i *)p)
                : _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p));
            if (j + 1 >= nb)
                v[i] = _mm256_inserti128_si256(v[i], _mm_setzero_si128(), 1);
        }
        transpose8(v); /* v[m] lane i: dword m of row i's 32 bytes */
        for (int m = 0; m < 8 && j + m / 4 < nb; m++) {
            sl->w[j + m / 4][m % 4] = _mm256_and_si256(v[m], f);
            sl->w[j + m / 4][4 + m % 4] =
                _mm256_and_si256(_mm256_srli_epi16(v[m], 4), f);
        }
    }
    for (int j = 0; j < nb; j++) {
        uint16_t hd[8], hm[8];
        slab_scales(W, r, n, 8, j, hd, hm);
        sl->d[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hd));
        sl->m[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hm));
    }
}

KTARGET_AVX2 KINLINE void rl2_pass(int q4, int NT, const struct rl2_slab *sl,
                                   int nb, int cols, const uint8_t *xq,
                                   size_t ldq, int t0, float *y, int ldy,
                                   int r, int n)
{
    __m256 C[RL_NT][16];
    const uint8_t *xr[RL_NT];
    const float *xd[RL_NT], *xs[RL_NT];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        xr[t] = xq + (size_t)(t0 + t) * ldq;
        xd[t] = (const float *)(xr[t] + cols);
        xs[t] = xd[t] + nb;
    }
    const __m256i one = _mm256_set1_epi16(1);
    for (int j = 0; j < nb; j++) {
        const size_t lo = xq_off(q4, nb, j, 0), hi = xq_off(q4, nb, j, 16);
        const int g = j & 15;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            __m256i is;
            if (q4) { /* eight blocks' products add up in int16 */
                __m256i s = _mm256_setzero_si256();
                KUNROLL
                for (int k = 0; k < 8; k++) {
                    int32_t e;
                    memcpy(&e, xr[t] + (k < 4 ? lo + 4 * k : hi + 4 * (k - 4)),
                           4);
                    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(
                                                sl->w[j][k], _mm256_set1_epi32(e)));
                }
                is = _mm256_madd_epi16(s, one);
            } else { /* |w| times x with w's sign: pairs <= 32512 */
                is = _mm256_setzero_si256();
                KUNROLL
                for (int k = 0; k < 8; k++) {
                    int32_t e;
                    memcpy(&e, xr[t] + (k < 4 ? lo + 4 * k : hi + 4 * (k - 4)),
                           4);
                    __m256i sx = _mm256_sign_epi8(_mm256_set1_epi32(e),
                                                  sl->ws[j][k]);
                    is = _mm256_add_epi32(is, _mm256_madd_epi16(
                             _mm256_maddubs_epi16(sl->w[j][k], sx), one));
                }
            }
            __m256 c = j < 16 ? _mm256_setzero_ps() : C[t][g];
            c = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is),
                                _mm256_mul_ps(sl->d[j],
                                              _mm256_set1_ps(xd[t][j])), c);
            if (q4)
                c = _mm256_fmadd_ps(sl->m[j], _mm256_set1_ps(xs[t][j]), c);
            C[t][g] = c;
        }
    }
    const __m256i mk = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m256 c[16], s8[8];
        for (int g = 0; g < 16; g++)
            c[g] = g < nb ? C[t][g] : _mm256_setzero_ps();
        for (int i = 0; i < 8; i++)
            s8[i] = _mm256_add_ps(c[i], c[i + 8]);
        __m256 v = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(s8[0], s8[4]),
                          _mm256_add_ps(s8[2], s8[6])),
            _mm256_add_ps(_mm256_add_ps(s8[1], s8[5]),
                          _mm256_add_ps(s8[3], s8[7])));
        _mm256_maskstore_ps(y + (size_t)(t0 + t) * ldy + r, mk, v);
    }
}

KTARGET_AVX2 KINLINE void rl2_rows(int q4, const struct kmat *W, int r0,
                                   int r1, const uint8_t *xq, size_t ldq,
                                   int n_tok, float *y, int ldy)
{
    const int nb = W->cols / KQ_BLK;
    _Alignas(64) struct rl2_slab sl;
    for (int r = r0; r < r1; r += 8) {
        int n = r1 - r < 8 ? r1 - r : 8;
        slab2_load(W, r, n, &sl);
        int t = 0;
        for (; t + RL_NT <= n_tok; t += RL_NT)
            rl2_pass(q4, RL_NT, &sl, nb, W->cols, xq, ldq, t, y, ldy, r, n);
        for (; t < n_tok; t++)
            rl2_pass(q4, 1, &sl, nb, W->cols, xq, ldq, t, y, ldy, r, n);
    }
}

KTARGET_AVX2 void kqa_rowlanes_avx2(const struct kmat *W, int r0, int r1,
                                    const uint8_t *xq, size_t ldq, int n_tok,
                                    float *y, int ldy)
{
    if (W->dtype == KDT_Q4_1)
        rl2_rows(1, W, r0, r1, xq, ldq, n_tok, y, ldy);
    else
        rl2_rows(0, W, r0, r1, xq, ldq, n_tok, y, ldy);
}
#endif
