/*
 * bench_kernels.c - kmatmul throughput against the machine's read bandwidth.
 *
 * Usage: bench_kernels [threads,...] [MiB] [n_tok,...] [DTYPE,...]
 *        [DTYPE:RxC,...] (these shapes instead of the built-in ones)
 *        (default 1,2 1024 1,2,4,8; ISA: MTPD_ISA=scalar|avx2|avx512;
 *        MTPD_BF16_ACT=0|1|ab: BF16 with x rounded to bf16, or both;
 *        with AMX present, BF16 rows run without and with it, interleaved)
 *
 * Measures (1) read bandwidth: a SIMD dot over a 1 GiB buffer split across
 * the pool, (2) kpool_run dispatch overhead, (3) kmatmul on bf16/f8/q8/q4
 * matrices cycled through a >= 1 GiB working set (so nothing is served from
 * the last-level cache), for n_tok 1,2,4,8 (or the list given) and the
 * thread counts given.
 * Prints GB/s of weight bytes, the ratio to the read bandwidth measured with
 * the same thread count, and cost(n_tok)/cost(1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct read_job {
    const float *buf;
    size_t n; /* floats */
    float sums[64];
};

static void read_part(void *arg, int part, int n_parts)
{
    struct read_job *j = arg;
    size_t per = j->n / (size_t)n_parts / 2;
    const float *a = j->buf + (size_t)part * per * 2;
    float s = 0;
    for (size_t off = 0; off < per; off += 1 << 20) { /* int-sized chunks */
        size_t len = per - off < (1 << 20) ? per - off : (1 << 20);
        s += kdot(a + off, a + per + off, (int)len);
    }
    j->sums[part] = s;
}

/* Best-of-3 read bandwidth in GB/s over buf (bytes) with pool p. */
static double read_bw(struct kpool *p, const float *buf, size_t bytes)
{
    struct read_job j = {buf, bytes / sizeof(float), {0}};
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        kpool_run(p, read_part, &j, kpool_size(p));
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return (double)bytes / best / 1e9;
}

static double copy_bw(char *dst, const char *src, size_t bytes)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        memcpy(dst, src, bytes);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return 2.0 * (double)bytes / best / 1e9; /* read + write */
}

static void nop_part(void *arg, int part, int n_parts)
{
    (void)arg, (void)part, (void)n_parts;
}

static double pool_overhead_us(struct kpool *p)
{
    int n = 20000;
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        kpool_run(p, nop_part, NULL, kpool_size(p));
    return (now_s() - t0) / n * 1e6;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* n_mats copies of a rows x cols matrix (distinct memory), random data. */
static int mats_new(struct kmat *m, int n_mats, enum kdtype dt, int rows,
                    int cols, float *scale)
{
    size_t bytes = (size_t)rows * kmat_row_bytes(dt, cols);
    size_t nq = (size_t)rows * (cols / KQ_BLK); /* Q8_0 / Q4_1 scales */
    int q = dt == KDT_Q8_0 || dt == KDT_Q4_1 || dt == KDT_Q4_S;
    for (int k = 0; k < n_mats; k++) {
        unsigned char *d = aligned_alloc(64, (bytes + (q ? 4 * nq : 0) + 63) & ~(size_t)63);
        if (d == NULL)
            return -1;
        for (size_t i = 0; i < bytes; i += 2) {
            uint32_t r = rnd();
            if (dt == KDT_BF16) /* |w| ~ 2^-8 .. 2^-4, random sign */
                *(uint16_t *)(d + i) = kf32_to_bf16(
                    (float)((int)(r % 2001) - 1000) * 6e-5f);
            else
                d[i] = (unsigned char)(r & 0x77), d[i + 1] = (unsigned char)(r >> 8 & 0x77);
        }
        m[k] = (struct kmat){dt, rows, cols, d, dt == KDT_F8_E4M3 ? scale : NULL,
                             dt == KDT_F8_E4M3 ? 128 : 0, NULL, NULL, 0, 0, NULL, NULL, NULL};
        if (q) { /* scales (and mins) after the codes: 2^-9 .. 2^-8 */
            uint16_t *s = (uint16_t *)(d + bytes);
            for (size_t i = 0; i < 2 * nq; i++)
                s[i] = kf32_to_f16((float)(256 + rnd() % 256) * 0x1p-17f);
            m[k].qd = s;
            m[k].qm = dt == KDT_Q4_1 ? s + nq : NULL;
        }
        if (dt == KDT_Q4_S) { /* the same range: 128..255 x 2^-16 */
            uint8_t *sc = d + bytes;
            size_t ne = (size_t)rows * 2 * ((cols / KQ_BLK + 7) / 8);
            for (size_t i = 0; i < 2 * nq; i++)
                sc[i] = (uint8_t)(128 + rnd() % 128);
            for (size_t i = 0; i < ne; i++)
                sc[2 * nq + i] = (uint8_t)-16;
            m[k] = (struct kmat){.dtype = dt, .rows = rows, .cols = cols,
                                 .data = d, .qsc = sc,
                                 .qmn = (const int8_t *)sc + nq,
                                 .qexp = (const int8_t *)sc + 2 * nq};
        }
    }
    return 0;
}

/* Seconds per kmatmul (best of 3 sweeps over all copies). */
static double time_matmul(struct kpool *p, const struct kmat *m, int n_mats,
                          const float *x, float *y, int n_tok)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        for (int k = 0; k < n_mats; k++)
            if (kmatmul(p, &m[k], x, m[k].cols, y, m[k].rows, n_tok) != 0)
                return -1;
        double t = (now_s() - t0) / n_mats;
        best = t < best ? t : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    int thr[16], n_thr = 0;
    const char *list = argc > 1 ? argv[1] : "1,2";
    for (const char *q = list; q != NULL && n_thr < 16;) {
        int v = atoi(q);
        if (v >= 1 && v <= 64)
            thr[n_thr++] = v;
        q = strchr(q, ',');
        q = q ? q + 1 : NULL;
    }
    if (n_thr == 0)
        thr[n_thr++] = 1;
    const char *isa = getenv("MTPD_ISA"); /* the library reads no env */
    for (int i = 0; isa && i < KISA_COUNT; i++)
        if (!strcmp(isa, kisa_str((enum kisa)i)) && kisa_set((enum kisa)i))
            fprintf(stderr, "bench_kernels: MTPD_ISA=%s not supported\n", isa);
    if (isa && !strcmp(isa, "avx512")) /* "amx": both, interleaved */
        kisa_set_amx(0);
    /* MTPD_ROW_STREAM=0|1 forces how calls of few tokens stream weights
     * (kisa_set_row_stream), "ab" runs every row both ways, interleaved */
    const char *rse = getenv("MTPD_ROW_STREAM");
    int rs_ab = rse && !strcmp(rse, "ab");
    if (rse && !rs_ab)
        kisa_set_row_stream(atoi(rse));
    /* MTPD_BF16_ACT=0|1 sets kmat.act_bf16 on BF16 matrices (x rounded
     * to bf16 where the CPU has AVX512-BF16), "ab" runs them both ways */
    const char *bfe = getenv("MTPD_BF16_ACT");
    int bf_ab = bfe && !strcmp(bfe, "ab");
    int bf_on = bfe && !bf_ab && atoi(bfe) != 0;
    size_t set_mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    int ntoks[16] = {1, 2, 4, 8}, n_ntok = 4, max_tok = 8;
    if (argc > 3) {
        n_ntok = 0;
        for (const char *q = argv[3]; q != NULL && n_ntok < 16;) {
            int v = atoi(q);
            if (v >= 1 && v <= 4096)
                ntoks[n_ntok++] = v;
            q = strchr(q, ',');
            q = q ? q + 1 : NULL;
        }
        if (n_ntok == 0)
            ntoks[n_ntok++] = 1;
    }
    for (int k = 0; k < n_ntok; k++)
        max_tok = ntoks[k] > max_tok ? ntoks[k] : max_tok;
    size_t set_bytes = set_mib << 20;
    printf("ISA %s (detected %s), row stream %s, working set %zu MiB\n",
           kisa_str(kisa_active()), kisa_str(kisa_detect()),
           rs_ab ? "0/1" : kisa_row_stream() ? "1" : "0", set_mib);

    float *buf = aligned_alloc(64, set_bytes);
    char *dst = aligned_alloc(64, set_bytes);
    if (!buf || !dst)
        return 1;
    for (size_t i = 0; i < set_bytes / 4; i++)
        buf[i] = (float)(i & 1023) * 1e-3f;
    memset(dst, 1, set_bytes);
    printf("memcpy %zu MiB: %.1f GB/s (read+write, 1 thread)\n", set_mib,
           copy_bw(dst, (const char *)buf, set_bytes));
    free(dst);

    struct kpool *pools[65] = {0};
    double bw[65];
    for (int i = 0; i < n_thr; i++) {
        int t = thr[i];
        if (pools[t] != NULL)
            continue;
        pools[t] = kpool_new(t);
        if (pools[t] == NULL)
            return 1;
        bw[t] = read_bw(pools[t], buf, set_bytes);
        printf("read bandwidth, %d thread(s): %.1f GB/s; kpool_run "
               "overhead %.2f us\n", t, bw[t], pool_overhead_us(pools[t]));
    }
    free(buf);

    static struct {
        enum kdtype dt;
        int rows, cols;
    } shapes[16] = {
        {KDT_BF16, 8192, 4096},
        {KDT_BF16, 4096, 14336},
        {KDT_F8_E4M3, 4096, 14336},
        {KDT_Q8_0, 4096, 14336},
        {KDT_Q4_1, 4096, 14336},
        {KDT_BF16, 576, 7168}, /* small (cache-resident) decode matrix */
        {KDT_Q8_0, 576, 7168},
        {KDT_Q4_1, 576, 7168},
    };
    int n_shapes = 8;
    if (argc > 5) { /* DTYPE:RxC,... instead, all streamed from memory */
        n_shapes = 0;
        for (const char *q = argv[5]; q != NULL && n_shapes < 16;) {
            char dt[16];
            int r, c;
            if (sscanf(q, "%15[^:]:%dx%d", dt, &r, &c) == 3)
                for (int d = 0; d < KDT_COUNT; d++)
                    if (!strcmp(dt, kdtype_str((enum kdtype)d)))
                        shapes[n_shapes].dt = (enum kdtype)d,
                        shapes[n_shapes].rows = r,
                        shapes[n_shapes++].cols = c;
            q = strchr(q, ',');
            q = q ? q + 1 : NULL;
        }
    }
    int max_r = 8192, max_c = 14336;
    for (int s = 0; s < n_shapes; s++) {
        max_r = shapes[s].rows > max_r ? shapes[s].rows : max_r;
        max_c = shapes[s].cols > max_c ? shapes[s].cols : max_c;
    }
    float *x = malloc((size_t)max_tok * max_c * sizeof *x);
    float *y = malloc((size_t)max_tok * max_r * sizeof *y);
    float *scale = malloc(64 * 128 * sizeof *scale);
    if (!x || !y || !scale)
        return 1;
    for (size_t i = 0; i < (size_t)max_tok * max_c; i++)
        x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    for (int i = 0; i < 64 * 128; i++)
        scale[i] = 1e-3f;

    printf("\n%-8s %-12s %3s %5s %9s %8s %8s %9s\n", "dtype", "shape", "thr",
           "n_tok", "ms", "GB/s", "%read", "cost/c1");
    for (int s = 0; s < n_shapes; s++) {
        if (argc > 4 && !strstr(argv[4], kdtype_str(shapes[s].dt)))
            continue; /* not asked for */
        struct kmat shape = {.dtype = shapes[s].dt, .rows = shapes[s].rows,
                             .cols = shapes[s].cols, .data = "", .blk = 128};
        size_t mbytes = kmat_bytes(&shape); /* codes + scales */
        int small = shapes[s].rows < 1024 && argc <= 5;
        int n_mats = small ? 1 : (int)((set_bytes + mbytes - 1) / mbytes);
        struct kmat *m = calloc((size_t)n_mats, sizeof *m);
        if (!m || mats_new(m, n_mats, shapes[s].dt, shapes[s].rows,
                           shapes[s].cols, scale) != 0)
            return 1;
        /* BF16 where the CPU has AMX: without and with it, interleaved */
        int amx_ab = shapes[s].dt == KDT_BF16 && kisa_amx_active();
        int bfab = shapes[s].dt == KDT_BF16 && bf_ab && !amx_ab;
        for (int k = 0; k < n_mats; k++)
            m[k].act_bf16 = bf_on;
        int n_path = amx_ab || rs_ab || bfab ? 2 : 1; /* AMX A/B wins */
        for (int i = 0; i < n_thr; i++) {
            int t = thr[i];
            double c1[2] = {0, 0};
            for (int k = 0; k < n_ntok * n_path; k++) {
                int path = k % n_path;
                if (amx_ab)
                    kisa_set_amx(path);
                else if (bfab)
                    for (int q = 0; q < n_mats; q++)
                        m[q].act_bf16 = path;
                else if (rs_ab)
                    kisa_set_row_stream(path);
                double sec = time_matmul(pools[t], m, small ? 1 : n_mats, x, y,
                                         ntoks[k / n_path]);
                if (small) /* average many calls: latency, not bandwidth */
                    for (int r = 0; r < 5; r++) {
                        double t0 = now_s();
                        for (int i = 0; i < 200; i++)
                            kmatmul(pools[t], m, x, m->cols, y, m->rows, ntoks[k / n_path]);
                        double v = (now_s() - t0) / 200;
                        sec = v < sec ? v : sec;
                    }
                if (k / n_path == 0)
                    c1[path] = sec;
                char shape[32];
                snprintf(shape, sizeof shape, "%dx%d", shapes[s].rows,
                         shapes[s].cols);
                char dts[24];
                snprintf(dts, sizeof dts, "%s%s", kdtype_str(shapes[s].dt),
                         amx_ab ? (path ? "+amx" : "")
                         : bfab ? (path ? "/xbf" : "/x32")
                         : bf_on && kmat_act_bf16(m) ? "/xbf"
                         : rs_ab ? (path ? "/rs1" : "/rs0") : "");
                printf("%-8s %-12s %3d %5d %9.3f %8.1f %7.0f%% %9.2f%s\n",
                       dts, shape, t, ntoks[k / n_path], sec * 1e3,
                       mbytes / sec / 1e9, 100.0 * mbytes / sec / 1e9 / bw[t],
                       sec / c1[path], small ? "  (L2/L3-resident)" : "");
                fflush(stdout);
            }
        }
        for (int k = 0; k < n_mats; k++)
            free((void *)m[k].data);
        free(m);
    }
    for (int t = 1; t <= 64; t++)
        kpool_free(pools[t]);
    free(x);
    free(y);
    free(scale);
    return 0;
}
