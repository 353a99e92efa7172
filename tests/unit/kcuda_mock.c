/*
 * kcuda_mock.c - a host stand-in for the calls of kcuda.h that
 * test_kcuda_mla.c makes, so that the device test's own logic (pools,
 * shuffled pages, layers, the reference, the kv_write check, the graph
 * replay) is checked on machines without a GPU before device time is spent
 * on it: "device" memory is host memory, copies are memcpy, a graph
 * records its copies and attentions and replays them, and
 * kcuda_mla_attend runs the plan on the CPU as the kernels do (queries,
 * cache rows and probabilities rounded to bf16, partial slots in the
 * workspace at the kernel's offsets, merged in slot order). It says
 * nothing about the CUDA kernels themselves; built with KCUDA_MOCK_SIM,
 * the attention and the cache write run the real kernels in the CPU
 * simulator instead (kcuda_sim.cc).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_plan.h"
#include "kcuda.h"

enum { OP_H2D, OP_ATTEND };

struct op {
    int kind;
    void *dst;
    const void *src;
    size_t n;
    struct kcuda_rows rw;
    int layer, H;
    const float *qc;
    float *oc;
    float scale;
    const struct kcuda_mla_plan *plan;
};

struct kcuda_graph {
    struct op *ops;
    int n;
};

struct kcuda {
    void *ws;
    size_t ws_bytes;
    struct kcuda_graph *cap; /* the graph being captured, or NULL */
};

int kcuda_device_count(void)
{
    return 1;
}

int kcuda_open(int dev, size_t workspace_bytes, struct kcuda **out, char *err,
               size_t errlen)
{
    struct kcuda *g = calloc(1, sizeof(*g));
    if (!g || !(g->ws = aligned_alloc(256, (workspace_bytes + 255) & ~255ul))) {
        snprintf(err, errlen, "out of memory");
        free(g);
        return MTPD_K_ENOMEM;
    }
    g->ws_bytes = workspace_bytes;
    *out = g;
    return 0;
}

void kcuda_close(struct kcuda *g)
{
    if (g)
        free(g->ws);
    free(g);
}

const char *kcuda_describe(const struct kcuda *g)
{
    return "host stand-in (kcuda_mock.c)";
}

int kcuda_sm_count(const struct kcuda *g)
{
    return 132;
}

const char *kcuda_last_error(void)
{
    return "";
}

void *kcuda_malloc(struct kcuda *g, size_t bytes)
{
    return aligned_alloc(256, (bytes + 255) & ~(size_t)255);
}

void kcuda_free(struct kcuda *g, void *p)
{
    free(p);
}

void *kcuda_host_alloc(struct kcuda *g, size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

void kcuda_host_free(struct kcuda *g, void *p)
{
    free(p);
}

static int record(struct kcuda *g, const struct op *o)
{
    struct kcuda_graph *c = g->cap;
    struct op *ops = realloc(c->ops, sizeof(*ops) * (size_t)(c->n + 1));
    if (!ops)
        return MTPD_K_ENOMEM;
    c->ops = ops;
    c->ops[c->n++] = *o;
    return 0;
}

int kcuda_h2d(struct kcuda *g, void *dst, const void *src, size_t n)
{
    if (g->cap)
        return record(g, &(struct op){.kind = OP_H2D, .dst = dst,
                                      .src = src, .n = n});
    memcpy(dst, src, n);
    return 0;
}

int kcuda_d2h(struct kcuda *g, void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
    return 0;
}

int kcuda_memset(struct kcuda *g, void *dst, int byte, size_t n)
{
    memset(dst, byte, n);
    return 0;
}

int kcuda_sync(struct kcuda *g)
{
    return 0;
}

int kcuda_graph_begin(struct kcuda *g)
{
    g->cap = calloc(1, sizeof(*g->cap));
    return g->cap ? 0 : MTPD_K_ENOMEM;
}

int kcuda_graph_end(struct kcuda *g, struct kcuda_graph **out)
{
    *out = g->cap;
    g->cap = NULL;
    return 0;
}

static float bf16r(float x)
{
    uint32_t u = (uint32_t)kf32_to_bf16(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float cache_at(const struct kcuda_rows *rw, int layer, int seq, int t,
                      int d)
{
    const char *row = (const char *)rw->pages[rw->seq_page0[seq] +
                                              t / rw->page_pos] +
                      (size_t)layer * rw->layer_bytes +
                      (size_t)(t % rw->page_pos) * rw->row_bytes;
    if (rw->kv_dtype == KDT_F32)
        return bf16r(((const float *)row)[d]);
    uint32_t u = (uint32_t)((const uint16_t *)row)[d] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#ifdef KCUDA_MOCK_SIM
/* kcuda_sim.cc: the real kernels in the CPU simulator */
int mock_sim_attend(void *ws, size_t ws_bytes, const struct kcuda_rows *rw,
                    int layer, int H, const float *qc, float *oc,
                    float scale, const struct kcuda_mla_plan *plan);
int mock_sim_kv_write(const struct kcuda_rows *rw, int layer,
                      const float *kva, int ldk);
#endif

int kcuda_kv_write(struct kcuda *g, const struct kcuda_rows *rw, int layer,
                   const float *kva, int ldk)
{
#ifdef KCUDA_MOCK_SIM
    return mock_sim_kv_write(rw, layer, kva, ldk);
#endif
    int D = rw->kv_lora + rw->rope;
    for (int r = 0; r < rw->n_rows; r++) {
        int t = rw->row_pos[r], s = rw->row_seq[r];
        char *row = (char *)rw->pages[rw->seq_page0[s] + t / rw->page_pos] +
                    (size_t)layer * rw->layer_bytes +
                    (size_t)(t % rw->page_pos) * rw->row_bytes;
        for (int d = 0; d < D; d++) {
            float x = kva[(size_t)r * ldk + d];
            if (rw->kv_dtype == KDT_F32)
                memcpy(row + 4 * d, &x, 4);
            else
                ((uint16_t *)row)[d] = kf32_to_bf16(x);
        }
    }
    return 0;
}

static int attend_now(struct kcuda *g, const struct op *o)
{
#ifdef KCUDA_MOCK_SIM
    return mock_sim_attend(g->ws, g->ws_bytes, &o->rw, o->layer, o->H,
                           o->qc, o->oc, o->scale, o->plan);
#endif
    const struct kcuda_rows *rw = &o->rw;
    const struct kcuda_mla_plan *p = o->plan;
    const int L = rw->kv_lora, D = L + rw->rope, H = o->H;
    if (kcuda_mla_smem(L, rw->rope) == 0 || kcuda_mla_workspace(p, L) >
                                                 g->ws_bytes)
        return MTPD_K_EINVAL;
    const char *img = p->dev;
    const struct kcuda_mla_hdr *hd = (const void *)img;
    const int32_t *pb = (const void *)(img + p->off_part);
    const struct kcuda_mla_block *bl = (const void *)(img + p->off_blocks);
    const struct kcuda_mla_merge *mg = (const void *)(img + p->off_merges);
    size_t slots = (size_t)p->cap_slots * KCUDA_MLA_PAIRS;
    float *ws_o = g->ws, *ws_m = ws_o + slots * L, *ws_l = ws_m + slots;
    float q[1024], o_[1024];
    for (int part = 0; part < p->n_parts; part++)
        for (int i = pb[part]; i < pb[part + 1]; i++) {
            const struct kcuda_mla_block *b = &bl[i];
            int n = b->t1 - b->t0;
            float *sc = malloc(sizeof(float) * (size_t)n);
            for (int pr = 0; pr < b->n_rows * b->n_heads; pr++) {
                int r = b->row0 + pr / b->n_heads;
                int h = b->head0 + pr % b->n_heads;
                int e = rw->row_pos[r] + 1 < b->t1 ? rw->row_pos[r] + 1
                                                   : b->t1;
                for (int d = 0; d < D; d++)
                    q[d] = bf16r(o->qc[((size_t)r * H + h) * D + d]);
                float m = -INFINITY, l = 0.0f;
                for (int t = b->t0; t < e; t++) {
                    float acc = 0.0f;
                    for (int d = 0; d < D; d++)
                        acc += q[d] * cache_at(rw, o->layer, b->seq, t, d);
                    sc[t - b->t0] = acc * o->scale;
                    m = sc[t - b->t0] > m ? sc[t - b->t0] : m;
                }
                memset(o_, 0, sizeof(float) * (size_t)L);
                for (int t = b->t0; t < e; t++) {
                    float w = bf16r(expf(sc[t - b->t0] - m));
                    l += w;
                    for (int d = 0; d < L; d++)
                        o_[d] += w * cache_at(rw, o->layer, b->seq, t, d);
                }
                if (b->slot < 0) {
                    float *dst = o->oc + ((size_t)r * H + h) * L;
                    for (int d = 0; d < L; d++)
                        dst[d] = o_[d] / l;
                } else {
                    size_t sl = (size_t)b->slot * KCUDA_MLA_PAIRS + pr;
                    ws_m[sl] = m;
                    ws_l[sl] = l;
                    memcpy(ws_o + sl * L, o_, sizeof(float) * (size_t)L);
                }
            }
            free(sc);
        }
    for (int k = 0; k < hd->n_merges; k++) {
        const struct kcuda_mla_merge *e = &mg[k];
        for (int pr = 0; pr < e->n_rows * e->n_heads; pr++) {
            int r = e->row0 + pr / e->n_heads, h = e->head0 + pr % e->n_heads;
            float M = -INFINITY, l = 0.0f;
            for (int j = 0; j < e->n_splits; j++) {
                float mj = ws_m[(size_t)(e->slot0 + j) * KCUDA_MLA_PAIRS + pr];
                M = mj > M ? mj : M;
            }
            float *dst = o->oc + ((size_t)r * H + h) * L;
            memset(dst, 0, sizeof(float) * (size_t)L);
            for (int j = 0; j < e->n_splits; j++) {
                size_t sl = (size_t)(e->slot0 + j) * KCUDA_MLA_PAIRS + pr;
                float w = ws_m[sl] > -INFINITY ? expf(ws_m[sl] - M) : 0.0f;
                l += w * ws_l[sl];
                for (int d = 0; d < L; d++)
                    dst[d] += w * ws_o[sl * L + d];
            }
            for (int d = 0; d < L; d++)
                dst[d] /= l;
        }
    }
    return 0;
}

int kcuda_mla_attend(struct kcuda *g, const struct kcuda_rows *rw, int layer,
                     int H, const float *qc, float *oc, float scale,
                     const struct kcuda_mla_plan *plan)
{
    struct op o = {.kind = OP_ATTEND, .rw = *rw, .layer = layer, .H = H,
                   .qc = qc, .oc = oc, .scale = scale, .plan = plan};
    return g->cap ? record(g, &o) : attend_now(g, &o);
}

int kcuda_graph_launch(struct kcuda *g, struct kcuda_graph *gr)
{
    for (int i = 0; i < gr->n; i++) {
        const struct op *o = &gr->ops[i];
        int rc = 0;
        if (o->kind == OP_H2D)
            memcpy(o->dst, o->src, o->n);
        else
            rc = attend_now(g, o);
        if (rc)
            return rc;
    }
    return 0;
}

void kcuda_graph_free(struct kcuda_graph *gr)
{
    if (gr)
        free(gr->ops);
    free(gr);
}

int kcuda_copy_bandwidth(struct kcuda *g, size_t bytes, int reps,
                         double *gbps)
{
    *gbps = 1.0;
    return 0;
}
