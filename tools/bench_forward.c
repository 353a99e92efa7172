/*
 * bench_forward.c - cost of one main-model forward call for T = 1, 2, 4, 8
 * (or --t LIST) new tokens against a cache of CTX positions, and what
 * fraction of the machine's memory bandwidth (measured in the same run)
 * that achieves.
 *
 *   bench_forward --model DIR [--threads N] [--ctx 64] [--secs 1.5]
 *                 [--t 1,2,4,8] [--only T] [--device auto|cpu|cuda:N]
 *                 [--ab ISA,ISA] [--act-bf16] [--no-paired] [--q4-rows]
 *
 * Prints a markdown table: ms per call, cost(T)/cost(1), weight bytes read
 * per call (dense parts once; routed experts: the expected number of
 * distinct experts T tokens pick, each read once), GB/s, % of the read
 * bandwidth, and that share paired (paired_share: each call followed by
 * a read of as many bytes; "–" with --no-paired or past the 1 GiB
 * buffer). Speculative verification pays only while cost(k+1)/cost(1)
 * stays near 1. With --device cuda the times are the GPU's (a forward call
 * returns its logits to the host) but the bandwidth columns still compare
 * with the host's memory: read GB/s against the GPU's copy bandwidth
 * (tools/device/bench_cuda.sh measures it).
 * --ab avx512,amx times two code paths (mtpd_set_isa)
 * alternately in one process instead, for a ratio on a loaded machine.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "model.h"
#include "mtp_head.h" /* mtpd_ctx_pool */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct bw_job {
    const float *buf;
    size_t n; /* floats */
    float sum[256];
};

/* Reads its slice as two streams through the SIMD dot kernel. */
static void bw_part(void *arg, int part, int n_parts)
{
    struct bw_job *j = arg;
    size_t lo = j->n * part / n_parts, hi = j->n * (part + 1) / n_parts;
    size_t half = (hi - lo) / 2, step = 1 << 16;
    float s = 0;
    for (size_t i = 0; i < half; i += step) {
        size_t m = half - i < step ? half - i : step;
        s += kdot(j->buf + lo + i, j->buf + lo + half + i, (int)m);
    }
    j->sum[part] = s;
}

/* Seconds to read floats [off, off + n) of buf with the pool. */
static double timed_read(struct kpool *p, const float *buf, size_t off,
                         size_t n)
{
    struct bw_job j = {.buf = buf + off, .n = n};
    double t0 = now_s();
    kpool_run(p, bw_part, &j, kpool_size(p));
    return now_s() - t0;
}

/* Read bandwidth over a 1 GiB buffer with the same pool (best of 5). */
static double read_bandwidth(struct kpool *p, const float *buf,
                             size_t bytes)
{
    double best = 0;
    for (int it = 0; it < 5; it++) {
        double gbs = bytes / timed_read(p, buf, 0, bytes / sizeof *buf) / 1e9;
        best = gbs > best ? gbs : best;
    }
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*
 * The memory bandwidth here drifts by 2x within seconds (a shared VM), so
 * "best forward time over best read time, measured a second apart" says
 * little. Paired: each forward call is followed at once by a read of as
 * many bytes as the call's weights (a window moving through buf, so that
 * neither is served from the cache), and each pair gives its own ratio;
 * the median of the ratios is the forward's share of the bandwidth of the
 * same moment.
 */
static double paired_share(struct mtpd_ctx *cx, struct mtpd_kv *kv,
                           struct mtpd_seq *s, int ctx, double bytes,
                           struct kpool *p, const float *buf, size_t n_buf,
                           double secs)
{
    enum { MAXP = 4096 };
    static double r[MAXP];
    size_t n = (size_t)(bytes / sizeof *buf), off = 0;
    if (n == 0 || n > n_buf)
        return 0; /* more than the buffer: not measured */
    int np = 0;
    double t0 = now_s();
    while ((now_s() - t0 < secs || np < 5) && np < MAXP) {
        double t1 = now_s();
        if (mtpd_forward(cx, s, 1))
            return -1;
        double tf = now_s() - t1;
        mtpd_kv_truncate(kv, -1, ctx);
        if (off + n > n_buf)
            off = 0;
        double tr = timed_read(p, buf, off, n);
        off += n;
        r[np++] = tr / tf; /* (bytes / tf) / (bytes / tr) */
    }
    qsort(r, (size_t)np, sizeof *r, cmp_double);
    return np % 2 ? r[np / 2] : (r[np / 2 - 1] + r[np / 2]) / 2;
}

/* Expected weight bytes one call over T tokens reads. */
static double bytes_for(const struct mtpd_model *m, int T)
{
    const struct mtpd_config *c = mtpd_model_config(m);
    double act = (double)mtpd_model_active_bytes(m);
    double all = (double)mtpd_model_weight_bytes(m);
    int E = c->n_routed_experts, K = c->num_experts_per_tok;
    if (E <= K)
        return act;
    double distinct = E * (1 - pow(1 - (double)K / E, T));
    return act + (distinct - K) * (all - act) / (E - K);
}

/* Best time of one forward call of T rows over `secs` seconds. */
static double best_forward(struct mtpd_ctx *cx, struct mtpd_kv *kv,
                           int32_t *ids, int ctx, int T, double secs)
{
    struct mtpd_seq s = {.kv = kv, .tokens = ids + ctx, .n_tokens = T,
                         .logits_from = 0};
    int iters = 0;
    double t0 = now_s(), best = 1e9;
    while (now_s() - t0 < secs || iters < 3) {
        double t1 = now_s();
        if (mtpd_forward(cx, &s, 1))
            return -1;
        double dt = now_s() - t1;
        best = dt < best ? dt : best;
        mtpd_kv_truncate(kv, -1, ctx);
        iters++;
    }
    return best;
}

/* --ab A,B: per T, 8 alternating slices of secs / 8 on each path; the
 * best time per path, its cost(T)/cost(1), and B's time over A's. */
static int ab_table(struct mtpd_ctx *cx, struct mtpd_kv *kv, int32_t *ids,
                    int ctx, const char *ab, const int *Ts, int n_ts,
                    double secs)
{
    char a[32], b[32];
    const char *comma = strchr(ab, ',');
    if (!comma || comma - ab >= 32 || strlen(comma + 1) >= 32) {
        fprintf(stderr, "bench_forward: --ab wants two paths, e.g. "
                "avx512,amx\n");
        return 2;
    }
    snprintf(a, sizeof a, "%.*s", (int)(comma - ab), ab);
    snprintf(b, sizeof b, "%s", comma + 1);
    const char *isa[2] = {a, b};
    for (int i = 0; i < 2; i++)
        if (mtpd_set_isa(isa[i])) {
            fprintf(stderr, "bench_forward: path %s not supported\n", isa[i]);
            return 2;
        }
    printf("| T | %s ms | %s ms | %s / %s | %s cost(T)/cost(1) | "
           "%s cost(T)/cost(1) |\n|---|---|---|---|---|---|\n", a, b, b, a,
           a, b);
    double base[2] = {0, 0};
    for (int ti = 0; ti < n_ts; ti++) {
        double best[2] = {1e9, 1e9};
        for (int sl = 0; sl < 16; sl++) {
            mtpd_set_isa(isa[sl % 2]);
            double t = best_forward(cx, kv, ids, ctx, Ts[ti], secs / 16);
            if (t < 0) {
                fprintf(stderr, "bench_forward: forward failed\n");
                return 1;
            }
            best[sl % 2] = t < best[sl % 2] ? t : best[sl % 2];
        }
        if (ti == 0) {
            base[0] = best[0];
            base[1] = best[1];
        }
        printf("| %d | %.3f | %.3f | %.2f | %.2f | %.2f |\n", Ts[ti],
               best[0] * 1e3, best[1] * 1e3, best[1] / best[0],
               best[0] / base[0], best[1] / base[1]);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *device = NULL;
    int threads = 2, ctx = 64;
    double secs = 1.5;
    int only_t = 0, act_bf16 = 0, paired = 1, q4_rows = 0;
    const char *ab = NULL;
    int Ts[32] = {1, 2, 4, 8}, n_ts = 4, max_t = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i]; /* auto, cpu, cuda, cuda:N */
        else if (!strcmp(argv[i], "--secs") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--ab") && i + 1 < argc)
            ab = argv[++i]; /* two code paths, interleaved: avx512,amx */
        else if (!strcmp(argv[i], "--act-bf16")) /* mtpd_load_opts */
            act_bf16 = 1;
        else if (!strcmp(argv[i], "--q4-rows"))
            q4_rows = 1;
        else if (!strcmp(argv[i], "--no-paired")) /* profiling: forward only */
            paired = 0;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only_t = atoi(argv[++i]); /* one T, for profiling */
        else if (!strcmp(argv[i], "--t") && i + 1 < argc) {
            n_ts = 0; /* rows per call, e.g. 1,4,8,16,128 (prefill) */
            for (const char *q = argv[++i]; q && n_ts < 32;) {
                Ts[n_ts++] = atoi(q);
                q = strchr(q, ',');
                q = q ? q + 1 : NULL;
            }
        } else {
            fprintf(stderr, "usage: bench_forward --model DIR [--threads N] "
                    "[--ctx N] [--secs S] [--t LIST] [--only T] "
                    "[--device auto|cpu|cuda:N] [--ab ISA,ISA] "
                    "[--act-bf16] [--no-paired]\n");
            return 2;
        }
    }
    for (int ti = 0; ti < n_ts; ti++) {
        if (Ts[ti] < 1) {
            fprintf(stderr, "bench_forward: bad --t\n");
            return 2;
        }
        max_t = Ts[ti] > max_t ? Ts[ti] : max_t;
    }
    if (!dir || threads < 1 || ctx < 1) {
        fprintf(stderr, "bench_forward: --model is required\n");
        return 2;
    }
    const char *isa = getenv("MTPD_ISA"); /* the library reads no env */
    if (isa && mtpd_set_isa(isa))
        fprintf(stderr, "bench_forward: MTPD_ISA=%s: unknown or not "
                "supported, using %s\n", isa, mtpd_isa());
    char err[512];
    struct mtpd_model *m;
    struct mtpd_load_opts lo = {.device = device, .act_bf16 = act_bf16,
                                .keep_q4_layout = q4_rows};
    if (mtpd_model_load(dir, &lo, &m, err, sizeof(err))) {
        fprintf(stderr, "bench_forward: %s\n", err);
        return 1;
    }
    const struct mtpd_config *c = mtpd_model_config(m);
    struct mtpd_ctx *cx = mtpd_ctx_new(m, ctx + max_t, threads);
    struct mtpd_kv *kv = mtpd_kv_new(m, ctx + max_t);
    int32_t *ids = malloc(sizeof(int32_t) * (ctx + max_t));
    if (!cx || !kv || !ids) {
        fprintf(stderr, "bench_forward: out of memory\n");
        return 1;
    }
    srand(7);
    for (int i = 0; i < ctx + max_t; i++)
        ids[i] = rand() % c->vocab_size;
    struct mtpd_seq pre = {.kv = kv, .tokens = ids, .n_tokens = ctx,
                           .logits_from = ctx - 1};
    if (mtpd_forward(cx, &pre, 1)) {
        fprintf(stderr, "bench_forward: prefill failed\n");
        return 1;
    }
    /* the context's own pool reads: no second set of threads spinning
     * next to the forward calls' */
    struct kpool *bwp = mtpd_ctx_pool(cx);
    size_t bw_bytes = (size_t)1 << 30;
    float *bw_buf = malloc(bw_bytes);
    if (!bw_buf) {
        fprintf(stderr, "bench_forward: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < bw_bytes / sizeof *bw_buf; i++)
        bw_buf[i] = 1.0f;
    double bw = read_bandwidth(bwp, bw_buf, bw_bytes);
    printf("model %s: %.1f MB weights, %.1f MB touched per token (top-k "
           "experts), %d threads, context %d, ISA %s\n", dir,
           mtpd_model_weight_bytes(m) / 1e6, mtpd_model_active_bytes(m) / 1e6,
           threads, ctx, kisa_str(kisa_active()));
    printf("read bandwidth (same run, %d threads): %.1f GB/s\n\n", threads,
           bw);
    if (ab) /* A B A B ...: both paths see the same load */
        return ab_table(cx, kv, ids, ctx, ab, Ts, n_ts, secs);
    printf("| T | ms/forward | cost(T)/cost(1) | ms/token | weight MB read | "
           "GB/s | %% of bandwidth | %% of bandwidth, paired |\n"
           "|---|---|---|---|---|---|---|---|\n");
    double base = 0;
    for (int ti = 0; ti < n_ts; ti++) {
        int T = Ts[ti];
        if (only_t && T != only_t)
            continue;
        struct mtpd_seq s = {.kv = kv, .tokens = ids + ctx, .n_tokens = T,
                             .logits_from = 0};
        int iters = 0;
        double t0 = now_s(), best = 1e9;
        while (now_s() - t0 < secs || iters < 5) {
            double t1 = now_s();
            if (mtpd_forward(cx, &s, 1)) {
                fprintf(stderr, "bench_forward: forward failed\n");
                return 1;
            }
            double dt = now_s() - t1;
            best = dt < best ? dt : best;
            mtpd_kv_truncate(kv, -1, ctx);
            iters++;
        }
        if (ti == 0)
            base = best;
        double bytes = bytes_for(m, T), gbs = bytes / best / 1e9;
        double share = !paired ? 0 : paired_share(cx, kv, &s, ctx, bytes,
                                    bwp, bw_buf, bw_bytes / sizeof *bw_buf,
                                    secs);
        if (share < 0) {
            fprintf(stderr, "bench_forward: forward failed\n");
            return 1;
        }
        char sh[16] = "–"; /* --no-paired, or too many bytes */
        if (share > 0)
            snprintf(sh, sizeof sh, "%.0f%%", 100 * share);
        printf("| %d | %.3f | %.2f | %.3f | %.1f | %.1f | %.0f%% | %s |\n",
               T, best * 1e3, best / base, best * 1e3 / T, bytes / 1e6, gbs,
               100 * gbs / bw, sh);
    }
    struct kpool_stats st;
    kpool_get_stats(bwp, &st);
    if (st.fallbacks)
        printf("\n(the pool ran %ld of %ld parallel sections on one thread "
               "after %ld fallbacks: another process took a CPU)\n",
               st.solo_runs, st.runs, st.fallbacks);
    free(bw_buf);
    free(ids);
    mtpd_kv_free(kv);
    mtpd_ctx_free(cx);
    mtpd_model_free(m);
    return 0;
}
