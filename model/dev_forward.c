/*
 * dev_forward.c - the forward pass on the GPU: forward.c, mla.c and moe.c
 * op for op as kcuda calls (kernels/kcuda.h), on the context's stream.
 *
 *   main:  embed -> layers (attn_norm -> q (q_a, norm, q_b | q) and kv_a
 *          -> kv_a_norm on c_kv, rope on k_pe and q_pe -> cache write ->
 *          absorb q -> attend -> W_UV -> o_proj -> +res; ffn_norm ->
 *          dense SwiGLU | router -> top-k -> shared + routed experts ->
 *          +res) -> model.norm -> lm_head
 *   MTP m: embed (zero at position 0) -> enorm | hnorm(h) -> eh_proj ->
 *          one block -> shared_head.norm -> head
 *
 * A call: forward.c has validated it and taken its pages; here its rows
 * are laid out (step_plan.c) in the pinned staging blob with the
 * attention plan, then either
 * - graph: decode / verify shapes padded to a bucket; the bucket's graph
 *   (captured on first use) copies the blob, the plan image and the MTP
 *   input rows to their fixed device buffers and runs the whole pass,
 *   logits for every row; or
 * - eager: the same ops launched one by one on the real rows only, the
 *   rows wanting logits gathered first (prefill, big shapes).
 * Then the rows the CPU API exposes are copied back into the context's
 * pinned host buffers (every row's hidden state, the logits of marked
 * rows, numbered as forward.c's finish() numbers them) and the stream is
 * synced: when dev_forward returns, nothing of the call is in flight, so
 * the staging may be refilled and pages given back at once, also after a
 * failure.
 */
#include <stdio.h>
#include <string.h>

#include "dev_int.h"

/* One pass as launched. */
struct pass {
    struct mtpd_ctx *c;
    struct dev_ctx *d;
    const struct dev_model *dm;
    const struct mtpd_config *cfg;
    struct kcuda *g;
    struct kcuda_rows rw;
    int module;     /* -1 main */
    int n;          /* rows launched */
    int n_logits;   /* eager: rows gathered for the head; graph: -1 (all) */
};

#define TRY(x)                                                              \
    do {                                                                    \
        int krc_ = (x);                                                     \
        if (krc_)                                                           \
            return krc_;                                                    \
    } while (0)

static int norm(struct pass *p, float *out, int ldo, const float *x, int ldx,
                const struct dev_vec *w, int n_cols)
{
    return kcuda_rmsnorm(p->g, out, ldo, x, ldx, w->d, w->t, n_cols, p->n,
                         p->cfg->rms_norm_eps);
}

/* mla.c's mla_block. */
static int mla(struct pass *p, const struct dev_layer *w, int kv_layer)
{
    const struct mtpd_config *cfg = p->cfg;
    struct dev_ctx *d = p->d;
    struct kcuda *g = p->g;
    int hid = cfg->hidden_size, H = cfg->num_attention_heads;
    int nope = cfg->qk_nope_head_dim, R = cfg->qk_rope_head_dim;
    int qk = nope + R, L = cfg->kv_lora_rank, vd = cfg->v_head_dim;
    int n = p->n;

    TRY(norm(p, d->xn, hid, d->x, hid, &w->attn_norm, hid));
    if (cfg->q_lora_rank > 0) {
        int ql = cfg->q_lora_rank;
        TRY(kcuda_matmul(g, &w->q_a, d->xn, hid, d->qa, ql, n));
        TRY(norm(p, d->qa, ql, d->qa, ql, &w->q_a_norm, ql));
        TRY(kcuda_matmul(g, &w->q_b, d->qa, ql, d->q, H * qk, n));
    } else {
        TRY(kcuda_matmul(g, &w->q, d->xn, hid, d->q, H * qk, n));
    }
    /* kva [n, L + R]: c_kv normed, k_pe roped in place, then cached */
    TRY(kcuda_matmul(g, &w->kv_a, d->xn, hid, d->kva, L + R, n));
    TRY(norm(p, d->kva, L + R, d->kva, L + R, &w->kv_a_norm, L));
    const float *inv = p->dm->inv_freq;
    float ms = p->c->m->rope_mscale;
    TRY(kcuda_rope(g, d->kva, L + R, L, 0, 1, R, p->rw.row_pos, n, inv, ms));
    TRY(kcuda_rope(g, d->q, H * qk, nope, qk, H, R, p->rw.row_pos, n, inv,
                   ms));
    TRY(kcuda_kv_write(g, &p->rw, kv_layer, d->kva, L + R));
    /* absorbed queries -> attention over the cache -> W_UV */
    TRY(kcuda_mla_absorb_q(g, &w->kv_b, H, nope, R, vd, d->q, H * qk, d->qc,
                           n));
    TRY(kcuda_mla_attend(g, &p->rw, kv_layer, H, d->qc, d->oc,
                         p->c->m->softmax_scale, &d->plan));
    TRY(kcuda_mla_head_out(g, &w->kv_b, H, nope, vd, d->oc, d->attn, H * vd,
                           n));
    TRY(kcuda_matmul(g, &w->o, d->attn, H * vd, d->tmp, hid, n));
    return kcuda_add(g, d->x, d->tmp, (size_t)n * hid);
}

/* moe.c's router arguments, so the device picks and weighs as route_row
 * does (the bias only for noaux_tc; DeepSeek-V2's normalised weights
 * without the scaling factor). */
static struct kcuda_route route_of(const struct mtpd_config *cfg,
                                   const struct dev_layer *w)
{
    int noaux = strcmp(cfg->topk_method, "noaux_tc") == 0;
    int K = cfg->num_experts_per_tok;
    struct kcuda_route rt = {
        .n_experts = cfg->n_routed_experts, .k = K,
        .n_group = cfg->n_group > 0 ? cfg->n_group : 1,
        .topk_group = cfg->topk_group > 0 ? cfg->topk_group : 1,
        .scoring = strcmp(cfg->scoring_func, "sigmoid") == 0 ? 0 : 1,
        .method = noaux ? 0
                  : strcmp(cfg->topk_method, "greedy") == 0 ? 1 : 2,
        .bias = noaux ? w->router_bias : NULL};
    if (noaux) {
        rt.norm = cfg->norm_topk_prob;
        rt.scale = cfg->routed_scaling_factor;
    } else if (K > 1 && cfg->norm_topk_prob) {
        rt.norm = 1;
        rt.scale = 1.0f;
    } else {
        rt.norm = 0;
        rt.scale = cfg->routed_scaling_factor;
    }
    return rt;
}

/* SwiGLU MLP (dense, or the shared expert): tmp = down(silu(gate xn) *
 * up xn). */
static int mlp(struct pass *p, const struct dev_mlp *w)
{
    struct dev_ctx *d = p->d;
    struct kcuda *g = p->g;
    int hid = p->cfg->hidden_size, I = w->gate.rows, n = p->n;
    TRY(kcuda_matmul(g, &w->gate, d->xn, hid, d->ffn_h, I, n));
    TRY(kcuda_matmul(g, &w->up, d->xn, hid, d->ffn_u, I, n));
    TRY(kcuda_swiglu(g, d->ffn_h, I, d->ffn_h, I, d->ffn_u, I, I, n));
    return kcuda_matmul(g, &w->down, d->ffn_h, I, d->tmp, hid, n);
}

/* moe.c's ffn_block. */
static int ffn(struct pass *p, const struct dev_layer *w)
{
    const struct mtpd_config *cfg = p->cfg;
    struct dev_ctx *d = p->d;
    struct kcuda *g = p->g;
    int hid = cfg->hidden_size, n = p->n;
    TRY(norm(p, d->xn, hid, d->x, hid, &w->ffn_norm, hid));
    if (!w->is_moe) {
        TRY(mlp(p, &w->dense));
    } else {
        int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
        struct kcuda_route rt = route_of(cfg, w);
        TRY(kcuda_matmul(g, &w->router, d->xn, hid, d->router, E, n));
        TRY(kcuda_moe_route(g, &rt, d->router, E, n, d->topk_idx,
                            d->topk_w));
        if (w->has_shared)
            TRY(mlp(p, &w->shared));
        else
            TRY(kcuda_memset(g, d->tmp, 0, sizeof(float) * n * hid));
        TRY(kcuda_moe_ffn(g, w->ex, d->xn, hid, n, d->topk_idx, d->topk_w,
                          K, d->tmp, hid));
    }
    return kcuda_add(g, d->x, d->tmp, (size_t)n * hid);
}

/* forward.c's finish(): the final norm of every row, then the head on
 * every row (graph) or on the gathered rows wanting logits (eager: the
 * hidden states read as an fp32 matrix by kcuda_embed). */
static int finish(struct pass *p, const struct dev_vec *nw,
                  const struct kdmat *head)
{
    struct dev_ctx *d = p->d;
    struct kcuda *g = p->g;
    int hid = p->cfg->hidden_size, V = p->cfg->vocab_size;
    TRY(norm(p, d->hidden, hid, d->x, hid, nw, hid));
    if (p->n_logits < 0)
        return kcuda_matmul(g, head, d->hidden, hid, d->logits, V, p->n);
    if (p->n_logits == 0)
        return 0;
    struct kdmat rows = {.dtype = KDT_F32, .rows = d->rows_cap, .cols = hid,
                         .data = d->hidden};
    TRY(kcuda_embed(g, &rows, d->in_d.lg_rows, p->n_logits, d->lg_in, hid,
                    NULL));
    return kcuda_matmul(g, head, d->lg_in, hid, d->logits, V, p->n_logits);
}

/* The inputs' copies (fixed sizes: the same in a graph every step) and
 * the whole pass. */
static int run_pass(struct pass *p)
{
    const struct mtpd_config *cfg = p->cfg;
    const struct dev_model *dm = p->dm;
    struct dev_ctx *d = p->d;
    struct kcuda *g = p->g;
    int hid = cfg->hidden_size;
    TRY(kcuda_h2d(g, d->in_dev, d->in_host, d->in_bytes));
    TRY(kcuda_h2d(g, d->plan.dev, d->plan.host, d->plan.bytes));
    if (p->module < 0) {
        TRY(kcuda_embed(g, &dm->embed, d->in_d.tokens, p->n, d->x, hid,
                        NULL));
        for (int l = 0; l < cfg->num_hidden_layers; l++) {
            TRY(mla(p, &dm->layers[l], l));
            TRY(ffn(p, &dm->layers[l]));
        }
        return finish(p, &dm->final_norm, &dm->lm_head);
    }
    const struct dev_mtp *w = &dm->mtp[p->module];
    TRY(kcuda_h2d(g, d->hid_in, d->hid_in_host,
                  sizeof(float) * (size_t)p->n * hid));
    /* cat = [enorm(embed(t)) ; hnorm(h)], the embedding zero at absolute
     * position 0 (rmsnorm keeps a zero row zero) */
    TRY(kcuda_embed(g, &w->embed, d->in_d.tokens, p->n, d->cat, 2 * hid,
                    p->rw.row_pos));
    TRY(norm(p, d->cat, 2 * hid, d->cat, 2 * hid, &w->enorm, hid));
    TRY(norm(p, d->cat + hid, 2 * hid, d->hid_in, hid, &w->hnorm, hid));
    TRY(kcuda_matmul(g, &w->eh_proj, d->cat, 2 * hid, d->x, hid, p->n));
    int kv_layer = cfg->num_hidden_layers + p->module;
    TRY(mla(p, &w->block, kv_layer));
    TRY(ffn(p, &w->block));
    return finish(p, &w->head_norm, &w->head);
}

/* Lays the call out in the staging blob (padded to b, or eager when b is
 * NULL) and plans its attention. */
static int stage(struct pass *p, const struct step_seq *ss, int n_ss,
                 const struct fwd_call *fc, const struct mtpd_kv *kv0,
                 const struct step_bucket *b, struct step_out *o)
{
    struct mtpd_ctx *c = p->c;
    struct dev_ctx *d = p->d;
    int hid = p->cfg->hidden_size;
    int rc = dev_ctx_pages(c, step_pages_needed(ss, n_ss, kv0->page_pos, b));
    if (rc)
        return rc;
    rc = step_fill(&d->in_h, ss, n_ss, kv0->page_pos, b, d->sink, o);
    if (rc)
        return rc;
    if (kcuda_mla_plan_build(&d->plan, o->n_seqs, d->in_h.seq_row0,
                             d->in_h.seq_len))
        return MTPD_EFULL;
    if (fc->module >= 0) { /* the input rows, read before any output is
                            * written (they may be c->hidden's) */
        size_t r = 0;
        for (int s = 0; s < fc->n_seqs; s++) {
            size_t nb = sizeof(float) * (size_t)fc->ntok[s] * hid;
            if (nb)
                memcpy(d->hid_in_host + r * hid, fc->hidden[s], nb);
            r += (size_t)fc->ntok[s];
        }
        memset(d->hid_in_host + r * hid, 0,
               sizeof(float) * (size_t)(o->n_rows - (int)r) * hid);
    }
    const struct mtpd_kv_pool *pool = kv0->pool;
    p->rw = (struct kcuda_rows){
        .n_rows = o->n_rows, .n_seqs = o->n_seqs,
        .row_seq = d->in_d.row_seq, .row_pos = d->in_d.row_pos,
        .seq_row0 = d->in_d.seq_row0, .seq_len = d->in_d.seq_len,
        .pages = d->in_d.pages, .seq_page0 = d->in_d.seq_page0,
        .page_pos = pool->page_pos, .layer_bytes = pool->layer_bytes,
        .row_bytes = pool->row_bytes, .kv_dtype = pool->dtype,
        .kv_lora = p->cfg->kv_lora_rank, .rope = p->cfg->qk_rope_head_dim};
    p->n = o->n_rows;
    /* a graph computes logits for every row, or none (drafting calls whose
     * logits spec/ computes from the hidden states) */
    p->n_logits = b ? (o->n_logits ? -1 : 0) : o->n_logits;
    return 0;
}

/* The graph of bucket b for this module, with or without logits, and
 * this KV layout: captured now if there is none; NULL when this bucket
 * cannot run as a graph (a capture failed: it runs eagerly from then
 * on). */
static struct kcuda_graph *graph_for(struct pass *p,
                                     const struct step_bucket *b)
{
    struct dev_ctx *d = p->d;
    int set = 2 * (p->module + 1) + (p->n_logits != 0);
    struct dev_graph *gs = &d->graphs[set * step_n_buckets() + b->id];
    const struct kcuda_rows *rw = &p->rw;
    if (gs->gr && (gs->page_pos != rw->page_pos ||
                   gs->row_bytes != rw->row_bytes ||
                   gs->layer_bytes != rw->layer_bytes ||
                   gs->kv_dtype != rw->kv_dtype)) {
        kcuda_graph_free(gs->gr); /* another pool's layout: recapture */
        gs->gr = NULL;
    }
    if (gs->gr || gs->failed)
        return gs->gr;
    struct kcuda_graph *gr = NULL;
    int rc = kcuda_graph_begin(p->g);
    if (rc == 0) {
        int prc = run_pass(p); /* captured, not run */
        rc = kcuda_graph_end(p->g, &gr);
        if (prc && !rc) {
            kcuda_graph_free(gr);
            gr = NULL;
            rc = prc;
        }
    }
    if (rc || !gr) {
        gs->failed = 1;
        return NULL;
    }
    *gs = (struct dev_graph){.gr = gr, .page_pos = rw->page_pos,
                             .row_bytes = rw->row_bytes,
                             .layer_bytes = rw->layer_bytes,
                             .kv_dtype = rw->kv_dtype};
    return gr;
}

/* Copies back every real row's hidden state and the marked rows' logits
 * (graph: logits are per launched row; eager: gathered), numbering the
 * marked rows as forward.c's finish() does. */
static int download(struct pass *p, int real_rows, int graph)
{
    struct mtpd_ctx *c = p->c;
    struct dev_ctx *d = p->d;
    struct kcuda *g = p->g;
    int hid = p->cfg->hidden_size, V = p->cfg->vocab_size;
    TRY(kcuda_d2h(g, c->hidden, d->hidden,
                  sizeof(float) * (size_t)real_rows * hid));
    int nl = 0;
    for (int r = 0; r < real_rows;) {
        if (c->logit_row[r] < 0) {
            r++;
            continue;
        }
        int r0 = r, l0 = nl; /* a run of marked rows */
        for (; r < real_rows && c->logit_row[r] >= 0; r++)
            c->logit_row[r] = nl++;
        if (graph)
            TRY(kcuda_d2h(g, c->logits + (size_t)l0 * V,
                          d->logits + (size_t)r0 * V,
                          sizeof(float) * (size_t)(r - r0) * V));
    }
    if (!graph && nl)
        TRY(kcuda_d2h(g, c->logits, d->logits,
                      sizeof(float) * (size_t)nl * V));
    return 0;
}

int dev_forward(struct mtpd_ctx *c, const struct fwd_call *fc)
{
    struct dev_ctx *d = c->dev;
    const struct mtpd_model *m = c->m;
    struct pass p = {.c = c, .d = d, .dm = m->dev, .cfg = &m->cfg,
                     .g = d->g, .module = fc->module};
    /* the sequences with rows; one KV layout per call (kcuda_rows) */
    struct step_seq ss[256];
    const struct mtpd_kv *kv0 = NULL;
    int n_ss = 0;
    if (fc->n_seqs > (int)(sizeof ss / sizeof ss[0]))
        return MTPD_EINVAL;
    for (int s = 0; s < fc->n_seqs; s++) {
        const struct mtpd_kv *kv = fc->kvs[s];
        if (fc->ntok[s] <= 0)
            continue;
        if (!kv0)
            kv0 = kv;
        else if (kv->pool->page_bytes != kv0->pool->page_bytes ||
                 kv->page_pos != kv0->page_pos || kv->dtype != kv0->dtype)
            return MTPD_EINVAL; /* pools of different layouts */
        ss[n_ss++] = (struct step_seq){
            .tokens = fc->toks[s], .n_tokens = fc->ntok[s],
            .pos0 = mtpd_kv_len(kv, fc->module),
            .logits_from = fc->lfrom[s], .pages = kv->pages};
    }
    if (!kv0)
        return 0;
    int rc = dev_ctx_sink(c, kv0->pool->page_bytes);
    if (rc)
        return rc;
    struct step_shape sh;
    step_shape_of(ss, n_ss, &sh);
    struct step_bucket bk;
    struct step_out o;
    struct kcuda_graph *gr = NULL;
    if (!d->graphs_off &&
        step_bucket_find(sh.max_rows, sh.seqs, d->rows_cap, d->seqs_cap,
                         &bk) == 0) {
        rc = stage(&p, ss, n_ss, fc, kv0, &bk, &o);
        if (rc)
            return rc;
        gr = graph_for(&p, &bk);
    }
    int krc;
    if (gr) {
        krc = kcuda_graph_launch(d->g, gr);
    } else {
        rc = stage(&p, ss, n_ss, fc, kv0, NULL, &o);
        if (rc)
            return rc;
        krc = run_pass(&p);
    }
    if (krc == 0)
        krc = download(&p, o.real_rows, gr != NULL);
    /* wait for the stream whatever happened: on failure nothing may
     * still write the pages forward.c now gives back */
    int src = kcuda_sync(d->g);
    if (krc == 0)
        krc = src;
    return dev_err(krc);
}
