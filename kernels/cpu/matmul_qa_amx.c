/*
 * matmul_qa_amx.c - Q8_0 / Q4_1 weights times int8 x on AMX-INT8 tiles, for
 * calls with several tokens (verify rows, prefill).
 *
 * Per 16 output rows and weight block j: A = the 16 rows' 32 codes of
 * block j, loaded straight from the weight rows (Q8_0; Q4_1 nibbles are
 * first widened to bytes in a 16 x 128 scratch, four blocks at a time),
 * B = 16 tokens' 32 x codes of block j in the 4-byte VNNI layout
 * (kqa_amx_pack), C = A x B: each (row, token)'s exact int32 block sum.
 * The float epilogue then runs over a vector of 16 tokens per row,
 * exactly as matmul_qa.c's header defines it (block j into chain
 * (j - j0) mod 16, fma((float)isum, d * xd, c), Q4_1's fma(m, xs, c),
 * the same tree), so AMX gives the vector kernels' bits (tests check it)
 * and matmul.c may pick it by token count.
 *
 * Linux hands out AMX state only after arch_prctl(ARCH_REQ_XCOMP_PERM);
 * kqa_amx_ok() asks once and says no if the CPU, the OS or the request
 * says no.
 */
#include <stdatomic.h>
#include <string.h>

#include "kcpu.h"

static atomic_int g_int8_off;

int kisa_amx_int8(void)
{
    return !atomic_load_explicit(&g_int8_off, memory_order_relaxed) &&
           kisa_active() == KISA_AVX512 && kqa_amx_ok();
}

int kisa_set_amx_int8(int on)
{
    if (on && !kqa_amx_ok())
        return MTPD_K_EINVAL;
    atomic_store_explicit(&g_int8_off, !on, memory_order_relaxed);
    return MTPD_K_OK;
}

#if KCPU_X86 && defined(__linux__)
#include <immintrin.h>

/* The CPU, the OS and Linux's permission (isa.c asks for it once). */
int kqa_amx_ok(void)
{
    return kisa_has_amx_int8();
}

/* Weight prefetch distance, bytes ahead in each of the 16 rows. */
#ifndef KQA_AMX_PF
#define KQA_AMX_PF 1024
#endif

#define KTARGET_AMX                                                         \
    __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,"    \
                          "avx512vnni,avx2,fma,f16c")))

void kqa_amx_pack(enum kdtype dt, int cols, const uint8_t *xq, size_t ldq,
                  int n_tok, uint8_t *xb)
{
    const int nb = cols / KQ_BLK, q4 = dt == KDT_Q4_1;
    for (int t0 = 0; t0 < n_tok; t0 += KQA_AMX_NT) {
        uint8_t *o = xb + (size_t)(t0 / KQA_AMX_NT) * KQA_AMX_LDB(cols);
        int nt = n_tok - t0 < KQA_AMX_NT ? n_tok - t0 : KQA_AMX_NT;
        memset(o, 0, KQA_AMX_LDB(cols));
        float *xd = (float *)(o + (size_t)nb * 512), *xs = xd + (size_t)nb * 16;
        for (int t = 0; t < nt; t++) {
            const uint8_t *xr = xq + (size_t)(t0 + t) * ldq;
            const float *sd = (const float *)(xr + cols), *ss = sd + nb;
            for (int j = 0; j < nb; j++) {
                uint8_t *bj = o + (size_t)j * 512 + 4 * (size_t)t;
                for (int k = 0; k < KQ_BLK; k += 4) /* row k/4, column t */
                    for (int i = 0; i < 4; i++)
                        bj[(k / 4) * 64 + i] = xr[xq_off(q4, nb, j, k + i)];
                xd[(size_t)j * 16 + t] = sd[j];
                xs[(size_t)j * 16 + t] = ss[j];
            }
        }
    }
}

struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Tiles 0-3: C (16 x 16 int32); 4-5: A (16 rows x 32 bytes); 6-7: B. */
KTARGET_AMX static void amx_config(void)
{
    struct tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 4; i++)
        c.colsb[i] = 64, c.rows[i] = 16;
    for (int i = 4; i < 6; i++)
        c.colsb[i] = 32, c.rows[i] = 16;
    for (int i = 6; i < 8; i++)
        c.colsb[i] = 64, c.rows[i] = 8;
    _tile_loadconfig(&c);
}

/* Q4_1 blocks g0 .. g0+3 of 16 rows widened to bytes in column order:
 * row m's block q at s + m * 128 + 32 * q. */
KTARGET_AMX static inline void widen4(const uint8_t *w, size_t rb, int g0,
                                      int nv, uint8_t *s)
{
    const __m512i f = _mm512_set1_epi8(15);
    const __m512i i0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const __m512i i1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    __mmask64 mk = nv >= 4 ? ~(__mmask64)0 : ((__mmask64)1 << (16 * nv)) - 1;
    for (int m = 0; m < 16; m++) {
        __m512i v = _mm512_maskz_loadu_epi8(mk, w + (size_t)m * rb +
                                                    (size_t)g0 * 16);
        __m512i lo = _mm512_and_si512(v, f);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), f);
        _mm512_storeu_si512((void *)(s + m * 128),
                            _mm512_permutex2var_epi64(lo, i0, hi));
        _mm512_storeu_si512((void *)(s + m * 128 + 64),
                            _mm512_permutex2var_epi64(lo, i1, hi));
    }
}

#define AMX_BLOCK(CT, AT, BT, JJ)                                          \
    do {                                                                   \
        int jj_ = (JJ);                                                    \
        if (q4)                                                            \
            _tile_loadd(AT, wide + (jj_ - j) * 32, 128);                   \
        else                                                               \
            _tile_loadd(AT, w0 + (size_t)jj_ * KQ_BLK, (long)rb);          \
        _tile_loadd(BT, xb + (size_t)jj_ * 512, 64);                       \
        _tile_zero(CT);                                                    \
        if (q4)                                                            \
            _tile_dpbusd(CT, AT, BT);                                      \
        else                                                               \
            _tile_dpbssd(CT, AT, BT);                                      \
        _tile_stored(CT, cb + (size_t)(jj_ - js) * 1024, 64);              \
    } while (0)

/* 16 rows from r, segment [cs, ce): int32 C of each block into cb. */
KTARGET_AMX static void amx_segment(const struct kmm_blk *b, int r, int cs,
                                    int ce, int32_t *cbuf)
{
    const struct kmat *W = b->W;
    const int q4 = W->dtype == KDT_Q4_1;
    const size_t rb = kmat_row_bytes(W->dtype, W->cols);
    const uint8_t *w0 = (const uint8_t *)W->data + (size_t)r * rb;
    const uint8_t *xb = b->xb;
    uint8_t *cb = (uint8_t *)cbuf;
    uint8_t wide[16 * 128] __attribute__((aligned(64)));
    const int js = cs / KQ_BLK, je = ce / KQ_BLK;
    for (int j = js; j < je; j += 4) {
        int n = je - j < 4 ? je - j : 4;
        /* the rows' next lines (tile loads alone leave DRAM waiting) */
        size_t pf = kmat_row_bytes(W->dtype, j * KQ_BLK) + KQA_AMX_PF;
        for (int m = 0; m < 16; m++) {
            _mm_prefetch((const char *)w0 + (size_t)m * rb + pf, _MM_HINT_T0);
            if (!q4)
                _mm_prefetch((const char *)w0 + (size_t)m * rb + pf + 64,
                             _MM_HINT_T0);
        }
        if (q4)
            widen4(w0, rb, j, n, wide);
        if (n == 4) {
            AMX_BLOCK(0, 4, 6, j);
            AMX_BLOCK(1, 5, 7, j + 1);
            AMX_BLOCK(2, 4, 6, j + 2);
            AMX_BLOCK(3, 5, 7, j + 3);
        } else {
            for (int k = 0; k < n; k++)
                AMX_BLOCK(0, 4, 6, j + k);
        }
    }
}

/* Blocks j .. j+n-1 (n <= 16, chain g = j + g - j0 mod 16 = g) of row m
 * into the chains c (vectors over 16 tokens). */
KTARGET_AMX static inline void epi_group(int q4, const uint16_t *d,
                                         const uint16_t *mn, const float *xd,
                                         const float *xs, const int32_t *cb,
                                         int m, int j, int n, __m512 c[16])
{
    __mmask16 mk = (__mmask16)((1u << n) - 1);
    float df[16], mf[16];
    _mm512_storeu_ps(df, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, d + j)));
    if (q4)
        _mm512_storeu_ps(mf, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, mn + j)));
    KUNROLL
    for (int g = 0; g < 16; g++) {
        if (g < n) {
            __m512 is = _mm512_cvtepi32_ps(_mm512_loadu_si512(
                (const void *)(cb + (size_t)g * 256 + m * 16)));
            __m512 s = _mm512_mul_ps(_mm512_set1_ps(df[g]),
                                     _mm512_loadu_ps(xd + (size_t)(j + g) * 16));
            c[g] = _mm512_fmadd_ps(is, s, c[g]);
            if (q4)
                c[g] = _mm512_fmadd_ps(_mm512_set1_ps(mf[g]),
                                       _mm512_loadu_ps(xs + (size_t)(j + g) * 16),
                                       c[g]);
        }
    }
}

/* The epilogue for rows [r, r + nr) (nr <= 16) of a segment whose block
 * sums are in cbuf. */
KTARGET_AMX static void amx_epilogue(const struct kmm_blk *b, int r, int nr,
                                     int cs, int ce, const int32_t *cbuf)
{
    const struct kmat *W = b->W;
    const int q4 = W->dtype == KDT_Q4_1, nb = W->cols / KQ_BLK;
    const float *xd = (const float *)(b->xb + (size_t)nb * 512);
    const float *xs = xd + (size_t)nb * 16;
    const int js = cs / KQ_BLK, je = ce / KQ_BLK;
    const int add = b->accum || cs > b->c0;
    for (int m = 0; m < nr; m++) {
        const uint16_t *d = W->qd + (size_t)(r + m) * nb;
        const uint16_t *mn = q4 ? W->qm + (size_t)(r + m) * nb : NULL;
        __m512 c[16];
        KUNROLL
        for (int g = 0; g < 16; g++)
            c[g] = _mm512_setzero_ps();
        int j = js;
        for (; j + 16 <= je; j += 16)
            epi_group(q4, d, mn, xd, xs, cbuf + (size_t)(j - js) * 256, m, j,
                      16, c);
        if (j < je)
            epi_group(q4, d, mn, xd, xs, cbuf + (size_t)(j - js) * 256, m, j,
                      je - j, c);
        __m512 s[8];
        KUNROLL
        for (int i = 0; i < 8; i++)
            s[i] = _mm512_add_ps(c[i], c[i + 8]);
        __m512 v = _mm512_add_ps(
            _mm512_add_ps(_mm512_add_ps(s[0], s[4]), _mm512_add_ps(s[2], s[6])),
            _mm512_add_ps(_mm512_add_ps(s[1], s[5]), _mm512_add_ps(s[3], s[7])));
        float out[16];
        _mm512_storeu_ps(out, v);
        for (int t = 0; t < b->nt; t++) {
            float *yp = b->y + (size_t)t * b->ldy + r + m;
            *yp = add ? *yp + out[t] : out[t];
        }
    }
}

KTARGET_AMX void kmm_block_qa_amx(const struct kmm_blk *b)
{
    static _Thread_local int32_t cbuf[32 * 256] __attribute__((aligned(64)));
    int r = b->r0;
    if (b->r1 - r >= 16) {
        amx_config();
        for (; r + 16 <= b->r1; r += 16) {
            for (int cs = b->c0, ce; cs < b->c1; cs = ce) {
                ce = kmm_seg_end(b, cs);
                amx_segment(b, r, cs, ce, cbuf);
                amx_epilogue(b, r, 16, cs, ce, cbuf);
            }
        }
        _tile_release();
    }
    if (r < b->r1) { /* fewer than 16 rows: the vector kernel, same bits */
        struct kmm_blk t = *b;
        t.r0 = r;
        kmm_block_qa_vnni(&t);
    }
}

#else

int kqa_amx_ok(void)
{
    return 0;
}

void kqa_amx_pack(enum kdtype dt, int cols, const uint8_t *xq, size_t ldq,
                  int n_tok, uint8_t *xb)
{
    (void)dt, (void)cols, (void)xq, (void)ldq, (void)n_tok, (void)xb;
}

void kmm_block_qa_amx(const struct kmm_blk *b)
{
    kmm_block_qa_scalar(b);
}

#endif
