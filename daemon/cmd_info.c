/*
 * cmd_info.c - `mtpd info --model DIR`: what a checkpoint holds, as JSON
 * (config essentials, weight bytes, bytes touched per token, KV bytes per
 * token, MTP modules), and where it runs (--device; whether this build
 * has CUDA, how many GPUs it sees). Useful to check a download before
 * serving it.
 */
#include <stdio.h>
#include <string.h>

#include "cli_runtime.h"
#include "cli_util.h"
#include "cmd.h"
#include "model.h"

int cmd_info(int argc, char **argv)
{
    const char *dir = NULL, *device = NULL, *v;
    int kv_bf16 = 0, act_bf16 = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: mtpd info --model DIR [--kv-dtype f32|bf16] "
                   "[--act-dtype f32|bf16]\n"
                   "                 [--device D] [--json]\n\n"
                   "Loads the checkpoint and prints its shape, sizes and MTP "
                   "modules as JSON\n(kv_bytes_per_token for the KV dtype "
                   "given, f32 by default), and where it\nwas loaded: "
                   "\"device\" (cpu or cuda:N), \"cuda_build\" (this mtpd "
                   "has the\nCUDA backend), \"cuda_devices\" (GPUs it "
                   "can use), \"act_dtype\" (bf16 when --act-dtype bf16 takes "
                   "effect on\nthis CPU).\n\n"
                   "  --device D   auto (default: a CUDA GPU when this build "
                   "has CUDA and one\n"
                   "               is present, else the CPU), cpu, cuda "
                   "(GPU 0) or cuda:N\n"
                   "  --json       accepted for symmetry with the other "
                   "commands (the output is\n"
                   "               always JSON)\n");
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            /* the output is JSON already */
        } else if ((r = cli_opt(argc, argv, &i, "--model", &v))) {
            if (r < 0)
                return 2;
            dir = v;
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
        } else {
            fprintf(stderr, "mtpd: error: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "mtpd: error: --model is required\n");
        return 2;
    }
    if (cli_device_check(device))
        return 1;
    char err[512] = "";
    struct mtpd_model *m;
    struct mtpd_load_opts o = {.kv_bf16 = kv_bf16, .act_bf16 = act_bf16,
                               .device = device};
    cli_load_opts(&o);
    cli_log_level(MTPD_LOG_INFO); /* what the load found, and its time */
    if (mtpd_model_load(dir, &o, &m, err, sizeof(err))) {
        fprintf(stderr, "mtpd: error: %s\n", err);
        return 1;
    }
    if (cli_device_confirm(m, device)) {
        mtpd_model_free(m);
        return 1;
    }
    const struct mtpd_config *c = mtpd_model_config(m);
    printf("{\"layers\": %d, \"hidden_size\": %d, \"heads\": %d, "
           "\"vocab_size\": %d, \"q_lora_rank\": %d, \"kv_lora_rank\": %d, "
           "\"n_routed_experts\": %d, \"experts_per_tok\": %d, "
           "\"n_shared_experts\": %d, \"yarn\": %s, \"fp8_block\": %d, "
           "\"quant_format\": \"%s\", "
           "\"mtp_modules\": %d, \"weight_bytes\": %zu, "
           "\"active_bytes_per_token\": %zu, \"kv_dtype\": \"%s\", "
           "\"kv_bytes_per_token\": %zu, \"act_dtype\": \"%s\", "
           "\"device\": \"%s\", "
           "\"cuda_build\": %s, \"cuda_devices\": %d}\n",
           c->num_hidden_layers, c->hidden_size, c->num_attention_heads,
           c->vocab_size, c->q_lora_rank, c->kv_lora_rank, c->n_routed_experts,
           c->num_experts_per_tok, c->n_shared_experts,
           c->rope_yarn ? "true" : "false", c->fp8_block, c->quant_format,
           mtpd_model_n_mtp(m),
           mtpd_model_weight_bytes(m), mtpd_model_active_bytes(m),
           mtpd_model_kv_dtype(m), mtpd_kv_bytes_per_token(m),
           mtpd_model_act_dtype(m), cli_model_device(m), cli_cuda_build() ? "true" : "false",
           cli_cuda_devices());
    mtpd_model_free(m);
    return 0;
}
