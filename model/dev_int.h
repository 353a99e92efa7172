/*
 * dev_int.h - the model on a GPU: its weights (dev_model.c) and a
 * context's device side (dev_ctx.c), as dev_forward.c reads them. Only
 * the dev_*.c files include this (built with CUDA only).
 */
#ifndef MTPD_DEV_INT_H
#define MTPD_DEV_INT_H

#include <pthread.h>

#include "cuda_plan.h"
#include "kcuda.h"
#include "model_int.h"
#include "step_plan.h"

/* A 1-D weight on the device in its checkpoint dtype (norms). */
struct dev_vec {
    const void *d; /* (dev) */
    enum kdtype t;
    int n;
};

struct dev_mlp {
    struct kdmat gate, up, down;
};

struct dev_layer {
    struct dev_vec attn_norm, ffn_norm, q_a_norm, kv_a_norm;
    struct kdmat q_a, q_b, q, kv_a, o;
    struct kdmat kv_b; /* layer_w.kv_bd: F32 / BF16 / F16, as absorb reads */
    int is_moe;
    struct dev_mlp dense;
    struct kdmat router;
    const float *router_bias; /* (dev) or NULL */
    int n_experts;
    struct dev_mlp *experts;  /* [n_experts], host array of device mats */
    struct kcuda_experts *ex; /* their device tables */
    int has_shared;
    struct dev_mlp shared;
};

struct dev_mtp {
    struct kdmat embed, eh_proj, head;
    int own_embed, own_head; /* 0: the main model's */
    struct dev_vec enorm, hnorm, head_norm;
    struct dev_layer block;
};

struct dev_model {
    int index;          /* CUDA device */
    struct kcuda *g;    /* uploads and KV pages (its own stream) */
    pthread_mutex_t page_mu; /* pages are taken on any engine thread */
    struct kdmat embed, lm_head;
    int own_head;       /* 0: lm_head is embed (tied) */
    struct dev_vec final_norm;
    int n_layers;       /* layers uploaded (all, once loaded) */
    struct dev_layer *layers;
    int n_mtp;
    struct dev_mtp mtp[MTPD_MAX_MTP];
    const float *inv_freq; /* (dev) [rope / 2] */
    size_t bytes;       /* device memory the weights take */
};

/* One captured step: its bucket and the KV layout it was captured for
 * (those are baked into the kernels' arguments). */
struct dev_graph {
    struct kcuda_graph *gr;
    int failed;         /* capture failed once: this bucket runs eagerly */
    int page_pos;
    size_t row_bytes, layer_bytes;
    enum kdtype kv_dtype;
};

struct dev_ctx {
    struct kcuda *g;     /* this context's stream, cuBLASLt, workspace */
    int rows_cap, seqs_cap, pages_cap; /* rows_cap = max_tokens + 1 */
    /* activations (dev), rows_cap rows each */
    float *x, *xn, *tmp, *qa, *q, *kva, *qc, *oc, *attn;
    float *ffn_h, *ffn_u; /* [rows, max(dense, shared) intermediate] */
    float *router, *topk_w;
    int32_t *topk_idx;
    float *cat;          /* MTP [rows, 2 * hidden] */
    float *hid_in;       /* MTP: the rows' input hidden states */
    float *hidden;       /* [rows, hidden] after the final norm */
    float *lg_in;        /* eager: the rows wanting logits, gathered */
    float *logits;       /* [rows, vocab] */
    /* the step's inputs: one blob, pinned host staging and its device
     * twin (step_plan.h), and the attention plan's image */
    void *in_host, *in_dev;
    size_t in_bytes;
    struct step_in in_h, in_d;
    float *hid_in_host;  /* pinned [rows, hidden]: MTP input rows */
    struct kcuda_mla_plan plan;
    void *plan_host, *plan_dev;
    /* padding rows write here (step_plan.h): one page of the largest
     * layout seen */
    void *sink;
    size_t sink_bytes;
    /* graphs: [1 + n_mtp][logits or not][step_n_buckets()] */
    int n_graph_sets;
    struct dev_graph *graphs;
    int graphs_off;      /* 1: always eager (dev_ctx_set_graphs) */
};

/* dev_ctx.c: grows the page-table capacity to at least n entries (drops
 * every graph: their copies have the old size); a sink page of at least
 * bytes. MTPD_ENOMEM. */
int dev_ctx_pages(struct mtpd_ctx *c, int n);
int dev_ctx_sink(struct mtpd_ctx *c, size_t bytes);
void dev_ctx_drop_graphs(struct dev_ctx *d);

/* kcuda's MTPD_K_E* as MTPD_E* (a device error is MTPD_ENODEV). */
int dev_err(int krc);

#endif
