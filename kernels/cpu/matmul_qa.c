/*
 * matmul_qa.c - Q8_0 / Q4_1 weights times int8 activations: the integer
 * block kernels (scalar, AVX2 maddubs, AVX-512 VNNI, with transposed
 * blocks for several tokens on VNNI, and on AVX2 for Q4_1 and long Q8_0
 * rows; AMX in
 * matmul_qa_amx.c) and the
 * per-row quantization of x they read (kqa_quantize, kqa_xt).
 *
 * x row t is quantized on its own (so batch invariance holds): per block
 * of 32 columns xd = max|x| / 127 and codes xq = round(x / xd), plus
 * xs = xd * sum(xq) for Q4_1's min term (layout: kcpu.h, KQA_LDQ).
 *
 * The sum every kernel computes (the "epilogue"; kcpu.h): for output row
 * r, token t and summation segment [cs, ce), with j0 = cs / 32, block j of
 * the segment feeds chain g = (j - j0) mod 16:
 *   isum_j = sum_i w[32j + i] * xq[32j + i]      (int32, exact)
 *   c[g]   = fma((float)isum_j, d_j * xd_j, c[g])
 *   Q4_1:  c[g] = fma(m_j, xs_j, c[g])
 * in block order from c[g] = +0 (chains with no block stay +0), then
 * s[i] = c[i] + c[i+8], v = ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)) is added
 * to y (stored, for the first segment of a call without accum).
 * The integer sums are exact whatever instruction forms them and in
 * whatever order, and the float steps are the same in every kernel, so
 * scalar, AVX2, AVX-512 and AMX agree bitwise (tests check it) and with
 * themselves whatever the batch. One sum per block (not per 4-byte lane)
 * is what AMX's tile product gives; sixteen independent chains give SIMD
 * kernels a vector of sixteen consecutive blocks' scales per row (one
 * load and convert) and keep the float work at about two operations per
 * block.
 *
 * Why int8 activations: an fp32-activation version (widen each weight,
 * FMA with x; commit "kernels: Q8_0 and Q4_1 weight dtypes") was measured
 * in the same process on this machine (AVX-512 VNNI, cache-resident
 * 1024x384 Q8_0 matrix, one thread): 65 us at 1 token against 36 us for
 * the first int8 kernel, 1.0-1.2x at 4..64 tokens
 * (bench/results/bench_quant-2026-12-02.md); it was removed.
 */
#include <math.h>
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>
#endif

/* Codes of one block (32 ints in column order) to their places in q. */
KINLINE void put_codes(int q4, int nb, int j, const int8_t *k, int8_t *q)
{
    if (!q4) {
        memcpy(q + (size_t)j * KQ_BLK, k, KQ_BLK);
        return;
    }
    memcpy(q + xq_off(1, nb, j, 0), k, 16);
    memcpy(q + xq_off(1, nb, j, 16), k + 16, 16);
}

/* Where a row's block scales and mins come from: Q8_0 / Q4_1's fp16
 * arrays (d, m), or Q4_S's bytes and exponent pairs (sc, mn, ex), the
 * same values (kernels.h). The vector kernels read Q4_S in place with
 * Q4_1's steps; matmul.c expands it for the others. */
struct qrow {
    const uint16_t *d, *m;
    const uint8_t *sc;
    const int8_t *mn, *ex;
};

KINLINE struct qrow qrow_of(const struct kmat *W, int r)
{
    size_t nb = (size_t)(W->cols / KQ_BLK);
    struct qrow q = {0};
    if (W->dtype == KDT_Q4_S) {
        q.sc = W->qsc + (size_t)r * nb;
        q.mn = W->qmn + (size_t)r * nb;
        q.ex = W->qexp + (size_t)r * (size_t)kq4s_ex_bytes(W->cols);
    } else {
        q.d = W->qd + (size_t)r * nb;
        q.m = W->dtype == KDT_Q4_1 ? W->qm + (size_t)r * nb : NULL;
    }
    return q;
}

#if KCPU_X86
/* kqa_quantize's arithmetic in AVX2 (same IEEE steps, same results). */
KTARGET_AVX2 static void quantize_avx2(int q4, const float *x, int ldx,
                                       int cols, int n_tok, uint8_t *q,
                                       size_t ldq)
{
    int nb = cols / KQ_BLK;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        int8_t *c = (int8_t *)(q + (size_t)t * ldq);
        float *xd = (float *)(q + (size_t)t * ldq + cols);
        float *xs = xd + nb;
        int32_t *xc = (int32_t *)(xs + nb);
        for (int j = 0; j < nb; j++) {
            const float *v = xr + (size_t)j * KQ_BLK;
            __m256 a[4], mx = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) {
                a[i] = _mm256_loadu_ps(v + 8 * i);
                mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, a[i]));
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx),
                                   _mm256_extractf128_ps(mx, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            float amax = _mm_cvtss_f32(m4);
            float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0;
            __m256 idv = _mm256_set1_ps(id);
            __m256i k[4], sum = _mm256_setzero_si256();
            for (int i = 0; i < 4; i++) {
                __m256 r = _mm256_round_ps(_mm256_mul_ps(a[i], idv),
                                           _MM_FROUND_TO_NEAREST_INT |
                                               _MM_FROUND_NO_EXC);
                k[i] = _mm256_cvtps_epi32(r); /* |r| <= 127 */
                sum = _mm256_add_epi32(sum, k[i]);
            }
            /* int32 -> int8 in column order (packs work per 128 bits) */
            __m256i p01 = _mm256_packs_epi32(k[0], k[1]);
            __m256i p23 = _mm256_packs_epi32(k[2], k[3]);
            __m256i p = _mm256_packs_epi16(p01, p23);
            p = _mm256_permutevar8x32_epi32(
                p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            if (q4) {
                _mm_storeu_si128((__m128i *)(c + xq_off(1, nb, j, 0)),
                                 _mm256_castsi256_si128(p));
                _mm_storeu_si128((__m128i *)(c + xq_off(1, nb, j, 16)),
                                 _mm256_extracti128_si256(p, 1));
            } else {
                _mm256_storeu_si256((__m256i *)(c + (size_t)j * KQ_BLK), p);
            }
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum),
                                       _mm256_extracti128_si256(sum, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            int s = _mm_cvtsi128_si32(s4);
            xd[j] = d;
            xs[j] = d * (float)s;
            xc[j] = s;
        }
    }
}
#endif

void kqa_xt(enum kdtype dt, int cols, const uint8_t *q, size_t ldq,
            int n_tok, uint8_t *xt)
{
    int nb = cols / KQ_BLK, q4 = dt == KDT_Q4_1;
    size_t ldt = KQA_LDT(cols);
    for (int t = 0; t < n_tok; t++) {
        const uint8_t *c = q + (size_t)t * ldq;
        uint8_t *o = xt + (size_t)t * ldt;
        memset(o, 0, ldt);
        for (int j = 0; j < nb; j++) /* block j: group j/16, dword j%16 */
            for (int k = 0; k < 8; k++) /* columns 4k..4k+3: contiguous */
                memcpy(o + (size_t)(j / 16) * 512 + 64 * k + 4 * (j % 16),
                       c + xq_off(q4, nb, j, 4 * k), 4);
    }
}

void kqa_quantize(enum kdtype dt, const float *x, int ldx, int cols,
                  int n_tok, uint8_t *q, size_t ldq)
{
    int q4 = dt == KDT_Q4_1;
#if KCPU_X86
    if (kisa_active() >= KISA_AVX2) {
        quantize_avx2(q4, x, ldx, cols, n_tok, q, ldq);
        return;
    }
#endif
    int nb = cols / KQ_BLK;
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        int8_t *c = (int8_t *)(q + (size_t)t * ldq);
        float *xd = (float *)(q + (size_t)t * ldq + cols);
        float *xs = xd + nb;
        int32_t *xc = (int32_t *)(xs + nb);
        for (int j = 0; j < nb; j++) {
            const float *v = xr + (size_t)j * KQ_BLK;
            float amax = 0;
            for (int i = 0; i < KQ_BLK; i++)
                amax = fmaxf(amax, fabsf(v[i]));
            float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0;
            int sum = 0;
            int8_t k8[KQ_BLK];
            for (int i = 0; i < KQ_BLK; i++) {
                int k = (int)nearbyintf(v[i] * id);
                k = k > 127 ? 127 : k < -127 ? -127 : k;
                k8[i] = (int8_t)k;
                sum += k;
            }
            put_codes(q4, nb, j, k8, c);
            xd[j] = d;
            xs[j] = d * (float)sum;
            xc[j] = sum;
        }
    }
}

/* ---- scalar (the reference) ---------------------------------------- */

/* isum of block j: weights of row wr, x codes of a token row xq. */
KINLINE int block_isum(int q4, int nb, const uint8_t *wr, const int8_t *xq,
                       int j)
{
    int s = 0;
    for (int i = 0; i < KQ_BLK; i++) {
        int w;
        if (!q4) {
            w = ((const int8_t *)wr)[(size_t)j * KQ_BLK + i];
        } else {
            uint8_t v = wr[(size_t)j * 16 + i % 16];
            w = i < 16 ? v & 15 : v >> 4;
        }
        s += w * xq[xq_off(q4, nb, j, i)];
    }
    return s;
}

void kmm_block_qa_scalar(const struct kmm_blk *b)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK, q4 = W->dtype == KDT_Q4_1;
    const size_t rb = kmat_row_bytes(W->dtype, W->cols);
    for (int r = b->r0; r < b->r1; r++) {
        const uint8_t *wr = (const uint8_t *)W->data + (size_t)r * rb;
        const uint16_t *d = W->qd + (size_t)r * nb;
        const uint16_t *m = q4 ? W->qm + (size_t)r * nb : NULL;
        for (int t = 0; t < b->nt; t++) {
            const uint8_t *xr = b->xq + (size_t)t * b->ldq;
            const int8_t *xq = (const int8_t *)xr;
            const float *xd = (const float *)(xr + W->cols), *xs = xd + nb;
            for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
                ce = kmm_seg_end(b, cs);
                float c[16] = {0};
                int j0 = cs / KQ_BLK;
                for (int j = j0; j < ce / KQ_BLK; j++) {
                    float *a = &c[(j - j0) & 15];
                    int isum = block_isum(q4, nb, wr, xq, j);
                    *a = fmaf((float)isum, kf16_to_f32(d[j]) * xd[j], *a);
                    if (q4)
                        *a = fmaf(kf16_to_f32(m[j]), xs[j], *a);
                }
                float v = kqa_chains_sum(c);
                float *yp = b->y + (size_t)t * b->ldy + r;
                *yp = b->accum || cs > b->c0 ? *yp + v : v;
            }
        }
    }
}

#if KCPU_X86
KTARGET_AVX2 KINLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* hsum8 of four vectors at once, the same tree (x_i = s_i + s_{i+4},
 * p = (x0 + x2, x1 + x3), p0 + p1), so the same bits: [a, b, c, d]. */
KTARGET_AVX2 KINLINE __m128 hsum8x4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20),
                              _mm256_permute2f128_ps(a, b, 0x31));
    __m256 cd = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20),
                              _mm256_permute2f128_ps(c, d, 0x31));
    __m256 p = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, 0x44),  /* x0 x1 */
                             _mm256_shuffle_ps(ab, cd, 0xee)); /* x2 x3 */
    __m256 h = _mm256_hadd_ps(p, p); /* a c a c | b d b d */
    return _mm_unpacklo_ps(_mm256_castps256_ps128(h),
                           _mm256_extractf128_ps(h, 1));
}

/* The sums of n <= 4 consecutive segments of one output into *y in
 * segment order, the first added to *y when add, else stored. */
KTARGET_AVX2 KINLINE void sums8_to_y(const __m256 *a, int n, float *y,
                                     int add)
{
    const __m256 z = _mm256_setzero_ps();
    float v[4];
    _mm_storeu_ps(v, hsum8x4(a[0], n > 1 ? a[1] : z, n > 2 ? a[2] : z,
                             n > 3 ? a[3] : z));
    for (int u = 0; u < n; u++)
        *y = add || u > 0 ? *y + v[u] : v[u];
}

/* The short-row kernels (short2, short5): four (row, token) sums v of a
 * block of rows into their places py, added when accum. */
KINLINE void short_put(float *const *py, const float *v, int n, int accum)
{
    for (int u = 0; u < n; u++)
        *py[u] = accum ? *py[u] + v[u] : v[u];
}

/* Their row widths, in blocks: a case per width with the count a
 * constant. 128 columns (W_UV of a 128-rank latent, per head), 160 ...
 * 512 (the default model's projections and head). */
#define SHORT_CASES(fn, dt, NT, b, t0)                                       \
    case 4: fn(dt, 4, NT, b, t0); return 1;                                  \
    case 5: fn(dt, 5, NT, b, t0); return 1;                                  \
    case 6: fn(dt, 6, NT, b, t0); return 1;                                  \
    case 8: fn(dt, 8, NT, b, t0); return 1;                                  \
    case 12: fn(dt, 12, NT, b, t0); return 1;                                \
    case 16: fn(dt, 16, NT, b, t0); return 1

/* ---- AVX2: eight blocks per step, chains 0..7 and 8..15 -------------- */

#define NR2 2
#define NT2 2
/* Weight prefetch distance of the AVX2 kernels, bytes ahead in the row:
 * Q4 as KQA_PF (below); Q8_0 1 KiB, measured on an AVX2-only EPYC (Zen
 * 1) by alternating the two every decode step of the synthetic q8 model,
 * each step paired with a read of as many bytes: 3-6 points more of the
 * read than at 8 KiB in 6 of 6 runs (2 KiB -5, 512 B -2, none -8); Q4
 * level or 2-3 points the other way, so it keeps 8 KiB. */
#ifndef KQA2_PF
#define KQA2_PF 8192
#endif
#ifndef KQA2_PF_Q8
#define KQA2_PF_Q8 1024
#endif

/* kmask8 + 8 - n: n dwords of ones, then zeros (n <= 8). */
static const int32_t kmask8[16] __attribute__((aligned(64))) = {
    -1, -1, -1, -1, -1, -1, -1, -1};

/*
 * n <= 8 fp16 / fp32 from p as a vector, zero past n; nothing past p + n
 * is read. Short rows (5 or 6 blocks: the default model's expert down
 * and q_b projections) take these on every step: masked loads, not a
 * copy through a stack buffer, whose wide reload of narrow stores cannot
 * be forwarded (the 384x160 Q4_1 matrix ran at 4-5 G weights/s, one
 * token, against 34 for long rows).
 */
KTARGET_AVX2 KINLINE __m256 load_h8(const uint16_t *p, int n)
{
    if (n == 8)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    if (n == 4) /* the last step of 12-block rows */
        return _mm256_cvtph_ps(_mm_loadl_epi64((const __m128i *)p));
    __m128i v = _mm_maskload_epi32(
        (const int *)p, _mm_loadu_si128((const __m128i *)(kmask8 + 8 - n / 2)));
    if (n & 1) { /* the last one through a general register */
        long long e = (long long)((uint64_t)p[n - 1] << (16 * ((n - 1) & 3)));
        v = _mm_or_si128(v, n > 4 ? _mm_set_epi64x(e, 0)
                                  : _mm_set_epi64x(0, e));
    }
    return _mm256_cvtph_ps(v);
}

KTARGET_AVX2 KINLINE __m256 load_f8(const float *p, int n)
{
    if (n == 8)
        return _mm256_loadu_ps(p);
    if (n == 4)
        return _mm256_insertf128_ps(_mm256_setzero_ps(), _mm_loadu_ps(p), 0);
    return _mm256_maskload_ps(
        p, _mm256_loadu_si256((const __m256i *)(kmask8 + 8 - n)));
}

/* n < 8 bytes from p in the low bytes of a vector, zero past n, through
 * a general register (no partial stores to reload). */
KTARGET_AVX2 KINLINE __m128i load_b8(const void *p, int n)
{
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return _mm_cvtsi64_si128((long long)v);
}

/* Scales d (and, q4, mins m) of blocks j .. j+n-1 (n <= 8, j a multiple
 * of 8: one Q4_S exponent pair) of row q, zero past n; Q4_S's pair
 * becomes two float powers of two in one vector (qs_load16). */
KTARGET_AVX2 KINLINE void qs_load8(const struct qrow *q, int q4, int j, int n,
                                   __m256 *d, __m256 *m)
{
    if (q->sc == NULL) {
        *d = load_h8(q->d + j, n);
        if (q4)
            *m = load_h8(q->m + j, n);
        return;
    }
    __m128i sb, mb;
    if (n == 8) {
        sb = _mm_loadl_epi64((const __m128i *)(q->sc + j));
        mb = _mm_loadl_epi64((const __m128i *)(q->mn + j));
    } else {
        sb = load_b8(q->sc + j, n);
        mb = load_b8(q->mn + j, n);
    }
    /* the pair's powers of two built in general registers and broadcast
     * (a vector build and two cross-lane permutes cost Zen 1 more) */
    *d = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sb)),
                       _mm256_castsi256_ps(_mm256_set1_epi32(
                           (q->ex[2 * (j / 8)] + 127) << 23)));
    *m = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(mb)),
                       _mm256_castsi256_ps(_mm256_set1_epi32(
                           (q->ex[2 * (j / 8) + 1] + 127) << 23)));
}

/* Q8_0 block: eight int32 partial sums (maddubs takes unsigned times
 * signed: w's sign moves onto x; no overflow, |w| <= 128, |x| <= 127). */
KTARGET_AVX2 KINLINE __m256i q8_lanes(const int8_t *w, const int8_t *x)
{
    __m256i wv = _mm256_loadu_si256((const __m256i *)w);
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv),
                                     _mm256_sign_epi8(xv, wv));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* Sums of eight Q8_0 blocks' partials v[0..7] in block order. */
KTARGET_AVX2 KINLINE __m256i q8_reduce(const __m256i v[8])
{
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]);
    __m256i h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]);
    __m256i h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i g0 = _mm256_hadd_epi32(h01, h23); /* b0..b3 half | other half */
    __m256i g1 = _mm256_hadd_epi32(h45, h67);
    /* halves added in 128 bits, not two vperm2i128 (8 uops each on Zen 1) */
    __m128i s0 = _mm_add_epi32(_mm256_castsi256_si128(g0),
                               _mm256_extracti128_si256(g0, 1));
    __m128i s1 = _mm_add_epi32(_mm256_castsi256_si128(g1),
                               _mm256_extracti128_si256(g1, 1));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(s0), s1, 1);
}

/* Q4_1 blocks j, j+1 (n = 1: j only) of weight row w against the x codes
 * of their group (xg: the group's start, gn its block count, p = j's place
 * in it, even): {8 int16 partials of j, 8 of j+1}, each a sum of four
 * products, |.| <= 4 * 15 * 127 = 7620 (q4_reduce adds them four at a
 * time in int16). */
KTARGET_AVX2 KINLINE __m256i q4_lanes(const uint8_t *w, const int8_t *xg,
                                      int gn, int p, int n)
{
    const __m256i f = _mm256_set1_epi8(15);
    __m256i v, xl, xh;
    if (n == 2) { /* the two blocks are adjacent: one load */
        v = _mm256_loadu_si256((const __m256i *)w);
        xl = _mm256_loadu_si256((const __m256i *)(xg + 16 * p));
        xh = _mm256_loadu_si256((const __m256i *)(xg + 16 * gn + 16 * p));
    } else {
        v = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)w));
        v = _mm256_inserti128_si256(v, _mm_setzero_si128(), 1);
        xl = _mm256_castsi128_si256(
            _mm_loadu_si128((const __m128i *)(xg + 16 * p)));
        xl = _mm256_inserti128_si256(xl, _mm_setzero_si128(), 1);
        xh = _mm256_castsi128_si256(
            _mm_loadu_si128((const __m128i *)(xg + 16 * gn + 16 * p)));
        xh = _mm256_inserti128_si256(xh, _mm_setzero_si128(), 1);
    }
    __m256i lo = _mm256_and_si256(v, f);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), f);
    return _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl),
                            _mm256_maddubs_epi16(hi, xh));
}

/*
 * Sums of eight Q4_1 blocks from their pair partials v[0..3]. Two int16
 * horizontal adds first (|.| <= 4 * 7620 = 30480 < 2^15: no overflow),
 * then one widening madd, instead of a madd per pair and int32 adds:
 * on Zen 1, where integer multiplies have one pipe and take two cycles a
 * 256-bit op, 1.07x the kernel (one row, one token, cache-resident).
 */
KTARGET_AVX2 KINLINE __m256i q4_reduce(const __m256i v[4])
{
    __m256i h01 = _mm256_hadd_epi16(v[0], v[1]); /* b0 x4 b2 x4 | b1 b3 */
    __m256i h23 = _mm256_hadd_epi16(v[2], v[3]);
    __m256i g = _mm256_madd_epi16(_mm256_hadd_epi16(h01, h23),
                                  _mm256_set1_epi16(1)); /* b0 b2 b4 b6 | .. */
    return _mm256_permutevar8x32_epi32(
        g, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* isum of the n <= 8 blocks from j (zero past n) of row w, token x. */
KTARGET_AVX2 KINLINE __m256i isum8(enum kdtype dt, int nb, const uint8_t *w,
                                   const int8_t *x, int j, int n)
{
    const int bs = dt == KDT_Q8_0 ? KQ_BLK : 16; /* bytes per block */
    const int pf = dt == KDT_Q8_0 ? KQA2_PF_Q8 : KQA2_PF;
    KUNROLL
    for (int i = 0; i < 8; i += 64 / bs) /* each 64-byte line once */
        _mm_prefetch((const char *)w + (size_t)(j + i) * bs + pf,
                     _MM_HINT_T0);
    if (dt == KDT_Q8_0) {
        __m256i v[8];
        KUNROLL
        for (int i = 0; i < 8; i++)
            v[i] = i < n ? q8_lanes((const int8_t *)w + (size_t)(j + i) * KQ_BLK,
                                    x + (size_t)(j + i) * KQ_BLK)
                         : _mm256_setzero_si256();
        return q8_reduce(v);
    }
    __m256i v[4];
    KUNROLL
    for (int i = 0; i < 4; i++) {
        /* a step starts on a multiple of 8 (segments start on multiples
         * of 32 blocks); a whole one (n == 8), or a last one of 4 (rows
         * of 12 blocks), is made of whole groups of 4 */
        int whole = n == 8 || n == 4;
        int jj = j + 2 * i, g0 = whole ? j + 4 * (i / 2) : jj & ~3;
        int gn = whole ? 4 : nb - g0 < 4 ? nb - g0 : 4;
        v[i] = 2 * i < n ? q4_lanes(w + (size_t)jj * 16,
                                    x + (size_t)g0 * KQ_BLK, gn, jj - g0,
                                    n - 2 * i >= 2 ? 2 : 1)
                         : _mm256_setzero_si256();
    }
    return q4_reduce(v);
}

/* The block sums of blocks j .. j+n-1 (n <= 8) of rows2's rows and
 * tokens, as floats: a step's integer part. */
KTARGET_AVX2 KINLINE void step2_sums(enum kdtype dt, int NR, int NT, int nb,
                                     const uint8_t *const *w,
                                     const int8_t *const *xq, int j, int n,
                                     __m256 p[NR2][NT2])
{
    KUNROLL
    for (int t = 0; t < NT; t++) {
        KUNROLL
        for (int k = 0; k < NR; k++)
            p[k][t] = _mm256_cvtepi32_ps(isum8(dt, nb, w[k], xq[t], j, n));
    }
}

/* Those sums p of blocks j .. j+n-1 into the chains acc: a step's float
 * part. */
KTARGET_AVX2 KINLINE void step2_apply(enum kdtype dt, int NR, int NT,
                                      const struct qrow *q,
                                      const float *const *xd,
                                      const float *const *xs, int j, int n,
                                      __m256 p[NR2][NT2],
                                      __m256 acc[NR2][NT2])
{
    __m256 dk[NR2], mk[NR2];
    KUNROLL
    for (int k = 0; k < NR; k++)
        qs_load8(&q[k], dt == KDT_Q4_1, j, n, &dk[k], &mk[k]);
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m256 xdv = load_f8(xd[t] + j, n);
        __m256 xsv = dt == KDT_Q4_1 ? load_f8(xs[t] + j, n)
                                    : _mm256_setzero_ps();
        KUNROLL
        for (int k = 0; k < NR; k++) {
            acc[k][t] = _mm256_fmadd_ps(p[k][t], _mm256_mul_ps(dk[k], xdv),
                                        acc[k][t]);
            if (dt == KDT_Q4_1)
                acc[k][t] = _mm256_fmadd_ps(mk[k], xsv, acc[k][t]);
        }
    }
}

/* Blocks j .. j+n-1 (n <= 8) of rows2's rows into the chains acc. */
KTARGET_AVX2 KINLINE void step2(enum kdtype dt, int NR, int NT, int nb,
                                const uint8_t *const *w, const struct qrow *q,
                                const int8_t *const *xq,
                                const float *const *xd,
                                const float *const *xs, int j, int n,
                                __m256 acc[NR2][NT2])
{
    __m256 p[NR2][NT2];
    step2_sums(dt, NR, NT, nb, w, xq, j, n, p);
    step2_apply(dt, NR, NT, q, xd, xs, j, n, p, acc);
}

/*
 * Two whole steps, blocks j .. j+15, into acc[0] (j..j+7) and acc[1]
 * (j+8..): the same float steps in the same order, but the integer sums
 * of all 16 blocks first. Written as two step2 calls the compiler kept
 * each step's long integer chain (loads, maddubs, the reduction tree,
 * convert) ahead of its own float steps and Zen 1's scheduler ran out of
 * work: one row, one token, Q4_S 1.12x the kernel this way
 * (cache-resident).
 */
KTARGET_AVX2 KINLINE void step2x16(enum kdtype dt, int NR, int NT, int nb,
                                   const uint8_t *const *w,
                                   const struct qrow *q,
                                   const int8_t *const *xq,
                                   const float *const *xd,
                                   const float *const *xs, int j,
                                   __m256 acc[2][NR2][NT2])
{
    __m256 p[2][NR2][NT2];
    step2_sums(dt, NR, NT, nb, w, xq, j, 8, p[0]);
    step2_sums(dt, NR, NT, nb, w, xq, j + 8, 8, p[1]);
    step2_apply(dt, NR, NT, q, xd, xs, j, 8, p[0], acc[0]);
    step2_apply(dt, NR, NT, q, xd, xs, j + 8, 8, p[1], acc[1]);
}

KTARGET_AVX2 KINLINE void rows2(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int r, int t0)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK;
    const size_t rb = kmat_row_bytes(dt, W->cols);
    const uint8_t *w[NR2];
    struct qrow q[NR2];
    const int8_t *xq[NT2];
    const float *xd[NT2], *xs[NT2];
    KUNROLL
    for (int k = 0; k < NR; k++) {
        w[k] = (const uint8_t *)W->data + (size_t)(r + k) * rb;
        q[k] = qrow_of(W, r + k);
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xq[t] = (const int8_t *)xr;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + nb;
    }
    __m256 pend[4]; /* NR * NT == 1: sums of segments cs0.. */
    int np = 0, cs0 = b->c0;
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m256 acc[2][NR2][NT2];
        KUNROLL
        for (int h = 0; h < 2; h++) {
            KUNROLL
            for (int k = 0; k < NR; k++) {
                KUNROLL
                for (int t = 0; t < NT; t++)
                    acc[h][k][t] = _mm256_setzero_ps();
            }
        }
        const int j0 = cs / KQ_BLK, je = ce / KQ_BLK;
        int j = j0;
        for (; j + 16 <= je; j += 16) /* whole steps, n a constant */
            step2x16(dt, NR, NT, nb, w, q, xq, xd, xs, j, acc);
        /* under 16 blocks left: a whole step into chains 0..7, then a
         * part into 8..15; or a part into 0..7 (constant indices: a
         * computed one kept the chains in memory) */
        int h = 0;
        if (j + 8 <= je) {
            step2(dt, NR, NT, nb, w, q, xq, xd, xs, j, 8, acc[0]);
            j += 8, h = 1;
        }
        if (j < je) {
            int n = je - j;
            if (h && n == 4) /* the group arithmetic folds away */
                step2(dt, NR, NT, nb, w, q, xq, xd, xs, j, 4, acc[1]);
            else if (h)
                step2(dt, NR, NT, nb, w, q, xq, xd, xs, j, n, acc[1]);
            else if (n == 4)
                step2(dt, NR, NT, nb, w, q, xq, xd, xs, j, 4, acc[0]);
            else
                step2(dt, NR, NT, nb, w, q, xq, xd, xs, j, n, acc[0]);
        }
        if (NR * NT == 1) { /* the segments' sums four at a time */
            pend[np++] = _mm256_add_ps(acc[0][0][0], acc[1][0][0]);
            if (np == 4 || ce >= b->c1) {
                sums8_to_y(pend, np, b->y + (size_t)t0 * b->ldy + r,
                           b->accum || cs0 > b->c0);
                cs0 = ce, np = 0;
            }
            continue;
        }
        int add = b->accum || cs > b->c0;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            KUNROLL
            for (int k = 0; k < NR; k++) {
                float *yp = b->y + (size_t)(t0 + t) * b->ldy + r + k;
                float v = hsum8(_mm256_add_ps(acc[0][k][t], acc[1][k][t]));
                *yp = add ? *yp + v : v;
            }
        }
    }
}

/* The n <= 4 pending (row, token) sums of short2 into their places. */
KTARGET_AVX2 KINLINE void short2_flush(const __m256 *pend, float *const *py,
                                       int n, int accum)
{
    const __m256 z = _mm256_setzero_ps();
    float v[4];
    _mm_storeu_ps(v, hsum8x4(pend[0], n > 1 ? pend[1] : z,
                             n > 2 ? pend[2] : z, n > 3 ? pend[3] : z));
    short_put(py, v, n, accum);
}

/*
 * One or two tokens, rows of NB <= 16 blocks (one segment): the default
 * model's 128- to 512-column projections. rows2 pays per row for the
 * segment loop, the step selection and a horizontal sum per token: at 5
 * or 6 blocks a row that was most of the cost (384x160 Q4_1 at 6-10 G
 * weights/s against 34 for long rows, one thread, one token). Here NB is
 * a constant, the tokens' scales are loaded once, and four (row, token)
 * sums share one hsum8x4 - rows2's steps and tree (chains 0..7 from step
 * 0, 8..15 from step 1, added), the same bits.
 */
KTARGET_AVX2 KINLINE void short2(enum kdtype dt, int NB, int NT,
                                 const struct kmm_blk *b, int t0)
{
    const struct kmat *W = b->W;
    const size_t rb = kmat_row_bytes(dt, W->cols);
    const int n0 = NB < 8 ? NB : 8, n1 = NB - n0;
    const __m256 z = _mm256_setzero_ps();
    const int8_t *xq[NT2];
    __m256 xd[NT2][2], xs[NT2][2];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        const float *d = (const float *)(xr + W->cols), *sm = d + NB;
        xq[t] = (const int8_t *)xr;
        xd[t][0] = load_f8(d, n0), xs[t][0] = load_f8(sm, n0);
        xd[t][1] = n1 ? load_f8(d + 8, n1) : z;
        xs[t][1] = n1 ? load_f8(sm + 8, n1) : z;
    }
    __m256 pend[4];
    float *py[4];
    int np = 0;
    for (int r = b->r0; r < b->r1; r++) {
        const uint8_t *w = (const uint8_t *)W->data + (size_t)r * rb;
        struct qrow q = qrow_of(W, r);
        if (np + NT > 4) {
            short2_flush(pend, py, np, b->accum);
            np = 0;
        }
        __m256 a[NT2][2];
        KUNROLL
        for (int h = 0; h < 2; h++) {
            int j = 8 * h, n = h ? n1 : n0;
            KUNROLL
            for (int t = 0; t < NT; t++)
                a[t][h] = z;
            if (n == 0)
                continue;
            __m256 dk, mk;
            qs_load8(&q, dt == KDT_Q4_1, j, n, &dk, &mk);
            KUNROLL
            for (int t = 0; t < NT; t++) {
                __m256 p = _mm256_cvtepi32_ps(isum8(dt, NB, w, xq[t], j, n));
                a[t][h] = _mm256_fmadd_ps(p, _mm256_mul_ps(dk, xd[t][h]), z);
                if (dt == KDT_Q4_1)
                    a[t][h] = _mm256_fmadd_ps(mk, xs[t][h], a[t][h]);
            }
        }
        KUNROLL
        for (int t = 0; t < NT; t++) {
            pend[np] = _mm256_add_ps(a[t][0], a[t][1]);
            py[np++] = b->y + (size_t)(t0 + t) * b->ldy + r;
        }
    }
    if (np > 0)
        short2_flush(pend, py, np, b->accum);
}

/* short2 for this block and tokens t0.. when it applies (one segment of
 * at most 16 blocks, a common width), else 0. */
KTARGET_AVX2 KINLINE int short2_nb(enum kdtype dt, int NT,
                                   const struct kmm_blk *b, int t0)
{
    switch (b->W->cols / KQ_BLK) {
        SHORT_CASES(short2, dt, NT, b, t0);
    default: return 0;
    }
}

KTARGET_AVX2 KINLINE int short2_try(enum kdtype dt, const struct kmm_blk *b,
                                    int t0)
{
    if (b->c0 != 0 || b->c1 != b->W->cols)
        return 0;
    return b->nt - t0 >= 2 ? short2_nb(dt, 2, b, t0)
                           : short2_nb(dt, 1, b, t0);
}

KTARGET_AVX2 KINLINE void loop2(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int t0)
{
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows2(dt, NR, NT, b, r, t0);
    for (; r < b->r1; r++)
        rows2(dt, 1, NT, b, r, t0);
}

/*
 * AVX2, Q4_1, several tokens: the VNNI kernel's transposed blocks (rows5t)
 * with eight blocks per group. Four pairs of blocks are transposed once
 * per row (8 unpacks, 4 lane permutes), so that dword i of every vector
 * belongs to block i, against x from kqa_xt (the half of its 16-block
 * vectors that holds these eight). Per token each vector then takes
 * maddubs and madd into its blocks' lanes, instead of isum8's per-token
 * horizontal sums: Q4_1 prefill 2.2x on the synthetic model (MTPD_ISA=avx2
 * on the EPYC). Q8_0 the same with an 8x8 dword transpose per row and 8
 * blocks (q8_blocks8), for rows over KQA_XT_SHORT_COLS columns (matmul.c;
 * short rows lost 6% on the default model, and take rows in the lanes
 * from 8 tokens): 1.3-2x at 2-3 tokens, 1.24-1.84x at 4, 1.4x at 64,
 * synthetic-model q8 prefill 55 -> 81 tok/s. Exact integer sums, rows2's
 * float steps: the same bits.
 */
KTARGET_AVX2 KINLINE void q4_blocks8(const uint8_t *w, int j, int n,
                                     __m256i T[8])
{
    const __m256i f = _mm256_set1_epi8(15);
    __m256i V[4], a[4], c[4];
    KUNROLL
    for (int m = 0; m < 4; m++) { /* blocks 2m (low half), 2m+1 (high) */
        const uint8_t *p = w + (size_t)(j + 2 * m) * 16;
        V[m] = 2 * m + 1 < n ? _mm256_loadu_si256((const __m256i *)p)
               : 2 * m < n ? _mm256_inserti128_si256(
                                 _mm256_setzero_si256(),
                                 _mm_loadu_si128((const __m128i *)p), 0)
                           : _mm256_setzero_si256();
    }
    a[0] = _mm256_unpacklo_epi32(V[0], V[1]);
    a[1] = _mm256_unpackhi_epi32(V[0], V[1]);
    a[2] = _mm256_unpacklo_epi32(V[2], V[3]);
    a[3] = _mm256_unpackhi_epi32(V[2], V[3]);
    c[0] = _mm256_unpacklo_epi64(a[0], a[2]); /* dword 0 of blocks */
    c[1] = _mm256_unpackhi_epi64(a[0], a[2]); /* 0 2 4 6 1 3 5 7 */
    c[2] = _mm256_unpacklo_epi64(a[1], a[3]);
    c[3] = _mm256_unpackhi_epi64(a[1], a[3]);
    const __m256i ord = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    KUNROLL
    for (int k = 0; k < 4; k++) { /* T[k], T[4+k]: columns 4k.., 16+4k.. */
        __m256i d = _mm256_permutevar8x32_epi32(c[k], ord);
        T[k] = _mm256_and_si256(d, f);
        T[4 + k] = _mm256_and_si256(_mm256_srli_epi16(d, 4), f);
    }
}

/* Q8_0 blocks j..j+n-1 (n <= 8) of row w transposed: T[k] dword i = bytes
 * 4k..4k+3 of block i (an 8x8 dword transpose), A[k] = |T[k]| (maddubs
 * takes unsigned times signed: the signs move onto x per token). */
KTARGET_AVX2 KINLINE void q8_blocks8(const uint8_t *w, int j, int n,
                                     __m256i T[8], __m256i A[8])
{
    __m256i V[8], a[8], c[8];
    KUNROLL
    for (int i = 0; i < 8; i++)
        V[i] = i < n ? _mm256_loadu_si256(
                           (const __m256i *)(w + (size_t)(j + i) * KQ_BLK))
                     : _mm256_setzero_si256();
    KUNROLL
    for (int i = 0; i < 8; i += 2) { /* dwords 0 1 4 5 / 2 3 6 7 of i, i+1 */
        a[i] = _mm256_unpacklo_epi32(V[i], V[i + 1]);
        a[i + 1] = _mm256_unpackhi_epi32(V[i], V[i + 1]);
    }
    KUNROLL
    for (int i = 0; i < 8; i += 4) { /* four blocks' dword pairs */
        c[i] = _mm256_unpacklo_epi64(a[i], a[i + 2]);
        c[i + 1] = _mm256_unpackhi_epi64(a[i], a[i + 2]);
        c[i + 2] = _mm256_unpacklo_epi64(a[i + 1], a[i + 3]);
        c[i + 3] = _mm256_unpackhi_epi64(a[i + 1], a[i + 3]);
    }
    /* c[q] (blocks 0-3) and c[4 + q] (blocks 4-7): dword q in the low
     * lane, dword 4 + q in the high one */
    KUNROLL
    for (int q = 0; q < 4; q++) {
        T[q] = _mm256_permute2x128_si256(c[q], c[4 + q], 0x20);
        T[4 + q] = _mm256_permute2x128_si256(c[q], c[4 + q], 0x31);
    }
    KUNROLL
    for (int k = 0; k < 8; k++)
        A[k] = _mm256_abs_epi8(T[k]);
}

/* rows2 for one row and NT (<= NT2T) tokens from b->xt (Q4_1 or long
 * Q8_0 rows). */
#define NT2T 4
/* Blocks j .. j+n-1 (n <= 8) of rows2t's row into the chains acc of its
 * NT tokens. */
KTARGET_AVX2 KINLINE void step2t(enum kdtype dt, int NT, const uint8_t *w,
                                 const struct qrow *q,
                                 const uint8_t *const *xt,
                                 const float *const *xd,
                                 const float *const *xs, int j, int n,
                                 __m256 *acc)
{
    const int bs = dt == KDT_Q8_0 ? KQ_BLK : 16; /* weight bytes a block */
    const __m256i ones = _mm256_set1_epi16(1);
    KUNROLL
    for (int l = 0; l < 8 * bs; l += 64) /* each line once */
        _mm_prefetch((const char *)w + (size_t)j * bs + l + KQA2_PF,
                     _MM_HINT_T0);
    __m256i T[8], A[8];
    if (dt == KDT_Q8_0)
        q8_blocks8(w, j, n, T, A);
    else
        q4_blocks8(w, j, n, T);
    __m256 dk, mk;
    qs_load8(q, dt == KDT_Q4_1, j, n, &dk, &mk);
    if (dt != KDT_Q4_1)
        mk = dk;
    KUNROLL
    for (int t = 0; t < NT; t++) {
        /* x: the half of the 16-block group's vectors for j */
        const uint8_t *xg = xt[t] + (size_t)(j / 16) * 512 +
                            32 * (size_t)((j / 8) & 1);
        __m256i is = _mm256_setzero_si256();
        if (dt == KDT_Q8_0) {
            KUNROLL
            for (int k = 0; k < 8; k += 2) { /* |pair| <= 32512 */
                __m256i x0 = _mm256_loadu_si256(
                    (const __m256i *)(xg + 64 * k));
                __m256i x1 = _mm256_loadu_si256(
                    (const __m256i *)(xg + 64 * (k + 1)));
                __m256i p0 = _mm256_maddubs_epi16(
                    A[k], _mm256_sign_epi8(x0, T[k]));
                __m256i p1 = _mm256_maddubs_epi16(
                    A[k + 1], _mm256_sign_epi8(x1, T[k + 1]));
                is = _mm256_add_epi32(
                    is, _mm256_add_epi32(_mm256_madd_epi16(p0, ones),
                                         _mm256_madd_epi16(p1, ones)));
            }
        } else {
            KUNROLL
            for (int k = 0; k < 4; k++) { /* |products| <= 7620 */
                __m256i p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(T[k], _mm256_loadu_si256(
                                                   (const __m256i *)(xg + 64 * k))),
                    _mm256_maddubs_epi16(T[4 + k], _mm256_loadu_si256(
                                                       (const __m256i *)(xg + 64 * (4 + k)))));
                is = _mm256_add_epi32(is, _mm256_madd_epi16(p, ones));
            }
        }
        __m256 a = acc[t];
        a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is),
                            _mm256_mul_ps(dk, load_f8(xd[t] + j, n)),
                            a);
        if (dt == KDT_Q4_1)
            a = _mm256_fmadd_ps(mk, load_f8(xs[t] + j, n), a);
        acc[t] = a;
    }
}

KTARGET_AVX2 KINLINE void rows2t(enum kdtype dt, int NT,
                                 const struct kmm_blk *b, int r, int t0)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK;
    const uint8_t *w = (const uint8_t *)W->data +
                       (size_t)r * kmat_row_bytes(dt, W->cols);
    const struct qrow q = qrow_of(W, r);
    const uint8_t *xt[NT2T];
    const float *xd[NT2T], *xs[NT2T];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xt[t] = b->xt + (size_t)(t0 + t) * b->ldt;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + nb;
    }
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m256 acc[2][NT2T];
        KUNROLL
        for (int t = 0; t < NT; t++)
            acc[0][t] = acc[1][t] = _mm256_setzero_ps();
        const int j0 = cs / KQ_BLK, je = ce / KQ_BLK;
        int j = j0;
        for (; j + 16 <= je; j += 16) { /* whole steps, n a constant */
            step2t(dt, NT, w, &q, xt, xd, xs, j, 8, acc[0]);
            step2t(dt, NT, w, &q, xt, xd, xs, j + 8, 8, acc[1]);
        }
        int h = 0; /* the rest as rows2 takes it */
        if (j + 8 <= je) {
            step2t(dt, NT, w, &q, xt, xd, xs, j, 8, acc[0]);
            j += 8, h = 1;
        }
        if (j < je) {
            if (h)
                step2t(dt, NT, w, &q, xt, xd, xs, j, je - j, acc[1]);
            else
                step2t(dt, NT, w, &q, xt, xd, xs, j, je - j, acc[0]);
        }
        int add = b->accum || cs > b->c0;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            float *yp = b->y + (size_t)(t0 + t) * b->ldy + r;
            float v = hsum8(_mm256_add_ps(acc[0][t], acc[1][t]));
            *yp = add ? *yp + v : v;
        }
    }
}

KTARGET_AVX2 KINLINE void block2t_dt(enum kdtype dt, const struct kmm_blk *b)
{
    for (int t0 = 0; t0 < b->nt; t0 += NT2T)
        for (int r = b->r0; r < b->r1; r++)
            switch (b->nt - t0) {
            case 1: rows2t(dt, 1, b, r, t0); break;
            case 2: rows2t(dt, 2, b, r, t0); break;
            case 3: rows2t(dt, 3, b, r, t0); break;
            default: rows2t(dt, 4, b, r, t0); break;
            }
}

KTARGET_AVX2 static void block2t(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0)
        block2t_dt(KDT_Q8_0, b);
    else
        block2t_dt(KDT_Q4_1, b);
}

KTARGET_AVX2 void kmm_block_qa_avx2(const struct kmm_blk *b)
{
    if (b->xt != NULL) { /* several tokens: Q4_1, long Q8_0 rows */
        block2t(b);
        return;
    }
    const enum kdtype q8 = KDT_Q8_0, q4 = KDT_Q4_1;
    for (int t0 = 0; t0 < b->nt; t0 += 2) {
        int two = b->nt - t0 >= 2;
        if (b->W->dtype == KDT_Q8_0 ? short2_try(q8, b, t0)
                                    : short2_try(q4, b, t0))
            continue;
        if (b->W->dtype == KDT_Q8_0)
            two ? loop2(q8, 2, 2, b, t0)
            : b->row1 ? loop2(q8, 1, 1, b, t0) /* kisa_row_stream() */
                      : loop2(q8, 2, 1, b, t0);
        else
            two ? loop2(q4, 2, 2, b, t0)
            : b->row1 ? loop2(q4, 1, 1, b, t0)
                      : loop2(q4, 2, 1, b, t0);
    }
}

/* ---- AVX-512 VNNI: sixteen blocks per step, one lane per chain ------- */

#define KTARGET_VNNI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

#define NR5 4 /* most rows, tokens per pass (array bounds) */
#define NT5 4
/* Weight prefetch distance per pass, bytes ahead of a row's reads (split
 * over its NR rows), and where to. DRAM-bound decode. Measured on the
 * EPYC VM, whose bandwidth moves 2x within seconds, by alternating two
 * distances every 13 ms step inside one process (a runtime variable in
 * place of the macro), each step followed by a plain read of as many
 * bytes, and comparing the medians of the steps' shares of that read:
 * 12 large Q4_S matrices one token each, two threads, 128 KiB ahead (the
 * earlier choice, from whole-run A/Bs that this VM's drift swamped) 80-87%
 * of the read against 84-90% at 8 KiB, 8 runs of 8; the synthetic model's
 * matmul list 54-82% against 58-86%; 4 KiB = 8 KiB, 2, 16 and 32 KiB
 * below. Q8_0 (VNNI) and the AVX2 kernels (KQA2_PF): 8 KiB 1-5 points
 * over 2 KiB (Zen 5; on Zen 1 AVX2 Q8_0 takes 1 KiB, KQA2_PF_Q8). */
#ifndef KQA_PF
#define KQA_PF 8192
#endif
#ifndef KQA_PF_HINT
#define KQA_PF_HINT _MM_HINT_T0
#endif
#ifndef KQA_PF_Q4
#define KQA_PF_Q4 8192
#endif
#ifndef KQA_PF_Q4_HINT /* into L1, as Q8_0: 3-8 points over L2 (T1), the
                        * same paired method, 8 runs */
#define KQA_PF_Q4_HINT _MM_HINT_T0
#endif
#ifndef KQA_NR1 /* rows per pass for one token (Q8_0, Q4_1), two, more */
#define KQA_NR1 4
#endif
#ifndef KQA_NR1_Q4
#define KQA_NR1_Q4 2
#endif
#ifndef KQA_NR2
#define KQA_NR2 2
#endif
#ifndef KQA_NR4
#define KQA_NR4 2
#endif

/*
 * Lane sums by two-source permutes: comb(a, b, i) adds two selections of
 * a and b's lanes, halving the partials per block and doubling the blocks
 * per vector. Level A: {2 blocks x 8} x 2 -> {4 x 4}; B: {4 x 4} x 2 ->
 * {8 x 2}; C: {8 x 2} x 2 -> {16 x 1}, all in block order.
 */
KTARGET_VNNI KINLINE __m512i comb(__m512i a, __m512i b, __m512i i1,
                                  __m512i i2)
{
    return _mm512_add_epi32(_mm512_permutex2var_epi32(a, i1, b),
                            _mm512_permutex2var_epi32(a, i2, b));
}

struct vidx {
    __m512i a1, a2, b1, b2, c1, c2;
};

KTARGET_VNNI KINLINE struct vidx vidx_make(void)
{
    struct vidx v;
    /* out lane 4b+i (blocks b of 4, partial i of 4): in partials i, i+4 */
    v.a1 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24,
                             25, 26, 27);
    v.a2 = _mm512_add_epi32(v.a1, _mm512_set1_epi32(4));
    /* out lane 2b+i: in partials i, i+2 of 4 */
    v.b1 = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24,
                             25, 28, 29);
    v.b2 = _mm512_add_epi32(v.b1, _mm512_set1_epi32(2));
    /* out lane b: in partials 0, 1 of 2 */
    v.c1 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                             26, 28, 30);
    v.c2 = _mm512_add_epi32(v.c1, _mm512_set1_epi32(1));
    return v;
}

/* Mask of the first n (<= 64) bytes. */
KINLINE __mmask64 bmask(int n)
{
    return n >= 64 ? ~(__mmask64)0 : n <= 0 ? 0 : ((__mmask64)1 << n) - 1;
}

KTARGET_VNNI KINLINE __m512 load_h16(const uint16_t *p, int n)
{
    __m256i h = n == 16 ? _mm256_loadu_si256((const __m256i *)p)
                        : _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), p);
    return _mm512_cvtph_ps(h);
}

KTARGET_VNNI KINLINE __m512 load_f16(const float *p, int n)
{
    return n == 16 ? _mm512_loadu_ps(p)
                   : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}

/* Weight bytes [o, o + n) of row w as a vector (zero past n). */
KTARGET_VNNI KINLINE __m512i load_b(const uint8_t *p, int n)
{
    return n >= 64 ? _mm512_loadu_si512((const void *)p)
                   : _mm512_maskz_loadu_epi8(bmask(n), p);
}

/* Scales d (and, q4, mins m) of blocks j .. j+n-1 (n <= 16, j a multiple
 * of 8) of row q, zero past n. Q4_S: the two groups' four exponent bytes
 * become float powers of two in one vector (exponent field arithmetic),
 * spread over the lanes by one permute each: a decode step on this path
 * has few cycles per 16 blocks to spare (the first version, two scalar
 * chains and a blend per vector, took 1.16x the time at one token). */
KTARGET_VNNI KINLINE void qs_load16(const struct qrow *q, int q4, int j,
                                    int n, __m512 *d, __m512 *m)
{
    if (q->sc == NULL) {
        *d = load_h16(q->d + j, n);
        if (q4)
            *m = load_h16(q->m + j, n);
        return;
    }
    const __mmask16 k = n == 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    __m128i sb = n == 16 ? _mm_loadu_si128((const __m128i *)(q->sc + j))
                         : _mm_maskz_loadu_epi8(k, q->sc + j);
    __m128i mb = n == 16 ? _mm_loadu_si128((const __m128i *)(q->mn + j))
                         : _mm_maskz_loadu_epi8(k, q->mn + j);
    int32_t e4; /* e0, f0, e1, f1 (the second pair only when n > 8) */
    if (n > 8) {
        memcpy(&e4, q->ex + 2 * (j / 8), 4);
    } else {
        uint16_t e2;
        memcpy(&e2, q->ex + 2 * (j / 8), 2);
        e4 = e2;
    }
    __m512i e = _mm512_cvtepi8_epi32(_mm_cvtsi32_si128(e4));
    __m512 p2 = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(e, _mm512_set1_epi32(127)), 23));
    const __m512i id = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2,
                                         2, 2, 2, 2);
    *d = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sb)),
                       _mm512_permutexvar_ps(id, p2));
    *m = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(mb)),
                       _mm512_permutexvar_ps(
                           _mm512_add_epi32(id, _mm512_set1_epi32(1)), p2));
}

/* Q8_0 blocks j+2k, j+2k+1 (nbytes of them valid) for every (row,
 * token): dpbusd lanes of w + 128 (w ^ 0x80, unsigned) times x. */
KTARGET_VNNI KINLINE void q8_pair(int NR, int NT, const uint8_t *const *w,
                                  const int8_t *const *x, int j, int k,
                                  int nbytes, __m512i p[NR5][NT5])
{
    const __m512i s80 = _mm512_set1_epi8((char)0x80);
    __m512i wv[NR5];
    KUNROLL
    for (int r = 0; r < NR; r++) {
        const uint8_t *a = w[r] + (size_t)(j + 2 * k) * KQ_BLK;
        _mm_prefetch((const char *)a + KQA_PF / NR, KQA_PF_HINT);
        wv[r] = _mm512_xor_si512(load_b(a, nbytes), s80);
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m512i xv = load_b((const uint8_t *)x[t] + (size_t)(j + 2 * k) * KQ_BLK,
                            nbytes);
        KUNROLL
        for (int r = 0; r < NR; r++)
            p[r][t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], xv);
    }
}

/* Q4_1 blocks j+4k .. j+4k+3 (nv of them valid; a group of xq_off) for
 * every (row, token): {4 blocks x 4 partials}. */
KTARGET_VNNI KINLINE void q4_quad(int NR, int NT, int nb,
                                  const uint8_t *const *w,
                                  const int8_t *const *x, int j, int k, int nv,
                                  __m512i p[NR5][NT5])
{
    const __m512i f = _mm512_set1_epi8(15);
    /* the group's size: 4 unless it ends the row (a whole quad is a whole
     * group: a constant where nv is one) */
    int g0 = j + 4 * k, gn = nv == 4 || nb - g0 >= 4 ? 4 : nb - g0;
    __m512i lo[NR5], hi[NR5];
    KUNROLL
    for (int r = 0; r < NR; r++) {
        const uint8_t *a = w[r] + (size_t)g0 * 16;
        _mm_prefetch((const char *)a + KQA_PF_Q4 / NR, KQA_PF_Q4_HINT);
        __m512i v = load_b(a, 16 * nv);
        lo[r] = _mm512_and_si512(v, f);
        hi[r] = _mm512_and_si512(_mm512_srli_epi16(v, 4), f);
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xg = (const uint8_t *)x[t] + (size_t)g0 * KQ_BLK;
        __m512i xl = load_b(xg, 16 * nv), xh = load_b(xg + 16 * gn, 16 * nv);
        KUNROLL
        for (int r = 0; r < NR; r++)
            p[r][t] = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[r], xl), hi[r],
                xh);
    }
}

/* isum of the n <= 16 blocks from j (lane = block, zero past n) for every
 * (row, token). */
KTARGET_VNNI KINLINE void isum16(enum kdtype dt, int NR, int NT, int nb,
                                 const uint8_t *const *w,
                                 const int8_t *const *x,
                                 const int32_t *const *xc, int j, int n,
                                 const struct vidx *ix, __m512i out[NR5][NT5])
{
    __m512i b[2][NR5][NT5];
    KUNROLL
    for (int h = 0; h < 2; h++) {
        if (dt == KDT_Q8_0) {
            __m512i a[2][NR5][NT5];
            KUNROLL
            for (int q = 0; q < 2; q++) {
                __m512i p0[NR5][NT5], p1[NR5][NT5];
                int k = 4 * h + 2 * q;
                q8_pair(NR, NT, w, x, j, k, (n - 2 * k) * KQ_BLK, p0);
                q8_pair(NR, NT, w, x, j, k + 1, (n - 2 * k - 2) * KQ_BLK, p1);
                KUNROLL
                for (int r = 0; r < NR; r++) {
                    KUNROLL
                    for (int t = 0; t < NT; t++)
                        a[q][r][t] = comb(p0[r][t], p1[r][t], ix->a1, ix->a2);
                }
            }
            KUNROLL
            for (int r = 0; r < NR; r++) {
                KUNROLL
                for (int t = 0; t < NT; t++)
                    b[h][r][t] = comb(a[0][r][t], a[1][r][t], ix->b1, ix->b2);
            }
        } else {
            __m512i p0[NR5][NT5], p1[NR5][NT5];
            int k = 2 * h, n0 = n - 4 * k, n1 = n0 - 4;
            q4_quad(NR, NT, nb, w, x, j, k, n0 < 0 ? 0 : n0 > 4 ? 4 : n0, p0);
            q4_quad(NR, NT, nb, w, x, j, k + 1, n1 < 0 ? 0 : n1 > 4 ? 4 : n1,
                    p1);
            KUNROLL
            for (int r = 0; r < NR; r++) {
                KUNROLL
                for (int t = 0; t < NT; t++)
                    b[h][r][t] = comb(p0[r][t], p1[r][t], ix->b1, ix->b2);
            }
        }
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m512i corr = _mm512_setzero_si512();
        if (dt == KDT_Q8_0) /* 128 * sum(x) */
            corr = _mm512_slli_epi32(
                n == 16 ? _mm512_loadu_si512((const void *)(xc[t] + j))
                        : _mm512_maskz_loadu_epi32((__mmask16)((1u << n) - 1),
                                                   xc[t] + j),
                7);
        KUNROLL
        for (int r = 0; r < NR; r++) {
            out[r][t] = comb(b[0][r][t], b[1][r][t], ix->c1, ix->c2);
            if (dt == KDT_Q8_0)
                out[r][t] = _mm512_sub_epi32(out[r][t], corr);
        }
    }
}

/* The chain sums of four accumulators, each by the tree rows5's hsum8
 * uses (s_i = c_i + c_{i+8}, t_i = s_i + s_{i+4}, (t0 + t2) + (t1 + t3)),
 * so the bits are the same; nine shuffles for four instead of about
 * four each (on short rows the sums were a large share of the work). */
KTARGET_VNNI KINLINE __m128 hsum4x(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44),  /* s */
                              _mm512_shuffle_f32x4(a, b, 0xee));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44),
                              _mm512_shuffle_f32x4(c, d, 0xee));
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), /* t */
                             _mm512_shuffle_f32x4(ab, cd, 0xdd));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4e));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xb1));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        t));
}

/* The sums of n <= 4 consecutive segments' chains of one output into *y
 * in segment order, the first added to *y when add, else stored. */
KTARGET_VNNI KINLINE void sums_to_y(const __m512 *a, int n, float *y, int add)
{
    const __m512 z = _mm512_setzero_ps();
    float v[4];
    _mm_storeu_ps(v, hsum4x(a[0], n > 1 ? a[1] : z, n > 2 ? a[2] : z,
                            n > 3 ? a[3] : z));
    for (int u = 0; u < n; u++)
        *y = add || u > 0 ? *y + v[u] : v[u];
}

/* Blocks j .. j+n-1 (n <= 16) of rows5's rows into their chains. */
KTARGET_VNNI KINLINE void step5(enum kdtype dt, int NR, int NT, int nb,
                                const uint8_t *const *w, const struct qrow *q,
                                const int8_t *const *xq,
                                const float *const *xd,
                                const float *const *xs,
                                const int32_t *const *xc, int j, int n,
                                const struct vidx *ix,
                                __m512 acc[NR5][NT5])
{
    __m512i is[NR5][NT5];
    isum16(dt, NR, NT, nb, w, xq, xc, j, n, ix, is);
    __m512 dv[NR5], mv[NR5];
    KUNROLL
    for (int k = 0; k < NR; k++)
        qs_load16(&q[k], dt == KDT_Q4_1, j, n, &dv[k], &mv[k]);
    KUNROLL
    for (int t = 0; t < NT; t++) {
        __m512 xdv = load_f16(xd[t] + j, n);
        __m512 xsv = dt == KDT_Q4_1 ? load_f16(xs[t] + j, n)
                                    : _mm512_setzero_ps();
        KUNROLL
        for (int k = 0; k < NR; k++) {
            acc[k][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[k][t]),
                                        _mm512_mul_ps(dv[k], xdv),
                                        acc[k][t]);
            if (dt == KDT_Q4_1)
                acc[k][t] = _mm512_fmadd_ps(mv[k], xsv, acc[k][t]);
        }
    }
}

KTARGET_VNNI KINLINE void rows5(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int r, int t0)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK;
    const size_t rb = kmat_row_bytes(dt, W->cols);
    const uint8_t *w[NR5];
    struct qrow q[NR5];
    const int8_t *xq[NT5];
    const float *xd[NT5], *xs[NT5];
    const int32_t *xc[NT5];
    const struct vidx ix = vidx_make();
    KUNROLL
    for (int k = 0; k < NR; k++) {
        w[k] = (const uint8_t *)W->data + (size_t)(r + k) * rb;
        q[k] = qrow_of(W, r + k);
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xq[t] = (const int8_t *)xr;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + nb;
        xc[t] = (const int32_t *)(xs[t] + nb);
    }
    __m512 pend[4]; /* NR * NT == 1: chains of segments cs0.. */
    int np = 0, cs0 = b->c0;
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m512 acc[NR5][NT5];
        KUNROLL
        for (int k = 0; k < NR; k++) {
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[k][t] = _mm512_setzero_ps();
        }
        const int je = ce / KQ_BLK;
        int j = cs / KQ_BLK;
        for (; j + 16 <= je; j += 16) /* n a constant: no masks */
            step5(dt, NR, NT, nb, w, q, xq, xd, xs, xc, j, 16, &ix, acc);
        if (j < je)
            step5(dt, NR, NT, nb, w, q, xq, xd, xs, xc, j, je - j, &ix, acc);
        if (NR * NT == 1) { /* the segments' sums four at a time */
            pend[np++] = acc[0][0];
            if (np == 4 || ce >= b->c1) {
                sums_to_y(pend, np, b->y + (size_t)t0 * b->ldy + r,
                          b->accum || cs0 > b->c0);
                cs0 = ce, np = 0;
            }
            continue;
        }
        int add = b->accum || cs > b->c0;
        KUNROLL
        for (int i = 0; i < NR * NT; i += 4) { /* four sums at once */
            __m512 a4[4];
            KUNROLL
            for (int u = 0; u < 4; u++)
                a4[u] = i + u < NR * NT ? acc[(i + u) % NR][(i + u) / NR]
                                        : _mm512_setzero_ps();
            float v[4];
            _mm_storeu_ps(v, hsum4x(a4[0], a4[1], a4[2], a4[3]));
            KUNROLL
            for (int u = 0; u < 4; u++) {
                if (i + u >= NR * NT)
                    break;
                int k = (i + u) % NR, t = (i + u) / NR;
                float *yp = b->y + (size_t)(t0 + t) * b->ldy + r + k;
                *yp = add ? *yp + v[u] : v[u];
            }
        }
    }
}

/*
 * Several tokens, transposed: the isum16 tree above costs 14 permutes
 * per (row, token) and 16 blocks, and with rows and tokens side by side
 * its partials spill (prefill was permute- and spill-bound). Here a Q8_0
 * row's 16 blocks (eight 64-byte vectors, two blocks each) are transposed
 * once, in three rounds of eight two-source permutes, into vectors whose
 * dword i is 4 bytes of block i (Q4_1: four vectors of four 16-byte
 * blocks, two rounds of four, then the nibbles split); x comes
 * pre-arranged the same way (kqa_xt), so eight dpbusd per token leave
 * block i's whole int32 sum in lane i, for any number of tokens. The sums
 * are exact, so the bits are rows5's.
 */
struct tidx {
    __m512i s1[2], s2[2], s3[2]; /* Q8_0 */
    __m512i f2[2];               /* Q4_1's round 2 (its round 1: s2) */
};

KTARGET_VNNI KINLINE struct tidx tidx_make(void)
{
    struct tidx v;
    /* round 1, pair (V[m], V[m + 4]): lane 4q + u takes dword 4h + u of
     * block q of {2m, 2m+1, 2m+8, 2m+9} */
    v.s1[0] = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19,
                                24, 25, 26, 27);
    v.s1[1] = _mm512_add_epi32(v.s1[0], _mm512_set1_epi32(4));
    /* round 2, pair (R1[2m + h], R1[2m + h + 4]): lane 2q + u takes dword
     * 2g + u (of those four) of block q of the eight */
    v.s2[0] = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21,
                                24, 25, 28, 29);
    v.s2[1] = _mm512_add_epi32(v.s2[0], _mm512_set1_epi32(2));
    /* round 3, pair (R2[p], R2[p + 4]) (p = 2h + g), whose dword pairs
     * hold blocks {0,1,8,9,4,5,12,13} and {2,3,10,11,6,7,14,15}: lane i
     * takes dword u of block i */
    v.s3[0] = _mm512_setr_epi32(0, 2, 16, 18, 8, 10, 24, 26, 4, 6, 20, 22,
                                12, 14, 28, 30);
    v.s3[1] = _mm512_add_epi32(v.s3[0], _mm512_set1_epi32(1));
    /* Q4_1 (16-byte blocks, four per vector): round 1, pair (V[m],
     * V[m + 2]): lane 2q + u takes dword 2h + u of block q of
     * {4m..4m+3, 4m+8..4m+11}, the same selection as Q8_0's round 2
     * (s2); round 2, pair (R[h], R[h + 2]), blocks {0..3, 8..11} and
     * {4..7, 12..15} in dword pairs: lane i takes dword u of block i */
    v.f2[0] = _mm512_setr_epi32(0, 2, 4, 6, 16, 18, 20, 22, 8, 10, 12, 14,
                                24, 26, 28, 30);
    v.f2[1] = _mm512_add_epi32(v.f2[0], _mm512_set1_epi32(1));
    return v;
}

/* One transpose round: for p < half, out[2p + u] takes lanes idx[u] of
 * the pair (in[p], in[p + half]). Q8_0 takes three rounds of eight
 * vectors, Q4_1 two of four (tidx_make says what each selects). */
KTARGET_VNNI KINLINE void tr_round(int half, const __m512i *in,
                                   const __m512i *idx, __m512i *out)
{
    KUNROLL
    for (int p = 0; p < half; p++) {
        KUNROLL
        for (int u = 0; u < 2; u++)
            out[2 * p + u] = _mm512_permutex2var_epi32(in[p], idx[u],
                                                       in[p + half]);
    }
}

/* Q4_1 blocks j .. j+n-1 (n <= 16) of row w transposed, nibbles apart:
 * T[k] dword i = the codes of columns 4k..4k+3 of block j + i (bytes
 * 4k..4k+3 of the block, low nibbles for k < 4, high ones for k >= 4;
 * zero past n). */
KTARGET_VNNI KINLINE void q4_transpose(const uint8_t *w, int j, int n,
                                       const struct tidx *ix, __m512i T[8])
{
    const __m512i f = _mm512_set1_epi8(15);
    __m512i V[4], R[4], P[4];
    KUNROLL
    for (int m = 0; m < 4; m++) {
        const uint8_t *a = w + (size_t)(j + 4 * m) * 16;
        _mm_prefetch((const char *)a + KQA_PF, KQA_PF_HINT);
        V[m] = load_b(a, (n - 4 * m) * 16);
    }
    tr_round(2, V, ix->s2, R);
    tr_round(2, R, ix->f2, P);
    KUNROLL
    for (int k = 0; k < 4; k++) {
        T[k] = _mm512_and_si512(P[k], f);
        T[4 + k] = _mm512_and_si512(_mm512_srli_epi16(P[k], 4), f);
    }
}

/* Blocks j .. j+n-1 (n <= 16) of row w, w + 128 as unsigned bytes,
 * transposed: T[k] dword i = bytes 4k..4k+3 of block j + i (zero past n,
 * then + 128). */
KTARGET_VNNI KINLINE void q8_transpose(const uint8_t *w, int j, int n,
                                       const struct tidx *ix, __m512i T[8])
{
    const __m512i s80 = _mm512_set1_epi8((char)0x80);
    __m512i V[8], R1[8], R2[8];
    KUNROLL
    for (int m = 0; m < 8; m++) {
        const uint8_t *a = w + (size_t)(j + 2 * m) * KQ_BLK;
        _mm_prefetch((const char *)a + KQA_PF, KQA_PF_HINT);
        V[m] = _mm512_xor_si512(load_b(a, (n - 2 * m) * KQ_BLK), s80);
    }
    tr_round(4, V, ix->s1, R1);
    tr_round(4, R1, ix->s2, R2);
    tr_round(4, R2, ix->s3, T);
}

/* Blocks j .. j+n-1 (n <= 16, j % 16 == 0) of rows5t's row into the
 * chains of its NT tokens. */
KTARGET_VNNI KINLINE void step5t(enum kdtype dt, int NT, const uint8_t *w,
                                 const struct qrow *q,
                                 const uint8_t *const *xt,
                                 const float *const *xd,
                                 const float *const *xs,
                                 const int32_t *const *xc, int j, int n,
                                 const struct tidx *ix, __m512 *acc)
{
    /* T[k]: columns 4k..4k+3 of each block, unsigned */
    __m512i T[8];
    if (dt == KDT_Q8_0)
        q8_transpose(w, j, n, ix, T);
    else
        q4_transpose(w, j, n, ix, T);
    __m512 dv, mv = _mm512_setzero_ps();
    qs_load16(q, dt == KDT_Q4_1, j, n, &dv, &mv);
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xg = xt[t] + (size_t)(j / 16) * 512;
        __m512i is = _mm512_setzero_si512();
        KUNROLL
        for (int k = 0; k < 8; k++)
            is = _mm512_dpbusd_epi32(
                is, T[k], _mm512_load_si512((const void *)(xg + 64 * k)));
        if (dt == KDT_Q8_0) { /* w + 128 above: less 128 sum(x) */
            __m512i cx = n == 16
                ? _mm512_loadu_si512((const void *)(xc[t] + j))
                : _mm512_maskz_loadu_epi32((__mmask16)((1u << n) - 1),
                                           xc[t] + j);
            is = _mm512_sub_epi32(is, _mm512_slli_epi32(cx, 7));
        }
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is),
                                 _mm512_mul_ps(dv, load_f16(xd[t] + j, n)),
                                 acc[t]);
        if (dt == KDT_Q4_1)
            acc[t] = _mm512_fmadd_ps(mv, load_f16(xs[t] + j, n), acc[t]);
    }
}

/* rows5 for one row and NT tokens from b->xt. */
KTARGET_VNNI KINLINE void rows5t(enum kdtype dt, int NT,
                                 const struct kmm_blk *b, int r, int t0)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK;
    const uint8_t *w = (const uint8_t *)W->data +
                       (size_t)r * kmat_row_bytes(dt, W->cols);
    const struct qrow q = qrow_of(W, r);
    const uint8_t *xt[KMM_NT];
    const float *xd[KMM_NT], *xs[KMM_NT];
    const int32_t *xc[KMM_NT];
    const struct tidx ix = tidx_make();
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xt[t] = b->xt + (size_t)(t0 + t) * b->ldt;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + nb;
        xc[t] = (const int32_t *)(xd[t] + 2 * nb);
    }
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m512 acc[KMM_NT];
        KUNROLL
        for (int t = 0; t < NT; t++)
            acc[t] = _mm512_setzero_ps();
        const int je = ce / KQ_BLK;
        int j = cs / KQ_BLK; /* j % 16 == 0 */
        for (; j + 16 <= je; j += 16) /* n a constant: no masks */
            step5t(dt, NT, w, &q, xt, xd, xs, xc, j, 16, &ix, acc);
        if (j < je)
            step5t(dt, NT, w, &q, xt, xd, xs, xc, j, je - j, &ix, acc);
        int add = b->accum || cs > b->c0;
        KUNROLL
        for (int t = 0; t < NT; t += 4) { /* four tokens' sums at once */
            const __m512 z = _mm512_setzero_ps();
            float v[4];
            _mm_storeu_ps(v, hsum4x(acc[t], t + 1 < NT ? acc[t + 1] : z,
                                    t + 2 < NT ? acc[t + 2] : z,
                                    t + 3 < NT ? acc[t + 3] : z));
            KUNROLL
            for (int u = 0; u < 4; u++) {
                if (t + u >= NT)
                    break;
                float *yp = b->y + (size_t)(t0 + t + u) * b->ldy + r;
                *yp = add ? *yp + v[u] : v[u];
            }
        }
    }
}

KTARGET_VNNI KINLINE void loop5t(enum kdtype dt, int NT,
                                 const struct kmm_blk *b)
{
    for (int r = b->r0; r < b->r1; r++)
        rows5t(dt, NT, b, r, 0);
}

KTARGET_VNNI KINLINE void loop5(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int t0)
{
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows5(dt, NR, NT, b, r, t0);
    for (; r < b->r1; r++)
        rows5(dt, 1, NT, b, r, t0);
}

/* The n <= 4 pending (row, token) chain sets of short5 into their
 * places. */
KTARGET_VNNI KINLINE void short5_flush(const __m512 *pend, float *const *py,
                                       int n, int accum)
{
    const __m512 z = _mm512_setzero_ps();
    float v[4];
    _mm_storeu_ps(v, hsum4x(pend[0], n > 1 ? pend[1] : z,
                            n > 2 ? pend[2] : z, n > 3 ? pend[3] : z));
    short_put(py, v, n, accum);
}

/*
 * short2's VNNI twin: one to three tokens on rows of NB <= 16 blocks (one
 * segment, one step5 a row with a constant block count, so constant
 * masks), four (row, token) chain sets per hsum4x. rows5 with the row
 * stream took one hsum4x per row, three quarters of it unused: 384x160
 * Q4_1 ran at 9 G weights/s, one token, one thread, against 56 for long
 * rows. The same steps and tree as rows5: the same bits.
 */
KTARGET_VNNI KINLINE void short5(enum kdtype dt, int NB, int NT,
                                 const struct kmm_blk *b, int t0)
{
    const struct kmat *W = b->W;
    const size_t rb = kmat_row_bytes(dt, W->cols);
    const struct vidx ix = vidx_make();
    const int8_t *xq[NT5];
    const float *xd[NT5], *xs[NT5];
    const int32_t *xc[NT5];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xq[t] = (const int8_t *)xr;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + NB;
        xc[t] = (const int32_t *)(xs[t] + NB);
    }
    const __m512 z = _mm512_setzero_ps();
    __m512 pend[4];
    float *py[4];
    int np = 0;
    for (int r = b->r0; r < b->r1; r++) {
        const uint8_t *w[1] = {(const uint8_t *)W->data + (size_t)r * rb};
        struct qrow q[1] = {qrow_of(W, r)};
        if (np + NT > 4) {
            short5_flush(pend, py, np, b->accum);
            np = 0;
        }
        __m512 acc[NR5][NT5];
        KUNROLL
        for (int t = 0; t < NT; t++)
            acc[0][t] = z;
        step5(dt, 1, NT, NB, w, q, xq, xd, xs, xc, 0, NB, &ix, acc);
        KUNROLL
        for (int t = 0; t < NT; t++) {
            pend[np] = acc[0][t];
            py[np++] = b->y + (size_t)(t0 + t) * b->ldy + r;
        }
    }
    if (np > 0)
        short5_flush(pend, py, np, b->accum);
}

KTARGET_VNNI KINLINE int short5_nb(enum kdtype dt, int NT,
                                   const struct kmm_blk *b, int t0)
{
    switch (b->W->cols / KQ_BLK) {
        SHORT_CASES(short5, dt, NT, b, t0);
    default: return 0;
    }
}

/* NR5 rows x up to NT5 tokens per pass. */
KTARGET_VNNI KINLINE void block5(enum kdtype dt, const struct kmm_blk *b)
{
    if (b->nt <= 3 && b->c0 == 0 && b->c1 == b->W->cols &&
        (b->nt == 3   ? short5_nb(dt, 3, b, 0)
         : b->nt == 2 ? short5_nb(dt, 2, b, 0)
                      : short5_nb(dt, 1, b, 0)))
        return;
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: /* kisa_row_stream(): one linear stream (AMD) */
            if (b->row1)
                loop5(dt, 1, 1, b, t0);
            else if (dt == KDT_Q8_0)
                loop5(dt, KQA_NR1, 1, b, t0);
            else
                loop5(dt, KQA_NR1_Q4, 1, b, t0);
            break;
        /* several tokens come here only for the rows an AMX call leaves
         * over; other calls take the transposed blocks (block5t) */
        case 2: loop5(dt, KQA_NR2, 2, b, t0); break;
        case 3: loop5(dt, KQA_NR4, 3, b, t0); break;
        default: loop5(dt, KQA_NR4, 4, b, t0); break;
        }
    }
}

/* Tokens from b->xt (kqa_xt), all of the block's (<= KMM_NT) in one
 * pass: each row is transposed once. */
KTARGET_VNNI KINLINE void block5t(enum kdtype dt, const struct kmm_blk *b)
{
    switch (b->nt) {
    case 1: loop5t(dt, 1, b); break;
    case 2: loop5t(dt, 2, b); break;
    case 3: loop5t(dt, 3, b); break;
    case 4: loop5t(dt, 4, b); break;
    case 5: loop5t(dt, 5, b); break;
    case 6: loop5t(dt, 6, b); break;
    case 7: loop5t(dt, 7, b); break;
    default: loop5t(dt, 8, b); break;
    }
}

KTARGET_VNNI void kmm_block_qa_vnni(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0 && b->xt != NULL)
        block5t(KDT_Q8_0, b);
    else if (b->xt != NULL)
        block5t(KDT_Q4_1, b);
    else if (b->W->dtype == KDT_Q8_0)
        block5(KDT_Q8_0, b);
    else
        block5(KDT_Q4_1, b);
}
#endif
