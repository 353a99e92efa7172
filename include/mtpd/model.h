/*
 * model.h - DeepSeek-V3 main model + MTP ("next-n") modules on the CPU.
 *
 * Objects and owners
 * - struct mtpd_model: config + weights (mmap'd checkpoint). One per
 *   process, read-only after load, shared by every sequence.
 * - struct mtpd_kv: one sequence's latent KV cache (c_kv and k_pe per token
 *   per layer) for the main layers and, separately, for each MTP module.
 *   Owned by whoever runs the sequence (a session, the generate CLI).
 * - struct mtpd_ctx: scratch, thread pool and output buffers for forward
 *   calls, sized once for at most max_tokens rows per call. Not thread-safe:
 *   one ctx per engine thread.
 *
 * One forward call processes any number of sequences, each with any number
 * of new tokens (prefill, decode and the k+1-row verify step are the same
 * path), and reads every weight matrix once per call.
 *
 * Return values: 0 success, negative MTPD_E* on error; on error the KV
 * caches are left as they were before the call.
 */
#ifndef MTPD_MODEL_H
#define MTPD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mtpd_err {
    MTPD_OK = 0,
    MTPD_EINVAL = -1,  /* bad argument */
    MTPD_ENOMEM = -2,  /* allocation failed */
    MTPD_EIO = -3,     /* file could not be read */
    MTPD_EFORMAT = -4, /* checkpoint / json malformed or inconsistent */
    MTPD_EFULL = -5,   /* KV cache or batch capacity exceeded */
    MTPD_ENOMTP = -6,  /* model has no MTP module (or not that one) */
    MTPD_ENODEV = -7,  /* the device asked for is not there (no GPU, no
                        * CUDA in this build, or a device error) */
};
const char *mtpd_err_str(int err);

/* ---- process-wide settings: log lines and the CPU code path ---------- */

/* The library never prints: its few log lines (what a load found, how
 * long it took) go to this callback, one line per call without a newline,
 * on the thread that made the library call. fn NULL (the default): they
 * are dropped. Set it once at start-up, before other calls (it is not
 * synchronized with calls running on other threads). */
enum mtpd_log_level {
    MTPD_LOG_ERROR = 0,
    MTPD_LOG_WARN,
    MTPD_LOG_INFO,
    MTPD_LOG_DEBUG,
};
typedef void (*mtpd_log_fn)(void *ud, int level, const char *msg);
void mtpd_set_log(mtpd_log_fn fn, void *ud);

/* The SIMD code path of the CPU ops: "scalar", "avx2", "avx512" or "amx"
 * (AVX-512 with AMX-BF16 tiles for BF16 weights: 1.5x the prefill speed,
 * 0.75-0.85x the decode speed of small models); NULL or "" for the best
 * vector path this CPU has, without AMX-BF16 (the default; Q8_0 / Q4_1
 * weights use AMX-INT8 for several tokens on any AVX-512 path where the
 * CPU has it: same results). MTPD_EINVAL for an unknown
 * name or one the CPU lacks (the path is then unchanged). Process-wide:
 * call it at start-up, not while forward calls run. */
int mtpd_set_isa(const char *name);
/* How decode matmuls stream the weights on the CPU: 1 one row at a time
 * (one linear stream per thread), 0 several rows side by side, -1 this
 * CPU's default (1 on AMD, 0 on Intel: docs/model.md, "Weight streams").
 * Results are the same either way; for benchmarks. Process-wide, like
 * mtpd_set_isa. mtpd_row_stream: the setting in use. */
void mtpd_set_row_stream(int on);
int mtpd_row_stream(void);
/* The code path in use, and the best this CPU has ("scalar", ...). */
const char *mtpd_isa(void);
const char *mtpd_isa_best(void);

#define MTPD_MAX_MTP 4 /* num_nextn_predict_layers supported */

/* Hyper-parameters read from config.json (DeepseekV3Config names). */
struct mtpd_config {
    int vocab_size;
    int hidden_size;
    int intermediate_size;     /* dense MLP */
    int moe_intermediate_size; /* per expert */
    int num_hidden_layers;
    int num_attention_heads;
    int q_lora_rank; /* 0 when null: q_proj is a plain [H*qk_head, hidden] */
    int kv_lora_rank;
    int qk_nope_head_dim;
    int qk_rope_head_dim;
    int v_head_dim;
    int n_routed_experts; /* 0: every layer dense */
    int n_shared_experts;
    int num_experts_per_tok;
    int first_k_dense_replace;
    int moe_layer_freq;
    int n_group;
    int topk_group;
    int norm_topk_prob;
    float routed_scaling_factor;
    char topk_method[32];  /* "noaux_tc" | "greedy" | "group_limited_greedy" */
    char scoring_func[32]; /* "sigmoid" | "softmax" */
    float rms_norm_eps;
    float rope_theta;
    int max_position_embeddings;
    /* rope_scaling: yarn when rope_yarn = 1 */
    int rope_yarn;
    float yarn_factor;
    int yarn_original_max_pos;
    float yarn_beta_fast, yarn_beta_slow;
    float yarn_mscale, yarn_mscale_all_dim;
    int tie_word_embeddings;
    int num_nextn_predict_layers; /* as declared in config.json */
    int bos_token_id, eos_token_id; /* -1 when absent */
    /* quantization_config (fp8 block) */
    int fp8_block; /* 0 when not quantized, else weight_block_size (128) */
    /* quantization_config with quant_method "mtpd": its format, "q8_0" or
     * "q4_1" (model/quantize.h); "" otherwise */
    char quant_format[8];
};

struct mtpd_model;
struct mtpd_kv;
struct mtpd_ctx;

/* How far a load is: the tensors bound so far and their bytes, of all the
 * checkpoint holds. */
struct mtpd_load_progress {
    size_t bytes_done, bytes_total;
    long tensors_done, tensors_total;
};
typedef void (*mtpd_load_progress_fn)(void *ud,
                                      const struct mtpd_load_progress *p);

struct mtpd_load_opts {
    /* Called on the loading thread as the weights are bound (after each
     * layer) and once at the end with done == total; may be NULL. */
    mtpd_load_progress_fn progress;
    void *progress_ud;
    int no_mtp;    /* skip loading MTP modules */
    int kv_bf16;   /* latent KV cache in BF16 instead of fp32: half the
                    * memory and the cache traffic of attention; logits
                    * then differ from the fp32 path by ~1e-2 relative */
    int act_bf16;  /* BF16 weight matrices multiply activations rounded to
                    * bf16 (vdpbf16ps), as llama.cpp and torch's bf16 do,
                    * on CPUs with AVX512-BF16: about twice the multiply-
                    * adds per cycle (prefill); on the default model top-1
                    * agrees with the exact fp32 products at 99.7% of
                    * held-out positions, same next-token loss. No effect on other CPUs, on
                    * AMX tiles, on the GPU or on quantized weights. Greedy
                    * speculation stays token-identical to plain decoding
                    * (one summation order for every row count). */
    /* Where forward passes run: NULL or "auto" (a CUDA GPU when this build
     * has CUDA and one is present, else the CPU), "cpu", "cuda" (device 0)
     * or "cuda:N". A device that is not there is MTPD_ENODEV, with the
     * reason in err. */
    const char *device;
    int keep_q4_layout; /* 1: Q4 matrices stay row-major; 0 (default): on
                         * a CPU whose kernels are AVX2 (no AVX-512) they
                         * are copied at load with eight rows interleaved
                         * (Q4_X8, kernels.h), 1.2-1.4x faster kernels
                         * there, the same results bit for bit */
};

/*
 * Loads config.json + safetensors (single file or sharded with index) from
 * dir. On failure returns a negative code, *out = NULL, and writes one line
 * naming the file, the tensor and the problem into err (errlen bytes).
 */
int mtpd_model_load(const char *dir, const struct mtpd_load_opts *opts,
                    struct mtpd_model **out, char *err, size_t errlen);
void mtpd_model_free(struct mtpd_model *m);
/* Where the model's forward passes run: "cpu" or "cuda:N". */
const char *mtpd_model_device(const struct mtpd_model *m);
/* CUDA devices usable by this build (0 without CUDA or without a GPU). */
int mtpd_cuda_devices(void);
const struct mtpd_config *mtpd_model_config(const struct mtpd_model *m);
/* Number of MTP modules actually loaded (0 when the checkpoint has none). */
int mtpd_model_n_mtp(const struct mtpd_model *m);
/* Bytes of weights one forward over the main model reads (all experts);
 * and the bytes one token touches (routed experts counted top-k only). */
size_t mtpd_model_weight_bytes(const struct mtpd_model *m);
size_t mtpd_model_active_bytes(const struct mtpd_model *m);

/* ---- KV pool: paged cache memory shared by all sequences ------------- */

/*
 * A pool hands out KV memory in pages of page_positions positions; one
 * page holds those positions for every layer (main layers and every MTP
 * module), so a page is page_positions * mtpd_kv_bytes_per_token() bytes
 * (of the pool's dtype). Pages are taken as a cache grows and given back
 * on truncate / free. The budget is enforced to the byte: a page that
 * would take the pool over it is refused with MTPD_ENOMEM, never an abort.
 * Freed pages are kept for reuse (the pool never holds more than the
 * budget). A pool and its caches are used by one thread at a time.
 */
struct mtpd_kv_pool;

enum mtpd_kv_dtype { MTPD_KV_DEFAULT = 0, MTPD_KV_F32, MTPD_KV_BF16 };

struct mtpd_kv_pool_opts {
    size_t budget_bytes;  /* 0: unlimited */
    int page_positions;   /* 0: MTPD_KV_PAGE_DEFAULT; a power of two,
                           * at most 1024 */
    enum mtpd_kv_dtype dtype; /* DEFAULT: mtpd_load_opts.kv_bf16 */
};
#define MTPD_KV_PAGE_DEFAULT 64

int mtpd_kv_pool_new(const struct mtpd_model *m,
                     const struct mtpd_kv_pool_opts *o,
                     struct mtpd_kv_pool **out);
/* Frees the pool; every cache drawn from it must be freed first. */
void mtpd_kv_pool_free(struct mtpd_kv_pool *p);

struct mtpd_kv_pool_stats {
    size_t budget_bytes;  /* 0: unlimited */
    size_t page_bytes;
    int page_positions;
    size_t used_bytes;    /* pages held by caches */
    size_t peak_bytes;    /* most used_bytes ever */
    size_t cached_bytes;  /* free pages kept for reuse */
    long pages_used;
    long caches;          /* live caches drawn from the pool */
};
void mtpd_kv_pool_get_stats(const struct mtpd_kv_pool *p,
                            struct mtpd_kv_pool_stats *st);
/* Bytes a cache holding n positions takes from the pool (whole pages). */
size_t mtpd_kv_pool_cost(const struct mtpd_kv_pool *p, int n_positions);
/* "f32" or "bf16". */
const char *mtpd_kv_pool_dtype(const struct mtpd_kv_pool *p);

/* ---- KV cache of one sequence --------------------------------------- */

/* A cache of at most max_positions positions (1 .. the model's
 * max_position_embeddings) drawn from pool p. It holds no page until it
 * grows. MTPD_EINVAL / MTPD_ENOMEM. */
int mtpd_kv_new_in(struct mtpd_kv_pool *p, int max_positions,
                   struct mtpd_kv **out);
/* A cache of up to max_tokens positions with its own unlimited pool (the
 * simple form for tools and tests). NULL on allocation failure. */
struct mtpd_kv *mtpd_kv_new(const struct mtpd_model *m, int max_tokens);
void mtpd_kv_free(struct mtpd_kv *kv);
int mtpd_kv_capacity(const struct mtpd_kv *kv);
/*
 * Makes sure pages for positions [0, n_positions) are held in every part
 * (main + MTP modules), and keeps them held until a later reserve with a
 * smaller n (truncate then gives back only pages above both the lengths
 * and the reservation). A forward call takes pages for the rows it writes
 * itself; reserving first is how a caller learns of a full pool per
 * sequence, before a call. MTPD_EFULL if n_positions > capacity,
 * MTPD_ENOMEM if the pool's budget does not allow it (nothing taken).
 */
int mtpd_kv_reserve(struct mtpd_kv *kv, int n_positions);
/* Bytes of pool memory this cache holds now. */
size_t mtpd_kv_bytes(const struct mtpd_kv *kv);
/* Positions held: module -1 is the main model, 0.. the MTP modules. */
int mtpd_kv_len(const struct mtpd_kv *kv, int module);
/* Forget positions >= n (n <= current length) of the main model (-1) or
 * of MTP module i. O(1): nothing is recomputed. */
int mtpd_kv_truncate(struct mtpd_kv *kv, int module, int n);
/* "f32" or "bf16": the element type of the model's KV caches. */
const char *mtpd_model_kv_dtype(const struct mtpd_model *m);
/* "bf16" when the model's BF16 matrices multiply bf16-rounded activations
 * now (mtpd_load_opts.act_bf16 on a CPU path that has it: AVX-512 with
 * AVX512-BF16, AMX tiles off), else "f32". */
const char *mtpd_model_act_dtype(const struct mtpd_model *m);
/* Bytes held per position (all main layers; all MTP layers). */
size_t mtpd_kv_bytes_per_token(const struct mtpd_model *m);

/* ---- forward --------------------------------------------------------- */

/* max_tokens: the most rows (summed over sequences) one call may carry.
 * n_threads: compute threads (>= 1). */
struct mtpd_ctx *mtpd_ctx_new(const struct mtpd_model *m, int max_tokens,
                              int n_threads);
void mtpd_ctx_free(struct mtpd_ctx *c);
int mtpd_ctx_max_tokens(const struct mtpd_ctx *c);
/* Decode attention split across the threads by cache positions (see
 * model/mla_split.c): -1 when it pays (one sequence, few rows, long
 * context; the default), 0 never, 1 whenever usable. The results have the
 * same bits either way (given batch-invariant kernels, kernels.h). (The
 * mtpd CLI sets it from MTPD_ATTN_SPLIT=0/1.) */
void mtpd_ctx_set_attn_split(struct mtpd_ctx *c, int mode);

/*
 * One sequence's part of a main-model forward call. Its tokens occupy
 * positions kv_len(main) .. kv_len(main) + n_tokens - 1 and are appended to
 * the cache. Logits are computed for rows logits_from .. n_tokens-1 of this
 * sequence (0 = every row, n_tokens-1 = last only).
 */
struct mtpd_seq {
    struct mtpd_kv *kv;
    const int32_t *tokens;
    int n_tokens;
    int logits_from;
};

/*
 * Runs the main model. Output rows are numbered across sequences in order
 * (sequence 0's rows first). After the call:
 *   mtpd_ctx_hidden(c, row)  final hidden state after model.norm, every row
 *   mtpd_ctx_logits(c, row)  logits, only rows at or after logits_from
 * Returns MTPD_EFULL if rows > max_tokens or a cache would overflow,
 * MTPD_ENOMEM if a cache needs a page its pool cannot give,
 * MTPD_EINVAL on a token id out of range. Either way no cache changed.
 */
int mtpd_forward(struct mtpd_ctx *c, const struct mtpd_seq *seqs, int n_seqs);

/*
 * One sequence's part of an MTP-module call. Row r sits at position
 * p = kv_len(module) + r and combines the main (or previous MTP step's)
 * hidden state h_p (hidden + r * hidden_size) with the token at p+1:
 *   eh_proj(concat[enorm(embed(tokens[r])), hnorm(h_p)]) -> decoder block
 *   -> shared_head.norm -> head.
 * The embedding is zeroed at absolute position 0 (vLLM's convention, and
 * what the reference checkpoints were trained with).
 */
struct mtpd_mtp_seq {
    struct mtpd_kv *kv;
    const int32_t *tokens; /* the "next" tokens t_{p+1} */
    const float *hidden;   /* n_tokens rows of hidden_size */
    int n_tokens;
    int logits_from;
};

/* Runs MTP module `module` (0-based). After the call mtpd_ctx_hidden gives
 * each row's state after shared_head.norm (what recursive drafting feeds
 * back) and mtpd_ctx_logits the head's logits from logits_from on.
 * MTPD_ENOMTP when the module is not loaded. */
int mtpd_mtp_forward(struct mtpd_ctx *c, int module,
                     const struct mtpd_mtp_seq *seqs, int n_seqs);

/* Output of the last call; row as described above. NULL if out of range or
 * (logits) not computed for that row. */
const float *mtpd_ctx_hidden(const struct mtpd_ctx *c, int row);
const float *mtpd_ctx_logits(const struct mtpd_ctx *c, int row);

#ifdef __cplusplus
}
#endif
#endif
