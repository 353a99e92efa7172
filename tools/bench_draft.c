/*
 * bench_draft.c - what one speculative pass costs, part by part, at a
 * given context length: the main model over r rows (the verify pass), an
 * MTP call over r rows with and without its full-vocabulary head row, and
 * the restricted (FR-Spec) head for one row. Median of repeated runs.
 *
 *   bench_draft --model DIR [--threads N] [--ctx N] [--sub N] [--reps N]
 *               [--only-main ROWS]   (just main forwards, for perf)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "draft_head.h"
#include "model.h"
#include "mtp_head.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MAXREP 2000
static double samples[MAXREP];

int main(int argc, char **argv)
{
    const char *dir = NULL, *device = NULL;
    int threads = 2, ctx = 400, sub = 4096, reps = 200, only = 0;
    for (int i = 1; i < argc - 1; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ctx")) ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sub")) sub = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only-main")) only = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
    }
    if (!dir || reps < 1 || reps > MAXREP) {
        fprintf(stderr, "usage: bench_draft --model DIR [--threads N] "
                "[--ctx N] [--sub N] [--reps N] [--device auto|cpu|cuda:N]\n");
        return 2;
    }
    char err[512];
    struct mtpd_model *m;
    struct mtpd_load_opts lo = {.device = device};
    if (mtpd_model_load(dir, &lo, &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct mtpd_config *cfg = mtpd_model_config(m);
    int V = cfg->vocab_size, H = cfg->hidden_size;
    struct mtpd_kv *kv = mtpd_kv_new(m, ctx + 16);
    struct mtpd_ctx *c = mtpd_ctx_new(m, ctx + 16, threads);
    int32_t *toks = malloc(sizeof(int32_t) * (ctx + 16));
    float *hid = malloc(sizeof(float) * (size_t)(ctx + 16) * H);
    for (int i = 0; i < ctx + 16; i++)
        toks[i] = (int32_t)((i * 7919) % V);
    struct mtpd_seq s = {kv, toks, ctx, ctx};
    if (mtpd_forward(c, &s, 1)) return 1;
    for (int r = 0; r < ctx; r++)
        memcpy(hid + (size_t)r * H, mtpd_ctx_hidden(c, r), sizeof(float) * H);
    int has_mtp = mtpd_model_n_mtp(m) > 0;
    if (has_mtp) {
        struct mtpd_mtp_seq q = {kv, toks + 1, hid, ctx, ctx};
        if (mtpd_mtp_forward(c, 0, &q, 1)) return 1;
    }
    if (only > 0) { /* for profilers: main forwards over `only` rows */
        for (int it = 0; it < reps; it++) {
            struct mtpd_seq v = {kv, toks + ctx, only, 0};
            mtpd_forward(c, &v, 1);
            mtpd_kv_truncate(kv, -1, ctx);
        }
        return 0;
    }
    printf("model %s, context %d, %d threads, median of %d\n\n", dir, ctx,
           threads, reps);
    printf("| rows | main ms | main / main(1) | MTP ms (no head) | MTP ms "
           "(+head row) |\n|---|---|---|---|---|\n");
    double base = 0;
    for (int r = 1; r <= 6; r++) {
        double med[3] = {0, 0, 0};
        for (int kind = 0; kind < (has_mtp ? 3 : 1); kind++) {
            for (int it = 0; it < reps; it++) {
                double t0 = now();
                if (kind == 0) {
                    struct mtpd_seq v = {kv, toks + ctx, r, 0};
                    mtpd_forward(c, &v, 1);
                    samples[it] = now() - t0;
                    mtpd_kv_truncate(kv, -1, ctx);
                } else {
                    struct mtpd_mtp_seq q = {kv, toks + ctx, hid, r,
                                             kind == 1 ? r : r - 1};
                    mtpd_mtp_forward(c, 0, &q, 1);
                    samples[it] = now() - t0;
                    mtpd_kv_truncate(kv, 0, ctx);
                }
            }
            qsort(samples, reps, sizeof(double), cmp_d);
            med[kind] = samples[reps / 2] * 1e3;
        }
        if (r == 1)
            base = med[0];
        printf("| %d | %.3f | %.2f | %.3f | %.3f |\n", r, med[0],
               med[0] / base, med[1], med[2]);
    }
    if (has_mtp && sub > 0 && sub < V) {
        int32_t *ids = malloc(sizeof(int32_t) * sub);
        for (int i = 0; i < sub; i++)
            ids[i] = i;
        struct spec_draft_head dh;
        float *out = malloc(sizeof(float) * sub);
        if (spec_draft_head_init(&dh, mtpd_mtp_head(m, 0), ids, sub) == 0) {
            for (int it = 0; it < reps; it++) {
                double t0 = now();
                spec_draft_head_logits(&dh, mtpd_ctx_pool(c), hid, H, 1, out);
                samples[it] = now() - t0;
            }
            qsort(samples, reps, sizeof(double), cmp_d);
            printf("\nrestricted head, %d of %d rows, 1 row: %.3f ms\n", sub,
                   V, samples[reps / 2] * 1e3);
            spec_draft_head_free(&dh);
        }
        free(ids);
        free(out);
    }
    free(toks);
    free(hid);
    mtpd_ctx_free(c);
    mtpd_kv_free(kv);
    mtpd_model_free(m);
    return 0;
}
