/*
 * cmd_quantize.c - `mtpd quantize --model DIR --out DIR --format
 * q8|q4|q4_1|fp8 [--keep PATTERN]... [--head-q4]`: writes a quantized copy of a checkpoint that mtpd
 * loads like any other (the work is model/quantize.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli_runtime.h"
#include "cli_util.h"
#include "cmd.h"
#include "model.h"
#include "quantize.h"

#define MAX_KEEP 64

static void usage(FILE *f)
{
    fprintf(f,
"usage: mtpd quantize --model DIR --out DIR --format q8|q4|q4_1|fp8\n"
"                     [--keep PATTERN]... [--quantize-embeddings] [--head-q4]\n"
"\n"
"Writes a quantized copy of the checkpoint in --model to --out (created if\n"
"missing; it must not hold a checkpoint): model.safetensors, config.json\n"
"with the format in its quantization_config, and copies of the tokenizer\n"
"files, generation_config.json and draft_vocab.txt. `mtpd generate --model\n"
"OUT` then runs it; the weights stay quantized in memory and are widened\n"
"inside the matmul kernels.\n"
"\n"
"formats:\n"
"  q8   Q8_0: int8 weights, an fp16 scale per 32 (8.5 bits per weight)\n"
"  q4   Q4_S: 4-bit weights, an 8-bit scale and min per 32 under two\n"
"       power-of-two exponents per 256 (4.51 bits per weight); the output\n"
"       heads (lm_head, MTP shared_head.head) as Q8_0 unless --head-q4\n"
"  q4_1 Q4_1: 4-bit weights, an fp16 scale and min per 32 (5 bits per\n"
"       weight), heads as with q4\n"
"  fp8  DeepSeek's F8_E4M3 with an fp32 scale per 128x128 block\n"
"  (q8, q4, q4_1: kv_b_proj, which MLA's absorbed attention reads per\n"
"  head, as Q8_0; fp8 keeps it)\n"
"\n"
"Quantized: the 2-D weights of attention, MLPs/experts, eh_proj and the\n"
"output heads, in the main model and the MTP modules. Kept as they are:\n"
"norms, biases, the MoE router (mlp.gate.weight), the embeddings (unless\n"
"--quantize-embeddings), matrices whose width is not a multiple of 32\n"
"(q8, q4), and every tensor whose name matches a --keep PATTERN (shell\n"
"glob, repeatable or comma-separated), e.g. --keep 'model.layers.8.*'\n"
"keeps the MTP module of an 8-layer model. With tied embeddings the\n"
"quantized output head is written as its own lm_head.weight.\n"
"\n"
"--head-q4  with q4 / q4_1, the output heads in that format too: fewer\n"
"           bytes a token (the head is the largest matrix a token reads in\n"
"           small models), at some cost in quality (docs/model.md)\n");
}

int cmd_quantize(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL, *fmt = NULL, *v;
    static char keepbuf[4096];
    const char *keep[MAX_KEEP];
    size_t kb = 0;
    struct mtpd_quant_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quantize-embeddings")) {
            o.quantize_embed = 1;
        } else if (!strcmp(argv[i], "--head-q4")) {
            o.head_q4 = 1;
        } else if ((r = cli_opt(argc, argv, &i, "--model", &v))) {
            if (r < 0)
                return 2;
            dir = v;
        } else if ((r = cli_opt(argc, argv, &i, "--out", &v))) {
            if (r < 0)
                return 2;
            out = v;
        } else if ((r = cli_opt(argc, argv, &i, "--format", &v))) {
            if (r < 0)
                return 2;
            fmt = v;
        } else if ((r = cli_opt(argc, argv, &i, "--keep", &v))) {
            if (r < 0)
                return 2;
            size_t n = strlen(v);
            if (kb + n + 1 > sizeof keepbuf) {
                fprintf(stderr, "mtpd: error: --keep patterns too long\n");
                return 2;
            }
            char *s = memcpy(keepbuf + kb, v, n + 1);
            kb += n + 1;
            for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
                if (o.n_keep == MAX_KEEP) {
                    fprintf(stderr, "mtpd: error: more than %d --keep "
                            "patterns\n", MAX_KEEP);
                    return 2;
                }
                keep[o.n_keep++] = tok;
            }
        } else {
            fprintf(stderr, "mtpd: error: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir || !out || !fmt) {
        fprintf(stderr, "mtpd: error: --model, --out and --format are "
                "required\n");
        return 2;
    }
    if (mtpd_qfmt_parse(fmt, &o.format) != 0) {
        fprintf(stderr, "mtpd: error: unknown --format '%s' (q8, q4, q4_1 "
                "or fp8)\n", fmt);
        return 2;
    }
    o.keep = keep;
    cli_progress("quantizing", &o.progress, &o.progress_ud);
    char err[1024] = "";
    struct mtpd_quant_stats st;
    if (mtpd_quantize(dir, out, &o, &st, err, sizeof err)) {
        fprintf(stderr, "mtpd: error: %s\n", err);
        return 1;
    }
    fprintf(stderr, "mtpd: %d tensors quantized, %d kept; %.1f MB -> %.1f "
            "MB\n", st.n_quantized, st.n_kept, st.bytes_in / 1e6,
            st.bytes_out / 1e6);
    return 0;
}
