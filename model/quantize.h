/*
 * quantize.h - writing a quantized copy of a checkpoint (`mtpd quantize`).
 *
 * The output directory holds one model.safetensors, config.json with a
 * quantization_config, and copies of the tokenizer files,
 * generation_config.json and draft_vocab.txt; mtpd_model_load() reads it
 * like any other checkpoint.
 *
 * Formats:
 * - MTPD_QFMT_Q8_0: int8 codes I8 [rows, cols] + NAME_qscale F16
 *   [rows, cols / 32] (kernels.h KDT_Q8_0); config quantization_config
 *   {"quant_method": "mtpd", "format": "q8_0"}. 8.5 bits per weight.
 * - MTPD_QFMT_Q4_S: 4-bit codes U8 [rows, cols / 2] as Q4_1's +
 *   NAME_qscale U8 and NAME_qmin I8 [rows, cols / 32] + NAME_qexp I8
 *   [rows, 2 * ceil(cols / 256)] (KDT_Q4_S); "format": "q4_s". 4.51 bits
 *   per weight. The output heads (lm_head, MTP shared_head.head) are
 *   written as Q8_0 unless head_q4, as llama.cpp's Q4_K_M keeps its
 *   output at 6 bits.
 * - MTPD_QFMT_Q4_1: 4-bit codes U8 [rows, cols / 2] + NAME_qscale and
 *   NAME_qmin F16 [rows, cols / 32] (KDT_Q4_1); "format": "q4_1". 5 bits
 *   per weight; the heads as with q4_s.
 * - MTPD_QFMT_FP8: DeepSeek's F8_E4M3 with 128x128 fp32 block scales
 *   (NAME_scale_inv), quant_method "fp8", weight_block_size [128, 128].
 *
 * What is quantized: every 2-D ".weight" tensor (attention and MLP
 * projections, eh_proj, output heads) of the main model and of the MTP
 * modules, except the router (mlp.gate.weight), kv_b_proj (MLA reads it
 * through kmatmul_pv, float only: a quantized one would be widened to an
 * f32 copy at load), the embeddings
 * (embed_tokens, unless quantize_embed) and the names matching a --keep
 * pattern; norms, biases and 1-D tensors are copied as they are. Q8_0 /
 * Q4_1 need whole blocks of 32 columns: other matrices stay as they are.
 * With tied embeddings the (quantized) output head is written as its own
 * lm_head.weight, so the embedding lookup keeps full precision.
 */
#ifndef MTPD_QUANTIZE_H
#define MTPD_QUANTIZE_H

#include <stddef.h>

#include "model.h" /* mtpd_load_progress_fn */

enum mtpd_qfmt {
    MTPD_QFMT_Q8_0 = 0,
    MTPD_QFMT_Q4_1,
    MTPD_QFMT_FP8,
    MTPD_QFMT_Q4_S,
};

struct mtpd_quant_opts {
    enum mtpd_qfmt format;
    const char *const *keep; /* fnmatch() patterns of tensor names kept */
    int n_keep;
    int quantize_embed;      /* 1: embed_tokens quantized too */
    int head_q4;             /* q4_1 / q4_s: output heads in the format
                              * too (default: Q8_0) */
    /* Called after each tensor written (bytes and tensors of the output
     * file) and once at the end with done == total; may be NULL. */
    mtpd_load_progress_fn progress;
    void *progress_ud;
};

struct mtpd_quant_stats {
    int n_quantized, n_kept; /* tensors */
    size_t bytes_in, bytes_out; /* tensor data */
};

/* Parses "q8" / "q8_0" / "q4" / "q4_s" / "q4_1" / "fp8" ("q4" is Q4_S);
 * 0 ok, -1 unknown. */
int mtpd_qfmt_parse(const char *s, enum mtpd_qfmt *out);

/*
 * Reads the checkpoint in model_dir and writes the quantized one to
 * out_dir (created if missing; refused when it already holds a
 * checkpoint). Returns 0, or a negative MTPD_E* code with one line in err.
 * Prints nothing.
 */
int mtpd_quantize(const char *model_dir, const char *out_dir,
                  const struct mtpd_quant_opts *o, struct mtpd_quant_stats *st,
                  char *err, size_t errlen);

#endif
