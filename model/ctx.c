/*
 * ctx.c - forward-call context: thread pool and every scratch buffer a call
 * needs, sized once for max_tokens rows so the decode loop never allocates.
 */
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

static int imax(int a, int b) { return a > b ? a : b; }

/* 64-byte aligned: the matmul kernel reads activations without a staging
 * copy when they are. */
static float *fbuf(size_t n, int *fail)
{
    size_t bytes = (sizeof(float) * (n ? n : 1) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        *fail = 1;
    return p;
}

struct mtpd_ctx *mtpd_ctx_new(const struct mtpd_model *m, int max_tokens,
                              int n_threads)
{
    const struct mtpd_config *c = &m->cfg;
    if (max_tokens < 1 || n_threads < 1)
        return NULL;
    struct mtpd_ctx *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    int fail = 0;
    size_t T = (size_t)max_tokens;
    int hid = c->hidden_size, H = c->num_attention_heads;
    int qk = mtpd_config_qk_head_dim(c), L = c->kv_lora_rank;
    int rope = c->qk_rope_head_dim;
    int E = imax(c->n_routed_experts, 1), K = imax(c->num_experts_per_tok, 1);
    x->m = m;
    x->max_tokens = max_tokens;
    x->max_ctx = c->max_position_embeddings;
    x->pool = kpool_new(n_threads);
    if (!x->pool)
        fail = 1;
    x->rows = calloc(T, sizeof(*x->rows));
    x->logit_row = calloc(T, sizeof(int));
    x->topk_idx = calloc(T * K, sizeof(int));
    x->ffn_rows = calloc(T * K, sizeof(int));
    if (!x->rows || !x->logit_row || !x->topk_idx || !x->ffn_rows)
        fail = 1;
    x->x = fbuf(T * hid, &fail);
    x->xn = fbuf(T * hid, &fail);
    x->tmp = fbuf(T * hid, &fail);
    x->qa = fbuf(T * imax(c->q_lora_rank, 1), &fail);
    x->q = fbuf(T * H * qk, &fail);
    x->kva = fbuf(T * (L + rope), &fail);
    x->attn = fbuf(T * H * c->v_head_dim, &fail);
    /* gate/up activations: the dense MLP, or K routed slots + shared */
    size_t acts = imax(c->intermediate_size,
                       K * c->moe_intermediate_size +
                           c->moe_intermediate_size * c->n_shared_experts);
    x->ffn_h = fbuf(T * acts, &fail);
    x->ffn_u = fbuf(T * acts, &fail);
    x->cat = fbuf(T * 2 * hid, &fail);
    x->rope_cs = fbuf(rope, &fail);
    x->topk_w = fbuf(T * K, &fail);
    x->ffn_wt = fbuf(T * K, &fail);
    x->ffn_x = fbuf(T * K * hid, &fail);
    x->ffn_y = fbuf(T * (K + 1) * hid, &fail);
    x->route_tmp = fbuf(2 * E, &fail);
    x->ffn_batch = ffn_batch_new(c);
    if (!x->ffn_batch)
        fail = 1;
    x->router = fbuf(T * E, &fail);
    if (!m->dev) { /* on a GPU: pinned, dev_ctx_open's */
        x->hidden = fbuf(T * hid, &fail);
        x->logits = fbuf(T * c->vocab_size, &fail);
    }
    x->lg_in = fbuf(T * hid, &fail);
    x->n_attn = x->pool ? kpool_size(x->pool) : 1;
    x->as = calloc((size_t)x->n_attn, sizeof(*x->as));
    if (!x->as)
        fail = 1;
    for (int i = 0; x->as && i < x->n_attn; i++) {
        x->as[i].qc = fbuf((size_t)ATTN_PAIRS(x) * (L + rope), &fail);
        x->as[i].oc = fbuf((size_t)ATTN_PAIRS(x) * (L + rope), &fail);
        x->as[i].cs.s = fbuf((size_t)ATTN_ROWS * ATTN_CHUNK_MAX, &fail);
        x->as[i].cs.tmp = fbuf((size_t)ATTN_ROWS * L, &fail);
        x->as[i].o = fbuf((size_t)ATTN_ROWS * L, &fail);
    }
    x->attn_split = -1;
    x->attn_chunk = ATTN_CHUNK;
    if (x->n_attn >= 2 && !fail) {
        size_t P = (size_t)(max_tokens < SPLIT_ROWS ? max_tokens : SPLIT_ROWS) *
                   (size_t)H;
        struct split_scratch *sp = &x->sp;
        /* every chunk of the longest context in one round, unless that
         * takes more than SPLIT_ROUND_BYTES */
        size_t chunks = ((size_t)x->max_ctx + ATTN_CHUNK - 1) / ATTN_CHUNK;
        size_t cap = SPLIT_ROUND_BYTES / (sizeof(float) * P * (L + 2));
        if (cap < (size_t)x->n_attn)
            cap = (size_t)x->n_attn;
        sp->n_round = (int)(chunks < cap ? chunks : cap);
        sp->qc = fbuf(P * (L + rope), &fail);
        sp->oc = fbuf(P * L, &fail);
        sp->m = fbuf(P, &fail);
        sp->l = fbuf(P, &fail);
        sp->vis = calloc(P, sizeof(int));
        sp->rm = fbuf((size_t)sp->n_round * P, &fail);
        sp->rl = fbuf((size_t)sp->n_round * P, &fail);
        sp->ro = fbuf((size_t)sp->n_round * P * L, &fail);
        sp->part = calloc((size_t)x->n_attn, sizeof(*sp->part));
        if (!sp->part || !sp->vis)
            fail = 1;
        for (int i = 0; sp->part && i < x->n_attn; i++) {
            sp->part[i].s = fbuf(P * ATTN_CHUNK_MAX, &fail);
            sp->part[i].tmp = fbuf(P * L, &fail);
        }
    }
    /* the model is on a GPU: the device buffers, and the pinned hidden /
     * logits the results are copied back into (the CPU scratch above is
     * then unused but kept: one allocation path for both) */
    if (m->dev && !fail && dev_ctx_open(x))
        fail = 1;
    if (fail) {
        mtpd_ctx_free(x);
        return NULL;
    }
    return x;
}

void mtpd_ctx_set_attn_split(struct mtpd_ctx *c, int mode)
{
    c->attn_split = mode < 0 ? -1 : mode > 0;
}

void mtpd_ctx_free(struct mtpd_ctx *x)
{
    if (!x)
        return;
    dev_ctx_close(x); /* frees its hidden and logits, sets them NULL */
    if (x->as)
        for (int i = 0; i < x->n_attn; i++) {
            free(x->as[i].qc);
            free(x->as[i].oc);
            free(x->as[i].cs.s);
            free(x->as[i].cs.tmp);
            free(x->as[i].o);
        }
    free(x->as);
    struct split_scratch *sp = &x->sp;
    if (sp->part)
        for (int i = 0; i < x->n_attn; i++) {
            free(sp->part[i].s);
            free(sp->part[i].tmp);
        }
    free(sp->part);
    float *spb[] = {sp->qc, sp->oc, sp->m, sp->l, sp->rm, sp->rl, sp->ro};
    for (size_t i = 0; i < sizeof(spb) / sizeof(spb[0]); i++)
        free(spb[i]);
    free(sp->vis);
    float *bufs[] = {x->x, x->xn, x->tmp, x->qa, x->q, x->kva, x->attn,
                     x->ffn_h, x->ffn_u, x->cat, x->topk_w, x->ffn_wt,
                     x->ffn_x, x->ffn_y, x->route_tmp, x->router, x->hidden,
                     x->logits, x->lg_in, x->rope_cs};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(bufs[i]);
    free(x->rows);
    free(x->logit_row);
    free(x->topk_idx);
    free(x->ffn_rows);
    ffn_batch_free(x->ffn_batch);
    kpool_free(x->pool);
    free(x);
}

int mtpd_ctx_max_tokens(const struct mtpd_ctx *c) { return c->max_tokens; }

const float *mtpd_ctx_hidden(const struct mtpd_ctx *c, int row)
{
    if (row < 0 || row >= c->n_rows)
        return NULL;
    return c->hidden + (size_t)row * c->m->cfg.hidden_size;
}

const float *mtpd_ctx_logits(const struct mtpd_ctx *c, int row)
{
    if (row < 0 || row >= c->n_rows || c->logit_row[row] < 0)
        return NULL;
    return c->logits + (size_t)c->logit_row[row] * c->m->cfg.vocab_size;
}
