/*
 * bench_kcuda_moe.c - kcuda_moe_ffn (the routed experts of one MoE layer
 * on the GPU) against the device's copy bandwidth, measured in the same
 * run.
 *
 * Usage: bench_kcuda_moe [dtype,...] [n_tok,...] [hidden inter E k]
 *        (default bf16,f8 1,2,4,8,64 7168 2048 256 8: DeepSeek-V3's layer)
 *
 * The experts' weights are constant bytes (timing does not depend on
 * them); each row picks k distinct random experts. One call is captured
 * in a CUDA graph and replayed; the time per call is the best of 5 runs
 * of 20 replays. "GB/s" counts the bytes of the active experts' weights
 * (and scales) once per call, the least any kernel must read; "of copy" is
 * that over kcuda_copy_bandwidth. Needs a GPU (exits 77 without one).
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

static enum kdtype parse_dtype(const char *s)
{
    static const struct { const char *n; enum kdtype t; } tab[] = {
        {"f32", KDT_F32}, {"bf16", KDT_BF16}, {"f16", KDT_F16},
        {"f8", KDT_F8_E4M3}, {"q8", KDT_Q8_0}, {"q4", KDT_Q4_1},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(s, tab[i].n) == 0)
            return tab[i].t;
    return KDT_COUNT;
}

/* Device bytes of one rows x cols matrix of dtype t: data and scales. */
static size_t mat_bytes(enum kdtype t, int rows, int cols, size_t *scale_b)
{
    *scale_b = 0;
    if (t == KDT_F8_E4M3)
        *scale_b = sizeof(float) * (size_t)((rows + 127) / 128) *
                   ((cols + 127) / 128);
    if (t == KDT_Q8_0 || t == KDT_Q4_1)
        *scale_b = sizeof(uint16_t) * (size_t)rows * (cols / KQ_BLK) *
                   (t == KDT_Q4_1 ? 2 : 1);
    return kmat_row_bytes(t, cols) * (size_t)rows;
}

/* n matrices sharing one device allocation (constant bytes). */
struct devmats {
    void *buf;
    struct kdmat *m;
};

static int devmats_new(struct kcuda *g, enum kdtype t, int n, int rows,
                       int cols, struct devmats *d)
{
    size_t sb, db = mat_bytes(t, rows, cols, &sb);
    size_t per = ((db + 15) / 16 * 16 + sb + 255) / 256 * 256;
    d->buf = kcuda_malloc(g, per * (size_t)n);
    d->m = calloc((size_t)n, sizeof(*d->m));
    if (!d->buf || !d->m)
        return -1;
    /* 0x38: bf16 ~4e-5, e4m3 1.0, small positive scales */
    if (kcuda_memset(g, d->buf, 0x38, per * (size_t)n) || kcuda_sync(g))
        return -1;
    for (int i = 0; i < n; i++) {
        char *p = (char *)d->buf + per * (size_t)i;
        struct kdmat *m = &d->m[i];
        m->dtype = t;
        m->rows = rows;
        m->cols = cols;
        m->data = p;
        if (t == KDT_F8_E4M3) {
            m->scale = (const float *)(p + (db + 15) / 16 * 16);
            m->blk = 128;
        }
        if (t == KDT_Q8_0 || t == KDT_Q4_1) {
            m->qd = (const uint16_t *)(p + (db + 15) / 16 * 16);
            m->qm = m->qd + (size_t)rows * (cols / KQ_BLK);
        }
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
    const char *dts = argc > 1 ? argv[1] : "bf16,f8";
    int toks[16], n_toks = parse_list(argc > 2 ? argv[2] : "1,2,4,8,64",
                                      toks, 16);
    int hid = argc > 3 ? atoi(argv[3]) : 7168;
    int inter = argc > 4 ? atoi(argv[4]) : 2048;
    int E = argc > 5 ? atoi(argv[5]) : 256;
    int k = argc > 6 ? atoi(argv[6]) : 8;
    if (kcuda_device_count() == 0) {
        printf("no CUDA device: bench_kcuda_moe needs a GPU\n");
        return 77;
    }
    int max_tok = 0;
    for (int i = 0; i < n_toks; i++)
        max_tok = toks[i] > max_tok ? toks[i] : max_tok;
    struct kcuda *g;
    char err[256];
    if (kcuda_open(0, kcuda_moe_ffn_workspace(max_tok, k, hid, inter), &g,
                   err, sizeof err)) {
        fprintf(stderr, "kcuda_open: %s\n", err);
        return 1;
    }
    double copy_gbps = 0;
    if (kcuda_copy_bandwidth(g, (size_t)1 << 30, 5, &copy_gbps)) {
        fprintf(stderr, "copy bandwidth: %s\n", kcuda_last_error());
        return 1;
    }
    printf("%s; copy %.0f GB/s; experts %d x (%d x %d), k %d\n",
           kcuda_describe(g), copy_gbps, E, inter, hid, k);
    printf("%-6s %6s %8s %10s %9s %8s\n", "dtype", "n_tok", "active",
           "us/call", "GB/s", "of copy");

    float *x = kcuda_malloc(g, sizeof(float) * (size_t)max_tok * hid);
    float *y = kcuda_malloc(g, sizeof(float) * (size_t)max_tok * hid);
    int32_t *d_idx = kcuda_malloc(g, sizeof(int32_t) * (size_t)max_tok * k);
    float *d_w = kcuda_malloc(g, sizeof(float) * (size_t)max_tok * k);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)max_tok * k);
    float *w = malloc(sizeof(float) * (size_t)max_tok * k);
    if (!x || !y || !d_idx || !d_w || !idx || !w ||
        kcuda_memset(g, x, 0, sizeof(float) * (size_t)max_tok * hid)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    srand(1);
    for (const char *s = dts; s && *s;) {
        char name[16];
        size_t len = strcspn(s, ",");
        snprintf(name, sizeof name, "%.*s", (int)len, s);
        s = s[len] ? s + len + 1 : NULL;
        enum kdtype t = parse_dtype(name);
        if (t == KDT_COUNT) {
            fprintf(stderr, "unknown dtype %s\n", name);
            return 1;
        }
        struct devmats gate, up, down;
        struct kcuda_experts *ex;
        if (devmats_new(g, t, E, inter, hid, &gate) ||
            devmats_new(g, t, E, inter, hid, &up) ||
            devmats_new(g, t, E, hid, inter, &down) ||
            kcuda_experts_new(g, E, gate.m, up.m, down.m, &ex)) {
            fprintf(stderr, "%s experts: %s\n", name, kcuda_last_error());
            return 1;
        }
        size_t sb1, sb2;
        size_t per_expert = 2 * mat_bytes(t, inter, hid, &sb1) +
                            mat_bytes(t, hid, inter, &sb2) + 2 * sb1 + sb2;
        for (int ti = 0; ti < n_toks; ti++) {
            int n = toks[ti];
            char used[4096] = {0};
            int active = 0;
            for (int r = 0; r < n; r++)
                for (int j = 0; j < k; j++) {
                    int e, dup;
                    do { /* distinct in the row */
                        e = rand() % E;
                        dup = 0;
                        for (int l = 0; l < j; l++)
                            dup |= idx[r * k + l] == e;
                    } while (dup);
                    idx[r * k + j] = e;
                    w[r * k + j] = 0.125f;
                    active += !used[e];
                    used[e] = 1;
                }
            struct kcuda_graph *gr = NULL;
            if (kcuda_h2d(g, d_idx, idx, sizeof(int32_t) * n * k) ||
                kcuda_h2d(g, d_w, w, sizeof(float) * n * k) ||
                kcuda_sync(g) || kcuda_graph_begin(g) ||
                kcuda_moe_ffn(g, ex, x, hid, n, d_idx, d_w, k, y, hid) ||
                kcuda_graph_end(g, &gr) || kcuda_graph_launch(g, gr) ||
                kcuda_sync(g)) {
                fprintf(stderr, "moe_ffn: %s\n", kcuda_last_error());
                return 1;
            }
            double best = 1e30;
            for (int rep = 0; rep < 5; rep++) {
                double t0 = now_s();
                for (int i = 0; i < 20; i++)
                    kcuda_graph_launch(g, gr);
                if (kcuda_sync(g)) {
                    fprintf(stderr, "moe_ffn: %s\n", kcuda_last_error());
                    return 1;
                }
                double dt = (now_s() - t0) / 20;
                best = dt < best ? dt : best;
            }
            kcuda_graph_free(gr);
            double gbps = (double)per_expert * active / best / 1e9;
            printf("%-6s %6d %8d %10.1f %9.0f %7.0f%%\n", name, n, active,
                   best * 1e6, gbps, 100 * gbps / copy_gbps);
        }
        kcuda_experts_free(g, ex);
        kcuda_free(g, gate.buf);
        kcuda_free(g, up.buf);
        kcuda_free(g, down.buf);
        free(gate.m);
        free(up.m);
        free(down.m);
    }
    kcuda_close(g);
    return 0;
}
