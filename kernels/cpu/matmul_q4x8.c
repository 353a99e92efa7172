/*
 * matmul_q4x8.c - Q4_X8: Q4_S / Q4_1 weights with eight rows interleaved
 * (layout: kernels.h), made at load for AVX2-only CPUs, and its kernels.
 *
 * Why: on an AVX2-only EPYC (Zen 1) the row-major Q4 kernels are bound by
 * the integer pipe, not by memory: a block's 32 products come out of
 * vpmaddubsw as sixteen int16 partials, and reducing eight blocks' worth
 * to eight sums (three vphaddw and a vpermd) costs about as much as the
 * products. With row l of a slab in dword lane l, the block's eight
 * maddubs (one per 4 columns, x's 4 codes broadcast) add up in int16 and
 * one vpmaddwd leaves the exact int32 sum of eight rows at once: no
 * horizontal work at all. A one-token pass takes two slabs half the
 * thread's share apart: the x broadcasts feed both, and two weight streams
 * read faster than one there. Prototype (bench/results/
 * bench_q4x8_proto-2026-12-04.c, Zen 1, 16384x4096 Q4_S, one token, 2
 * threads): 1.15-1.3x the row-major kernel's GB/s; one thread,
 * cache-resident 2048x2048: 1.3x.
 *
 * The float steps are matmul_qa.c's, per lane: block j of the segment
 * [j0, ..) feeds chain g = (j - j0) mod 16 with fma((float)isum,
 * d_j * xd_j, c_g) then fma(m_j, xs_j, c_g); the chains' tree and the
 * segments' sums in column order follow. So every result is the one the
 * source matrix gives in any other kernel, bit for bit (test_kernels).
 */
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>
#endif

#define X8_ALIGN(n) (((n) + 63) & ~(size_t)63)

void kq4x8_sections(const struct kmat *W, size_t sec[4])
{
    size_t nsl = (size_t)(W->rows + 7) / 8, nb = (size_t)(W->cols / KQ_BLK);
    size_t ng = (size_t)kq4s_ex_bytes(W->cols) / 2;
    int s = W->dtype == KDT_Q4_S || (W->dtype == KDT_Q4_X8 && W->qsc);
    sec[0] = nsl * nb * 128;
    sec[1] = nsl * nb * 8 * (s ? 1 : 2);
    sec[2] = sec[1];
    sec[3] = s ? nsl * ng * 16 : 0;
}

size_t kq4x8_bytes(const struct kmat *W)
{
    if (W == NULL || (W->dtype != KDT_Q4_S && W->dtype != KDT_Q4_1 &&
                      W->dtype != KDT_Q4_X8) ||
        W->cols % KQ_BLK != 0 || W->rows <= 0)
        return 0;
    size_t sec[4];
    kq4x8_sections(W, sec);
    return X8_ALIGN(sec[0]) + X8_ALIGN(sec[1]) + X8_ALIGN(sec[2]) +
           X8_ALIGN(sec[3]);
}

int kq4x8_pack(const struct kmat *W, void *buf, struct kmat *out)
{
    size_t bytes = kq4x8_bytes(W);
    if (bytes == 0 || W->dtype == KDT_Q4_X8 || W->data == NULL ||
        buf == NULL || ((uintptr_t)buf & 63))
        return MTPD_K_EINVAL;
    const int qs = W->dtype == KDT_Q4_S;
    if (qs ? !W->qsc || !W->qmn || !W->qexp : !W->qd || !W->qm)
        return MTPD_K_EINVAL;
    size_t sec[4];
    kq4x8_sections(W, sec);
    memset(buf, 0, bytes); /* padding rows: zero codes, scales, mins */
    uint8_t *w = buf, *sc = w + X8_ALIGN(sec[0]), *mn = sc + X8_ALIGN(sec[1]);
    int8_t *ex = (int8_t *)(mn + X8_ALIGN(sec[2]));
    const size_t nb = (size_t)(W->cols / KQ_BLK), rb = nb * 16;
    const size_t eb = (size_t)kq4s_ex_bytes(W->cols), ng = eb / 2;
    for (int r = 0; r < W->rows; r++) {
        size_t s = (size_t)r / 8, l = (size_t)r % 8;
        const uint8_t *src = (const uint8_t *)W->data + (size_t)r * rb;
        for (size_t j = 0; j < nb; j++) {
            uint8_t *o = w + (s * nb + j) * 128 + 4 * l;
            for (int v = 0; v < 4; v++)
                memcpy(o + 32 * v, src + 16 * j + 4 * (size_t)v, 4);
            size_t e = (s * nb + j) * 8 + l, k = (size_t)r * nb + j;
            if (qs) {
                sc[e] = W->qsc[k];
                mn[e] = (uint8_t)W->qmn[k];
            } else {
                ((uint16_t *)sc)[e] = W->qd[k];
                ((uint16_t *)mn)[e] = W->qm[k];
            }
        }
        for (size_t g = 0; qs && g < ng; g++) {
            ex[(s * ng + g) * 16 + l] = W->qexp[(size_t)r * eb + 2 * g];
            ex[(s * ng + g) * 16 + 8 + l] = W->qexp[(size_t)r * eb + 2 * g + 1];
        }
    }
    *out = (struct kmat){.dtype = KDT_Q4_X8, .rows = W->rows,
                         .cols = W->cols, .data = w,
                         .resident = W->resident};
    if (qs) {
        out->qsc = sc;
        out->qmn = (const int8_t *)mn;
        out->qexp = ex;
    } else {
        out->qd = (const uint16_t *)sc;
        out->qm = (const uint16_t *)mn;
    }
    return MTPD_K_OK;
}

/* ---- scalar (the reference for this layout) ------------------------- */

static void x8_rows_scalar(const struct kmat *W, int s0, int s1, int row0,
                           int row1, const uint8_t *xq, size_t ldq,
                           int n_tok, float *y, int ldy)
{
    const int nb = W->cols / KQ_BLK;
    for (int s = s0; s < s1; s++) {
        for (int l = 0; l < 8; l++) {
            int r = 8 * s + l;
            if (r < row0 || r >= row1)
                continue;
            for (int t = 0; t < n_tok; t++) {
                const uint8_t *xr = xq + (size_t)t * ldq;
                const int8_t *xc = (const int8_t *)xr;
                const float *xd = (const float *)(xr + W->cols), *xs = xd + nb;
                float *yp = y + (size_t)t * ldy + r;
                for (int cs = 0, ce; cs < W->cols; cs = ce) {
                    ce = cs + KMM_KSEG < W->cols ? cs + KMM_KSEG : W->cols;
                    float c[16] = {0};
                    int j0 = cs / KQ_BLK;
                    for (int j = j0; j < ce / KQ_BLK; j++) {
                        const uint8_t *b = (const uint8_t *)W->data +
                                           ((size_t)s * nb + j) * 128 + 4 * l;
                        int isum = 0;
                        for (int i = 0; i < 16; i++) {
                            uint8_t v = b[32 * (i / 4) + i % 4];
                            isum += (v & 15) * xc[xq_off(1, nb, j, i)] +
                                    (v >> 4) * xc[xq_off(1, nb, j, 16 + i)];
                        }
                        float d, m, *a = &c[(j - j0) & 15];
                        kq4x8_scale(W, (size_t)s, (size_t)l, (size_t)j, &d, &m);
                        *a = fmaf((float)isum, d * xd[j], *a);
                        *a = fmaf(m, xs[j], *a);
                    }
                    float v = kqa_chains_sum(c);
                    *yp = cs > 0 ? *yp + v : v;
                }
            }
        }
    }
}

/* ---- AVX2 ------------------------------------------------------------ */
#if KCPU_X86

#define X8_NT 4    /* most tokens a pass */
#ifndef X8_PF
#define X8_PF 4096 /* weight prefetch distance, bytes ahead in a slab */
#endif

/*
 * NS slabs sl[] (1 or 2) times NT tokens (1..X8_NT) from t0, every
 * segment. Integer part per block: a 32-byte load gives 8 rows x 4 bytes,
 * low nibbles columns 4k.., high ones 16+4k..; maddubs against x's dword
 * broadcast: int16 pairs <= 2 * 15 * 127, sixteen of them (a0 + a1) <=
 * 30480, then one madd.
 */
KTARGET_AVX2 KINLINE void x8_pass(int qs, int NS, int NT,
                                  const struct kmat *W, const int *sl,
                                  int row0, int row1, const uint8_t *xq,
                                  size_t ldq, int t0, float *y, int ldy)
{
    const int nb = W->cols / KQ_BLK, cols = W->cols;
    const int ng = kq4s_ex_bytes(cols) / 2;
    const __m256i f = _mm256_set1_epi8(15), one = _mm256_set1_epi16(1);
    const int8_t *xc[X8_NT];
    const float *xd[X8_NT], *xs[X8_NT];
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = xq + (size_t)(t0 + t) * ldq;
        xc[t] = (const int8_t *)xr;
        xd[t] = (const float *)(xr + cols);
        xs[t] = xd[t] + nb;
    }
    const uint8_t *w[2];
    size_t e0[2];
    __m256i mk[2];
    int full[2];
    KUNROLL
    for (int q = 0; q < NS; q++) {
        w[q] = (const uint8_t *)W->data + (size_t)sl[q] * nb * 128;
        e0[q] = (size_t)sl[q] * nb * 8;
        int lo = row0 - 8 * sl[q], hi = row1 - 8 * sl[q];
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        mk[q] = _mm256_and_si256(
            _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane));
        full[q] = lo <= 0 && hi >= 8;
    }
    for (int cs = 0; cs < cols; cs += KMM_KSEG) {
        const int j0 = cs / KQ_BLK;
        const int je = (cs + KMM_KSEG < cols ? cs + KMM_KSEG : cols) / KQ_BLK;
        __m256 C[2][X8_NT][16];
        __m256 pe[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        __m256 pf[2] = {pe[0], pe[0]}; /* Q4_S: set at j0 (a group start) */
        for (int j = j0; j < je; j++) {
            const int g = (j - j0) & 15;
            if (qs && (j & (KQ4S_GRP - 1)) == 0) {
                KUNROLL
                for (int q = 0; q < NS; q++) {
                    const int8_t *e =
                        W->qexp + ((size_t)sl[q] * ng + j / KQ4S_GRP) * 16;
                    const __m256i b = _mm256_set1_epi32(127);
                    __m256i ev = _mm256_cvtepi8_epi32(
                        _mm_loadl_epi64((const __m128i *)e));
                    __m256i fv = _mm256_cvtepi8_epi32(
                        _mm_loadl_epi64((const __m128i *)(e + 8)));
                    pe[q] = _mm256_castsi256_ps(
                        _mm256_slli_epi32(_mm256_add_epi32(ev, b), 23));
                    pf[q] = _mm256_castsi256_ps(
                        _mm256_slli_epi32(_mm256_add_epi32(fv, b), 23));
                }
            }
            const uint8_t *wj[2];
            __m256i a0[2][X8_NT], a1[2][X8_NT];
            KUNROLL
            for (int q = 0; q < NS; q++) {
                wj[q] = w[q] + (size_t)j * 128;
                _mm_prefetch((const char *)wj[q] + X8_PF, _MM_HINT_T0);
                _mm_prefetch((const char *)wj[q] + X8_PF + 64, _MM_HINT_T0);
                KUNROLL
                for (int t = 0; t < NT; t++)
                    a0[q][t] = a1[q][t] = _mm256_setzero_si256();
            }
            /* xq_off(1, nb, j, 0) and (.., 16) */
            const int g0 = j & ~3, gn = nb - g0 < 4 ? nb - g0 : 4;
            const size_t lo = (size_t)g0 * KQ_BLK + 16 * (size_t)(j - g0);
            const size_t hi = lo + 16 * (size_t)gn;
            KUNROLL
            for (int k = 0; k < 4; k++) {
                __m256i cl[2], ch[2];
                KUNROLL
                for (int q = 0; q < NS; q++) {
                    __m256i v = _mm256_load_si256((const __m256i *)(wj[q] + 32 * k));
                    cl[q] = _mm256_and_si256(v, f);
                    ch[q] = _mm256_and_si256(_mm256_srli_epi16(v, 4), f);
                }
                KUNROLL
                for (int t = 0; t < NT; t++) {
                    int32_t el, eh;
                    memcpy(&el, xc[t] + lo + 4 * k, 4);
                    memcpy(&eh, xc[t] + hi + 4 * k, 4);
                    const __m256i bl = _mm256_set1_epi32(el);
                    const __m256i bh = _mm256_set1_epi32(eh);
                    KUNROLL
                    for (int q = 0; q < NS; q++) {
                        a0[q][t] = _mm256_add_epi16(
                            a0[q][t], _mm256_maddubs_epi16(cl[q], bl));
                        a1[q][t] = _mm256_add_epi16(
                            a1[q][t], _mm256_maddubs_epi16(ch[q], bh));
                    }
                }
            }
            __m256 d[2], m[2];
            KUNROLL
            for (int q = 0; q < NS; q++) {
                size_t e = e0[q] + (size_t)j * 8;
                if (qs) {
                    d[q] = _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                            _mm_loadl_epi64((const __m128i *)(W->qsc + e)))),
                        pe[q]);
                    m[q] = _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                            _mm_loadl_epi64((const __m128i *)(W->qmn + e)))),
                        pf[q]);
                } else {
                    d[q] = _mm256_cvtph_ps(
                        _mm_loadu_si128((const __m128i *)(W->qd + e)));
                    m[q] = _mm256_cvtph_ps(
                        _mm_loadu_si128((const __m128i *)(W->qm + e)));
                }
            }
            KUNROLL
            for (int t = 0; t < NT; t++) {
                const __m256 xdv = _mm256_set1_ps(xd[t][j]);
                const __m256 xsv = _mm256_set1_ps(xs[t][j]);
                KUNROLL
                for (int q = 0; q < NS; q++) {
                    __m256i is = _mm256_madd_epi16(
                        _mm256_add_epi16(a0[q][t], a1[q][t]), one);
                    __m256 c = j - j0 < 16 ? _mm256_setzero_ps() : C[q][t][g];
                    c = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is),
                                        _mm256_mul_ps(d[q], xdv), c);
                    C[q][t][g] = _mm256_fmadd_ps(m[q], xsv, c);
                }
            }
        }
        const int ns = je - j0;
        KUNROLL
        for (int q = 0; q < NS; q++) {
            KUNROLL
            for (int t = 0; t < NT; t++) {
                __m256 v = kqa_tree8(C[q][t], ns);
                float *yp = y + (size_t)(t0 + t) * ldy + 8 * (size_t)sl[q];
                if (full[q]) {
                    if (cs > 0)
                        v = _mm256_add_ps(_mm256_loadu_ps(yp), v);
                    _mm256_storeu_ps(yp, v);
                } else { /* rows outside [row0, row1) are not touched */
                    if (cs > 0)
                        v = _mm256_add_ps(_mm256_maskload_ps(yp, mk[q]), v);
                    _mm256_maskstore_ps(yp, mk[q], v);
                }
            }
        }
    }
}

KTARGET_AVX2 KINLINE void x8_rows_avx2_dt(int qs, const struct kmat *W,
                                          int s0, int s1, int row0, int row1,
                                          const uint8_t *xq, size_t ldq,
                                          int n_tok, float *y, int ldy)
{
    if (n_tok == 1) { /* slab i with slab i + h: two streams */
        int h = (s1 - s0 + 1) / 2;
        for (int i = 0; i < h; i++) {
            int sl[2] = {s0 + i, s0 + h + i};
            if (sl[1] < s1)
                x8_pass(qs, 2, 1, W, sl, row0, row1, xq, ldq, 0, y, ldy);
            else
                x8_pass(qs, 1, 1, W, sl, row0, row1, xq, ldq, 0, y, ldy);
        }
        return;
    }
    for (int s = s0; s < s1; s++) {
        int t = 0;
        for (; t + X8_NT <= n_tok; t += X8_NT)
            x8_pass(qs, 1, X8_NT, W, &s, row0, row1, xq, ldq, t, y, ldy);
        switch (n_tok - t) {
        case 3: x8_pass(qs, 1, 3, W, &s, row0, row1, xq, ldq, t, y, ldy); break;
        case 2: x8_pass(qs, 1, 2, W, &s, row0, row1, xq, ldq, t, y, ldy); break;
        case 1: x8_pass(qs, 1, 1, W, &s, row0, row1, xq, ldq, t, y, ldy); break;
        default: break;
        }
    }
}

KTARGET_AVX2 static void x8_rows_avx2(const struct kmat *W, int s0, int s1,
                                      int row0, int row1, const uint8_t *xq,
                                      size_t ldq, int n_tok, float *y,
                                      int ldy)
{
    if (W->qsc != NULL)
        x8_rows_avx2_dt(1, W, s0, s1, row0, row1, xq, ldq, n_tok, y, ldy);
    else
        x8_rows_avx2_dt(0, W, s0, s1, row0, row1, xq, ldq, n_tok, y, ldy);
}
#endif

void kq4x8_rows(const struct kmat *W, int s0, int s1, int row0, int row1,
                const uint8_t *xq, size_t ldq, int n_tok, float *y, int ldy,
                int avx2)
{
#if KCPU_X86
    if (avx2) {
        x8_rows_avx2(W, s0, s1, row0, row1, xq, ldq, n_tok, y, ldy);
        return;
    }
#else
    (void)avx2;
#endif
    x8_rows_scalar(W, s0, s1, row0, row1, xq, ldq, n_tok, y, ldy);
}
