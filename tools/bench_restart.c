/*
 * bench_restart.c - what prefix reuse saves: the next turn of a
 * conversation that holds N tokens, as spec_seq_restart (keep the shared
 * prefix, prefill the new tail) against a fresh sequence over all N + T
 * tokens (the baseline), measured in the same run, interleaved; time to
 * the first new token, median of the repetitions.
 *
 *   bench_restart --model DIR [--threads N] [--tail T] [--reps N]
 *                 [--lens 256,1024,3000]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spec.h"

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

/* Steps s until it has its first new token; seconds taken. */
static double to_first_token(struct spec_engine *e, struct spec_seq *s)
{
    double t0 = now();
    int n = 0;
    while (n == 0 && spec_seq_finish(s) == SPEC_RUNNING) {
        if (spec_step(e, &s, 1) < 0)
            return -1;
        spec_seq_output(s, &n);
    }
    return now() - t0;
}

#define MAXREP 64

int main(int argc, char **argv)
{
    const char *dir = NULL, *lens = "256,1024,3000", *device = NULL;
    int threads = 2, tail = 16, reps = 5;
    for (int i = 1; i < argc - 1; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tail")) tail = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lens")) lens = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
    }
    if (!dir || reps < 1 || reps > MAXREP || tail < 1) {
        fprintf(stderr, "usage: bench_restart --model DIR [--threads N] "
                "[--tail T] [--reps N] [--lens A,B,..] "
                "[--device auto|cpu|cuda:N]\n");
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
    struct spec_engine_opts o = {.n_threads = threads};
    struct spec_engine *e;
    if (spec_engine_new(m, &o, &e) < 0)
        return 1;
    struct spec_params p;
    spec_params_default(&p, m);
    p.max_tokens = 1;
    p.eos_id = -1;
    printf("| held tokens | new tokens | fresh prefill (baseline) | restart "
           "| positions reused | speed-up |\n|---|---|---|---|---|---|\n");
    for (const char *l = lens; l && *l; l = strchr(l, ','), l = l ? l + 1 : l) {
        int n = atoi(l);
        if (n < 2 || n + tail > cfg->max_position_embeddings)
            continue;
        int32_t *toks = malloc(sizeof(int32_t) * (size_t)(n + tail));
        for (int i = 0; i < n + tail; i++)
            toks[i] = (int32_t)(2 + (i * 7919u + 17u) % (cfg->vocab_size - 2));
        double tf[MAXREP], tr[MAXREP];
        int reused = 0;
        for (int r = 0; r < reps; r++) {
            struct spec_seq *f, *s;
            /* baseline: everything from scratch */
            if (spec_seq_new(e, &p, toks, n + tail, &f) < 0)
                return 1;
            tf[r] = to_first_token(e, f);
            spec_seq_free(f);
            /* a sequence holding the first n tokens (prefilled untimed),
             * continued with the tail */
            if (spec_seq_new(e, &p, toks, n, &s) < 0 || spec_generate(e, s))
                return 1;
            reused = spec_seq_restart(s, &p, toks, n + tail);
            if (reused < 0)
                return 1;
            tr[r] = to_first_token(e, s);
            spec_seq_free(s);
        }
        qsort(tf, (size_t)reps, sizeof(double), cmp_d);
        qsort(tr, (size_t)reps, sizeof(double), cmp_d);
        double a = tf[reps / 2], b = tr[reps / 2];
        printf("| %d | %d | %.2f ms | %.2f ms | %d | %.1fx |\n", n, tail,
               1e3 * a, 1e3 * b, reused, a / b);
        free(toks);
    }
    spec_engine_free(e);
    mtpd_model_free(m);
    return 0;
}
