/*
 * matmul_qa.c - Q8_0 / Q4_1 weights times int8 activations: the integer
 * block kernels (scalar, AVX2 maddubs, AVX-512 VNNI) and the per-row
 * quantization of x they read (kqa_quantize).
 *
 * x row t is quantized on its own (so batch invariance holds): per block
 * of 32 columns xd = max|x| / 127 and codes xq = round(x / xd), plus
 * xs = xd * sum(xq) for Q4_1's min term. For weight block j of row r:
 *   lane l (0..7)  = sum of w[4l..4l+3] * xq[4l..4l+3]     (int32, exact)
 *   acc[l]         = fma((float)lane l, d_j * xd_j, acc[l])
 *   Q4_1: acc[0]   = fma(m_j, xs_j, acc[0])  (the other lanes + 0 * 0)
 * and at the end of a summation segment (kcpu.h) the eight lanes are
 * summed by one tree ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7)) and added to y.
 * The integer lanes are the same whatever instruction computes them, and
 * the float steps are the same in every ISA, so the three kernels agree
 * bitwise (tests check it) and with themselves whatever the batch.
 *
 * Why int8 activations: an fp32-activation version (widen each weight,
 * FMA with x; commit "kernels: Q8_0 and Q4_1 weight dtypes") was measured
 * in the same process on this machine (AVX-512 VNNI, cache-resident
 * 1024x384 matrix, one thread): int8 1.8x faster at 1 token, 1.0-1.2x at
 * 4..64 (bench/results/bench_quant-2026-12-02.md), and it was removed.
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

/* The lane tree every kernel sums with (hsum8 in the AVX2 one). */
KINLINE float lanes_sum(const float a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* ---- scalar -------------------------------------------------------- */

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
                float acc[8] = {0};
                for (int c = cs; c < ce; c += KQ_BLK) {
                    int j = c / KQ_BLK;
                    int w[KQ_BLK];
                    for (int i = 0; i < KQ_BLK; i++) {
                        if (!q4) {
                            w[i] = ((const int8_t *)wr)[c + i];
                        } else {
                            uint8_t v = wr[j * 16 + i % 16];
                            w[i] = i < 16 ? v & 15 : v >> 4;
                        }
                    }
                    float s = kf16_to_f32(d[j]) * xd[j];
                    for (int l = 0; l < 8; l++) {
                        int lane = 0;
                        for (int i = 4 * l; i < 4 * l + 4; i++)
                            lane += w[i] * xq[c + i];
                        acc[l] = fmaf((float)lane, s, acc[l]);
                    }
                    if (q4) {
                        acc[0] = fmaf(kf16_to_f32(m[j]), xs[j], acc[0]);
                        for (int l = 1; l < 8; l++)
                            acc[l] = fmaf(0.0f, 0.0f, acc[l]);
                    }
                }
                float v = lanes_sum(acc);
                float *yp = b->y + (size_t)t * b->ldy + r;
                *yp = b->accum || cs > b->c0 ? *yp + v : v;
            }
        }
    }
}

#if KCPU_X86
#define NRMAX 4
#define NTMAX 4

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

KTARGET_AVX2 KINLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The eight int32 lanes of a block: AVX2 maddubs + madd (no overflow:
 * |w| <= 128, |xq| <= 127), or AVX-512 VNNI vpdpbusd. Q8_0 moves w's sign
 * onto xq (maddubs / vpdpbusd take unsigned times signed). */
#define KTARGET_VNNI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

KTARGET_AVX2 KINLINE __m256i lanes_avx2(enum kdtype dt, __m256i w, __m256i x)
{
    __m256i p;
    if (dt == KDT_Q8_0)
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    else
        p = _mm256_maddubs_epi16(w, x);
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

KTARGET_VNNI KINLINE __m256i lanes_vnni(enum kdtype dt, __m256i w, __m256i x)
{
    if (dt == KDT_Q8_0)
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                   _mm256_sign_epi8(w, w),
                                   _mm256_sign_epi8(x, w));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x);
}

/* Rows r..r+NR-1 x tokens 0..NT-1 of the block, segment by segment. The
 * one body serves both ISAs (vnni picks the lane instruction). */
#define QA_ROWS(NAME, TARGET, LANES)                                          \
    TARGET KINLINE void NAME(enum kdtype dt, int NR, int NT,                  \
                             const struct kmm_blk *b, int r, int t0)          \
    {                                                                         \
        const struct kmat *W = b->W;                                          \
        const int nb = W->cols / KQ_BLK;                                      \
        const size_t rb = kmat_row_bytes(dt, W->cols);                        \
        const uint8_t *w[NRMAX];                                              \
        const uint16_t *d[NRMAX], *m[NRMAX];                                  \
        const int8_t *xq[NTMAX];                                              \
        const float *xd[NTMAX], *xs[NTMAX];                                   \
        KUNROLL                                                               \
        for (int k = 0; k < NR; k++) {                                        \
            w[k] = (const uint8_t *)W->data + (size_t)(r + k) * rb;           \
            d[k] = W->qd + (size_t)(r + k) * nb;                              \
            m[k] = dt == KDT_Q4_1 ? W->qm + (size_t)(r + k) * nb : NULL;      \
        }                                                                     \
        KUNROLL                                                               \
        for (int t = 0; t < NT; t++) {                                        \
            const uint8_t *xr = b->xq + (size_t)(t0 + t) * b->ldq;            \
            xq[t] = (const int8_t *)xr;                                       \
            xd[t] = (const float *)(xr + W->cols);                            \
            xs[t] = xd[t] + nb;                                               \
        }                                                                     \
        for (int cs = b->c0, ce; cs < b->c1; cs = ce) {                       \
            ce = kmm_seg_end(b, cs);                                          \
            __m256 acc[NRMAX][NTMAX];                                         \
            KUNROLL                                                           \
            for (int k = 0; k < NR; k++) {                                    \
                KUNROLL                                                       \
                for (int t = 0; t < NT; t++)                                  \
                    acc[k][t] = _mm256_setzero_ps();                          \
            }                                                                 \
            for (int j = cs / KQ_BLK; j < ce / KQ_BLK; j++) {                 \
                __m256i wv[NRMAX];                                            \
                float dk[NRMAX];                                              \
                KUNROLL                                                       \
                for (int k = 0; k < NR; k++) {                                \
                    _mm_prefetch((const char *)w[k] +                         \
                                     kmat_row_bytes(dt, j * KQ_BLK) +         \
                                     KMM_PF_BYTES / 4, _MM_HINT_T0);          \
                    wv[k] = wblock(dt, w[k], j);                              \
                    dk[k] = _cvtsh_ss(d[k][j]);                               \
                }                                                             \
                KUNROLL                                                       \
                for (int t = 0; t < NT; t++) {                                \
                    __m256i xv = _mm256_loadu_si256(                          \
                        (const __m256i *)(xq[t] + (size_t)j * KQ_BLK));       \
                    float xdt = xd[t][j];                                     \
                    KUNROLL                                                   \
                    for (int k = 0; k < NR; k++) {                            \
                        __m256 p = _mm256_cvtepi32_ps(LANES(dt, wv[k], xv));  \
                        acc[k][t] = _mm256_fmadd_ps(                          \
                            p, _mm256_set1_ps(dk[k] * xdt), acc[k][t]);       \
                        if (dt == KDT_Q4_1)                                   \
                            acc[k][t] = _mm256_fmadd_ps(                      \
                                _mm256_setr_ps(_cvtsh_ss(m[k][j]), 0, 0, 0,   \
                                               0, 0, 0, 0),                   \
                                _mm256_setr_ps(xs[t][j], 0, 0, 0, 0, 0, 0,    \
                                               0),                            \
                                acc[k][t]);                                   \
                    }                                                         \
                }                                                             \
            }                                                                 \
            int add = b->accum || cs > b->c0;                                 \
            KUNROLL                                                           \
            for (int t = 0; t < NT; t++) {                                    \
                KUNROLL                                                       \
                for (int k = 0; k < NR; k++) {                                \
                    float *yp = b->y + (size_t)(t0 + t) * b->ldy + r + k;     \
                    float v = hsum8(acc[k][t]);                               \
                    *yp = add ? *yp + v : v;                                  \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }

/* Rows [r0, r1) for tokens [t0, t0 + NT), NR rows at a time. */
#define QA_LOOP(NAME, TARGET, ROWS)                                           \
    TARGET KINLINE void NAME(enum kdtype dt, int NR, int NT,                  \
                             const struct kmm_blk *b, int t0)                 \
    {                                                                         \
        int r = b->r0;                                                        \
        for (; r + NR <= b->r1; r += NR)                                      \
            ROWS(dt, NR, NT, b, r, t0);                                       \
        for (; r < b->r1; r++)                                                \
            ROWS(dt, 1, NT, b, r, t0);                                        \
    }

/* 4 rows x 1 token; else 2 (AVX2: 16 registers) or 4 rows x up to 4
 * tokens per pass. */
#define QA_BLOCK(NAME, TARGET, LOOP, NRT)                                     \
    TARGET KINLINE void NAME(enum kdtype dt, const struct kmm_blk *b)         \
    {                                                                         \
        if (b->nt == 1) {                                                     \
            LOOP(dt, 4, 1, b, 0);                                             \
            return;                                                           \
        }                                                                     \
        for (int t0 = 0; t0 < b->nt; t0 += 4) {                               \
            switch (b->nt - t0) {                                             \
            case 1: LOOP(dt, NRT, 1, b, t0); break;                           \
            case 2: LOOP(dt, NRT, 2, b, t0); break;                           \
            case 3: LOOP(dt, NRT, 3, b, t0); break;                           \
            default: LOOP(dt, NRT, 4, b, t0); break;                          \
            }                                                                 \
        }                                                                     \
    }

QA_ROWS(rows_avx2, KTARGET_AVX2, lanes_avx2)
QA_LOOP(loop_avx2, KTARGET_AVX2, rows_avx2)
QA_BLOCK(block_avx2, KTARGET_AVX2, loop_avx2, 2)
QA_ROWS(rows_vnni, KTARGET_VNNI, lanes_vnni)
QA_LOOP(loop_vnni, KTARGET_VNNI, rows_vnni)
QA_BLOCK(block_vnni, KTARGET_VNNI, loop_vnni, 4)

KTARGET_AVX2 void kmm_block_qa_avx2(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0)
        block_avx2(KDT_Q8_0, b);
    else
        block_avx2(KDT_Q4_1, b);
}

KTARGET_VNNI void kmm_block_qa_vnni(const struct kmm_blk *b)
{
    if (b->W->dtype == KDT_Q8_0)
        block_vnni(KDT_Q8_0, b);
    else
        block_vnni(KDT_Q4_1, b);
}
#endif
