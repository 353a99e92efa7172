/*
 * bench_attention.c - long-context forward cost: the decode attention
 * split by heads against split by cache positions (model/mla_split.c),
 * and the fp32 against the BF16 KV cache, each pair measured interleaved
 * in one process (step A, step B, step A, ...) so machine noise hits both
 * alike. Prints a markdown table of median ms per forward and B/A (or the
 * 10th percentile, --stat p10). On a machine busy with other work wall
 * times say little; --cpu times the CPU the calling thread used instead
 * and allows --threads 1 (all the work on that thread, so the heads
 * column is the whole cost of a step; the positions path needs 2 threads
 * and is then not taken: its column repeats the heads path).
 *
 *   bench_attention --model DIR [--threads 2] [--steps 200]
 *                   [--ctx 500,1000,2000,3000] [--rows 1,3]
 *                   [--stat median|p10] [--cpu]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

static clockid_t g_clock = CLOCK_MONOTONIC;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(g_clock, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct side {
    struct mtpd_ctx *cx;
    struct mtpd_kv *kv;
    double *t;
};

/* Prefills ctx tokens on both sides, then times `steps` forwards of
 * `rows` rows on each, interleaved, rolling back after each. Writes the
 * two medians (ms). */
static int g_pct = 50; /* the percentile reported */

static int ab(struct side s[2], const int32_t *ids, int ctx, int rows,
              int steps, double med[2])
{
    for (int k = 0; k < 2; k++) {
        mtpd_kv_truncate(s[k].kv, -1, 0);
        struct mtpd_seq pre = {s[k].kv, ids, ctx, ctx};
        if (mtpd_forward(s[k].cx, &pre, 1))
            return -1;
    }
    for (int i = 0; i < steps; i++)
        for (int k = 0; k < 2; k++) {
            struct mtpd_seq q = {s[k].kv, ids + ctx, rows, 0};
            double t0 = now_s();
            if (mtpd_forward(s[k].cx, &q, 1))
                return -1;
            s[k].t[i] = now_s() - t0;
            mtpd_kv_truncate(s[k].kv, -1, ctx);
        }
    for (int k = 0; k < 2; k++) {
        qsort(s[k].t, (size_t)steps, sizeof(double), cmp_d);
        med[k] = s[k].t[steps * g_pct / 100] * 1e3;
    }
    return 0;
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

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int threads = 2, steps = 200;
    int ctxs[16] = {500, 1000, 2000, 3000}, n_ctx = 4;
    int rows[8] = {1, 3}, n_rows = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            n_ctx = parse_list(argv[++i], ctxs, 16);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            n_rows = parse_list(argv[++i], rows, 8);
        else if (!strcmp(argv[i], "--stat") && i + 1 < argc)
            g_pct = !strcmp(argv[++i], "p10") ? 10 : 50;
        else if (!strcmp(argv[i], "--cpu"))
            g_clock = CLOCK_THREAD_CPUTIME_ID;
        else {
            fprintf(stderr, "usage: bench_attention --model DIR [--threads N]"
                    " [--steps N] [--ctx 500,1000,...] [--rows 1,3]"
                    " [--stat median|p10] [--cpu]\n");
            return 2;
        }
    }
    int min_threads = g_clock == CLOCK_MONOTONIC ? 2 : 1;
    if (!dir || threads < min_threads || steps < 3 || n_ctx < 1 ||
        n_rows < 1) {
        fprintf(stderr, "bench_attention: --model DIR needed (threads >= "
                "2, or 1 with --cpu; steps >= 3)\n");
        return 2;
    }
    int max_ctx = 0, max_rows = 0;
    for (int i = 0; i < n_ctx; i++)
        max_ctx = ctxs[i] > max_ctx ? ctxs[i] : max_ctx;
    for (int i = 0; i < n_rows; i++)
        max_rows = rows[i] > max_rows ? rows[i] : max_rows;
    char err[512];
    struct mtpd_model *m[2];
    for (int k = 0; k < 2; k++) {
        struct mtpd_load_opts lo = {.kv_bf16 = k, .device = "cpu"};
        if (mtpd_model_load(dir, &lo, &m[k], err, sizeof err)) {
            fprintf(stderr, "bench_attention: %s\n", err);
            return 1;
        }
    }
    int V = mtpd_model_config(m[0])->vocab_size;
    int cap = max_ctx + max_rows;
    if (cap > mtpd_model_config(m[0])->max_position_embeddings) {
        fprintf(stderr, "bench_attention: context past the model's "
                "max_position_embeddings\n");
        return 2;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    struct side heads_split[2], kv_dtype[2];
    for (int k = 0; k < 2; k++) {
        /* heads (0) / positions (1), both fp32; f32 (0) / bf16 (1) KV,
         * both with the default attention choice */
        heads_split[k] = (struct side){mtpd_ctx_new(m[0], cap, threads),
                                       mtpd_kv_new(m[0], cap),
                                       malloc(sizeof(double) * steps)};
        kv_dtype[k] = (struct side){mtpd_ctx_new(m[k], cap, threads),
                                    mtpd_kv_new(m[k], cap),
                                    malloc(sizeof(double) * steps)};
        if (!heads_split[k].cx || !heads_split[k].kv || !heads_split[k].t ||
            !kv_dtype[k].cx || !kv_dtype[k].kv || !kv_dtype[k].t || !ids) {
            fprintf(stderr, "bench_attention: out of memory\n");
            return 1;
        }
        mtpd_ctx_set_attn_split(heads_split[k].cx, k);
    }
    for (int i = 0; i < cap; i++)
        ids[i] = (int32_t)((i * 7919 + 3) % V);
    printf("model %s, %d threads, %s of %d interleaved forwards, %s\n\n",
           dir, threads, g_pct == 50 ? "median" : "10th percentile", steps,
           g_clock == CLOCK_MONOTONIC ? "wall time"
                                      : "CPU time of the calling thread");
    printf("| context | rows | heads ms | positions ms | positions / heads "
           "| f32 KV ms | bf16 KV ms | bf16 / f32 |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int ci = 0; ci < n_ctx; ci++)
        for (int ri = 0; ri < n_rows; ri++) {
            double a[2], b[2];
            if (ab(heads_split, ids, ctxs[ci], rows[ri], steps, a) ||
                ab(kv_dtype, ids, ctxs[ci], rows[ri], steps, b)) {
                fprintf(stderr, "bench_attention: forward failed\n");
                return 1;
            }
            printf("| %d | %d | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |\n",
                   ctxs[ci], rows[ri], a[0], a[1], a[1] / a[0], b[0], b[1],
                   b[1] / b[0]);
            fflush(stdout);
        }
    for (int k = 0; k < 2; k++) {
        mtpd_ctx_free(heads_split[k].cx);
        mtpd_kv_free(heads_split[k].kv);
        free(heads_split[k].t);
        mtpd_ctx_free(kv_dtype[k].cx);
        mtpd_kv_free(kv_dtype[k].kv);
        free(kv_dtype[k].t);
        mtpd_model_free(m[k]);
    }
    free(ids);
    return 0;
}
