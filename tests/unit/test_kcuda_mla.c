/*
 * test_kcuda_mla.c - the device MLA attention (kernels/cuda/mla_attn.cu)
 * against a CPU reference: kcuda_kv_write (the pool read back bitwise)
 * and kcuda_mla_attend over paged caches (pages shuffled in the pool,
 * layer > 0) for several sequences of different lengths and row counts in
 * one call (decode, verify k + 1 rows, a prefill chunk, a sequence
 * without rows), bf16 and f32 caches, kv_lora / rope of DeepSeek-V3, of
 * the default model, of the test checkpoints and odd ones, many parts
 * and few (so tiles split and the combine kernel runs), and a CUDA graph
 * replayed over two different steps. Exits 77 where there is no CUDA
 * device. The same source runs over kcuda_mock.c (test_kcuda_mla_mock:
 * the harness) and the CPU simulator (test_mla_sim: the kernels).
 *
 * The reference rounds the queries and the cache rows to bf16 as the
 * device does (its products are bf16 x bf16, fp32 sums) and sums in
 * double; the remaining difference is the bf16 rounding of the
 * probabilities and the order of the sums: max |dev - ref| per (row,
 * head) within 1e-2 of max |ref| (a wrong mask, page or merge shows as
 * O(1)).
 *
 * test_kcuda_mla [name...]: only the cases whose name contains one of the
 * arguments.
 * test_kcuda_mla --bench: achieved GB/s of cache reads (one layer, each
 * sequence's rows read once) of kcuda_mla_attend on 64 sequences x 4096
 * positions, next to kcuda_copy_bandwidth() measured in the same run.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_plan.h"
#include "kcuda.h"
#include "kernels.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static float rnd_f(void) /* [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) / 8388608.0f - 1.0f;
}

static float bf16_round(float x)
{
    uint32_t u = (uint32_t)kf32_to_bf16(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define DIE(...)                                                            \
    do {                                                                    \
        fprintf(stderr, __VA_ARGS__);                                       \
        fprintf(stderr, " (%s)\n", kcuda_last_error());                     \
        exit(1);                                                            \
    } while (0)

/* One call over a paged pool on the device, with its host mirror. */
struct setup {
    int L, R, D, H, n_seqs, n_rows, page_pos, n_layers, layer;
    enum kdtype dt;
    size_t es, row_bytes, layer_bytes, page_bytes;
    int *rows, *len;          /* per sequence */
    int n_pages;
    int *page_of;             /* [n_pages] pool page of table entry k */
    int32_t *seq_page0;       /* [n_seqs] */
    char *pool_h;             /* host image of the pool */
    void *pool_d;
    float *val;               /* [seq][pos][D] values as the cache holds */
    size_t *val0;             /* [n_seqs] offset of each sequence in val */
    float *kva;               /* [n_rows][D] the call's new rows */
    float *qc, *oc;           /* host [n_rows][H][D], [n_rows][H][L] */
    int32_t *row_seq, *row_pos, *seq_row0, *seq_len;
    /* device */
    float *kva_d, *qc_d, *oc_d;
    void **pages_h, *pages_d;
    int32_t *rs_d, *rp_d, *r0_d, *sl_d, *sp0_d;
    struct kcuda_rows rw;
};

static void *dmalloc(struct kcuda *g, size_t n)
{
    void *p = kcuda_malloc(g, n ? n : 16);
    if (!p)
        DIE("kcuda_malloc %zu", n);
    return p;
}

static void h2d(struct kcuda *g, void *d, const void *h, size_t n)
{
    if (n && kcuda_h2d(g, d, h, n))
        DIE("kcuda_h2d");
}

static void store(const struct setup *s, void *dst, float v)
{
    if (s->dt == KDT_BF16) {
        uint16_t b = kf32_to_bf16(v);
        memcpy(dst, &b, 2);
    } else {
        memcpy(dst, &v, 4);
    }
}

/* Slot of (seq, pos) of layer in the host pool image. */
static char *slot_h(const struct setup *s, int seq, int pos, int layer)
{
    int pg = s->page_of[s->seq_page0[seq] + pos / s->page_pos];
    return s->pool_h + (size_t)pg * s->page_bytes +
           (size_t)layer * s->layer_bytes +
           (size_t)(pos % s->page_pos) * s->row_bytes;
}

/* quick (the benchmark): one layer, the pool zeros, no host values
 * (timing does not depend on the data; filling 600 MB takes seconds). */
static void setup_new(struct kcuda *g, struct setup *s, int L, int R, int H,
                      enum kdtype dt, int page_pos, int n_seqs,
                      const int *rows, const int *len, float qmag, int quick)
{
    memset(s, 0, sizeof(*s));
    s->L = L;
    s->R = R;
    s->D = L + R;
    s->H = H;
    s->dt = dt;
    s->es = dt == KDT_BF16 ? 2 : 4;
    s->page_pos = page_pos;
    s->n_layers = quick ? 1 : 2;
    s->layer = quick ? 0 : 1;
    s->n_seqs = n_seqs;
    s->row_bytes = (size_t)s->D * s->es;
    s->layer_bytes = s->row_bytes * page_pos;
    s->page_bytes = s->layer_bytes * s->n_layers;
    s->rows = malloc(sizeof(int) * n_seqs);
    s->len = malloc(sizeof(int) * n_seqs);
    s->seq_page0 = malloc(sizeof(int32_t) * n_seqs);
    s->val0 = malloc(sizeof(size_t) * n_seqs);
    s->seq_row0 = malloc(sizeof(int32_t) * (n_seqs + 1));
    s->seq_len = malloc(sizeof(int32_t) * n_seqs);
    size_t nval = 0;
    s->seq_row0[0] = 0;
    for (int i = 0; i < n_seqs; i++) {
        s->rows[i] = rows[i];
        s->len[i] = len[i];
        s->seq_page0[i] = s->n_pages;
        s->n_pages += (len[i] + page_pos - 1) / page_pos;
        s->val0[i] = nval;
        nval += (size_t)len[i] * s->D;
        s->seq_row0[i + 1] = s->seq_row0[i] + rows[i];
        s->seq_len[i] = len[i];
    }
    s->n_rows = s->seq_row0[n_seqs];
    s->page_of = malloc(sizeof(int) * (s->n_pages + 1));
    for (int k = 0; k < s->n_pages; k++)
        s->page_of[k] = k;
    for (int k = s->n_pages - 1; k > 0; k--) { /* shuffled pool pages */
        int j = (int)((rnd_f() + 1.0f) * 0.5f * (k + 1)) % (k + 1);
        int t = s->page_of[k];
        s->page_of[k] = s->page_of[j];
        s->page_of[j] = t;
    }
    size_t pool = (size_t)s->n_pages * s->page_bytes;
    s->pool_h = quick ? calloc(1, pool + 1) : malloc(pool + 1);
    s->val = malloc(sizeof(float) * (quick ? 1 : nval + 1));
    s->kva = malloc(sizeof(float) * ((size_t)s->n_rows * s->D + 1));
    s->qc = malloc(sizeof(float) * ((size_t)s->n_rows * H * s->D + 1));
    s->oc = malloc(sizeof(float) * ((size_t)s->n_rows * H * L + 1));
    s->row_seq = malloc(sizeof(int32_t) * (s->n_rows + 1));
    s->row_pos = malloc(sizeof(int32_t) * (s->n_rows + 1));
    if (!s->pool_h || !s->val || !s->kva || !s->qc || !s->oc)
        DIE("host alloc");
    /* the pool: every slot of every layer random (other layers too, so a
     * wrong layer offset reads wrong values) */
    for (size_t i = 0; i < pool / s->es && !quick; i++)
        store(s, s->pool_h + i * s->es, rnd_f());
    /* the values the attended layer holds; the call's rows come from kva
     * through kcuda_kv_write */
    for (int i = 0; i < n_seqs; i++)
        for (int t = 0; t < len[i]; t++) {
            int r = t - (len[i] - rows[i]);
            float *v = s->val + s->val0[i] + (size_t)t * s->D;
            const char *sl = slot_h(s, i, t, s->layer);
            for (int d = 0; d < s->D && (!quick || r >= 0); d++) {
                if (r >= 0) {
                    float x = rnd_f();
                    s->kva[((size_t)s->seq_row0[i] + r) * s->D + d] = x;
                    if (!quick)
                        v[d] = dt == KDT_BF16 ? bf16_round(x) : x;
                } else if (dt == KDT_BF16) {
                    uint32_t u = (uint32_t)((const uint16_t *)sl)[d] << 16;
                    memcpy(&v[d], &u, 4);
                } else {
                    v[d] = ((const float *)sl)[d];
                }
            }
            if (r >= 0) {
                s->row_seq[s->seq_row0[i] + r] = i;
                s->row_pos[s->seq_row0[i] + r] = t;
            }
        }
    for (size_t i = 0; i < (size_t)s->n_rows * H * s->D; i++)
        s->qc[i] = qmag * rnd_f();

    s->pool_d = dmalloc(g, pool);
    s->pages_h = malloc(sizeof(void *) * (s->n_pages + 1));
    for (int k = 0; k < s->n_pages; k++)
        s->pages_h[k] = (char *)s->pool_d + (size_t)s->page_of[k] *
                                                s->page_bytes;
    s->pages_d = dmalloc(g, sizeof(void *) * s->n_pages);
    s->kva_d = dmalloc(g, sizeof(float) * (size_t)s->n_rows * s->D);
    s->qc_d = dmalloc(g, sizeof(float) * (size_t)s->n_rows * H * s->D);
    s->oc_d = dmalloc(g, sizeof(float) * (size_t)s->n_rows * H * L);
    s->rs_d = dmalloc(g, sizeof(int32_t) * s->n_rows);
    s->rp_d = dmalloc(g, sizeof(int32_t) * s->n_rows);
    s->r0_d = dmalloc(g, sizeof(int32_t) * (n_seqs + 1));
    s->sl_d = dmalloc(g, sizeof(int32_t) * n_seqs);
    s->sp0_d = dmalloc(g, sizeof(int32_t) * n_seqs);
    h2d(g, s->pool_d, s->pool_h, pool);
    h2d(g, s->pages_d, s->pages_h, sizeof(void *) * s->n_pages);
    h2d(g, s->kva_d, s->kva, sizeof(float) * (size_t)s->n_rows * s->D);
    h2d(g, s->qc_d, s->qc, sizeof(float) * (size_t)s->n_rows * H * s->D);
    h2d(g, s->rs_d, s->row_seq, sizeof(int32_t) * s->n_rows);
    h2d(g, s->rp_d, s->row_pos, sizeof(int32_t) * s->n_rows);
    h2d(g, s->r0_d, s->seq_row0, sizeof(int32_t) * (n_seqs + 1));
    h2d(g, s->sl_d, s->seq_len, sizeof(int32_t) * n_seqs);
    h2d(g, s->sp0_d, s->seq_page0, sizeof(int32_t) * n_seqs);
    if (kcuda_memset(g, s->oc_d, 0xff, sizeof(float) * (size_t)s->n_rows *
                                           H * L) || kcuda_sync(g))
        DIE("upload");
    s->rw = (struct kcuda_rows){
        .n_rows = s->n_rows, .n_seqs = n_seqs, .row_seq = s->rs_d,
        .row_pos = s->rp_d, .seq_row0 = s->r0_d, .seq_len = s->sl_d,
        .pages = s->pages_d, .seq_page0 = s->sp0_d, .page_pos = page_pos,
        .layer_bytes = s->layer_bytes, .row_bytes = s->row_bytes,
        .kv_dtype = dt, .kv_lora = L, .rope = R};
}

static void setup_free(struct kcuda *g, struct setup *s)
{
    void *d[] = {s->pool_d, s->pages_d, s->kva_d, s->qc_d, s->oc_d, s->rs_d,
                 s->rp_d, s->r0_d, s->sl_d, s->sp0_d};
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        kcuda_free(g, d[i]);
    free(s->rows);
    free(s->len);
    free(s->page_of);
    free(s->seq_page0);
    free(s->pool_h);
    free(s->val);
    free(s->val0);
    free(s->kva);
    free(s->qc);
    free(s->oc);
    free(s->row_seq);
    free(s->row_pos);
    free(s->seq_row0);
    free(s->seq_len);
    free(s->pages_h);
}

/* A plan with its pinned image and device mirror. */
struct dplan {
    struct kcuda_mla_plan p;
    void *host, *dev;
};

static void dplan_new(struct kcuda *g, struct dplan *dp, int rows, int seqs,
                      int H, int parts, int chunk)
{
    if (kcuda_mla_plan_init(&dp->p, rows, seqs, H, parts, chunk))
        DIE("plan_init");
    dp->host = kcuda_host_alloc(g, dp->p.bytes);
    dp->dev = dmalloc(g, dp->p.bytes);
    if (!dp->host || kcuda_mla_plan_bind(&dp->p, dp->host, dp->dev))
        DIE("plan_bind");
}

static void dplan_free(struct kcuda *g, struct dplan *dp)
{
    kcuda_host_free(g, dp->host);
    kcuda_free(g, dp->dev);
}

/* Plans s's call into dp, uploads it, runs kcuda_mla_attend. */
static void attend(struct kcuda *g, struct setup *s, struct dplan *dp)
{
    if (kcuda_mla_plan_build(&dp->p, s->n_seqs, s->seq_row0, s->seq_len))
        DIE("plan_build");
    if (kcuda_h2d(g, dp->dev, dp->host, dp->p.bytes) ||
        kcuda_mla_attend(g, &s->rw, s->layer, s->H, s->qc_d, s->oc_d,
                         1.0f / sqrtf((float)(s->D)), &dp->p))
        DIE("kcuda_mla_attend");
}

/* max over pairs of max |dev - ref| / (max |ref| + 1e-3); ref as the
 * header says. */
static double compare(const struct setup *s, const float *oc)
{
    int D = s->D, L = s->L, H = s->H;
    double worst = 0, scale = 1.0 / sqrt((double)D);
    double *sc = NULL, *o = malloc(sizeof(double) * L);
    float *qb = malloc(sizeof(float) * D);
    for (int r = 0; r < s->n_rows; r++) {
        int seq = s->row_seq[r], n = s->row_pos[r] + 1;
        const float *kv = s->val + s->val0[seq];
        sc = realloc(sc, sizeof(double) * n);
        for (int h = 0; h < H; h++) {
            const float *q = s->qc + ((size_t)r * H + h) * D;
            for (int d = 0; d < D; d++)
                qb[d] = bf16_round(q[d]);
            double m = -INFINITY, l = 0, rmax = 0, dmax = 0;
            for (int t = 0; t < n; t++) {
                double acc = 0;
                for (int d = 0; d < D; d++)
                    acc += (double)qb[d] * bf16_round(kv[(size_t)t * D + d]);
                sc[t] = acc * scale;
                m = sc[t] > m ? sc[t] : m;
            }
            for (int j = 0; j < L; j++)
                o[j] = 0;
            for (int t = 0; t < n; t++) {
                double w = exp(sc[t] - m);
                l += w;
                for (int j = 0; j < L; j++)
                    o[j] += w * bf16_round(kv[(size_t)t * D + j]);
            }
            const float *dv = oc + ((size_t)r * H + h) * L;
            for (int j = 0; j < L; j++) {
                double ref = o[j] / l, d = fabs(dv[j] - ref);
                rmax = fabs(ref) > rmax ? fabs(ref) : rmax;
                dmax = d > dmax || d != d ? d : dmax;
            }
            double e = dmax / (rmax + 1e-3);
            if (e > worst || e != e)
                worst = e;
        }
    }
    free(sc);
    free(o);
    free(qb);
    return worst;
}

/* kcuda_kv_write, then the pool read back equals the host image with the
 * call's rows stored in it. */
static int check_kv_write(struct kcuda *g, struct setup *s)
{
    size_t pool = (size_t)s->n_pages * s->page_bytes;
    char *back = malloc(pool + 1);
    if (kcuda_kv_write(g, &s->rw, s->layer, s->kva_d, s->D) ||
        kcuda_d2h(g, back, s->pool_d, pool) || kcuda_sync(g))
        DIE("kv_write");
    for (int r = 0; r < s->n_rows; r++) {
        char *sl = slot_h(s, s->row_seq[r], s->row_pos[r], s->layer);
        for (int d = 0; d < s->D; d++)
            store(s, sl + d * s->es, s->kva[(size_t)r * s->D + d]);
    }
    int ok = memcmp(back, s->pool_h, pool) == 0;
    free(back);
    return ok;
}

struct tcase {
    const char *name;
    int L, R, H;
    enum kdtype dt;
    int page_pos, n, rows[8], len[8];
    int parts; /* 0: kcuda_mla_parts */
    int chunk;
};

static int run_case(struct kcuda *g, const struct tcase *c)
{
    struct setup s;
    int sm = kcuda_sm_count(g), fails = 0;
    setup_new(g, &s, c->L, c->R, c->H, c->dt, c->page_pos, c->n, c->rows,
              c->len, 3.0f, 0);
    int kv_ok = check_kv_write(g, &s);
    struct dplan dp;
    int parts = c->parts ? c->parts : kcuda_mla_parts(sm, c->L, c->R);
    dplan_new(g, &dp, s.n_rows, s.n_seqs, c->H, parts, c->chunk);
    attend(g, &s, &dp);
    if (kcuda_d2h(g, s.oc, s.oc_d, sizeof(float) * (size_t)s.n_rows * c->H *
                                        c->L) || kcuda_sync(g))
        DIE("%s: run", c->name);
    double e = compare(&s, s.oc);
    int ok = kv_ok && e <= 1e-2;
    printf("%-28s %s  kv_write %s  attend err %.2e  (%d blocks, %d merges, "
           "%d parts)\n", c->name, ok ? "ok  " : "FAIL",
           kv_ok ? "ok" : "FAIL", e, dp.p.hdr->n_blocks, dp.p.hdr->n_merges,
           parts);
    fails += !ok;
    dplan_free(g, &dp);
    setup_free(g, &s);
    return fails;
}

/* A graph of (plan upload + attention) captured once, replayed for two
 * steps whose plans and row positions differ (same buffers): both match
 * the reference. */
static int run_graph(struct kcuda *g)
{
    int rows[3] = {1, 4, 2}, len[3] = {700, 90, 2000};
    struct setup s;
    setup_new(g, &s, 128, 16, 8, KDT_BF16, 16, 3, rows, len, 3.0f, 0);
    int fails = !check_kv_write(g, &s);
    struct dplan dp;
    dplan_new(g, &dp, s.n_rows, s.n_seqs, 8, 40, 0);
    /* once outside the capture (sets the kernel attributes) */
    attend(g, &s, &dp);
    if (kcuda_sync(g))
        DIE("graph warm-up");
    struct kcuda_graph *gr = NULL;
    if (kcuda_graph_begin(g) ||
        kcuda_h2d(g, dp.dev, dp.host, dp.p.bytes) ||
        kcuda_mla_attend(g, &s.rw, s.layer, 8, s.qc_d, s.oc_d,
                         1.0f / sqrtf((float)s.D), &dp.p) ||
        kcuda_graph_end(g, &gr))
        DIE("graph capture");
    for (int step = 0; step < 2; step++) {
        if (step == 1) { /* the same sequences, shorter: rows move back */
            for (int i = 0; i < s.n_seqs; i++)
                s.seq_len[i] = s.len[i] = s.len[i] / 2 + s.rows[i];
            for (int r = 0; r < s.n_rows; r++) {
                int i = s.row_seq[r];
                s.row_pos[r] = s.len[i] - s.rows[i] + (r - s.seq_row0[i]);
            }
            h2d(g, s.rp_d, s.row_pos, sizeof(int32_t) * s.n_rows);
        }
        if (kcuda_mla_plan_build(&dp.p, s.n_seqs, s.seq_row0, s.seq_len) ||
            kcuda_graph_launch(g, gr) ||
            kcuda_d2h(g, s.oc, s.oc_d, sizeof(float) * (size_t)s.n_rows * 8 *
                                           128) || kcuda_sync(g))
            DIE("graph step %d", step);
        double e = compare(&s, s.oc);
        printf("graph step %d                 %s  attend err %.2e\n", step,
               e <= 1e-2 ? "ok  " : "FAIL", e);
        fails += !(e <= 1e-2);
    }
    kcuda_graph_free(gr);
    dplan_free(g, &dp);
    setup_free(g, &s);
    return fails;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* GB/s of cache reads of kcuda_mla_attend over 64 sequences x 4096
 * positions for some shapes, next to the copy bandwidth. */
static int bench(struct kcuda *g)
{
    struct {
        const char *name;
        int L, R, H, rows;
        enum kdtype dt;
    } sh[] = {
        {"DSV3 H=128 decode  bf16", 512, 64, 128, 1, KDT_BF16},
        {"DSV3 H=16  decode  bf16", 512, 64, 16, 1, KDT_BF16},
        {"DSV3 H=128 verify4 bf16", 512, 64, 128, 4, KDT_BF16},
        {"DSV3 H=16  decode  f32 ", 512, 64, 16, 1, KDT_F32},
        {"small H=8  decode  bf16", 128, 16, 8, 1, KDT_BF16},
        {"small H=8  verify4 bf16", 128, 16, 8, 4, KDT_BF16},
    };
    double copy = 0;
    if (kcuda_copy_bandwidth(g, (size_t)1 << 30, 10, &copy))
        DIE("copy bandwidth");
    printf("%s\ncopy bandwidth (read + write): %.0f GB/s\n",
           kcuda_describe(g), copy);
    printf("%-26s %10s %10s %8s %8s\n", "shape (64 x 4096 pos)", "us",
           "GB/s read", "of copy", "TFLOPS");
    enum { NS = 64, LEN = 4096 };
    int rows[NS], len[NS];
    for (size_t i = 0; i < sizeof(sh) / sizeof(sh[0]); i++) {
        for (int k = 0; k < NS; k++) {
            rows[k] = sh[i].rows;
            len[k] = LEN;
        }
        struct setup s;
        setup_new(g, &s, sh[i].L, sh[i].R, sh[i].H, sh[i].dt, 64, NS, rows,
                  len, 1.0f, 1);
        struct dplan dp;
        dplan_new(g, &dp, s.n_rows, NS, sh[i].H,
                  kcuda_mla_parts(kcuda_sm_count(g), sh[i].L, sh[i].R), 0);
        attend(g, &s, &dp); /* warm-up */
        if (kcuda_sync(g))
            DIE("bench warm-up");
        int reps = 20;
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now_s();
            for (int k = 0; k < reps; k++)
                if (kcuda_mla_attend(g, &s.rw, s.layer, s.H, s.qc_d, s.oc_d,
                                     0.05f, &dp.p))
                    DIE("bench");
            if (kcuda_sync(g))
                DIE("bench sync");
            double t = (now_s() - t0) / reps;
            best = t < best ? t : best;
        }
        double bytes = (double)NS * LEN * s.row_bytes;
        double flop = 2.0 * NS * sh[i].rows * sh[i].H * (double)LEN *
                      (s.D + s.L);
        printf("%-26s %10.1f %10.0f %7.0f%% %8.0f\n", sh[i].name, best * 1e6,
               bytes / best / 1e9, 100.0 * bytes / best / 1e9 / copy,
               flop / best / 1e12);
        dplan_free(g, &dp);
        setup_free(g, &s);
    }
    printf("(GB/s read: unique cache bytes of one layer / time; \"of copy\": "
           "against the copy's read + write rate, the HBM ceiling)\n");
    return 0;
}

static int selected(const char *name, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return argc < 2;
}

int main(int argc, char **argv)
{
    if (kcuda_device_count() == 0) {
        printf("no CUDA device: test_kcuda_mla skipped\n");
        return 77;
    }
    struct kcuda *g = NULL;
    char err[256];
    if (kcuda_open(0, (size_t)256 << 20, &g, err, sizeof(err)))
        DIE("kcuda_open: %s", err);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        int rc = bench(g);
        kcuda_close(g);
        return rc;
    }
    static const struct tcase cases[] = {
        {"small bf16 mixed", 128, 16, 8, KDT_BF16, 16, 6,
         {1, 4, 1, 70, 0, 2}, {1, 37, 1000, 300, 50, 2}, 0, 0},
        {"small f32 mixed", 128, 16, 8, KDT_F32, 16, 6,
         {1, 4, 1, 70, 0, 2}, {1, 37, 1000, 300, 50, 2}, 0, 0},
        {"small bf16 split", 128, 16, 8, KDT_BF16, 16, 6,
         {1, 4, 1, 70, 0, 2}, {1, 37, 1000, 300, 50, 2}, 7, 32},
        {"small f32 split", 128, 16, 8, KDT_F32, 16, 4,
         {1, 4, 3, 1}, {5000, 37, 3, 1}, 13, 64},
        {"dsv3 bf16", 512, 64, 128, KDT_BF16, 64, 3, {1, 4, 1},
         {3000, 513, 5}, 0, 0},
        {"dsv3 f32 split", 512, 64, 128, KDT_F32, 64, 3, {1, 4, 1},
         {3000, 513, 5}, 20, 0},
        {"L96 R32 H5 bf16 split", 96, 32, 5, KDT_BF16, 8, 3, {2, 1, 9},
         {100, 700, 9}, 9, 16},
        {"L160 R0 H3 f32", 160, 0, 3, KDT_F32, 32, 2, {3, 1}, {64, 65},
         0, 0},
        {"L288 R48 H20 bf16 split", 288, 48, 20, KDT_BF16, 128, 3,
         {1, 3, 40}, {900, 33, 200}, 11, 64},
        {"L288 R48 H20 f32", 288, 48, 20, KDT_F32, 4, 2, {5, 1}, {260, 1},
         0, 0},
        {"golden L48 R16 H4 bf16", 48, 16, 4, KDT_BF16, 16, 4,
         {1, 4, 30, 2}, {400, 4, 100, 66}, 0, 0},
        {"golden L48 R16 H4 f32 split", 48, 16, 4, KDT_F32, 16, 4,
         {1, 4, 30, 2}, {400, 4, 100, 66}, 9, 16},
        {"golden L96 R16 H3 bf16 split", 96, 16, 3, KDT_BF16, 32, 2,
         {3, 1}, {1500, 20}, 17, 64},
    };
    /* arguments other than --bench: run only the cases whose name
     * contains one of them ("graph": the graph replay) */
    int fails = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (selected(cases[i].name, argc, argv))
            fails += run_case(g, &cases[i]);
    if (selected("graph", argc, argv))
        fails += run_graph(g);
    kcuda_close(g);
    printf("%s\n", fails ? "FAILED" : "all ok");
    return fails ? 1 : 0;
}
