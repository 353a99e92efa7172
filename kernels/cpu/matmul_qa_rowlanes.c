/*
 * matmul_qa_rowlanes.c - Q8_0 / Q4_1 times int8 x for many tokens on
 * AVX-512 VNNI: sixteen output rows in the sixteen lanes.
 *
 * The other kernels put a row's blocks in the lanes (lane = chain), so
 * every (row, token) ends with a horizontal sum and a scalar store, and a
 * row of 12 blocks (384 columns) fills 3/4 of the lanes, of 5 blocks
 * (160 columns, the default model's expert down projections) 5/16: at
 * prefill those rows ran slower than the fp32 kernel on bf16 weights.
 * Here a slab of 16 rows is transposed once per segment of KMM_KSEG
 * columns (per block, eight vectors whose dword r holds 4 weight bytes of
 * row r) and every token's x codes come as dword broadcasts, so eight
 * dpbusd give block j's exact int32 sum for 16 rows at once. A pass runs
 * two slabs (32 rows) on eight tokens, so each broadcast feeds two
 * dpbusd, and x is repacked once per call (kqa_rl_pack) so that every
 * operand of a pass is at a fixed offset from one pointer. The float
 * steps are matmul_qa.c's, per lane: chain g = j mod 16 takes
 * fma((float)isum, d_j * xd_j, c_g) (Q4_1: then fma(m_j, xs_j, c_g)) in
 * block order, the chains are kept in a small buffer, and the same tree
 * (s_i = c_i + c_{i+8}, ...) is one vertical add per step; segments are
 * added to y in column order. So the bits are those of every other Q
 * kernel (tests/unit/test_kernels.c: isa_equal, invariance).
 *
 * Against the transposed blocks (EPYC Zen 5, 1 thread, cache-resident,
 * medians of interleaved runs): 3072-column rows 1.45-1.55x at 64 tokens,
 * 1.55-1.75x at 128; against the one-slab, one-segment version of this
 * kernel on 1024 columns 1.0-1.2x. The slab's transpose costs about as
 * much as eight tokens' worth of dot products, so matmul.c uses this
 * kernel from a token count that depends on the row length
 * (rl_min_tok). An AVX2 version (8 rows per vector, one slab per pass,
 * x as kqa_quantize wrote it) is at the end (rl2_min_tok).
 */
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

#define KTARGET_VNNI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

#define RL_NB (KQA_RL_SEG_COLS / KQ_BLK) /* blocks of a slab: a segment */

#define RL_NT 8                           /* tokens per pass */
#define KQA_RL_PF 2048 /* weight prefetch distance, bytes */
#ifndef KQA_RL_PF_HINT
#define KQA_RL_PF_HINT _MM_HINT_T0 /* the next slab's piece: where to */
#endif
#define RL_RAW (16 * KQA_RL_SEG_COLS + 64) /* a half slab as stored */

/* Sixteen rows' transposed weights and scales (one segment). */
struct rl_slab {
    __m512i w[RL_NB][8]; /* w[j][k] dword r: codes 4k..4k+3 of block j,
                          * row r (Q8_0 + 128 as unsigned bytes) */
    __m512 d[RL_NB], m[RL_NB]; /* lane r: d_j, m_j of row r */
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

/* The fp16 values h[(r + i) * nb + j0 + j] (i < n, j < ns <= 32) as
 * out[j] lane i, zero for i >= n: 16 rows of 64 bytes transposed as
 * dwords (block pairs), then each dword's halves apart. Element by
 * element through a stack array, the 16-bit stores stalled the vector
 * loads that read them back. */
KTARGET_VNNI static void slab_scales16(const uint16_t *h, int nb, int r,
                                       int n, int j0, int ns, __m512 *out)
{
    const __mmask32 mk = ns >= 32 ? ~(__mmask32)0
                                  : ((__mmask32)1 << ns) - 1;
    __m512i v[16];
    for (int i = 0; i < 16; i++)
        v[i] = i < n ? _mm512_maskz_loadu_epi16(
                           mk, h + (size_t)(r + i) * nb + j0)
                     : _mm512_setzero_si512();
    transpose16(v); /* v[m] lane i: blocks 2m, 2m + 1 of row i */
    for (int m = 0; 2 * m < ns; m++) {
        out[2 * m] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v[m]));
        if (2 * m + 1 < ns)
            out[2 * m + 1] = _mm512_cvtph_ps(
                _mm512_cvtepi32_epi16(_mm512_srli_epi32(v[m], 16)));
    }
}

/* n bytes from src to dst in 64-byte vectors (the last one masked),
 * prefetching pf bytes ahead of the reads when pf > 0. */
KTARGET_VNNI KINLINE void copy64(uint8_t *dst, const uint8_t *src, size_t n,
                                 size_t pf)
{
    size_t o = 0;
    for (; o + 64 <= n; o += 64) {
        if (pf)
            _mm_prefetch((const char *)(src + o + pf), _MM_HINT_T0);
        _mm512_storeu_si512((void *)(dst + o),
                            _mm512_loadu_si512((const void *)(src + o)));
    }
    if (o < n)
        _mm512_storeu_si512((void *)(dst + o),
                            _mm512_maskz_loadu_epi8(((__mmask64)1 << (n - o)) - 1,
                                                    src + o));
}

/* Blocks j0 .. j0+ns-1 (one segment) of rows r .. r+n-1 (n <= 16; rows
 * past n are zero) of W into sl, through raw (RL_RAW bytes, 64-aligned). */
KTARGET_VNNI static void slab_load(const struct kmat *W, int r, int n, int j0,
                                   int ns, uint8_t *raw, struct rl_slab *sl)
{
    const int q4 = W->dtype == KDT_Q4_1, nb = W->cols / KQ_BLK;
    const int bb = q4 ? 16 : 32; /* bytes per block */
    const size_t rb = kmat_row_bytes(W->dtype, W->cols);
    const size_t pb = (size_t)ns * bb; /* a row's bytes in the slab */
    const uint8_t *w0 = (const uint8_t *)W->data + (size_t)r * rb;
    if (ns == nb) {
        /* whole rows: the slab's rows are one contiguous run of n * rb
         * bytes, copied in address order (one stream the hardware
         * prefetcher follows into the next slab), then transposed from L1;
         * reading it block by block across the 16 rows waited for memory
         * (1.5-3x slower at few tokens) */
        copy64(raw, w0, (size_t)n * rb, KQA_RL_PF);
    } else {
        /* one segment of longer rows: n pieces of pb bytes (rl_rows has
         * prefetched them while the previous piece's tokens ran) */
        const uint8_t *p = w0 + (size_t)j0 * bb;
        for (int i = 0; i < n; i++)
            copy64(raw + (size_t)i * pb, p + (size_t)i * rb, pb, 0);
    }
    const int per = q4 ? 4 : 2; /* blocks per 64-byte load */
    for (int j = 0; j < ns; j += per) {
        int nbytes = (ns - j < per ? ns - j : per) * bb;
        __mmask64 mk = nbytes >= 64 ? ~(__mmask64)0
                                    : ((__mmask64)1 << nbytes) - 1;
        __m512i v[16];
        for (int i = 0; i < 16; i++)
            v[i] = i < n ? _mm512_maskz_loadu_epi8(
                               mk, raw + (size_t)i * pb + (size_t)j * bb)
                         : _mm512_setzero_si512();
        transpose16(v); /* v[m] lane i: dword m of row i's 64 bytes */
        if (!q4) {
            const __m512i s80 = _mm512_set1_epi8((char)0x80);
            for (int m = 0; m < 16 && j + m / 8 < ns; m++)
                sl->w[j + m / 8][m % 8] = _mm512_xor_si512(v[m], s80);
        } else {
            const __m512i f = _mm512_set1_epi8(15);
            for (int m = 0; m < 16 && j + m / 4 < ns; m++) {
                sl->w[j + m / 4][m % 4] = _mm512_and_si512(v[m], f);
                sl->w[j + m / 4][4 + m % 4] =
                    _mm512_and_si512(_mm512_srli_epi16(v[m], 4), f);
            }
        }
    }
    slab_scales16(W->qd, nb, r, n, j0, ns, sl->d);
    if (q4)
        slab_scales16(W->qm, nb, r, n, j0, ns, sl->m);
}

/*
 * x for these kernels (kqa_rl_pack): tokens in groups of RL_NT (the last
 * one padded with zeros), per group and block KQA_RL_XBLK bytes: each
 * token's 32 codes in the order the slab's eight vectors take them (the
 * dword k goes with w[j][k]: Q4_1 the low-half codes, then the high-half
 * ones), then the RL_NT scales xd, then Q4_1 the RL_NT xd * sum(codes),
 * Q8_0 the RL_NT -128 * sum(codes) (the + 128 of the slab's codes). Every
 * operand of a pass is then at a fixed offset from one pointer.
 */
_Static_assert(KQA_RL_XBLK == 40 * RL_NT && KQA_RL_XBYTES(32, 1) == 40 * RL_NT,
               "kcpu.h's packed-x sizes are for RL_NT tokens a group");

void kqa_rl_pack(enum kdtype dt, int cols, const uint8_t *xq, size_t ldq,
                 int n_tok, uint8_t *xr)
{
    const int q4 = dt == KDT_Q4_1, nb = cols / KQ_BLK;
    memset(xr, 0, KQA_RL_XBYTES(cols, n_tok));
    for (int t = 0; t < n_tok; t++) {
        const uint8_t *q = xq + (size_t)t * ldq;
        const float *xd = (const float *)(q + cols), *xs = xd + nb;
        const int32_t *xc = (const int32_t *)(xs + nb);
        uint8_t *g = xr + (size_t)(t / RL_NT) * nb * KQA_RL_XBLK;
        int u = t % RL_NT;
        for (int j = 0; j < nb; j++) {
            uint8_t *o = g + (size_t)j * KQA_RL_XBLK;
            memcpy(o + 32 * u, q + xq_off(q4, nb, j, 0), 16);
            memcpy(o + 32 * u + 16, q + xq_off(q4, nb, j, 16), 16);
            memcpy(o + 32 * RL_NT + 4 * u, &xd[j], 4);
            if (q4) {
                memcpy(o + 36 * RL_NT + 4 * u, &xs[j], 4);
            } else {
                int32_t c = -128 * xc[j];
                memcpy(o + 36 * RL_NT + 4 * u, &c, 4);
            }
        }
    }
}

/*
 * The RL_NT tokens of packed group xg (block j0 first) against NS (1 or
 * 2) slabs of the segment's ns blocks: y rows r .. r+n-1 (n <= 16 * NS)
 * of tokens t0 .. t0+nv-1 = the segment's sum, or (add) y plus it, as the
 * block kernels add segments in column order. Each broadcast x dword
 * feeds NS dpbusd, so two slabs (32 rows) read half the operands per
 * product; C holds the chains, [NS][RL_NT][16].
 */
KTARGET_VNNI KINLINE void rl_pass(int q4, int NS, const struct rl_slab *sl,
                                  int ns, const uint8_t *xg, int nv,
                                  float *y, int ldy, int t0, int r, int n,
                                  int add, __m512 *C)
{
    for (int j = 0; j < ns; j++) {
        const uint8_t *xb = xg + (size_t)j * KQA_RL_XBLK;
        const float *xd = (const float *)(xb + 32 * RL_NT);
        const int32_t *xc = (const int32_t *)(xb + 36 * RL_NT);
        const float *xs = (const float *)(xb + 36 * RL_NT);
        const int g = j & 15;
        KUNROLL
        for (int t = 0; t < RL_NT; t++) {
            __m512i a[2][2];
            KUNROLL
            for (int s = 0; s < NS; s++) {
                a[s][0] = q4 ? _mm512_setzero_si512()
                             : _mm512_set1_epi32(xc[t]);
                a[s][1] = _mm512_setzero_si512();
            }
            KUNROLL
            for (int k = 0; k < 4; k++) {
                int32_t el, eh;
                memcpy(&el, xb + 32 * t + 4 * k, 4);
                memcpy(&eh, xb + 32 * t + 16 + 4 * k, 4);
                const __m512i bl = _mm512_set1_epi32(el);
                const __m512i bh = _mm512_set1_epi32(eh);
                KUNROLL
                for (int s = 0; s < NS; s++) {
                    a[s][0] = _mm512_dpbusd_epi32(a[s][0], sl[s].w[j][k], bl);
                    a[s][1] = _mm512_dpbusd_epi32(a[s][1], sl[s].w[j][4 + k],
                                                  bh);
                }
            }
            const __m512 xdv = _mm512_set1_ps(xd[t]);
            KUNROLL
            for (int s = 0; s < NS; s++) {
                __m512 *cp = C + ((size_t)s * RL_NT + t) * 16 + g;
                __m512 c = j < 16 ? _mm512_setzero_ps() : *cp;
                c = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(_mm512_add_epi32(a[s][0], a[s][1])),
                    _mm512_mul_ps(sl[s].d[j], xdv), c);
                if (q4)
                    c = _mm512_fmadd_ps(sl[s].m[j], _mm512_set1_ps(xs[t]), c);
                *cp = c;
            }
        }
    }
    for (int s = 0; s < NS; s++) {
        int ls = n - 16 * s < 16 ? n - 16 * s : 16; /* rows in the slab */
        const __mmask16 mk = (__mmask16)((1u << ls) - 1);
        for (int t = 0; t < nv; t++) {
            const __m512 *c = C + ((size_t)s * RL_NT + t) * 16;
            __m512 cz[16], sv[8]; /* chains past ns: zero, as the lanes
                                   * past a row's blocks elsewhere */
            for (int i = 0; i < 16; i++)
                cz[i] = i < ns ? c[i] : _mm512_setzero_ps();
            for (int i = 0; i < 8; i++)
                sv[i] = _mm512_add_ps(cz[i], cz[i + 8]);
            __m512 v = _mm512_add_ps(
                _mm512_add_ps(_mm512_add_ps(sv[0], sv[4]),
                              _mm512_add_ps(sv[2], sv[6])),
                _mm512_add_ps(_mm512_add_ps(sv[1], sv[5]),
                              _mm512_add_ps(sv[3], sv[7])));
            float *yp = y + (size_t)(t0 + t) * ldy + r + 16 * s;
            if (add)
                v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, yp), v);
            _mm512_mask_storeu_ps(yp, mk, v);
        }
    }
}

/* The weights slab_load reads next (rows r .. r+n-1, blocks j0 ..
 * j0+ns-1), prefetched a share at a time between the token groups of the
 * current piece: its passes are compute-bound, and the copy then finds
 * the bytes in cache instead of waiting for memory (a quarter of the
 * kernel's time at 128 tokens before). */
struct rl_pf {
    const uint8_t *p; /* the current row's first byte */
    size_t rb, pb;    /* row stride; bytes per row */
    size_t o;         /* next line's offset in the row */
    int rows;         /* rows left, the current one included */
    size_t share;     /* lines per rl_pf_run */
};

static void rl_pf_set(struct rl_pf *f, const struct kmat *W, int r, int n,
                      int j0, int ns)
{
    const int bb = W->dtype == KDT_Q4_1 ? 16 : 32;
    f->rb = kmat_row_bytes(W->dtype, W->cols);
    f->p = (const uint8_t *)W->data + (size_t)r * f->rb + (size_t)j0 * bb;
    f->pb = (size_t)ns * bb;
    f->o = 0;
    f->rows = n > 0 ? n : 0;
}

/* The piece after blocks j0 .. j0+ns-1 of the slab of step rows at r (of
 * the rows up to r1): these rows' next segment, or the next slab's first;
 * share: its lines over groups calls of rl_pf_run. */
static void rl_pf_next(struct rl_pf *f, const struct kmat *W, int r, int step,
                       int r1, int j0, int ns, int groups)
{
    const int nb = W->cols / KQ_BLK;
    if (j0 + ns < nb) {
        int left = nb - j0 - ns;
        rl_pf_set(f, W, r, r1 - r < step ? r1 - r : step, j0 + ns,
                  left < RL_NB ? left : RL_NB);
    } else {
        int left = r1 - r - step;
        rl_pf_set(f, W, r + step, left < step ? left : step, 0,
                  nb < RL_NB ? nb : RL_NB);
    }
    size_t lines = (size_t)f->rows * ((f->pb + 63) / 64);
    f->share = (lines + (size_t)groups - 1) / (size_t)groups;
}

/* The next share of lines, row by row. */
static void rl_pf_run(struct rl_pf *f)
{
    for (size_t k = f->share; k > 0 && f->rows > 0; k--) {
        _mm_prefetch((const char *)(f->p + f->o), KQA_RL_PF_HINT);
        if ((f->o += 64) >= f->pb) {
            f->o = 0;
            f->p += f->rb;
            f->rows--;
        }
    }
}

/* Passes of KQA_RL_ROWS rows (two slabs; one at the end), each segment
 * by segment (KMM_KSEG columns, the summation segments of every Q
 * kernel): a slab holds one segment's transposed blocks, and every token
 * runs against it before the next. */
_Static_assert(KQA_RL_ROWS == 2 * 16, "a pass is two 16-row slabs");
KTARGET_VNNI KINLINE void rl_rows(int q4, const struct kmat *W, int r0,
                                  int r1, const uint8_t *xr, int n_tok,
                                  float *y, int ldy)
{
    const int nb = W->cols / KQ_BLK, ng = (n_tok + RL_NT - 1) / RL_NT;
    _Alignas(64) struct rl_slab sl[2];
    _Alignas(64) uint8_t raw[RL_RAW];
    _Alignas(64) __m512 C[2 * RL_NT * 16];
    struct rl_pf pf;
    for (int r = r0; r < r1; r += KQA_RL_ROWS) {
        int n = r1 - r < KQA_RL_ROWS ? r1 - r : KQA_RL_ROWS;
        int NS = n > 16 ? 2 : 1;
        for (int j0 = 0; j0 < nb; j0 += RL_NB) {
            int ns = nb - j0 < RL_NB ? nb - j0 : RL_NB, add = j0 > 0;
            for (int s = 0; s < NS; s++)
                slab_load(W, r + 16 * s, n - 16 * s < 16 ? n - 16 * s : 16,
                          j0, ns, raw, &sl[s]);
            rl_pf_next(&pf, W, r, KQA_RL_ROWS, r1, j0, ns, ng);
            for (int gi = 0; gi < ng; gi++) {
                rl_pf_run(&pf);
                const uint8_t *xg = xr + ((size_t)gi * nb + j0) * KQA_RL_XBLK;
                int t0 = gi * RL_NT;
                int nv = n_tok - t0 < RL_NT ? n_tok - t0 : RL_NT;
                if (NS == 2)
                    rl_pass(q4, 2, sl, ns, xg, nv, y, ldy, t0, r, n, add, C);
                else
                    rl_pass(q4, 1, sl, ns, xg, nv, y, ldy, t0, r, n, add, C);
            }
        }
    }
}

KTARGET_VNNI void kqa_rowlanes(const struct kmat *W, int r0, int r1,
                               const uint8_t *xr, int n_tok, float *y,
                               int ldy)
{
    if (W->dtype == KDT_Q4_1)
        rl_rows(1, W, r0, r1, xr, n_tok, y, ldy);
    else
        rl_rows(0, W, r0, r1, xr, n_tok, y, ldy);
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
    uint8_t raw[8 * KQA_RL_SEG_COLS + 32];
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

/* Block j's fp16 scale (hd) and, for Q4_1, min (hm) of rows r .. r+n-1,
 * zero up to width rows (the lanes of a slab past its last row): eight
 * rows, one block at a time (the VNNI slab takes them in one transpose,
 * slab_scales16). */
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

/* Blocks j0 .. j0+ns-1 (one segment) of rows r .. r+n-1 (n <= 8; rows
 * past n are zero) of W into sl. */
KTARGET_AVX2 static void slab2_load(const struct kmat *W, int r, int n,
                                    int j0, int ns, struct rl2_slab *sl)
{
    const int nb = W->cols / KQ_BLK, q4 = W->dtype == KDT_Q4_1;
    const int bb = q4 ? 16 : 32;
    const size_t rb = kmat_row_bytes(W->dtype, W->cols);
    const size_t pb = (size_t)ns * bb; /* a row's bytes in the slab */
    const uint8_t *w0 = (const uint8_t *)W->data + (size_t)r * rb;
    if (ns == nb) /* whole rows: in address order, as the VNNI slab */
        memcpy(sl->raw, w0, (size_t)n * rb);
    else
        for (int i = 0; i < n; i++)
            memcpy(sl->raw + (size_t)i * pb,
                   w0 + (size_t)i * rb + (size_t)j0 * bb, pb);
    const __m256i f = _mm256_set1_epi8(15);
    for (int j = 0; !q4 && j < ns; j++) { /* Q8_0: a block, 32 bytes */
        __m256i v[8];
        for (int i = 0; i < 8; i++)
            v[i] = i < n ? _mm256_loadu_si256((const __m256i *)(
                               sl->raw + (size_t)i * pb + (size_t)j * 32))
                         : _mm256_setzero_si256();
        transpose8(v); /* v[k] lane i: codes 4k..4k+3 of row i */
        for (int k = 0; k < 8; k++) {
            sl->w[j][k] = _mm256_abs_epi8(v[k]); /* -128 -> 128 unsigned */
            sl->ws[j][k] = v[k];
        }
    }
    for (int j = 0; q4 && j < ns; j += 2) { /* two blocks: 32 bytes a row */
        __m256i v[8];
        for (int i = 0; i < 8; i++) {
            if (i >= n) {
                v[i] = _mm256_setzero_si256();
                continue;
            }
            const uint8_t *p = sl->raw + (size_t)i * pb + (size_t)j * 16;
            v[i] = j + 1 < ns
                ? _mm256_loadu_si256((const __m256i *)p)
                : _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p));
            if (j + 1 >= ns)
                v[i] = _mm256_inserti128_si256(v[i], _mm_setzero_si128(), 1);
        }
        transpose8(v); /* v[m] lane i: dword m of row i's 32 bytes */
        for (int m = 0; m < 8 && j + m / 4 < ns; m++) {
            sl->w[j + m / 4][m % 4] = _mm256_and_si256(v[m], f);
            sl->w[j + m / 4][4 + m % 4] =
                _mm256_and_si256(_mm256_srli_epi16(v[m], 4), f);
        }
    }
    for (int j = 0; j < ns; j++) {
        uint16_t hd[8], hm[8];
        slab_scales(W, r, n, 8, j0 + j, hd, hm);
        sl->d[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hd));
        sl->m[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hm));
    }
}

KTARGET_AVX2 KINLINE void rl2_pass(int q4, int NT, const struct rl2_slab *sl,
                                   int nb, int j0, int ns, int cols,
                                   const uint8_t *xq, size_t ldq, int t0,
                                   float *y, int ldy, int r, int n, int add)
{
    __m256 C[RL_NT][16];
    const uint8_t *xr[RL_NT];
    const float *xd[RL_NT], *xs[RL_NT];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        xr[t] = xq + (size_t)(t0 + t) * ldq;
        xd[t] = (const float *)(xr[t] + cols) + j0;
        xs[t] = xd[t] + nb;
    }
    const __m256i one = _mm256_set1_epi16(1);
    for (int j = 0; j < ns; j++) {
        const size_t lo = xq_off(q4, nb, j0 + j, 0);
        const size_t hi = xq_off(q4, nb, j0 + j, 16);
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
        __m256 v = kqa_tree8(C[t], ns);
        float *yp = y + (size_t)(t0 + t) * ldy + r;
        if (add)
            v = _mm256_add_ps(_mm256_maskload_ps(yp, mk), v);
        _mm256_maskstore_ps(yp, mk, v);
    }
}

KTARGET_AVX2 KINLINE void rl2_rows(int q4, const struct kmat *W, int r0,
                                   int r1, const uint8_t *xq, size_t ldq,
                                   int n_tok, float *y, int ldy)
{
    const int nb = W->cols / KQ_BLK;
    _Alignas(64) struct rl2_slab sl;
    struct rl_pf pf;
    for (int r = r0; r < r1; r += 8) {
        int n = r1 - r < 8 ? r1 - r : 8;
        for (int j0 = 0; j0 < nb; j0 += RL_NB) {
            int ns = nb - j0 < RL_NB ? nb - j0 : RL_NB, add = j0 > 0;
            slab2_load(W, r, n, j0, ns, &sl);
            rl_pf_next(&pf, W, r, 8, r1, j0, ns, (n_tok + RL_NT - 1) / RL_NT);
            int t = 0;
            for (; t + RL_NT <= n_tok; t += RL_NT) {
                rl_pf_run(&pf);
                rl2_pass(q4, RL_NT, &sl, nb, j0, ns, W->cols, xq, ldq, t, y,
                         ldy, r, n, add);
            }
            for (; t < n_tok; t++)
                rl2_pass(q4, 1, &sl, nb, j0, ns, W->cols, xq, ldq, t, y, ldy,
                         r, n, add);
        }
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
