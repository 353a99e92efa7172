/*
 * config.c - DeepseekV3Config from config.json.
 *
 * Required keys are those without a safe default; optional keys take the
 * DeepseekV3Config defaults. Values are range-checked here once so the
 * forward pass can trust them.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "json.h"

struct cfg_reader {
    const struct json *root;
    const char *path;
    char *err;
    size_t errlen;
    int failed;
};

static void cfg_fail(struct cfg_reader *r, const char *key, const char *what)
{
    if (r->failed)
        return;
    r->failed = 1;
    char q[JSON_ESC_CAP];
    snprintf(r->err, r->errlen, "%s: %s: %s", json_escz(q, sizeof q, r->path),
             key, what);
}

/* "KEY: unsupported value "V" (allowed)": the value as the file holds it,
 * escaped (json_esc), not the copy cut to fit struct mtpd_config. */
static void cfg_unsupported(struct cfg_reader *r, const struct json *obj,
                            const char *key, const char *shown_key,
                            const char *allowed)
{
    const struct json *v = json_get(obj, key);
    char q[JSON_ESC_CAP], msg[JSON_ESC_CAP + 96];
    if (v && v->type == JSON_STRING)
        snprintf(msg, sizeof msg, "unsupported value \"%s\" (%s)",
                 json_esc(q, sizeof q, v->u.str, v->len), allowed);
    else
        snprintf(msg, sizeof msg, "unsupported (%s)", allowed);
    cfg_fail(r, shown_key, msg);
}

/* Reads an integer key. required: missing is an error; else *out = def.
 * A JSON null counts as missing. */
static int cfg_int(struct cfg_reader *r, const char *key, int required,
                   int def, int lo, int hi)
{
    const struct json *v = json_get(r->root, key);
    if (!v || v->type == JSON_NULL) {
        if (required)
            cfg_fail(r, key, "missing required key");
        return def;
    }
    int64_t x;
    if (json_int(v, &x) < 0) {
        cfg_fail(r, key, "expected an integer");
        return def;
    }
    if (x < lo || x > hi) {
        char msg[96];
        snprintf(msg, sizeof(msg), "value %lld out of range [%d, %d]",
                 (long long)x, lo, hi);
        cfg_fail(r, key, msg);
        return def;
    }
    return (int)x;
}

static float cfg_float(struct cfg_reader *r, const struct json *obj,
                       const char *key, float def)
{
    const struct json *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL)
        return def;
    double d;
    if (json_double(v, &d) < 0) {
        cfg_fail(r, key, "expected a number");
        return def;
    }
    return (float)d;
}

static int cfg_bool(struct cfg_reader *r, const char *key, int def)
{
    const struct json *v = json_get(r->root, key);
    if (!v || v->type == JSON_NULL)
        return def;
    int b;
    if (json_bool(v, &b) < 0) {
        cfg_fail(r, key, "expected true or false");
        return def;
    }
    return b;
}

static void cfg_str(struct cfg_reader *r, const char *key, const char *def,
                    char *out, size_t cap)
{
    const struct json *v = json_get(r->root, key);
    const char *s = def;
    if (v && v->type != JSON_NULL) {
        s = json_str(v);
        if (!s) {
            cfg_fail(r, key, "expected a string");
            s = def;
        }
    }
    snprintf(out, cap, "%s", s);
}

/* bos/eos may be an int, null, or (rarely) a list; take the first. */
static int cfg_token_id(struct cfg_reader *r, const char *key)
{
    const struct json *v = json_get(r->root, key);
    if (v && v->type == JSON_ARRAY)
        v = json_at(v, 0);
    if (!v || v->type == JSON_NULL)
        return -1;
    int64_t x;
    if (json_int(v, &x) < 0 || x < 0 || x > (1 << 30)) {
        cfg_fail(r, key, "expected a token id");
        return -1;
    }
    return (int)x;
}

static void read_rope_scaling(struct cfg_reader *r, struct mtpd_config *c)
{
    const struct json *rs = json_get(r->root, "rope_scaling");
    if (!rs || rs->type == JSON_NULL)
        return;
    if (rs->type != JSON_OBJECT) {
        cfg_fail(r, "rope_scaling", "expected an object or null");
        return;
    }
    const char *type = json_str(json_get(rs, "type"));
    if (!type)
        type = json_str(json_get(rs, "rope_type"));
    if (!type) {
        cfg_fail(r, "rope_scaling.type", "missing");
        return;
    }
    if (strcmp(type, "default") == 0)
        return;
    if (strcmp(type, "yarn") != 0) {
        cfg_unsupported(r, rs, json_get(rs, "type") ? "type" : "rope_type",
                        "rope_scaling.type", "only yarn");
        return;
    }
    c->rope_yarn = 1;
    c->yarn_factor = cfg_float(r, rs, "factor", 1.0f);
    double omp = cfg_float(r, rs, "original_max_position_embeddings", 4096);
    c->yarn_original_max_pos = (int)omp;
    c->yarn_beta_fast = cfg_float(r, rs, "beta_fast", 32.0f);
    c->yarn_beta_slow = cfg_float(r, rs, "beta_slow", 1.0f);
    c->yarn_mscale = cfg_float(r, rs, "mscale", 0.0f); /* 0: absent */
    c->yarn_mscale_all_dim = cfg_float(r, rs, "mscale_all_dim", 0.0f);
    if (!(c->yarn_factor >= 1.0f) || c->yarn_original_max_pos <= 0)
        cfg_fail(r, "rope_scaling", "factor must be >= 1 and "
                 "original_max_position_embeddings > 0");
}

static void read_quant(struct cfg_reader *r, struct mtpd_config *c)
{
    const struct json *q = json_get(r->root, "quantization_config");
    if (!q || q->type == JSON_NULL)
        return;
    const char *method = json_str(json_get(q, "quant_method"));
    if (method && strcmp(method, "mtpd") == 0) { /* mtpd quantize */
        const char *fmt = json_str(json_get(q, "format"));
        if (!fmt || (strcmp(fmt, "q8_0") != 0 && strcmp(fmt, "q4_1") != 0 &&
                     strcmp(fmt, "q4_s") != 0)) {
            cfg_unsupported(r, q, "format", "quantization_config.format",
                            "q8_0, q4_1 or q4_s");
            return;
        }
        snprintf(c->quant_format, sizeof c->quant_format, "%s", fmt);
        return;
    }
    if (!method || strcmp(method, "fp8") != 0) {
        cfg_unsupported(r, q, "quant_method",
                        "quantization_config.quant_method", "fp8 or mtpd");
        return;
    }
    const struct json *bs = json_get(q, "weight_block_size");
    int64_t b0, b1;
    if (!bs || json_int(json_at(bs, 0), &b0) < 0 ||
        json_int(json_at(bs, 1), &b1) < 0 || b0 != b1 || b0 <= 0 ||
        b0 > 4096) {
        cfg_fail(r, "quantization_config.weight_block_size",
                 "expected [N, N] with 0 < N <= 4096");
        return;
    }
    c->fp8_block = (int)b0;
}

int mtpd_config_parse(const struct json *root, const char *path,
                      struct mtpd_config *c, char *err, size_t errlen)
{
    struct cfg_reader r = {.root = root, .path = path, .err = err,
                           .errlen = errlen};
    memset(c, 0, sizeof(*c));
    if (!root || root->type != JSON_OBJECT) {
        char q[JSON_ESC_CAP];
        snprintf(err, errlen, "%s: top level is not a JSON object",
                 json_escz(q, sizeof q, path));
        return -1;
    }
    const int BIG = 1 << 24;
    c->vocab_size = cfg_int(&r, "vocab_size", 1, 0, 1, BIG);
    c->hidden_size = cfg_int(&r, "hidden_size", 1, 0, 1, 1 << 16);
    c->intermediate_size = cfg_int(&r, "intermediate_size", 1, 0, 1, 1 << 20);
    c->num_hidden_layers = cfg_int(&r, "num_hidden_layers", 1, 0, 1, 1024);
    c->num_attention_heads = cfg_int(&r, "num_attention_heads", 1, 0, 1, 4096);
    c->q_lora_rank = cfg_int(&r, "q_lora_rank", 0, 0, 1, 1 << 16);
    c->kv_lora_rank = cfg_int(&r, "kv_lora_rank", 1, 0, 1, 1 << 16);
    c->qk_nope_head_dim = cfg_int(&r, "qk_nope_head_dim", 1, 0, 1, 4096);
    c->qk_rope_head_dim = cfg_int(&r, "qk_rope_head_dim", 1, 0, 2, 4096);
    c->v_head_dim = cfg_int(&r, "v_head_dim", 1, 0, 1, 4096);
    c->n_routed_experts = cfg_int(&r, "n_routed_experts", 0, 0, 0, 4096);
    c->n_shared_experts = cfg_int(&r, "n_shared_experts", 0, 0, 0, 1024);
    c->num_experts_per_tok = cfg_int(&r, "num_experts_per_tok", 0, 0, 0, 1024);
    c->moe_intermediate_size =
        cfg_int(&r, "moe_intermediate_size", c->n_routed_experts > 0, 0, 0,
                1 << 20);
    c->first_k_dense_replace = cfg_int(&r, "first_k_dense_replace", 0, 0, 0,
                                       1024);
    c->moe_layer_freq = cfg_int(&r, "moe_layer_freq", 0, 1, 1, 1024);
    c->n_group = cfg_int(&r, "n_group", 0, 1, 1, 1024);
    c->topk_group = cfg_int(&r, "topk_group", 0, 1, 1, 1 << 16);
    c->norm_topk_prob = cfg_bool(&r, "norm_topk_prob", 0);
    c->routed_scaling_factor =
        cfg_float(&r, root, "routed_scaling_factor", 1.0f);
    cfg_str(&r, "topk_method", "noaux_tc", c->topk_method,
            sizeof(c->topk_method));
    cfg_str(&r, "scoring_func", "sigmoid", c->scoring_func,
            sizeof(c->scoring_func));
    c->rms_norm_eps = cfg_float(&r, root, "rms_norm_eps", 1e-6f);
    c->rope_theta = cfg_float(&r, root, "rope_theta", 10000.0f);
    c->max_position_embeddings =
        cfg_int(&r, "max_position_embeddings", 0, 4096, 1, 1 << 30);
    read_rope_scaling(&r, c);
    c->tie_word_embeddings = cfg_bool(&r, "tie_word_embeddings", 0);
    c->num_nextn_predict_layers =
        cfg_int(&r, "num_nextn_predict_layers", 0, 0, 0, 64);
    c->bos_token_id = cfg_token_id(&r, "bos_token_id");
    c->eos_token_id = cfg_token_id(&r, "eos_token_id");
    read_quant(&r, c);
    if (r.failed)
        return -1;

    /* cross-field consistency */
    if (c->qk_rope_head_dim % 2)
        cfg_fail(&r, "qk_rope_head_dim", "must be even");
    if (c->n_routed_experts > 0) {
        if (c->num_experts_per_tok < 1 ||
            c->num_experts_per_tok > c->n_routed_experts)
            cfg_fail(&r, "num_experts_per_tok",
                     "must be in [1, n_routed_experts]");
        if (c->n_routed_experts % c->n_group)
            cfg_fail(&r, "n_group", "must divide n_routed_experts");
        if (c->topk_group > c->n_group)
            cfg_fail(&r, "topk_group", "must be <= n_group");
        if (c->moe_intermediate_size < 1)
            cfg_fail(&r, "moe_intermediate_size", "must be >= 1");
    }
    if (strcmp(c->scoring_func, "sigmoid") && strcmp(c->scoring_func, "softmax"))
        cfg_unsupported(&r, root, "scoring_func", "scoring_func",
                        "sigmoid or softmax");
    if (strcmp(c->topk_method, "noaux_tc") && strcmp(c->topk_method, "greedy") &&
        strcmp(c->topk_method, "group_limited_greedy"))
        cfg_unsupported(&r, root, "topk_method", "topk_method",
                        "noaux_tc, greedy, group_limited_greedy");
    if (c->bos_token_id >= c->vocab_size)
        cfg_fail(&r, "bos_token_id", "not below vocab_size");
    if (c->eos_token_id >= c->vocab_size)
        cfg_fail(&r, "eos_token_id", "not below vocab_size");
    return r.failed ? -1 : 0;
}

int mtpd_config_layer_is_moe(const struct mtpd_config *c, int layer)
{
    /* MTP layers (layer >= num_hidden_layers) are always MoE when the model
     * has experts, as in DeepSeek-V3 (layer 61). */
    if (c->n_routed_experts <= 0)
        return 0;
    return layer >= c->first_k_dense_replace &&
           layer % c->moe_layer_freq == 0;
}

int mtpd_config_qk_head_dim(const struct mtpd_config *c)
{
    return c->qk_nope_head_dim + c->qk_rope_head_dim;
}
