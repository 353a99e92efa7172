/*
 * bench_quant_kernels-2026-12-02b_ab.c - the in-process A/B harness behind
 * bench_quant_kernels-2026-12-02b.md (not built by meson; kept to rerun).
 *
 * "old" = the Q8_0 / Q4_1 kernels of commit 40ad26b (kernels/cpu/
 * matmul_qa.c and kcpu.h of that commit, compiled with their symbols
 * renamed old_*), driven by a copy of matmul.c's tiling; "vnni" = kmatmul
 * of this tree with kisa_set_amx(0); "amx" = kmatmul with AMX on (it is
 * used from 8 tokens for Q8_0, 16 for Q4_1). BF16 rows run kmatmul in all
 * three columns (a same-run reference). Rounds interleave old, vnni, amx.
 * AB_CPU=1 times with CLOCK_PROCESS_CPUTIME_ID (with AB_THR=1: the CPU
 * time of the one thread, which on a machine shared by many jobs is far
 * steadier than wall time; stalls on memory still count).
 *
 * Build (OLD = a checkout of 40ad26b, W = this tree, built):
 *   R="-Dkqa_quantize=old_kqa_quantize -Dkmm_block_qa_scalar=old_kmm_block_qa_scalar \
 *      -Dkmm_block_qa_avx2=old_kmm_block_qa_avx2 -Dkmm_block_qa_vnni=old_kmm_block_qa_vnni"
 *   gcc -O3 -std=gnu11 -D_GNU_SOURCE $R -I$OLD/kernels/cpu -I$OLD/kernels \
 *       -c $OLD/kernels/cpu/matmul_qa.c -o old_qa.o
 *   gcc -O3 -std=gnu11 -D_GNU_SOURCE -I$W/kernels/cpu -I$W/kernels THIS.c old_qa.o \
 *       $W/build/libmtpd.a -lm -lpthread -o ab
 *   AB_CPU=1 AB_THR=1 ./ab 5
 */
/* A/B of old vs new Q8_0/Q4_1 kernels, same driver, interleaved. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kcpu.h"

void old_kqa_quantize(const float *x, int ldx, int cols, int n_tok, uint8_t *q, size_t ldq);
void old_kmm_block_qa_vnni(const struct kmm_blk *b);
void old_kmm_block_qa_avx2(const struct kmm_blk *b);
#define OLD_LDQ(cols) ((((size_t)(cols) + 8 * ((cols) / KQ_BLK)) + 63) & ~(size_t)63)

static int g_cpu;
static double now_s(void){struct timespec ts;clock_gettime(g_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC,&ts);return ts.tv_sec+ts.tv_nsec*1e-9;}
struct job { const struct kmat *W; const uint8_t *xq; size_t ldq; float *y; int n_tok; kmm_block_fn fn; int xbpc; };
static void part(void *arg, int p, int np)
{
    struct job *j = arg; const struct kmat *W = j->W;
    int chunks = (W->rows + 15) / 16;
    int r0 = (int)((long)chunks * p / np) * 16, r1 = (int)((long)chunks * (p + 1) / np) * 16;
    if (r1 > W->rows) r1 = W->rows;
    size_t rb = kmat_row_bytes(W->dtype, W->cols);
    int tile = (int)(256 * 1024 / rb) & ~3; if (tile < 4) tile = 4;
    int n_tb = (j->n_tok + 7) / 8, tb = (j->n_tok + n_tb - 1) / n_tb;
    struct kmm_blk b = {.W = W, .ldy = W->rows, .kseg = 1024, .ldq = j->ldq};
    for (int r = r0; r < r1; r += tile) {
        b.r0 = r; b.r1 = r1 - r < tile ? r1 : r + tile;
        for (int t = 0; t < j->n_tok; t += tb) {
            b.nt = j->n_tok - t < tb ? j->n_tok - t : tb;
            b.xq = j->xq + (size_t)t * j->ldq; b.y = j->y + (size_t)t * W->rows;
            int kc = 32 * 1024 * 8 / (j->xbpc * b.nt); kc = kc < 1024 ? 1024 : kc - kc % 1024;
            if (W->cols <= kc + kc / 4) kc = W->cols;
            for (int c = 0; c < W->cols; c += kc) {
                b.c0 = c; b.c1 = W->cols - c < kc ? W->cols : c + kc; b.accum = c > 0; j->fn(&b);
            }
        }
    }
}
static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void){rng^=rng<<13,rng^=rng>>7,rng^=rng<<17;return (uint32_t)(rng>>32);}
int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    g_cpu = getenv("AB_CPU") != NULL;
    {   /* read bandwidth, caller thread, same clock */
        size_t n = (size_t)128 << 20; float *buf = aligned_alloc(64, n * 4);
        for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023);
        double best = 1e30; float s = 0;
        for (int r = 0; r < 5; r++) { double t0 = now_s();
            for (size_t o = 0; o < n / 2; o += 1 << 20) s += kdot(buf + o, buf + n / 2 + o, 1 << 20);
            double t = now_s() - t0; best = t < best ? t : best; }
        printf("read bandwidth (1 thread, %s time): %.1f GB/s (%g)\n", g_cpu ? "cpu" : "wall", n * 4.0 / best / 1e9, s);
        free(buf);
    }
    int xb_new = argc > 2 ? atoi(argv[2]) : 32; /* x bytes per col *8 for chunking, new */
    const char *only = argc > 3 ? argv[3] : "";
    int nthr = getenv("AB_THR") ? atoi(getenv("AB_THR")) : 2; struct kpool *pool = kpool_new(nthr);
    int avx2 = getenv("AB_AVX2") != NULL, same = getenv("AB_SAME") != NULL;
    if (avx2) kisa_set(KISA_AVX2);
    kmm_block_fn fo = avx2 ? old_kmm_block_qa_avx2 : old_kmm_block_qa_vnni, fn = avx2 ? kmm_block_qa_avx2 : kmm_block_qa_vnni;
    static const struct { enum kdtype dt; int rows, cols; } sh[] = {
        {KDT_BF16, 4096, 14336}, {KDT_Q8_0, 4096, 14336}, {KDT_Q4_1, 4096, 14336}, {KDT_BF16, 576, 7168}, {KDT_Q8_0, 576, 7168}, {KDT_Q4_1, 576, 7168}};
    int ntv[] = {1, 2, 3, 4, 8, 16, 64};
    float *x = malloc(64 * 14336 * 4), *y = malloc(64 * 8192 * 4);
    for (int i = 0; i < 64 * 14336; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    uint8_t *xq = aligned_alloc(64, 64 * (OLD_LDQ(14336) + KQA_LDQ(14336)) + 4096);
    printf("%-5s %-10s %3s %9s %9s %6s   (us, min / median of %d interleaved rounds)\n", "dtype", "shape", "nt", "old", "new", "new/old", rounds);
    for (size_t s = 0; s < 6; s++) {
        if (*only && !strstr(only, kdtype_str(sh[s].dt))) continue;
        int isq = sh[s].dt != KDT_BF16; size_t rb = kmat_row_bytes(sh[s].dt, sh[s].cols), nbk = isq ? (size_t)sh[s].rows * (sh[s].cols / 32) : 0;
        size_t bytes = sh[s].rows * rb + 4 * nbk;
        int nm = sh[s].rows < 1024 ? 1 : (int)((512ull << 20) / bytes + 1);
        struct kmat *m = calloc(nm, sizeof *m);
        for (int k = 0; k < nm; k++) {
            uint8_t *d = aligned_alloc(64, (bytes + 63) & ~63ull);
            for (size_t i = 0; i < sh[s].rows * rb; i++) d[i] = (uint8_t)(rnd() & 0x77); if (!isq) for (size_t i = 0; i < sh[s].rows * rb; i += 2) *(uint16_t *)(d + i) = kf32_to_bf16((float)((int)(rnd() % 2001) - 1000) * 6e-5f);
            uint16_t *sc = (uint16_t *)(d + sh[s].rows * rb);
            for (size_t i = 0; i < 2 * nbk; i++) sc[i] = kf32_to_f16((float)(256 + rnd() % 256) * 0x1p-17f);
            m[k] = (struct kmat){sh[s].dt, sh[s].rows, sh[s].cols, d, NULL, 0, isq ? sc : NULL, sh[s].dt == KDT_Q4_1 ? sc + nbk : NULL};
        }
        for (int ti = 0; ti < 7; ti++) {
            int nt = ntv[ti];
            double to[64], tn[64], ta[64];
            for (int rd = 0; rd < rounds; rd++) for (int v = 0; v < 3; v++) {
                int nv = v || same; size_t ldq = nv ? KQA_LDQ(sh[s].cols) : OLD_LDQ(sh[s].cols);
                int reps = nm == 1 ? 200 : nm;
                double t0 = now_s();
                if (v) kisa_set_amx(v == 2);
                for (int k = 0; k < reps && (v || sh[s].dt == KDT_BF16); k++) {
                    const struct kmat *W = &m[k % nm];
                    kmatmul(pool, W, x, W->cols, y, W->rows, nt);
                }
                for (int k = 0; k < reps && !v && sh[s].dt != KDT_BF16; k++) {
                    const struct kmat *W = &m[k % nm];
                    if (nv) kqa_quantize(W->dtype, x, W->cols, W->cols, nt, xq, ldq);
                    else old_kqa_quantize(x, W->cols, W->cols, nt, xq, ldq);
                    struct job j = {W, xq, ldq, y, nt, nv ? fn : fo, v ? xb_new : 32};
                    kpool_run(pool, part, &j, nthr);
                }
                double t = (now_s() - t0) / reps * 1e6;
                (v == 2 ? ta : v ? tn : to)[rd] = t;
            }
            /* sort */
            for (int a = 0; a < rounds; a++) for (int b2 = a + 1; b2 < rounds; b2++) {
                if (to[b2] < to[a]) { double q = to[a]; to[a] = to[b2]; to[b2] = q; }
                if (tn[b2] < tn[a]) { double q = tn[a]; tn[a] = tn[b2]; tn[b2] = q; }
                if (ta[b2] < ta[a]) { double q = ta[a]; ta[a] = ta[b2]; ta[b2] = q; }
            }
            printf("%-5s %4dx%-5d %3d old %5.0f/%5.0f vnni %5.0f/%5.0f amx %5.0f/%5.0f  vnni/old %4.2f/%4.2f amx/old %4.2f/%4.2f  GB/s old %.1f new %.1f amx %.1f\n", kdtype_str(sh[s].dt), sh[s].rows, sh[s].cols, nt,
                   to[0], to[rounds/2], tn[0], tn[rounds/2], ta[0], ta[rounds/2], tn[0]/to[0], tn[rounds/2]/to[rounds/2], ta[0]/to[0], ta[rounds/2]/to[rounds/2], bytes/to[0]/1e3, bytes/tn[0]/1e3, bytes/ta[0]/1e3);
            fflush(stdout);
        }
        for (int k = 0; k < nm; k++) free((void *)m[k].data);
        free(m);
    }
    return 0;
}
