/*
 * cmd_logits.c - `mtpd logits`: the checkpoint-comparison interface.
 *
 *   mtpd logits --model DIR --ids 1,2,3 [--last N] [--mtp] [--threads N]
 *
 * Prints {"logits": [[...] x N], "mtp_logits": [...]}: main-model logits at
 * the last N positions, and with --mtp the logits of MTP module 0 at its
 * last row. MTP rows p = 0..n-2 pair the main hidden state h_p with ids[p+1]
 * (exactly as drafting does), so the last row uses the last id as the "next"
 * token and predicts the token two past it. Keep this output stable: the
 * parity tests and reference scripts read it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_runtime.h"
#include "cli_util.h"
#include "cmd.h"
#include "model.h"

static void logits_usage(FILE *f)
{
    fprintf(f,
        "usage: mtpd logits --model DIR --ids 1,2,3 [--last N] [--mtp] "
        "[--threads N] [--kv-dtype f32|bf16]\n"
        "                    [--act-dtype f32|bf16] [--device auto|cpu|cuda|cuda:N]\n\n"
        "Runs the main model over the ids (one forward call) and prints JSON\n"
        "{\"logits\": [[...], ...]} for the last N positions (default 1).\n"
        "  --model DIR    Hugging Face checkpoint directory (config.json +\n"
        "                 safetensors, single or sharded; bf16/f16/f32/fp8)\n"
        "  --ids LIST     comma-separated token ids\n"
        "  --last N       how many trailing positions to print (default 1)\n"
        "  --mtp          also print \"mtp_logits\": MTP module 0 run over\n"
        "                 rows p=0..n-2 with (hidden h_p, ids[p+1]); its last\n"
        "                 row's logits (needs >= 2 ids)\n"
        "  --threads N    compute threads (default 2)\n"
        "  --kv-dtype T   f32 (default) or bf16 KV cache\n"
        "  --act-dtype T  f32 (default) or bf16: BF16 weights multiply\n"
        "                 bf16-rounded activations (AVX512-BF16 CPUs)\n"
        "  --device D     where the model runs: auto (default: a CUDA GPU\n"
        "                 when this build has CUDA and one is present, else\n"
        "                 the CPU), cpu, cuda (GPU 0) or cuda:N\n"
        "  --q4-layout L  auto (default: Q4 weights copied with eight rows\n"
        "                 interleaved where the kernels are AVX2, same\n"
        "                 results) or rows (kept as the checkpoint has them)\n");
}

static void print_row(const float *v, int n)
{
    putchar('[');
    for (int i = 0; i < n; i++)
        printf(i ? ",%.9g" : "%.9g", v[i]);
    putchar(']');
}

int cmd_logits(int argc, char **argv)
{
    const char *dir = NULL, *ids_s = NULL, *device = NULL, *v;
    long last = 1, threads = 2;
    int kv_bf16 = 0, act_bf16 = 0, q4_rows = 0;
    int want_mtp = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            logits_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--mtp")) {
            want_mtp = 1;
        } else if ((r = cli_opt(argc, argv, &i, "--model", &v))) {
            if (r < 0)
                return 2;
            dir = v;
        } else if ((r = cli_opt(argc, argv, &i, "--ids", &v))) {
            if (r < 0)
                return 2;
            ids_s = v;
        } else if ((r = cli_opt(argc, argv, &i, "--last", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 20, &last)) {
                fprintf(stderr, "mtpd: error: --last needs a positive integer\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--threads", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 256, &threads)) {
                fprintf(stderr, "mtpd: error: --threads needs 1..256\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--kv-dtype", &v))) {
            if (r < 0 || cli_parse_kv_dtype(v, &kv_bf16))
                return 2;
        } else if ((r = cli_opt(argc, argv, &i, "--act-dtype", &v))) {
            if (r < 0 || cli_parse_act_dtype(v, &act_bf16))
                return 2;
        } else if ((r = cli_opt(argc, argv, &i, "--device", &v))) {
            if (r < 0 || cli_parse_device(v))
                return 2;
            device = v;
        } else if ((r = cli_opt(argc, argv, &i, "--q4-layout", &v))) {
            if (r < 0 || (strcmp(v, "auto") && strcmp(v, "rows"))) {
                fprintf(stderr, "mtpd: error: --q4-layout needs auto or rows\n");
                return 2;
            }
            q4_rows = !strcmp(v, "rows");
        } else {
            fprintf(stderr, "mtpd: error: unknown option '%s'\n", argv[i]);
            logits_usage(stderr);
            return 2;
        }
    }
    if (!dir || !ids_s) {
        fprintf(stderr, "mtpd: error: --model and --ids are required\n");
        logits_usage(stderr);
        return 2;
    }
    if (cli_device_check(device))
        return 1;
    int32_t *ids;
    int n = cli_parse_ids(ids_s, &ids);
    if (n <= 0) {
        fprintf(stderr, "mtpd: error: --ids: expected comma-separated "
                "non-negative integers\n");
        return 2;
    }
    if (last > n)
        last = n;
    char err[512] = "";
    struct mtpd_model *m;
    struct mtpd_load_opts lo = {.kv_bf16 = kv_bf16, .act_bf16 = act_bf16,
                                .device = device, .keep_q4_layout = q4_rows};
    int rc = mtpd_model_load(dir, &lo, &m, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "mtpd: error: %s\n", err);
        free(ids);
        return 1;
    }
    if (cli_device_confirm(m, device)) {
        mtpd_model_free(m);
        free(ids);
        return 1;
    }
    const struct mtpd_config *cfg = mtpd_model_config(m);
    int status = 1;
    struct mtpd_kv *kv = mtpd_kv_new(m, n);
    struct mtpd_ctx *c = mtpd_ctx_new(m, n, (int)threads);
    if (c)
        mtpd_ctx_set_attn_split(c, cli_attn_split());
    float *hid = malloc(sizeof(float) * (size_t)n * cfg->hidden_size);
    if (!kv || !c || !hid) {
        fprintf(stderr, "mtpd: error: out of memory for %d tokens\n", n);
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= cfg->vocab_size) {
            fprintf(stderr, "mtpd: error: --ids: id %d is not below "
                    "vocab_size %d\n", ids[i], cfg->vocab_size);
            goto out;
        }
    if (want_mtp && mtpd_model_n_mtp(m) == 0) {
        fprintf(stderr, "mtpd: error: --mtp: this checkpoint has no MTP "
                "module (num_nextn_predict_layers=%d)\n",
                cfg->num_nextn_predict_layers);
        goto out;
    }
    if (want_mtp && n < 2) {
        fprintf(stderr, "mtpd: error: --mtp needs at least 2 ids\n");
        goto out;
    }
    struct mtpd_seq seq = {.kv = kv, .tokens = ids, .n_tokens = n,
                           .logits_from = n - (int)last};
    rc = mtpd_forward(c, &seq, 1);
    if (rc) {
        fprintf(stderr, "mtpd: error: forward: %s\n", mtpd_err_str(rc));
        goto out;
    }
    printf("{\"logits\": [");
    for (int r = n - (int)last; r < n; r++) {
        if (r > n - (int)last)
            putchar(',');
        print_row(mtpd_ctx_logits(c, r), cfg->vocab_size);
    }
    putchar(']');
    if (want_mtp) {
        /* keep h_0..h_{n-2} before the MTP call reuses the output buffers */
        for (int r = 0; r < n - 1; r++)
            memcpy(hid + (size_t)r * cfg->hidden_size, mtpd_ctx_hidden(c, r),
                   sizeof(float) * cfg->hidden_size);
        struct mtpd_mtp_seq ms = {.kv = kv, .tokens = ids + 1, .hidden = hid,
                                  .n_tokens = n - 1, .logits_from = n - 2};
        rc = mtpd_mtp_forward(c, 0, &ms, 1);
        if (rc) {
            fprintf(stderr, "mtpd: error: MTP forward: %s\n",
                    mtpd_err_str(rc));
            goto out;
        }
        printf(", \"mtp_logits\": ");
        print_row(mtpd_ctx_logits(c, n - 2), cfg->vocab_size);
    }
    printf("}\n");
    status = 0;
out:
    free(hid);
    mtpd_ctx_free(c);
    mtpd_kv_free(kv);
    mtpd_model_free(m);
    free(ids);
    return status;
}
