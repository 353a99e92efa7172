/*
 * weights.c - binds checkpoint tensors (HF DeepseekV3 names) to the model's
 * weight structs, checking presence, dtype and shape of each.
 *
 * MTP module m is decoder layer num_hidden_layers + m with DeepSeek's extra
 * tensors (embed_tokens, enorm, hnorm, eh_proj, shared_head.{norm,head}).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model_int.h"
#include "safetensors.h"

struct binder {
    const struct st_set *st;
    const struct mtpd_config *cfg;
    char *err;
    size_t errlen;
    int failed;
    struct mtpd_load_progress pr; /* tensors bound so far */
    mtpd_load_progress_fn progress;
    void *progress_ud;
};

/* st_find that counts what it binds for the progress callback. */
static const struct st_tensor *find(struct binder *b, const char *name)
{
    const struct st_tensor *t = st_find(b->st, name);
    if (t) {
        b->pr.tensors_done++;
        b->pr.bytes_done += t->nbytes;
    }
    return t;
}

static void report(struct binder *b, int last)
{
    if (!b->progress)
        return;
    if (last) { /* tensors never bound (skipped MTP modules, extras) */
        b->pr.tensors_done = b->pr.tensors_total;
        b->pr.bytes_done = b->pr.bytes_total;
    }
    b->progress(b->progress_ud, &b->pr);
}

static const char *file_of(const struct binder *b, const struct st_tensor *t)
{
    if (!t)
        return st_source(b->st);
    const char *s = strrchr(t->file, '/');
    return s ? s + 1 : t->file;
}

static void bind_fail(struct binder *b, const struct st_tensor *t,
                      const char *name, const char *fmt, long long x0,
                      long long x1, long long x2, long long x3)
{
    if (b->failed)
        return;
    b->failed = 1;
    char qf[JSON_ESC_CAP], qn[JSON_ESC_CAP]; /* shard names come from input */
    int n = snprintf(b->err, b->errlen, "%s: %s: ",
                     json_escz(qf, sizeof qf, file_of(b, t)),
                     json_escz(qn, sizeof qn, name));
    if (n > 0 && (size_t)n < b->errlen)
        snprintf(b->err + n, b->errlen - n, fmt, x0, x1, x2, x3);
}

/* NAME_SUFFIX of dtype dt (F16, U8 or I8) and shape [rows, n]: a
 * quantized weight's scales, mins or exponents; NULL after bind_fail. */
static const struct st_tensor *bind_side(struct binder *b, const char *name,
                                         const char *suffix, enum st_dtype dt,
                                         int rows, long long n)
{
    char sn[512];
    snprintf(sn, sizeof(sn), "%s%s", name, suffix);
    const struct st_tensor *s = find(b, sn);
    if (!s) {
        bind_fail(b, NULL, sn, "missing tensor (block scales of a quantized "
                  "weight)", 0, 0, 0, 0);
        return NULL;
    }
    if (s->dtype != dt) {
        bind_fail(b, s, sn, dt == ST_F16  ? "wrong dtype: expected F16"
                            : dt == ST_U8 ? "wrong dtype: expected U8"
                                          : "wrong dtype: expected I8",
                  0, 0, 0, 0);
        return NULL;
    }
    if (s->ndim != 2 || s->shape[0] != rows || s->shape[1] != n) {
        bind_fail(b, s, sn, "wrong shape: expected [%lld, %lld]", rows, n, 0,
                  0);
        return NULL;
    }
    return s;
}

/* NAME_SUFFIX: F16 [rows, nb] of finite values (a block scale or min of a
 * Q8_0 / Q4_1 weight); NULL after bind_fail. */
static const uint16_t *bind_qscales(struct binder *b, const char *name,
                                    const char *suffix, int rows, int nb)
{
    const struct st_tensor *s = bind_side(b, name, suffix, ST_F16, rows, nb);
    if (!s)
        return NULL;
    const uint16_t *v = s->data;
    for (size_t i = 0; i < (size_t)rows * nb; i++)
        if ((v[i] & 0x7c00) == 0x7c00) {
            bind_fail(b, s, s->name, "damaged: element %lld is not finite",
                      (long long)i, 0, 0, 0);
            return NULL;
        }
    return v;
}

/* NAME_SUFFIX: I8 or U8 [rows, n] (a Q4_S weight's scale or min bytes, or
 * its exponent pairs); NULL after bind_fail. */
static const void *bind_qbytes(struct binder *b, const char *name,
                               const char *suffix, enum st_dtype dt, int rows,
                               long long n)
{
    const struct st_tensor *s = bind_side(b, name, suffix, dt, rows, n);
    return s ? s->data : NULL;
}

/* An I8 (Q8_0) or U8 (Q4_1 / Q4_S) weight of an "mtpd" quantized
 * checkpoint (q8_0: I8 only; q4_1 / q4_s: U8, and I8 for the output
 * heads): codes [rows, cols] or [rows, cols / 2]; Q8_0 / Q4_1:
 * NAME_qscale (and NAME_qmin) F16 [rows, cols / KQ_BLK]; Q4_S: NAME_qscale
 * U8 and NAME_qmin I8 [rows, cols / KQ_BLK], NAME_qexp I8 [rows, 2 *
 * groups] with every exponent in range. */
static struct kmat bind_qmat(struct binder *b, const struct st_tensor *t,
                             const char *name, int rows, int cols)
{
    struct kmat m = {0};
    const char *f = b->cfg->quant_format;
    int q8 = t->dtype == ST_I8, q4s = !strcmp(f, "q4_s");
    /* q4 checkpoints hold their output heads as Q8_0 (quantize.h) */
    if (q8 ? !*f : strcmp(f, "q4_1") != 0 && !q4s) {
        bind_fail(b, t, name, q8 ? "I8 weight but config.json has no mtpd "
                  "quantization_config" : "U8 weight but config.json's "
                  "quantization_config is not mtpd q4_1 or q4_s", 0, 0, 0,
                  0);
        return m;
    }
    long long qc = q8 ? cols : cols / 2;
    if (cols % KQ_BLK != 0 || t->ndim != 2 || t->shape[0] != rows ||
        t->shape[1] != qc) {
        bind_fail(b, t, name, "wrong shape: expected [%lld, %lld] (%lld "
                  "columns, whole blocks of 32), got %lld dims", rows, qc,
                  cols, t->ndim);
        return m;
    }
    m.dtype = q8 ? KDT_Q8_0 : q4s ? KDT_Q4_S : KDT_Q4_1;
    m.rows = rows;
    m.cols = cols;
    m.data = t->data;
    int nb = cols / KQ_BLK;
    if (m.dtype == KDT_Q4_S) {
        long long ne = kq4s_ex_bytes(cols);
        m.qsc = bind_qbytes(b, name, "_qscale", ST_U8, rows, nb);
        if (m.qsc)
            m.qmn = bind_qbytes(b, name, "_qmin", ST_I8, rows, nb);
        if (m.qmn)
            m.qexp = bind_qbytes(b, name, "_qexp", ST_I8, rows, ne);
        if (m.qexp && kq4s_check(&m) != 0)
            bind_fail(b, t, name, "damaged: a block exponent (_qexp) outside "
                      "[%lld, %lld]", KQ4S_EMIN, KQ4S_EMAX, 0, 0);
        return m;
    }
    m.qd = bind_qscales(b, name, "_qscale", rows, nb);
    if (!q8 && m.qd)
        m.qm = bind_qscales(b, name, "_qmin", rows, nb);
    return m;
}

/* Matrix [rows, cols]. Float types, F8_E4M3 with a matching
 * NAME_scale_inv when the config declares fp8 block quantization, or
 * mtpd's Q8_0 / Q4_1 / Q4_S (bind_qmat). */
static struct kmat bind_mat(struct binder *b, const char *name, int rows,
                            int cols)
{
    struct kmat m = {0};
    if (b->failed)
        return m;
    const struct st_tensor *t = find(b, name);
    if (!t) {
        bind_fail(b, NULL, name, "missing tensor", 0, 0, 0, 0);
        return m;
    }
    if (t->dtype == ST_I8 || t->dtype == ST_U8)
        return bind_qmat(b, t, name, rows, cols);
    int kt = st_kdtype(t->dtype);
    if (kt < 0) {
        bind_fail(b, t, name, "unsupported dtype for a weight matrix", 0, 0,
                  0, 0);
        return m;
    }
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        bind_fail(b, t, name, "wrong shape: expected [%lld, %lld], got %lld dims"
                  " [%lld, ...]", rows, cols, t->ndim,
                  t->ndim ? t->shape[0] : 0);
        return m;
    }
    m.dtype = (enum kdtype)kt;
    m.rows = rows;
    m.cols = cols;
    m.data = t->data;
    if (m.dtype == KDT_F8_E4M3) {
        int blk = b->cfg->fp8_block;
        if (!blk) {
            bind_fail(b, t, name, "F8_E4M3 weight but config.json has no fp8 "
                      "quantization_config", 0, 0, 0, 0);
            return m;
        }
        char sn[512];
        snprintf(sn, sizeof(sn), "%s_scale_inv", name);
        const struct st_tensor *s = find(b, sn);
        long long sr = (rows + blk - 1) / blk, sc = (cols + blk - 1) / blk;
        if (!s) {
            bind_fail(b, NULL, sn, "missing tensor (scale of an F8 weight)",
                      0, 0, 0, 0);
            return m;
        }
        if (s->dtype != ST_F32) {
            bind_fail(b, s, sn, "wrong dtype: expected F32", 0, 0, 0, 0);
            return m;
        }
        if (s->ndim != 2 || s->shape[0] != sr || s->shape[1] != sc) {
            bind_fail(b, s, sn, "wrong shape: expected [%lld, %lld]", sr, sc,
                      0, 0);
            return m;
        }
        m.scale = s->data;
        m.blk = blk;
    }
    return m;
}

static struct wvec bind_vec(struct binder *b, const char *name, int n)
{
    struct wvec v = {0};
    if (b->failed)
        return v;
    const struct st_tensor *t = find(b, name);
    if (!t) {
        bind_fail(b, NULL, name, "missing tensor", 0, 0, 0, 0);
        return v;
    }
    int kt = st_kdtype(t->dtype);
    if (kt < 0 || kt == KDT_F8_E4M3) {
        bind_fail(b, t, name, "wrong dtype: expected F32, BF16 or F16", 0, 0,
                  0, 0);
        return v;
    }
    if (t->ndim != 1 || t->shape[0] != n) {
        bind_fail(b, t, name, "wrong shape: expected [%lld]", n, 0, 0, 0);
        return v;
    }
    v.data = t->data;
    v.dtype = (enum kdtype)kt;
    v.n = n;
    return v;
}

static void bind_mlp(struct binder *b, const char *pre, int inter,
                     struct expert_w *e)
{
    int hid = b->cfg->hidden_size;
    char n[512];
    snprintf(n, sizeof(n), "%s.gate_proj.weight", pre);
    e->gate = bind_mat(b, n, inter, hid);
    snprintf(n, sizeof(n), "%s.up_proj.weight", pre);
    e->up = bind_mat(b, n, inter, hid);
    snprintf(n, sizeof(n), "%s.down_proj.weight", pre);
    e->down = bind_mat(b, n, hid, inter);
}

static void bind_layer(struct binder *b, int li, struct layer_w *w,
                       int is_moe)
{
    const struct mtpd_config *c = b->cfg;
    int hid = c->hidden_size, H = c->num_attention_heads;
    int qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    char n[512];
#define NAME(fmt) (snprintf(n, sizeof(n), "model.layers.%d." fmt, li), n)
    w->attn_norm = bind_vec(b, NAME("input_layernorm.weight"), hid);
    w->ffn_norm = bind_vec(b, NAME("post_attention_layernorm.weight"), hid);
    if (c->q_lora_rank > 0) {
        w->q_a = bind_mat(b, NAME("self_attn.q_a_proj.weight"), c->q_lora_rank,
                          hid);
        w->q_a_norm = bind_vec(b, NAME("self_attn.q_a_layernorm.weight"),
                               c->q_lora_rank);
        w->q_b = bind_mat(b, NAME("self_attn.q_b_proj.weight"), H * qk,
                          c->q_lora_rank);
    } else {
        w->q = bind_mat(b, NAME("self_attn.q_proj.weight"), H * qk, hid);
    }
    w->kv_a = bind_mat(b, NAME("self_attn.kv_a_proj_with_mqa.weight"),
                       c->kv_lora_rank + c->qk_rope_head_dim, hid);
    w->kv_a_norm = bind_vec(b, NAME("self_attn.kv_a_layernorm.weight"),
                            c->kv_lora_rank);
    w->kv_b = bind_mat(b, NAME("self_attn.kv_b_proj.weight"),
                       H * (c->qk_nope_head_dim + c->v_head_dim),
                       c->kv_lora_rank);
    w->o = bind_mat(b, NAME("self_attn.o_proj.weight"), hid,
                    H * c->v_head_dim);
    w->is_moe = is_moe;
    if (!is_moe) {
        char pre[256];
        snprintf(pre, sizeof(pre), "model.layers.%d.mlp", li);
        bind_mlp(b, pre, c->intermediate_size, &w->dense);
        return;
    }
    int E = c->n_routed_experts;
    w->router = bind_mat(b, NAME("mlp.gate.weight"), E, hid);
    const struct st_tensor *bias =
        find(b, NAME("mlp.gate.e_score_correction_bias"));
    if (bias) {
        if (bias->dtype != ST_F32 || bias->ndim != 1 || bias->shape[0] != E)
            bind_fail(b, bias, n, "expected F32 [%lld]", E, 0, 0, 0);
        else
            w->router_bias = bias->data;
    } else if (strcmp(c->topk_method, "noaux_tc") == 0) {
        bind_fail(b, NULL, n, "missing tensor (needed by topk_method noaux_tc)",
                  0, 0, 0, 0);
    }
    w->experts = calloc((size_t)E, sizeof(*w->experts));
    if (!w->experts) {
        bind_fail(b, NULL, "experts", "out of memory", 0, 0, 0, 0);
        return;
    }
    for (int e = 0; e < E && !b->failed; e++) {
        char pre[256];
        snprintf(pre, sizeof(pre), "model.layers.%d.mlp.experts.%d", li, e);
        bind_mlp(b, pre, c->moe_intermediate_size, &w->experts[e]);
    }
    if (c->n_shared_experts > 0) {
        char pre[256];
        snprintf(pre, sizeof(pre), "model.layers.%d.mlp.shared_experts", li);
        w->has_shared = 1;
        bind_mlp(b, pre, c->moe_intermediate_size * c->n_shared_experts,
                 &w->shared);
    }
#undef NAME
}

/* Optional matrix: absent -> returns 0 and leaves *out alone. */
static int bind_opt_mat(struct binder *b, const char *name, int rows,
                        int cols, struct kmat *out)
{
    if (!st_find(b->st, name))
        return 0;
    *out = bind_mat(b, name, rows, cols);
    return 1;
}

static void bind_mtp(struct binder *b, struct mtpd_model *m, int k)
{
    const struct mtpd_config *c = &m->cfg;
    int li = c->num_hidden_layers + k, hid = c->hidden_size;
    struct mtp_w *t = &m->mtp[k];
    char n[512];
#define NAME(fmt) (snprintf(n, sizeof(n), "model.layers.%d." fmt, li), n)
    t->embed = m->embed;
    bind_opt_mat(b, NAME("embed_tokens.weight"), c->vocab_size, hid,
                 &t->embed);
    t->head = m->lm_head;
    bind_opt_mat(b, NAME("shared_head.head.weight"), c->vocab_size, hid,
                 &t->head);
    t->enorm = bind_vec(b, NAME("enorm.weight"), hid);
    t->hnorm = bind_vec(b, NAME("hnorm.weight"), hid);
    t->eh_proj = bind_mat(b, NAME("eh_proj.weight"), hid, 2 * hid);
    t->head_norm = bind_vec(b, NAME("shared_head.norm.weight"), hid);
    /* MoE or dense by what the checkpoint holds */
    int moe = c->n_routed_experts > 0 && st_find(b->st, NAME("mlp.gate.weight"));
#undef NAME
    bind_layer(b, li, &t->block, moe);
}

int weights_bind(struct mtpd_model *m, const struct mtpd_load_opts *o,
                 char *err, size_t errlen)
{
    const struct mtpd_config *c = &m->cfg;
    struct binder b = {.st = m->st, .cfg = c, .err = err, .errlen = errlen,
                       .progress = o->progress,
                       .progress_ud = o->progress_ud};
    b.pr.tensors_total = (long)st_count(m->st);
    b.pr.bytes_total = st_total_bytes(m->st);
    int no_mtp = o->no_mtp;
    int hid = c->hidden_size;
    m->embed = bind_mat(&b, "model.embed_tokens.weight", c->vocab_size, hid);
    m->final_norm = bind_vec(&b, "model.norm.weight", hid);
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        bind_opt_mat(&b, "lm_head.weight", c->vocab_size, hid, &m->lm_head);
    } else {
        m->lm_head = bind_mat(&b, "lm_head.weight", c->vocab_size, hid);
    }
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof(*m->layers));
    if (!m->layers) {
        snprintf(err, errlen, "out of memory");
        return MTPD_ENOMEM;
    }
    for (int i = 0; i < c->num_hidden_layers && !b.failed; i++) {
        bind_layer(&b, i, &m->layers[i], mtpd_config_layer_is_moe(c, i));
        report(&b, 0);
    }
    if (b.failed)
        return MTPD_EFORMAT;
    for (int i = 0; i < c->num_hidden_layers; i++)
        if (absorb_init(c, &m->layers[i])) {
            snprintf(err, errlen, "out of memory");
            return MTPD_ENOMEM;
        }
    /* MTP modules: those the config declares and the checkpoint has. A
     * missing eh_proj means "no MTP module here", not an error. */
    m->n_mtp = 0;
    int want = no_mtp ? 0 : c->num_nextn_predict_layers;
    if (want > MTPD_MAX_MTP)
        want = MTPD_MAX_MTP;
    for (int k = 0; k < want; k++) {
        char n[128];
        snprintf(n, sizeof(n), "model.layers.%d.eh_proj.weight",
                 c->num_hidden_layers + k);
        if (!st_find(m->st, n))
            break;
        bind_mtp(&b, m, k);
        if (b.failed)
            return MTPD_EFORMAT;
        if (absorb_init(c, &m->mtp[k].block)) {
            snprintf(err, errlen, "out of memory");
            return MTPD_ENOMEM;
        }
        m->n_mtp = k + 1;
        report(&b, 0);
    }
    report(&b, 1);
    return 0;
}

static void free_layer(struct layer_w *w)
{
    free(w->experts);
    w->experts = NULL;
    absorb_free(w);
}

void weights_free(struct mtpd_model *m)
{
    if (m->layers)
        for (int i = 0; i < m->cfg.num_hidden_layers; i++)
            free_layer(&m->layers[i]);
    free(m->layers);
    m->layers = NULL;
    for (int k = 0; k < MTPD_MAX_MTP; k++) /* also a half-bound module */
        free_layer(&m->mtp[k].block);
}
