/*
 * bench_kcuda_matmul.c - kcuda_matmul's speed against the device's copy
 * bandwidth measured in the same run (kcuda_copy_bandwidth).
 *
 * Usage: bench_kcuda_matmul [n_tok,...]   (default 1,2,4,8,16,17,64,256)
 *
 * For every dtype and two shapes (18432 x 7168: a DeepSeek-V3 dense FFN
 * matrix; 7168 x 2048), enough copies of the matrix are cycled through
 * that the working set (>= 1 GiB) is far larger than L2, so every call
 * streams its weights from HBM. Weights are a constant byte pattern
 * (timing only; test_kcuda checks the results). Prints microseconds per
 * call, GB/s of weight bytes (data + scales), that as a fraction of the
 * copy rate, and cost(n_tok) / cost(1). n_tok <= 16 is the skinny
 * weight-streaming kernel, more rows the cuBLASLt path. Exits 77 when
 * there is no device.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kcuda.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define MAX_COPIES 64

struct mats {
    struct kdmat m[MAX_COPIES];
    int n;
    size_t bytes; /* of one copy: data and scales */
};

static void mats_free(struct kcuda *g, struct mats *s)
{
    for (int i = 0; i < s->n; i++) {
        kcuda_free(g, (void *)s->m[i].data);
        kcuda_free(g, (void *)s->m[i].scale);
        kcuda_free(g, (void *)s->m[i].qd);
        kcuda_free(g, (void *)s->m[i].qm);
    }
    s->n = 0;
}

/* A device buffer of n bytes filled with 0x3c (bf16 / f16 ~1, fp32 and
 * e4m3 small normal values), or NULL. */
static void *fill(struct kcuda *g, size_t n)
{
    void *p = kcuda_malloc(g, n);
    if (p && kcuda_memset(g, p, 0x3c, n)) {
        kcuda_free(g, p);
        return NULL;
    }
    return p;
}

static int mats_new(struct kcuda *g, enum kdtype dt, int rows, int cols,
                    struct mats *s)
{
    memset(s, 0, sizeof *s);
    size_t data = (size_t)rows * kmat_row_bytes(dt, cols);
    size_t nsc = dt == KDT_F8_E4M3 ? (size_t)((rows + 127) / 128) *
                                         ((cols + 127) / 128) * 4
                                   : 0;
    size_t nq = dt == KDT_Q8_0 || dt == KDT_Q4_1
                    ? (size_t)rows * (cols / KQ_BLK) * 2
                    : 0;
    s->bytes = data + nsc + nq * (dt == KDT_Q4_1 ? 2 : 1);
    int copies = (int)(((size_t)1 << 30) / s->bytes) + 1;
    if (copies > MAX_COPIES)
        copies = MAX_COPIES;
    for (int i = 0; i < copies; i++) {
        struct kdmat *m = &s->m[i];
        *m = (struct kdmat){.dtype = dt, .rows = rows, .cols = cols};
        m->data = fill(g, data);
        if (nsc) {
            m->scale = fill(g, nsc);
            m->blk = 128;
        }
        if (nq)
            m->qd = fill(g, nq);
        if (dt == KDT_Q4_1)
            m->qm = fill(g, nq);
        s->n = i + 1;
        if (!m->data || (nsc && !m->scale) || (nq && !m->qd) ||
            (dt == KDT_Q4_1 && !m->qm))
            return -1;
    }
    return kcuda_sync(g);
}

int main(int argc, char **argv)
{
    int ntoks[16] = {1, 2, 4, 8, 16, 17, 64, 256}, n_nt = 8;
    if (argc > 1) {
        n_nt = 0;
        for (char *s = strtok(argv[1], ","); s && n_nt < 16;
             s = strtok(NULL, ","))
            ntoks[n_nt++] = atoi(s);
    }
    if (kcuda_device_count() == 0) {
        printf("no CUDA device: %s\n", kcuda_last_error());
        return 77;
    }
    struct kcuda *g;
    char err[256];
    if (kcuda_open(0, (size_t)256 << 20, &g, err, sizeof err)) {
        fprintf(stderr, "kcuda_open: %s\n", err);
        return 1;
    }
    double copy = 0;
    if (kcuda_copy_bandwidth(g, (size_t)1 << 30, 10, &copy)) {
        fprintf(stderr, "copy bandwidth: %s\n", kcuda_last_error());
        return 1;
    }
    printf("device: %s\ncopy: %.0f GB/s (1 GiB device to device, read + "
           "write, best of 10: the ceiling below)\n\n",
           kcuda_describe(g), copy);
    printf("%-8s %13s %6s %10s %8s %7s %9s\n", "dtype", "rows x cols",
           "n_tok", "us/call", "GB/s", "%copy", "cost/n=1");

    int max_nt = 1;
    for (int i = 0; i < n_nt; i++)
        max_nt = ntoks[i] > max_nt ? ntoks[i] : max_nt;
    static const int shapes[][2] = {{18432, 7168}, {7168, 2048}};
    const int max_cols = 7168;
    float *x = kcuda_malloc(g, (size_t)max_nt * max_cols * sizeof(float));
    float *y = kcuda_malloc(g, (size_t)max_nt * 18432 * sizeof(float));
    if (!x || !y || kcuda_memset(g, x, 0x3c, (size_t)max_nt * max_cols * 4)) {
        fprintf(stderr, "alloc: %s\n", kcuda_last_error());
        return 1;
    }
    enum kdtype dts[] = {KDT_BF16, KDT_F8_E4M3, KDT_Q8_0, KDT_Q4_1, KDT_F16,
                         KDT_F32};
    for (size_t di = 0; di < sizeof dts / sizeof *dts; di++)
        for (size_t si = 0; si < 2; si++) {
            int rows = shapes[si][0], cols = shapes[si][1];
            struct mats s;
            if (mats_new(g, dts[di], rows, cols, &s)) {
                fprintf(stderr, "%s %dx%d: %s\n", kdtype_str(dts[di]), rows,
                        cols, kcuda_last_error());
                mats_free(g, &s);
                continue;
            }
            double t1 = 0;
            for (int k = 0; k < n_nt; k++) {
                int nt = ntoks[k];
                int reps = 2 * s.n < 20 ? 20 : 2 * s.n, rc = 0;
                for (int i = 0; i < 3 && rc == 0; i++) /* warm up */
                    rc = kcuda_matmul(g, &s.m[i % s.n], x, cols, y, rows, nt);
                rc = rc ? rc : kcuda_sync(g);
                double t0 = now_s();
                for (int i = 0; i < reps && rc == 0; i++)
                    rc = kcuda_matmul(g, &s.m[i % s.n], x, cols, y, rows, nt);
                rc = rc ? rc : kcuda_sync(g);
                double t = (now_s() - t0) / reps;
                if (rc) {
                    fprintf(stderr, "%s n_tok %d: %s\n", kdtype_str(dts[di]),
                            nt, kcuda_last_error());
                    break;
                }
                if (nt == 1)
                    t1 = t;
                double gbs = (double)s.bytes / t / 1e9;
                char ratio[32] = "-";
                if (t1 > 0)
                    snprintf(ratio, sizeof ratio, "%.2f", t / t1);
                printf("%-8s %6d x %-5d %6d %10.1f %8.0f %6.1f%% %9s\n",
                       kdtype_str(dts[di]), rows, cols, nt, t * 1e6, gbs,
                       100.0 * gbs / copy, ratio);
            }
            mats_free(g, &s);
        }
    kcuda_free(g, x);
    kcuda_free(g, y);
    kcuda_close(g);
    return 0;
}
