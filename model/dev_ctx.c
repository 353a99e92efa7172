/*
 * dev_ctx.c - the device side of a forward context: its own kcuda handle
 * (stream, cuBLASLt, workspace: contexts run on different threads), the
 * activations of max_tokens + 1 rows (the +1: the sink row of a padded
 * graph call, step_plan.h), the pinned staging of each step's inputs, the
 * attention plan's image, the sink page and the captured graphs.
 *
 * Every buffer is made once here; a forward call allocates nothing,
 * except that a call needing more page-table entries than ever before
 * grows the input blob (and drops the graphs, whose copies have its old
 * size) and a KV layout with bigger pages grows the sink.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_int.h"
#include "log.h"

#define PAGES_CAP0 1024 /* page-table entries of a new context */

static int imax(int a, int b) { return a > b ? a : b; }

/*
 * Workspace for the ops: each op may use all of it (kcuda_int.h), so the
 * largest need of: the attention's partial results (kcuda_mla_workspace
 * of the plan), the MoE dispatch (kcuda_moe_ffn_workspace for every row),
 * and the wide matmul, which works in chunks of whatever it gets but is
 * given the bf16 copy of x for all rows, 32 MiB for cuBLASLt and 32 MiB of
 * dequantised weight rows.
 */
static size_t workspace_bytes(const struct mtpd_config *c, int rows,
                              const struct kcuda_mla_plan *plan)
{
    size_t attn = kcuda_mla_workspace(plan, c->kv_lora_rank);
    size_t moe = c->n_routed_experts > 0
        ? kcuda_moe_ffn_workspace(rows, c->num_experts_per_tok,
                                  c->hidden_size, c->moe_intermediate_size)
        : 0;
    int cols = imax(imax(c->hidden_size, c->intermediate_size),
                    imax(2 * c->hidden_size,
                         c->num_attention_heads * c->v_head_dim));
    cols = imax(cols, c->moe_intermediate_size *
                          imax(c->n_shared_experts, 1));
    size_t mm = (size_t)rows * (size_t)cols * 2 + ((size_t)64 << 20);
    size_t ws = attn > moe ? attn : moe;
    ws = ws > mm ? ws : mm;
    return (ws + 255) & ~(size_t)255;
}

/* A zeroed device buffer of n floats (padding rows then compute on
 * finite numbers). */
static float *dbuf(struct kcuda *g, size_t n, int *fail)
{
    if (*fail)
        return NULL;
    size_t bytes = sizeof(float) * (n ? n : 1);
    float *p = kcuda_malloc(g, bytes);
    if (!p || kcuda_memset(g, p, 0, bytes)) {
        kcuda_free(g, p);
        *fail = 1;
        return NULL;
    }
    return p;
}

static void *hbuf(struct kcuda *g, size_t bytes, int *fail)
{
    if (*fail)
        return NULL;
    void *p = kcuda_host_alloc(g, bytes ? bytes : 1);
    if (!p)
        *fail = 1;
    else
        memset(p, 0, bytes);
    return p;
}

/* The input blob of pages_cap page-table entries: host and device. */
static int blob_alloc(struct dev_ctx *d, int pages_cap)
{
    size_t bytes = step_blob_bytes(d->rows_cap, d->seqs_cap, pages_cap);
    void *h = kcuda_host_alloc(d->g, bytes), *dv = kcuda_malloc(d->g, bytes);
    if (!h || !dv) {
        kcuda_host_free(d->g, h);
        kcuda_free(d->g, dv);
        return MTPD_ENOMEM;
    }
    memset(h, 0, bytes);
    kcuda_host_free(d->g, d->in_host); /* the stream is idle: synced */
    kcuda_free(d->g, d->in_dev);
    d->in_host = h;
    d->in_dev = dv;
    d->in_bytes = bytes;
    d->pages_cap = pages_cap;
    step_in_bind(&d->in_h, h, d->rows_cap, d->seqs_cap, pages_cap);
    step_in_bind(&d->in_d, dv, d->rows_cap, d->seqs_cap, pages_cap);
    return 0;
}

void dev_ctx_drop_graphs(struct dev_ctx *d)
{
    int n = d->n_graph_sets * step_n_buckets();
    for (int i = 0; d->graphs && i < n; i++) {
        kcuda_graph_free(d->graphs[i].gr);
        memset(&d->graphs[i], 0, sizeof(d->graphs[i]));
    }
}

int dev_ctx_pages(struct mtpd_ctx *c, int n)
{
    struct dev_ctx *d = c->dev;
    if (n <= d->pages_cap)
        return 0;
    int cap = d->pages_cap * 2 > n ? d->pages_cap * 2 : n;
    dev_ctx_drop_graphs(d); /* they copy the old blob size */
    return blob_alloc(d, cap);
}

int dev_ctx_sink(struct mtpd_ctx *c, size_t bytes)
{
    struct dev_ctx *d = c->dev;
    if (bytes <= d->sink_bytes)
        return 0;
    /* the sink's address is data in the page tables, not in a graph */
    void *p = kcuda_malloc(d->g, bytes);
    if (!p || kcuda_memset(d->g, p, 0, bytes) || kcuda_sync(d->g)) {
        kcuda_free(d->g, p);
        return MTPD_ENOMEM;
    }
    kcuda_free(d->g, d->sink);
    d->sink = p;
    d->sink_bytes = bytes;
    return 0;
}

void dev_ctx_set_graphs(struct mtpd_ctx *c, int on)
{
    if (c->dev)
        c->dev->graphs_off = !on;
}

int dev_ctx_open(struct mtpd_ctx *c)
{
    const struct mtpd_model *m = c->m;
    const struct mtpd_config *cfg = &m->cfg;
    const struct dev_model *dm = m->dev;
    struct dev_ctx *d = calloc(1, sizeof(*d));
    if (!d)
        return MTPD_ENOMEM;
    c->dev = d;
    int H = cfg->num_attention_heads, L = cfg->kv_lora_rank;
    int R = cfg->qk_rope_head_dim, hid = cfg->hidden_size;
    int qk = cfg->qk_nope_head_dim + R, V = cfg->vocab_size;
    d->rows_cap = c->max_tokens + 1;
    d->seqs_cap = d->rows_cap;
    size_t T = (size_t)d->rows_cap;
    /* the attention plan first: the workspace holds its partials */
    int parts = kcuda_mla_parts(kcuda_sm_count(dm->g), L, R);
    if (parts <= 0 || kcuda_mla_plan_init(&d->plan, d->rows_cap,
                                          d->seqs_cap, H, parts, 0)) {
        mtpd_logf(MTPD_LOG_ERROR, "cuda:%d: attention shape kv_lora %d rope "
                  "%d not supported", dm->index, L, R);
        return MTPD_EINVAL; /* mtpd_ctx_new frees what was made */
    }
    size_t ws = workspace_bytes(cfg, d->rows_cap, &d->plan);
    char kerr[256] = "";
    if (kcuda_open(dm->index, ws, &d->g, kerr, sizeof kerr)) {
        d->g = NULL;
        mtpd_logf(MTPD_LOG_ERROR, "cuda:%d: context: %s", dm->index, kerr);
        return MTPD_ENOMEM;
    }
    int fail = 0;
    struct kcuda *g = d->g;
    int inter = imax(imax(cfg->intermediate_size, 1),
                     cfg->moe_intermediate_size *
                         imax(cfg->n_shared_experts, 1));
    int E = imax(cfg->n_routed_experts, 1);
    int K = imax(cfg->num_experts_per_tok, 1);
    d->x = dbuf(g, T * hid, &fail);
    d->xn = dbuf(g, T * hid, &fail);
    d->tmp = dbuf(g, T * hid, &fail);
    d->qa = dbuf(g, T * imax(cfg->q_lora_rank, 1), &fail);
    d->q = dbuf(g, T * H * qk, &fail);
    d->kva = dbuf(g, T * (L + R), &fail);
    d->qc = dbuf(g, T * H * (L + R), &fail);
    d->oc = dbuf(g, T * H * L, &fail);
    d->attn = dbuf(g, T * H * cfg->v_head_dim, &fail);
    d->ffn_h = dbuf(g, T * inter, &fail);
    d->ffn_u = dbuf(g, T * inter, &fail);
    d->router = dbuf(g, T * E, &fail);
    d->topk_w = dbuf(g, T * K, &fail);
    d->topk_idx = (int32_t *)dbuf(g, T * K, &fail);
    d->cat = dbuf(g, T * 2 * hid, &fail);
    d->hid_in = dbuf(g, T * hid, &fail);
    d->hidden = dbuf(g, T * hid, &fail);
    d->lg_in = dbuf(g, T * hid, &fail);
    d->logits = dbuf(g, T * V, &fail);
    d->hid_in_host = hbuf(g, sizeof(float) * T * hid, &fail);
    c->hidden = hbuf(g, sizeof(float) * T * hid, &fail);
    c->logits = hbuf(g, sizeof(float) * T * V, &fail);
    d->plan_host = hbuf(g, d->plan.bytes, &fail);
    if (!fail) {
        d->plan_dev = kcuda_malloc(g, d->plan.bytes);
        fail = !d->plan_dev ||
               kcuda_mla_plan_bind(&d->plan, d->plan_host, d->plan_dev);
    }
    if (!fail)
        fail = blob_alloc(d, PAGES_CAP0) != 0;
    d->n_graph_sets = 2 * (1 + m->n_mtp); /* main, MTP: logits or not */
    if (!fail) {
        d->graphs = calloc((size_t)d->n_graph_sets * step_n_buckets(),
                           sizeof(*d->graphs));
        fail = !d->graphs;
    }
    if (!fail)
        fail = kcuda_sync(g) != 0; /* the zeroing done */
    return fail ? MTPD_ENOMEM : 0;
}

void dev_ctx_close(struct mtpd_ctx *c)
{
    struct dev_ctx *d = c->dev;
    if (!d)
        return;
    struct kcuda *g = d->g;
    if (g) {
        kcuda_sync(g); /* nothing in flight reads what is freed */
        dev_ctx_drop_graphs(d);
        float *bufs[] = {d->x, d->xn, d->tmp, d->qa, d->q, d->kva, d->qc,
                         d->oc, d->attn, d->ffn_h, d->ffn_u, d->router,
                         d->topk_w, (float *)d->topk_idx, d->cat, d->hid_in,
                         d->hidden, d->lg_in, d->logits};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            kcuda_free(g, bufs[i]);
        kcuda_free(g, d->in_dev);
        kcuda_free(g, d->plan_dev);
        kcuda_free(g, d->sink);
        kcuda_host_free(g, d->in_host);
        kcuda_host_free(g, d->plan_host);
        kcuda_host_free(g, d->hid_in_host);
        kcuda_host_free(g, c->hidden);
        kcuda_host_free(g, c->logits);
        kcuda_close(g);
    }
    c->hidden = NULL;
    c->logits = NULL;
    free(d->graphs);
    free(d);
    c->dev = NULL;
}
