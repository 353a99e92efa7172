/*
 * matmul_qa.c - Q8_0 / Q4_1 weights times int8 activations: the integer
 * block kernels (scalar, AVX2 maddubs, AVX-512 VNNI) and the per-row
 * quantization of x they read (kqa_quantize).
 *
 * x row t is quantized on its own (so batch invariance holds): per block
 * of 32 columns xd = max|x| / 127 and codes xq = round(x / xd), plus
 * xs = xd * sum(xq) for Q4_1's min term. For weight block j of row r, the
 * p-th block of its summation segment (kcpu.h), with h = 8 * (p & 1):
 *   lane l (0..7)   = sum of w[4l..4l+3] * xq[4l..4l+3]    (int32, exact)
 *   acc[h+l]        = fma((float)lane l, d_j * xd_j, acc[h+l])
 *   Q4_1: acc[h]    = fma(m_j, xs_j, acc[h])  (the other lanes + 0 * 0)
 * (sixteen accumulators: AVX-512 does blocks j, j+1 in one zmm), and at
 * the segment's end a[l] = acc[l] + acc[8+l] are summed by one tree
 * ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7)) and added to y.
 * The integer lanes are the same whatever instruction computes them, and
 * the float steps are the same in every ISA, so the three kernels agree
 * bitwise (tests check it) and with themselves whatever the batch.
 *
 * Why int8 activations: an fp32-activation version (widen each weight,
 * FMA with x; commit "kernels: Q8_0 and Q4_1 weight dtypes") was measured
 * in the same process on this machine (AVX-512 VNNI, cache-resident
 * 1024x384 Q8_0 matrix, one thread): 65 us at 1 token against 36 us for
 * the first int8 kernel (22 us for this one), 1.0-1.2x at 4..64 tokens
 * (bench/results/bench_quant-2026-12-02.md); it was removed.
 */
#include <math.h>
#include <string.h>

#include "kcpu.h"

#if KCPU_X86
#include <immintrin.h>

/* kqa_quantize's arithmetic in AVX2 (same IEEE steps, same results). */
KTARGET_AVX2 static void quantize_avx2(const float *x, int ldx, int cols,
                                       int n_tok, uint8_t *q, size_t ldq)
{
    int nb = cols / KQ_BLK;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        int8_t *c = (int8_t *)(q + (size_t)t * ldq);
        float *xd = (float *)(q + (size_t)t * ldq + cols);
        float *xs = xd + nb;
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
            _mm256_storeu_si256((__m256i *)(c + (size_t)j * KQ_BLK), p);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum),
                                       _mm256_extracti128_si256(sum, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            xd[j] = d;
            xs[j] = d * (float)_mm_cvtsi128_si32(s4);
        }
    }
}
#endif

void kqa_quantize(const float *x, int ldx, int cols, int n_tok, uint8_t *q,
                  size_t ldq)
{
#if KCPU_X86
    if (kisa_active() >= KISA_AVX2) {
        quantize_avx2(x, ldx, cols, n_tok, q, ldq);
        return;
    }
#endif
    int nb = cols / KQ_BLK;
    for (int t = 0; t < n_tok; t++) {
        const float *xr = x + (size_t)t * ldx;
        int8_t *c = (int8_t *)(q + (size_t)t * ldq);
        float *xd = (float *)(q + (size_t)t * ldq + cols);
        float *xs = xd + nb;
        for (int j = 0; j < nb; j++) {
            const float *v = xr + (size_t)j * KQ_BLK;
            float amax = 0;
            for (int i = 0; i < KQ_BLK; i++)
                amax = fmaxf(amax, fabsf(v[i]));
            float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0;
            int sum = 0;
            for (int i = 0; i < KQ_BLK; i++) {
                int k = (int)nearbyintf(v[i] * id);
                k = k > 127 ? 127 : k < -127 ? -127 : k;
                c[j * KQ_BLK + i] = (int8_t)k;
                sum += k;
            }
            xd[j] = d;
            xs[j] = d * (float)sum;
        }
    }
}

/* The lane tree every kernel sums with (hsum8 in the SIMD ones). */
KINLINE float lanes_sum(const float a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* ---- scalar -------------------------------------------------------- */

/* Weight block j of a row as 32 ints in column order. */
KINLINE void wints(int q4, const uint8_t *wr, int j, int w[KQ_BLK])
{
    for (int i = 0; i < KQ_BLK; i++) {
        if (!q4) {
            w[i] = ((const int8_t *)wr)[j * KQ_BLK + i];
        } else {
            uint8_t v = wr[j * 16 + i % 16];
            w[i] = i < 16 ? v & 15 : v >> 4;
        }
    }
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
                float acc[16] = {0}; /* even blocks 0..7, odd ones 8..15 */
                for (int j = cs / KQ_BLK; j < ce / KQ_BLK; j++) {
                    float *a = acc + 8 * ((j - cs / KQ_BLK) & 1);
                    int w[KQ_BLK];
                    wints(q4, wr, j, w);
                    float s = kf16_to_f32(d[j]) * xd[j];
                    for (int l = 0; l < 8; l++) {
                        int lane = 0;
                        for (int i = 4 * l; i < 4 * l + 4; i++)
                            lane += w[i] * xq[j * KQ_BLK + i];
                        a[l] = fmaf((float)lane, s, a[l]);
                    }
                    if (q4) {
                        a[0] = fmaf(kf16_to_f32(m[j]), xs[j], a[0]);
                        for (int l = 1; l < 8; l++)
                            a[l] = fmaf(0.0f, 0.0f, a[l]);
                    }
                }
                for (int l = 0; l < 8; l++)
                    acc[l] += acc[8 + l];
                float v = lanes_sum(acc);
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

/* ---- AVX2: one block per step, 8 lanes -------------------------------- */

#define NR2 2
#define NT2 2

/* Weight block j of row w as 32 bytes in column order: Q8_0 its int8
 * codes, Q4_1 its nibbles (0..15). */
KTARGET_AVX2 KINLINE __m256i wblock(enum kdtype dt, const uint8_t *w, int j)
{
    if (dt == KDT_Q8_0)
        return _mm256_loadu_si256((const __m256i *)(w + (size_t)j * KQ_BLK));
    __m128i v = _mm_loadu_si128((const __m128i *)(w + (size_t)j * 16));
    __m128i f = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), f),
                            _mm_and_si128(v, f));
}

/* The eight int32 lanes of a block by maddubs + madd (no overflow:
 * |w| <= 128, |xq| <= 127); Q8_0 moves w's sign onto xq (maddubs takes
 * unsigned times signed). */
KTARGET_AVX2 KINLINE __m256i lanes_avx2(enum kdtype dt, __m256i w, __m256i x)
{
    __m256i p;
    if (dt == KDT_Q8_0)
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    else
        p = _mm256_maddubs_epi16(w, x);
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

KTARGET_AVX2 KINLINE void rows2(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int r, int t0)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK;
    const size_t rb = kmat_row_bytes(dt, W->cols);
    const uint8_t *w[NR2];
    const uint16_t *d[NR2], *m[NR2];
    const int8_t *xq[NT2];
    const float *xd[NT2], *xs[NT2];
    KUNROLL
    for (int k = 0; k < NR; k++) {
        w[k] = (const uint8_t *)W->data + (size_t)(r + k) * rb;
        d[k] = W->qd + (size_t)(r + k) * nb;
        m[k] = dt == KDT_Q4_1 ? W->qm + (size_t)(r + k) * nb : NULL;
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xq[t] = (const int8_t *)xr;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + nb;
    }
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
        for (int j = cs / KQ_BLK; j < ce / KQ_BLK; j++) {
            int h = (j - cs / KQ_BLK) & 1;
            __m256i wv[NR2];
            float dk[NR2];
            KUNROLL
            for (int k = 0; k < NR; k++) {
                wv[k] = wblock(dt, w[k], j);
                dk[k] = _cvtsh_ss(d[k][j]);
            }
            KUNROLL
            for (int t = 0; t < NT; t++) {
                __m256i xv = _mm256_loadu_si256(
                    (const __m256i *)(xq[t] + (size_t)j * KQ_BLK));
                KUNROLL
                for (int k = 0; k < NR; k++) {
                    __m256 p = _mm256_cvtepi32_ps(lanes_avx2(dt, wv[k], xv));
                    __m256 a = h ? acc[1][k][t] : acc[0][k][t];
                    a = _mm256_fmadd_ps(p, _mm256_set1_ps(dk[k] * xd[t][j]), a);
                    if (dt == KDT_Q4_1)
                        a = _mm256_fmadd_ps(
                            _mm256_setr_ps(_cvtsh_ss(m[k][j]), 0, 0, 0, 0, 0,
                                           0, 0),
                            _mm256_setr_ps(xs[t][j], 0, 0, 0, 0, 0, 0, 0), a);
                    if (h)
                        acc[1][k][t] = a;
                    else
                        acc[0][k][t] = a;
                }
            }
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

KTARGET_AVX2 KINLINE void loop2(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int t0)
{
    int r = b->r0;
    for (; r + NR <= b->r1; r += NR)
        rows2(dt, NR, NT, b, r, t0);
    for (; r < b->r1; r++)
        rows2(dt, 1, NT, b, r, t0);
}

KTARGET_AVX2 void kmm_block_qa_avx2(const struct kmm_blk *b)
{
    const enum kdtype q8 = KDT_Q8_0, q4 = KDT_Q4_1;
    for (int t0 = 0; t0 < b->nt; t0 += 2) {
        int two = b->nt - t0 >= 2;
        if (b->W->dtype == KDT_Q8_0)
            two ? loop2(q8, 2, 2, b, t0) : loop2(q8, 2, 1, b, t0);
        else
            two ? loop2(q4, 2, 2, b, t0) : loop2(q4, 2, 1, b, t0);
    }
}

/* ---- AVX-512 VNNI: two blocks per step, 16 lanes ---------------------- */

#define KTARGET_VNNI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

#define NR5 4
#define NT5 4

/* Weight blocks j, j+1 of row w (64 bytes, column order; see wblock). */
KTARGET_VNNI KINLINE __m512i wpair(enum kdtype dt, const uint8_t *w, int j)
{
    if (dt == KDT_Q8_0)
        return _mm512_loadu_si512((const void *)(w + (size_t)j * KQ_BLK));
    /* bytes 0..15 (block j), 16..31 (block j+1) as 128-bit parts
     * [p0, p0, p1, p1]; the odd parts take the high nibbles */
    __m512i v = _mm512_castsi256_si512(
        _mm256_loadu_si256((const __m256i *)(w + (size_t)j * 16)));
    v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(1, 1, 0, 0));
    const __m512i sh = _mm512_setr_epi64(0, 0, 0x0004000400040004ll,
                                         0x0004000400040004ll, 0, 0,
                                         0x0004000400040004ll,
                                         0x0004000400040004ll);
    return _mm512_and_si512(_mm512_srlv_epi16(v, sh), _mm512_set1_epi8(15));
}

/* Two fp16 at h as {h[0] x 8, h[1] x 8}; with mask 0x0101 {h[0], 0 x 7,
 * h[1], 0 x 7}. */
KTARGET_VNNI KINLINE __m512 pair_f16(const uint16_t *h, __mmask16 mask)
{
    uint32_t v;
    memcpy(&v, h, sizeof v);
    __m512 f = _mm512_cvtph_ps(_mm256_set1_epi32((int)v)); /* h0 h1 h0 .. */
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1,
                                          1, 1, 1, 1, 1);
    return _mm512_maskz_permutexvar_ps(mask, idx, f);
}

/* Two floats at p, laid out as pair_f16. */
KTARGET_VNNI KINLINE __m512 pair_f32(const float *p, __mmask16 mask)
{
    double v; /* p is only 4-byte aligned: one 8-byte load via memcpy */
    memcpy(&v, p, sizeof v);
    __m512 f = _mm512_castps128_ps512(_mm_castpd_ps(_mm_set_sd(v)));
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1,
                                          1, 1, 1, 1, 1);
    return _mm512_maskz_permutexvar_ps(mask, idx, f);
}

KTARGET_VNNI KINLINE __m512i lanes_vnni(enum kdtype dt, __m512i w, __m512i x)
{
    if (dt == KDT_Q8_0) {
        __mmask64 neg = _mm512_movepi8_mask(w);
        __m512i aw = _mm512_abs_epi8(w);
        __m512i sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
        return _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
    }
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x);
}

KTARGET_VNNI KINLINE void rows5(enum kdtype dt, int NR, int NT,
                                const struct kmm_blk *b, int r, int t0)
{
    const struct kmat *W = b->W;
    const int nb = W->cols / KQ_BLK;
    const size_t rb = kmat_row_bytes(dt, W->cols);
    const uint8_t *w[NR5];
    const uint16_t *d[NR5], *m[NR5];
    const int8_t *xq[NT5];
    const float *xd[NT5], *xs[NT5];
    const __m512 z = _mm512_setzero_ps();
    KUNROLL
    for (int k = 0; k < NR; k++) {
        w[k] = (const uint8_t *)W->data + (size_t)(r + k) * rb;
        d[k] = W->qd + (size_t)(r + k) * nb;
        m[k] = dt == KDT_Q4_1 ? W->qm + (size_t)(r + k) * nb : NULL;
    }
    KUNROLL
    for (int t = 0; t < NT; t++) {
        const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;
        xq[t] = (const int8_t *)xr;
        xd[t] = (const float *)(xr + W->cols);
        xs[t] = xd[t] + nb;
    }
    for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
        ce = kmm_seg_end(b, cs);
        __m512 acc[NR5][NT5];
        KUNROLL
        for (int k = 0; k < NR; k++) {
            KUNROLL
            for (int t = 0; t < NT; t++)
                acc[k][t] = z;
        }
        int j = cs / KQ_BLK, je = ce / KQ_BLK;
        for (; j + 2 <= je; j += 2) { /* blocks j (lanes 0..7), j+1 */
            __m512i wv[NR5];
            __m512 dv[NR5], mv[NR5];
            KUNROLL
            for (int k = 0; k < NR; k++) {
                _mm_prefetch((const char *)w[k] + kmat_row_bytes(dt, j * KQ_BLK) +
                                 KMM_PF_BYTES / 4, _MM_HINT_T0);
                wv[k] = wpair(dt, w[k], j);
                dv[k] = pair_f16(d[k] + j, 0xffff);
                if (dt == KDT_Q4_1)
                    mv[k] = pair_f16(m[k] + j, 0x0101);
            }
            KUNROLL
            for (int t = 0; t < NT; t++) {
                __m512i xv = _mm512_loadu_si512(
                    (const void *)(xq[t] + (size_t)j * KQ_BLK));
                __m512 xdv = pair_f32(xd[t] + j, 0xffff);
                __m512 xsv = dt == KDT_Q4_1 ? pair_f32(xs[t] + j, 0x0101) : z;
                KUNROLL
                for (int k = 0; k < NR; k++) {
                    __m512 p = _mm512_cvtepi32_ps(lanes_vnni(dt, wv[k], xv));
                    acc[k][t] = _mm512_fmadd_ps(p, _mm512_mul_ps(dv[k], xdv),
                                                acc[k][t]);
                    if (dt == KDT_Q4_1)
                        acc[k][t] = _mm512_fmadd_ps(mv[k], xsv, acc[k][t]);
                }
            }
        }
        if (j < je) { /* an odd last block: lanes 0..7 only */
            KUNROLL
            for (int t = 0; t < NT; t++) {
                __m256i xv = _mm256_loadu_si256(
                    (const __m256i *)(xq[t] + (size_t)j * KQ_BLK));
                KUNROLL
                for (int k = 0; k < NR; k++) {
                    __m256i wv = wblock(dt, w[k], j);
                    __m256i l;
                    if (dt == KDT_Q8_0)
                        l = _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                _mm256_sign_epi8(wv, wv),
                                                _mm256_sign_epi8(xv, wv));
                    else
                        l = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
                    __m256 a = _mm512_castps512_ps256(acc[k][t]);
                    a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l),
                                        _mm256_set1_ps(_cvtsh_ss(d[k][j]) *
                                                       xd[t][j]), a);
                    if (dt == KDT_Q4_1)
                        a = _mm256_fmadd_ps(
                            _mm256_setr_ps(_cvtsh_ss(m[k][j]), 0, 0, 0, 0, 0,
                                           0, 0),
                            _mm256_setr_ps(xs[t][j], 0, 0, 0, 0, 0, 0, 0), a);
                    acc[k][t] = _mm512_castpd_ps(_mm512_insertf64x4(
                        _mm512_castps_pd(acc[k][t]), _mm256_castps_pd(a), 0));
                }
            }
        }
        int add = b->accum || cs > b->c0;
        KUNROLL
        for (int t = 0; t < NT; t++) {
            KUNROLL
            for (int k = 0; k < NR; k++) {
                float *yp = b->y + (size_t)(t0 + t) * b->ldy + r + k;
                __m256 s = _mm256_add_ps(_mm512_castps512_ps256(acc[k][t]),
                                         _mm256_castpd_ps(_mm512_extractf64x4_pd(
                                             _mm512_castps_pd(acc[k][t]), 1)));
                float v = hsum8(s);
                *yp = add ? *yp + v : v;
            }
        }
    }
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

/* 4 rows x up to 4 tokens per pass. */
KTARGET_VNNI KINLINE void block5(enum kdtype dt, const struct kmm_blk *b)
{
    for (int t0 = 0; t0 < b->nt; t0 += 4) {
        switch (b->nt - t0) {
        case 1: loop5(dt, 4, 1, b, t0); break;
        case 2: loop5(dt, 4, 2, b, t0); break;
        case 3: loop5(dt, 4, 3, b, t0); break;
        default: loop5(dt, 4, 4, b, t0); break;
        }
    }
}

KTARGET_VNNI void kmm_block_qa_vnni(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0)
        block5(KDT_Q8_0, b);
    else
        block5(KDT_Q4_1, b);
}
#endif
