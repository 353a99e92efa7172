/*
 * model_int.h - internal structs of the model: weights, KV cache, context.
 * Only the model sources include this; everything else uses model.h.
 */
#ifndef MTPD_MODEL_INT_H
#define MTPD_MODEL_INT_H

#include "config.h"
#include "kernels.h"
#include "model.h"

struct st_set;

/* A 1-D weight (norm scale, bias): data in the checkpoint's dtype. */
struct wvec {
    const void *data;
    enum kdtype dtype;
    int n;
};

struct expert_w {
    struct kmat gate; /* [inter, hidden] */
    struct kmat up;   /* [inter, hidden] */
    struct kmat down; /* [hidden, inter] */
};

/* One decoder block (main layer or the block inside an MTP module). */
struct layer_w {
    struct wvec attn_norm; /* input_layernorm [hidden] */
    struct wvec ffn_norm;  /* post_attention_layernorm [hidden] */
    /* MLA */
    struct kmat q_a;       /* [q_lora, hidden]            (q_lora_rank > 0) */
    struct wvec q_a_norm;  /* [q_lora] */
    struct kmat q_b;       /* [H * qk_head, q_lora] */
    struct kmat q;         /* [H * qk_head, hidden]       (q_lora_rank == 0) */
    struct kmat kv_a;      /* [kv_lora + rope, hidden] */
    struct wvec kv_a_norm; /* [kv_lora] */
    struct kmat kv_b;      /* [H * (nope + v), kv_lora] */
    struct kmat o;         /* [hidden, H * v] */
    struct kmat kv_bd;     /* kv_b as absorption reads it: kv_b itself, or
                              an fp32 copy of an F8 kv_b (absorb.c) */
    float *kv_b_f32;       /* that copy, or NULL */
    /* FFN: dense, or MoE */
    int is_moe;
    struct expert_w dense;  /* dense MLP (is_moe == 0) */
    struct kmat router;     /* [n_experts, hidden] (is_moe) */
    const float *router_bias; /* e_score_correction_bias [n_experts] or NULL */
    struct expert_w *experts; /* [n_routed_experts] */
    int has_shared;
    struct expert_w shared; /* inter = moe_inter * n_shared_experts */
};

struct mtp_w {
    struct kmat embed;     /* [vocab, hidden]: own copy or the main one */
    struct wvec enorm, hnorm;
    struct kmat eh_proj;   /* [hidden, 2 * hidden]: [emb ; hidden] */
    struct layer_w block;
    struct wvec head_norm; /* shared_head.norm */
    struct kmat head;      /* shared_head.head, or the main lm_head */
};

/* How a KV pool gets its pages: host memory (alloc NULL: aligned_alloc,
 * zeroed) or, when the model lives on a GPU, device memory (dev_model.c).
 * alloc returns zeroed memory of `bytes` or NULL. */
struct kv_page_ops {
    void *(*alloc)(void *ud, size_t bytes);
    void (*free)(void *ud, void *page);
    void *ud;
};

struct dev_model; /* the weights on the GPU (dev_model.c) */
struct dev_ctx;   /* a context's device buffers and graphs (dev_ctx.c) */

struct mtpd_model {
    struct mtpd_config cfg;
    struct st_set *st;
    struct kmat embed;   /* model.embed_tokens [vocab, hidden] */
    struct layer_w *layers;
    struct wvec final_norm;
    struct kmat lm_head; /* lm_head, or embed when tied */
    int n_mtp;
    struct mtp_w mtp[MTPD_MAX_MTP];
    /* RoPE tables */
    float *inv_freq;     /* [rope / 2] */
    uint16_t *q4s_exp;   /* resident Q4_S matrices' scales and mins as
                          * Q4_1's fp16 (q4s_widen), or NULL */
    void *q4x8;          /* Q4 matrices with eight rows interleaved
                          * (q4_interleave), one buffer, or NULL */
    float rope_mscale;   /* multiplies cos/sin (YaRN attention factor) */
    float softmax_scale;
    int act_bf16;         /* mtpd_load_opts.act_bf16 set on some BF16
                           * matrices (CPU only) */
    enum kdtype kv_dtype; /* KDT_F32 or KDT_BF16 (mtpd_load_opts.kv_bf16) */
    /* where forward passes run (device.c): device -1 is the CPU, else the
     * CUDA device index, with the weights uploaded to dev */
    int device;
    char device_name[16]; /* "cpu", "cuda:N" */
    struct dev_model *dev;
    struct kv_page_ops kv_pages; /* what pools draw their pages from */
};

/*
 * Paged latent cache (kv.c). A pool hands out pages of page_pos positions;
 * one page holds those positions for every layer (main layers, then one
 * per MTP module): layer l's rows of a page are contiguous, at
 * page + l * layer_bytes, row_bytes apart (kv_lora normed c_kv, then the
 * roped k_pe, of the pool's dtype).
 */
struct mtpd_kv_pool {
    const struct mtpd_model *m;
    size_t budget;      /* bytes; 0: unlimited */
    int page_pos;       /* positions per page, a power of two */
    int page_shift;     /* log2(page_pos) */
    enum kdtype dtype;  /* KDT_F32 or KDT_BF16 */
    int n_layers_total; /* main layers + MTP modules */
    int row;            /* elements per position per layer */
    size_t row_bytes, layer_bytes, page_bytes;
    struct kv_page_ops pg; /* the model's, at creation */
    void **free_pages;  /* [free_cap] pages kept for reuse */
    long n_free, free_cap;
    long pages_total;   /* allocated: used + free */
    long pages_used;
    size_t peak;
    long caches;
};

struct mtpd_kv {
    const struct mtpd_model *m;
    struct mtpd_kv_pool *pool;
    int own_pool;       /* mtpd_kv_new: the pool goes with the cache */
    int cap;
    int n_layers_total;
    int row;            /* elements per position per layer: kv_lora + rope */
    enum kdtype dtype;  /* of the elements: KDT_F32 or KDT_BF16 */
    int page_pos, page_shift;
    size_t row_bytes, layer_bytes;
    void **pages;       /* page table [ceil(cap / page_pos)] */
    int n_pages;        /* pages held: positions [0, n_pages * page_pos) */
    int reserved;       /* positions kept by mtpd_kv_reserve */
    int len_main;
    int len_mtp[MTPD_MAX_MTP];
};

/* Position pos of layer (row of kv->row elements of kv->dtype); the page
 * holding it must be held. */
static inline void *kv_at(const struct mtpd_kv *kv, int layer, int pos)
{
    return (char *)kv->pages[pos >> kv->page_shift] +
           (size_t)layer * kv->layer_bytes +
           (size_t)(pos & (kv->page_pos - 1)) * kv->row_bytes;
}

/* The page_pos rows of page pg of layer, contiguous. */
static inline const void *kv_page(const struct mtpd_kv *kv, int layer, int pg)
{
    return (const char *)kv->pages[pg] + (size_t)layer * kv->layer_bytes;
}

/* kv.c: makes sure pages for [0, n_pos) are held (MTPD_ENOMEM: nothing
 * taken); kv_fit gives back pages no length or reservation needs. */
int kv_grow(struct mtpd_kv *kv, int n_pos);
void kv_fit(struct mtpd_kv *kv);

/* Per-row bookkeeping of one forward call. */
struct row_info {
    struct mtpd_kv *kv;
    int pos;      /* absolute position of this row */
    int kv_layer_base; /* 0 for main, n_layers + m for MTP module m */
};

/* Attention over the paged cache in chunks (mla_chunk.c): chunks of
 * ctx->attn_chunk positions (whole pages: one page when pages are
 * larger), at most ATTN_CHUNK_MAX; pages at most KV_PAGE_MAX positions. */
#define ATTN_CHUNK 256
#define ATTN_CHUNK_MAX 1024
#define KV_PAGE_MAX 1024

struct chunk_scratch {
    float *s;   /* [pairs, ATTN_CHUNK_MAX] one chunk's scores / probs */
    float *tmp; /* [pairs, kv_lora] one page's attended latents */
};

/* Attention (mla.c): (row, head) query pairs of one sequence whose
 * scores are computed together; query pairs one pool thread holds (its
 * heads x all rows: at least max_tokens, so one head always fits); most
 * heads done together. */
#define ATTN_ROWS 8
#define ATTN_PAIRS(c) ((c)->max_tokens > 64 ? (c)->max_tokens : 64)
#define ATTN_HEADS_MAX 64

struct attn_scratch {
    float *qc;     /* [ATTN_PAIRS, kv_lora + rope] absorbed queries */
    float *oc;     /* [ATTN_PAIRS, kv_lora + rope] attended latents (row
                      stride kv_lora + rope, like qc; rope columns unused) */
    struct chunk_scratch cs; /* pairs: ATTN_ROWS */
    float *o;      /* [ATTN_ROWS, kv_lora] one chunk's latents */
    float m[ATTN_ROWS], l[ATTN_ROWS];   /* running max and sum */
    float mc[ATTN_ROWS], lc[ATTN_ROWS]; /* one chunk's */
    int vis[ATTN_ROWS];                 /* positions each pair sees */
};

/* Position-split decode attention (mla_split.c): calls of one sequence
 * with at most SPLIT_ROWS rows, from SPLIT_MIN_CTX positions on (or always
 * / never: mtpd_ctx_set_attn_split); chunks spread over the threads, at
 * most n_round chunks per round. */
#define SPLIT_ROWS 16
#define SPLIT_MIN_CTX 2048
#define SPLIT_ROUND_BYTES (32u << 20) /* chunk results kept per round */

struct split_scratch {
    float *qc;          /* [P, kv_lora + rope] absorbed queries, p = r*H+h */
    float *oc;          /* [P, kv_lora] merged attended latents */
    float *m, *l;       /* [P] running max and sum */
    int *vis;           /* [P] positions each pair sees */
    int n_round;        /* chunks per round */
    float *rm, *rl;     /* [n_round, P] each chunk's max and sum */
    float *ro;          /* [n_round, P, kv_lora] each chunk's latents */
    struct chunk_scratch *part; /* [n_attn]: pairs P */
};

struct mtpd_ctx {
    const struct mtpd_model *m;
    struct kpool *pool;
    int max_tokens;
    int max_ctx;
    int n_rows;            /* rows of the last call */
    struct row_info *rows; /* [max_tokens] */
    /* activations [max_tokens, dim] */
    float *x, *xn, *tmp;
    float *qa, *q, *kva, *attn;
    float *cat;            /* MTP concat [max_tokens, 2 * hidden] */
    float *rope_cs;        /* [rope]: krope_cs table of one position */
    /* FFN / MoE (moe.c): every active expert's rows side by side */
    int *topk_idx;         /* [max_tokens, n_per_tok] */
    float *topk_w;         /* [max_tokens, n_per_tok] */
    int *ffn_rows;         /* [max_tokens * n_per_tok] row of each routed slot */
    float *ffn_wt;         /* [max_tokens * n_per_tok] its routing weight */
    float *ffn_x;          /* [max_tokens * n_per_tok, hidden] gathered inputs */
    float *ffn_h, *ffn_u;  /* gate / up activations, all experts */
    float *ffn_y;          /* [max_tokens * (n_per_tok + 1), hidden] outputs */
    float *route_tmp;      /* [2 * n_experts] */
    struct ffn_batch *ffn_batch; /* expert job list (moe.c) */
    float *router;         /* [max_tokens, n_experts] */
    /* attention: one scratch per pool thread */
    int n_attn;
    struct attn_scratch *as;
    int attn_split;          /* -1 auto, 0 never, 1 always (if usable) */
    int attn_chunk;          /* positions per attention chunk, <=
                              * ATTN_CHUNK_MAX (tests set it small to
                              * cross many chunks); rounded to pages */
    struct split_scratch sp; /* qc NULL: no split path (one thread) */
    /* outputs */
    float *hidden;         /* [max_tokens, hidden] */
    float *logits;         /* [max_tokens, vocab] */
    int *logit_row;        /* [max_tokens]: index into logits or -1 */
    float *lg_in;          /* [max_tokens, hidden] rows needing logits */
    /* the model is on a GPU: the device side of this context (dev_ctx.c);
     * hidden and logits are then pinned host memory it owns */
    struct dev_ctx *dev;
};

/* One forward call after validation and page taking (forward.c), as the
 * device path takes it. */
struct fwd_call {
    int module; /* -1: main model, else the MTP module */
    int n_seqs;
    struct mtpd_kv *const *kvs;
    const int32_t *const *toks;
    const int *ntok, *lfrom;
    const float *const *hidden; /* MTP: each sequence's input rows */
};

/*
 * The CUDA side (dev_*.c when built with CUDA; dev_none.c without).
 * dev_built: 1 when this build has CUDA. dev_count: usable devices, 0 with
 * the reason in why. dev_model_open uploads every weight to device `index`
 * (progress per layer, as the load's callback); dev_model_close frees them.
 * dev_ctx_open / _close: the device side of a context (c->dev). dev_forward
 * runs a validated call whose pages are taken (forward.c) and fills
 * c->hidden, c->logits and c->logit_row as the CPU path does; on error the
 * device is idle again and nothing but the taken pages' slots beyond the
 * lengths was written.
 */
int dev_built(void);
int dev_count(char *why, size_t whylen);
int dev_model_open(struct mtpd_model *m, int index,
                   const struct mtpd_load_opts *o, char *err, size_t errlen);
void dev_model_close(struct mtpd_model *m);
int dev_ctx_open(struct mtpd_ctx *c);
void dev_ctx_close(struct mtpd_ctx *c);
int dev_forward(struct mtpd_ctx *c, const struct fwd_call *fc);
/* Whether the context may run calls as CUDA graphs (default 1); the
 * parity test compares both ways. No-op on the CPU. */
void dev_ctx_set_graphs(struct mtpd_ctx *c, int on);

/* device.c: parses mtpd_load_opts.device and checks it can be had: *index
 * -1 for the CPU, else the CUDA device. MTPD_EINVAL (bad string) or
 * MTPD_ENODEV, with one line in err. */
int device_select(const char *device, int *index, char *err, size_t errlen);
/* NULL, "" or "auto". */
int device_is_auto(const char *device);

/* weights.c */
int weights_bind(struct mtpd_model *m, const struct mtpd_load_opts *o,
                 char *err, size_t errlen);
void weights_free(struct mtpd_model *m);

/* absorb.c */
int absorb_init(const struct mtpd_config *c, struct layer_w *w);
void absorb_free(struct layer_w *w);

/* rope.c */
int rope_init(struct mtpd_model *m);

/* blocks: x [n, hidden] in ctx->x, rows described by ctx->rows */
int mla_block(struct mtpd_ctx *c, const struct layer_w *w, int kv_layer,
              int n);
/* One head h, rows 0..n of the call: dst[r * ld ..] = the absorbed query
 * [q_nope W_UK, q_pe] (kv_lora + rope floats); attn[r, h*vd ..] = the
 * attended latent oc[r * ld ..] (kv_lora floats) times W_UV^T. */
int mla_absorb_q(struct mtpd_ctx *c, const struct layer_w *w, int h, int n,
                 float *dst, int ld);
int mla_head_out(struct mtpd_ctx *c, const struct layer_w *w, int h, int n,
                 const float *oc, int ld);
/* Records rc (when not 0) in *err unless an error is there already; pool
 * parts report errors this way. */
void attn_set_err(int *err, int rc);
/* mla_split.c: whether the position-split path takes this call (rows set
 * up in c->rows), and the attention of it (c->q roped -> c->attn). */
int mla_split_usable(const struct mtpd_ctx *c, int n);
int mla_split_attend(struct mtpd_ctx *c, const struct layer_w *w,
                     int kv_layer, int n);
/* mla_chunk.c: positions per chunk for this cache; one chunk ch of
 * layer for np pairs (queries qc, row stride ldq; pair p sees positions
 * [0, vis[p])): its max m, sum l and unnormalised latents o (row stride
 * ldo); m = -inf when a pair sees none of it; a kernel's error as
 * MTPD_E*. attn_merge folds a chunk into a running (m, l, o) (start:
 * m = -inf); attn_normalize divides by l. */
int attn_chunk_pos(const struct mtpd_ctx *c, const struct mtpd_kv *kv);
int attn_chunk(const struct mtpd_ctx *c, const struct mtpd_kv *kv, int layer,
               int ch, const float *qc, int ldq, int np, const int *vis,
               struct chunk_scratch *cs, float *m, float *l, float *o,
               int ldo);
void attn_merge(float *m, float *l, float *o, float mc, float lc,
                const float *oc, int L);
void attn_normalize(float *o, float l, int L);
int ffn_block(struct mtpd_ctx *c, const struct layer_w *w, int n);
struct ffn_batch *ffn_batch_new(const struct mtpd_config *c);
void ffn_batch_free(struct ffn_batch *b);
int decoder_block(struct mtpd_ctx *c, const struct layer_w *w, int kv_layer,
                  int n);

/* norm helper: krmsnorm with a wvec */
void wnorm(const struct mtpd_model *m, float *out, const float *x,
           const struct wvec *w);

#endif
