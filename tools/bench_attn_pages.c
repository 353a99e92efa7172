/*
 * bench_attn_pages.c - attention over the paged cache against the same
 * cache read contiguously, on one thread, call by call interleaved
 * (contiguous, paged, contiguous, ...) so that other work on the machine
 * hits both alike.
 *
 *   contiguous: what mla.c did before pages - for a block of up to 8
 *     (row, head) query pairs, one score matmul over all positions,
 *     scale + softmax, one kmatmul_pv (the cache one [positions, row]
 *     matrix);
 *   paged: what mla.c does now - the same pairs chunk by chunk over pages
 *     (mla_chunk.c: page-sized score and kmatmul_pv calls, per-chunk max
 *     and sum), merged in chunk order, divided by the sum.
 *
 * The cache holds random rows for one layer; queries are random. Prints a
 * markdown table of the median microseconds per block and paged /
 * contiguous, for fp32 and BF16 caches, and the largest difference of the
 * two results (a sanity check: same math, other summation order).
 *
 *   bench_attn_pages --model DIR [--iters 300] [--ctx 500,1000,2000,4000]
 *                    [--rows 1,3] [--page 64]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "model_int.h"

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c)
            break;
        s = c + 1;
    }
    return n;
}

static unsigned long g_rng = 88172645463325252UL;
static float frand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

struct blk {
    const struct mtpd_ctx *c;
    const struct mtpd_kv *kv;
    const void *contig; /* [npos, rf] the same rows, contiguous */
    int np, rf, L;
    const float *qc;    /* [np, rf] */
    const int *vis;     /* [np] positions each pair sees */
    float *scores;      /* [np, npos] */
    float *oc;          /* [np, rf] */
    struct attn_scratch *s;
};

static void contiguous(struct blk *b)
{
    int npos = b->vis[b->np - 1];
    struct kmat kc = {.dtype = b->kv->dtype, .rows = npos, .cols = b->rf,
                      .data = b->contig};
    kmatmul(NULL, &kc, b->qc, b->rf, b->scores, npos, b->np);
    for (int p = 0; p < b->np; p++) {
        float *sc = b->scores + (size_t)p * npos;
        for (int t = 0; t < b->vis[p]; t++)
            sc[t] *= b->c->m->softmax_scale;
        ksoftmax(sc, b->vis[p]);
        memset(sc + b->vis[p], 0, sizeof(float) * (size_t)(npos - b->vis[p]));
    }
    kmatmul_pv(&kc, b->L, b->scores, npos, b->oc, b->rf, b->np);
}

static void paged(struct blk *b)
{
    struct attn_scratch *s = b->s;
    for (int p = 0; p < b->np; p++) {
        s->vis[p] = b->vis[p];
        s->m[p] = -INFINITY;
        s->l[p] = 0.0f;
    }
    int cp = attn_chunk_pos(b->c, b->kv), npos = b->vis[b->np - 1];
    for (int ch = 0; ch * cp < npos; ch++) {
        attn_chunk(b->c, b->kv, 0, ch, b->qc, b->rf, b->np, s->vis, &s->cs,
                   s->mc, s->lc, s->o, b->L);
        for (int p = 0; p < b->np; p++)
            attn_merge(&s->m[p], &s->l[p], b->oc + (size_t)p * b->rf,
                       s->mc[p], s->lc[p], s->o + (size_t)p * b->L, b->L);
    }
    for (int p = 0; p < b->np; p++)
        attn_normalize(b->oc + (size_t)p * b->rf, s->l[p], b->L);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int iters = 300, page = 64;
    int ctxs[16] = {500, 1000, 2000, 4000}, n_ctx = 4;
    int rows[8] = {1, 3}, n_rows = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--page") && i + 1 < argc)
            page = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            n_ctx = parse_list(argv[++i], ctxs, 16);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            n_rows = parse_list(argv[++i], rows, 8);
        else
            dir = NULL, i = argc;
    }
    if (!dir || iters < 3 || n_ctx < 1 || n_rows < 1) {
        fprintf(stderr, "usage: bench_attn_pages --model DIR [--iters N] "
                "[--ctx 500,...] [--rows 1,3] [--page 64]\n");
        return 2;
    }
    char err[512];
    struct mtpd_model *m;
    /* on the CPU always: this bench reads the KV pages on the host */
    struct mtpd_load_opts lo = {.device = "cpu"};
    if (mtpd_model_load(dir, &lo, &m, err, sizeof err)) {
        fprintf(stderr, "bench_attn_pages: %s\n", err);
        return 1;
    }
    const struct mtpd_config *cfg = mtpd_model_config(m);
    int L = cfg->kv_lora_rank, rf = L + cfg->qk_rope_head_dim;
    int H = cfg->num_attention_heads, maxc = 0, maxr = 0;
    for (int i = 0; i < n_ctx; i++)
        maxc = ctxs[i] > maxc ? ctxs[i] : maxc;
    for (int i = 0; i < n_rows; i++)
        maxr = rows[i] > maxr ? rows[i] : maxr;
    int cap = maxc + maxr;
    if (cap > cfg->max_position_embeddings) {
        fprintf(stderr, "bench_attn_pages: context past the model's\n");
        return 2;
    }
    struct mtpd_ctx *c = mtpd_ctx_new(m, 16, 1);
    float *rowsf = malloc(sizeof(float) * (size_t)cap * rf);
    void *contig = aligned_alloc(64, (sizeof(float) * (size_t)cap * rf + 63) &
                                         ~(size_t)63);
    float *qc = aligned_alloc(64, sizeof(float) * ATTN_ROWS * (size_t)rf);
    float *scores = malloc(sizeof(float) * ATTN_ROWS * (size_t)cap);
    float *oc[2];
    for (int k = 0; k < 2; k++)
        oc[k] = aligned_alloc(64, sizeof(float) * ATTN_ROWS * (size_t)rf);
    double *t[2] = {malloc(sizeof(double) * iters),
                    malloc(sizeof(double) * iters)};
    if (!c || !rowsf || !contig || !qc || !scores || !oc[0] || !oc[1] ||
        !t[0] || !t[1]) {
        fprintf(stderr, "bench_attn_pages: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)cap * rf; i++)
        rowsf[i] = frand();
    for (int i = 0; i < ATTN_ROWS * rf; i++)
        qc[i] = frand() * 0.3f;
    printf("model %s, one layer's cache, pages of %d, chunks of %d, "
           "median of %d interleaved calls per block of (row, head) pairs "
           "(up to %d)\n\n", dir, page, c->attn_chunk, iters, ATTN_ROWS);
    printf("| KV | context | rows | pairs | contiguous us | paged us | "
           "paged / contiguous | max diff |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int dt = 0; dt < 2; dt++) {
        struct mtpd_kv_pool_opts po = {
            .page_positions = page, .dtype = dt ? MTPD_KV_BF16 : MTPD_KV_F32};
        struct mtpd_kv_pool *pool;
        struct mtpd_kv *kv;
        if (mtpd_kv_pool_new(m, &po, &pool) ||
            mtpd_kv_new_in(pool, cap, &kv) || mtpd_kv_reserve(kv, cap)) {
            fprintf(stderr, "bench_attn_pages: pool\n");
            return 1;
        }
        /* the same rows in the pages and in the contiguous copy */
        for (int p = 0; p < cap; p++) {
            const float *src = rowsf + (size_t)p * rf;
            void *dst = kv_at(kv, 0, p);
            for (int i = 0; i < rf; i++) {
                if (dt) {
                    uint16_t h = kf32_to_bf16(src[i]);
                    ((uint16_t *)dst)[i] = h;
                    ((uint16_t *)contig)[(size_t)p * rf + i] = h;
                } else {
                    ((float *)dst)[i] = src[i];
                    ((float *)contig)[(size_t)p * rf + i] = src[i];
                }
            }
        }
        for (int ci = 0; ci < n_ctx; ci++)
            for (int ri = 0; ri < n_rows; ri++) {
                /* pairs of the first block: rows x heads, at most 8, by
                 * row (mla.c's pair order), the last row at ctx */
                int np = rows[ri] * H < ATTN_ROWS ? rows[ri] * H : ATTN_ROWS;
                int vis[ATTN_ROWS];
                for (int p = 0; p < np; p++)
                    vis[p] = ctxs[ci] + 1 - (rows[ri] - 1 - p / H);
                struct blk b = {c, kv, contig, np, rf, L, qc, vis, scores,
                                NULL, &c->as[0]};
                for (int i = 0; i < iters; i++)
                    for (int k = 0; k < 2; k++) {
                        b.oc = oc[k];
                        double t0 = now_us();
                        if (k)
                            paged(&b);
                        else
                            contiguous(&b);
                        t[k][i] = now_us() - t0;
                    }
                double d = 0;
                for (int p = 0; p < np; p++)
                    for (int i = 0; i < L; i++) {
                        double x = fabs(oc[0][(size_t)p * rf + i] -
                                        oc[1][(size_t)p * rf + i]);
                        d = x > d ? x : d;
                    }
                double med[2];
                for (int k = 0; k < 2; k++) {
                    qsort(t[k], (size_t)iters, sizeof(double), cmp_d);
                    med[k] = t[k][iters / 2];
                }
                printf("| %s | %d | %d | %d | %.1f | %.1f | %.2f | %.1e |\n",
                       dt ? "bf16" : "f32", ctxs[ci], rows[ri], np, med[0],
                       med[1], med[1] / med[0], d);
                fflush(stdout);
            }
        mtpd_kv_free(kv);
        mtpd_kv_pool_free(pool);
    }
    for (int k = 0; k < 2; k++) {
        free(oc[k]);
        free(t[k]);
    }
    free(rowsf);
    free(contig);
    free(qc);
    free(scores);
    mtpd_ctx_free(c);
    mtpd_model_free(m);
    return 0;
}
