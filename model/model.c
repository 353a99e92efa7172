/*
 * model.c - load/free a checkpoint directory and report its sizes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "log.h"
#include "model_int.h"
#include "safetensors.h"

const char *mtpd_err_str(int err)
{
    switch (err) {
    case MTPD_OK: return "ok";
    case MTPD_EINVAL: return "invalid argument";
    case MTPD_ENOMEM: return "out of memory";
    case MTPD_EIO: return "i/o error";
    case MTPD_EFORMAT: return "bad checkpoint format";
    case MTPD_EFULL: return "capacity exceeded (KV cache or batch)";
    case MTPD_ENOMTP: return "no such MTP module";
    case MTPD_ENODEV: return "no such device (no GPU, no CUDA in this "
                             "build, or a device error)";
    default: return "unknown error";
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void mark_resident(struct mtpd_model *m);
static void q4s_widen(struct mtpd_model *m);
static void q4_interleave(struct mtpd_model *m);
static void mark_act_bf16(struct mtpd_model *m);

int mtpd_model_load(const char *dir, const struct mtpd_load_opts *opts,
                    struct mtpd_model **out, char *err, size_t errlen)
{
    struct mtpd_load_opts none = {0};
    if (!opts)
        opts = &none;
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    double t0 = now_s();
    struct mtpd_model *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return MTPD_ENOMEM;
    }
    m->device = -1;
    snprintf(m->device_name, sizeof m->device_name, "cpu");
    char path[4096], jerr[200];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    struct json_doc *cfg = json_parse_file(path, jerr, sizeof(jerr));
    if (!cfg) {
        char q[JSON_ESC_CAP];
        snprintf(err, errlen, "%s: %s", json_escz(q, sizeof q, path), jerr);
        free(m);
        return MTPD_EFORMAT;
    }
    int rc = mtpd_config_parse(json_root(cfg), "config.json", &m->cfg, err,
                               errlen);
    json_doc_free(cfg);
    if (rc) {
        free(m);
        return MTPD_EFORMAT;
    }
    char qdir[JSON_ESC_CAP];
    mtpd_logf(MTPD_LOG_INFO, "loading %s: %d layers, hidden %d, vocab %d, "
              "%d experts", json_escz(qdir, sizeof qdir, dir),
              m->cfg.num_hidden_layers, m->cfg.hidden_size,
              m->cfg.vocab_size, m->cfg.n_routed_experts);
    int dev; /* before the weights: a device that is not there fails fast */
    rc = device_select(opts->device, &dev, err, errlen);
    if (rc) {
        free(m);
        return rc;
    }
    if (st_open_dir(dir, &m->st, err, errlen) < 0) {
        free(m);
        return MTPD_EFORMAT;
    }
    m->kv_dtype = opts->kv_bf16 ? KDT_BF16 : KDT_F32;
    /* on a GPU the upload is the slow part: the progress follows it */
    struct mtpd_load_opts bind_opts = *opts;
    if (dev >= 0)
        bind_opts.progress = NULL;
    rc = weights_bind(m, &bind_opts, err, errlen);
    if (rc == 0)
        rc = rope_init(m);
    if (rc == 0 && dev >= 0) {
        rc = dev_model_open(m, dev, opts, err, errlen);
        if (rc == 0) {
            m->device = dev;
            snprintf(m->device_name, sizeof m->device_name, "cuda:%d", dev);
        } else if (device_is_auto(opts->device)) {
            /* auto: a GPU that cannot take this model leaves the CPU */
            mtpd_logf(MTPD_LOG_INFO, "device auto: cpu (%s)", err);
            dev_model_close(m);
            err[0] = '\0';
            rc = 0;
            if (opts->progress) { /* the upload's reports stopped short */
                struct mtpd_load_progress p = {
                    .bytes_done = st_total_bytes(m->st),
                    .bytes_total = st_total_bytes(m->st),
                    .tensors_done = (long)st_count(m->st),
                    .tensors_total = (long)st_count(m->st)};
                opts->progress(opts->progress_ud, &p);
            }
        }
    }
    if (rc) {
        if (rc == MTPD_ENOMEM && !err[0])
            snprintf(err, errlen, "out of memory");
        mtpd_model_free(m);
        return rc;
    }
    if (m->device < 0) {
        mark_resident(m);
        q4s_widen(m);
        if (!opts->keep_q4_layout)
            q4_interleave(m);
    }
    if (m->device < 0 && opts->act_bf16)
        mark_act_bf16(m);
    else if (opts->act_bf16)
        mtpd_logf(MTPD_LOG_INFO, "act dtype bf16: no effect on %s (the GPU "
                  "keeps its own numerics)", m->device_name);
    mtpd_logf(MTPD_LOG_INFO, "loaded %.1f MB of weights, %d MTP module(s), "
              "on %s, in %.2f s", st_total_bytes(m->st) / 1e6, m->n_mtp,
              m->device_name, now_s() - t0);
    *out = m;
    return 0;
}

const char *mtpd_model_kv_dtype(const struct mtpd_model *m)
{
    return m->kv_dtype == KDT_BF16 ? "bf16" : "f32";
}

void mtpd_model_free(struct mtpd_model *m)
{
    if (!m)
        return;
    dev_model_close(m); /* before the host weights it was made from */
    weights_free(m);
    free(m->q4s_exp);
    free(m->q4x8);
    free(m->inv_freq);
    st_close(m->st);
    free(m);
}

const struct mtpd_config *mtpd_model_config(const struct mtpd_model *m)
{
    return &m->cfg;
}

int mtpd_model_n_mtp(const struct mtpd_model *m) { return m->n_mtp; }

static size_t mat_bytes(const struct kmat *k)
{
    return kmat_bytes(k);
}

static size_t mlp_bytes(const struct expert_w *e)
{
    return mat_bytes(&e->gate) + mat_bytes(&e->up) + mat_bytes(&e->down);
}

/* Bytes a layer reads for one token; all_experts counts every expert. */
static size_t layer_bytes(const struct mtpd_config *c, const struct layer_w *w,
                          int all_experts)
{
    /* kv_b_proj is read in its dense form (absorb.c) */
    size_t b = mat_bytes(&w->q_a) + mat_bytes(&w->q_b) + mat_bytes(&w->q) +
               mat_bytes(&w->kv_a) + mat_bytes(&w->kv_bd) + mat_bytes(&w->o);
    if (!w->is_moe)
        return b + mlp_bytes(&w->dense);
    b += mat_bytes(&w->router);
    if (w->has_shared)
        b += mlp_bytes(&w->shared);
    int n = all_experts ? c->n_routed_experts : c->num_experts_per_tok;
    return b + (size_t)n * mlp_bytes(&w->experts[0]);
}

static size_t model_bytes(const struct mtpd_model *m, int all)
{
    size_t b = mat_bytes(&m->lm_head) + kmat_row_bytes(
               m->embed.dtype, m->cfg.hidden_size); /* one embedding row */
    for (int i = 0; i < m->cfg.num_hidden_layers; i++)
        b += layer_bytes(&m->cfg, &m->layers[i], all);
    return b;
}

size_t mtpd_model_weight_bytes(const struct mtpd_model *m)
{
    return model_bytes(m, 1);
}

size_t mtpd_model_active_bytes(const struct mtpd_model *m)
{
    return model_bytes(m, 0);
}

/* fn on every matrix of a layer (the ones layer_bytes counts, kv_b too:
 * keep the two lists in step). */
static void layer_each(struct layer_w *w, int n_experts,
                       void (*fn)(struct kmat *, void *), void *ud)
{
    struct kmat *k[] = {&w->q_a, &w->q_b, &w->q, &w->kv_a, &w->kv_b, &w->o,
                        &w->kv_bd, &w->dense.gate, &w->dense.up,
                        &w->dense.down, &w->router, &w->shared.gate,
                        &w->shared.up, &w->shared.down};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        fn(k[i], ud);
    for (int e = 0; w->experts && e < n_experts; e++) {
        fn(&w->experts[e].gate, ud);
        fn(&w->experts[e].up, ud);
        fn(&w->experts[e].down, ud);
    }
}

/* fn on every weight matrix the CPU forward passes multiply by: the
 * layers, the output head and the MTP modules (not the embeddings, which
 * are only looked up). */
static void model_each(struct mtpd_model *m,
                       void (*fn)(struct kmat *, void *), void *ud)
{
    fn(&m->lm_head, ud);
    for (int i = 0; i < m->cfg.num_hidden_layers; i++)
        layer_each(&m->layers[i], m->cfg.n_routed_experts, fn, ud);
    for (int i = 0; i < m->n_mtp; i++) {
        fn(&m->mtp[i].eh_proj, ud);
        fn(&m->mtp[i].head, ud);
        layer_each(&m->mtp[i].block, m->cfg.n_routed_experts, fn, ud);
    }
}

static void set_resident(struct kmat *k, void *ud)
{
    (void)ud;
    k->resident = 1;
}

/* act_bf16 on the BF16 matrices (the only ones it concerns), counted */
static void set_act_bf16(struct kmat *k, void *ud)
{
    if (k->data != NULL && k->dtype == KDT_BF16) {
        k->act_bf16 = 1;
        ++*(int *)ud;
    }
}

/* mtpd_load_opts.act_bf16 on the CPU: says in the log whether it takes
 * effect here. */
static void mark_act_bf16(struct mtpd_model *m)
{
    int n = 0;
    model_each(m, set_act_bf16, &n);
    m->act_bf16 = n > 0;
    mtpd_logf(MTPD_LOG_INFO, "act dtype bf16: %s", !n ? "no BF16 matrices"
              : !strcmp(mtpd_model_act_dtype(m), "bf16")
                  ? "x rounded to bf16 for the BF16 matrices (AVX512-BF16)"
                  : "not on this CPU path (needs AVX-512 with AVX512-BF16, "
                    "AMX tiles off): exact f32 products");
}

const char *mtpd_model_act_dtype(const struct mtpd_model *m)
{
    /* with AMX tiles on they take the BF16 matrices (kmat_act_bf16) */
    return m->act_bf16 && kisa_bf16_dot() && !kisa_amx_active() ? "bf16"
                                                               : "f32";
}

/* q4s_widen's two passes over the Q4_S matrices: fp16 entries needed,
 * then each expanded and switched to Q4_1. */
struct q4s_pass {
    size_t need, used;
    uint16_t *buf; /* NULL on the counting pass */
};

static void q4s_one(struct kmat *k, void *ud)
{
    struct q4s_pass *ps = ud;
    if (k->data == NULL || k->dtype != KDT_Q4_S || !k->resident)
        return;
    size_t nq = (size_t)k->rows * (size_t)(k->cols / KQ_BLK);
    if (ps->buf == NULL) {
        ps->need += 2 * nq;
        return;
    }
    uint16_t *d = ps->buf + ps->used;
    ps->used += 2 * nq;
    kq4s_expand(k, 0, k->rows, d, d + nq);
    *k = (struct kmat){.dtype = KDT_Q4_1, .rows = k->rows, .cols = k->cols,
                       .data = k->data, .qd = d, .qm = d + nq,
                       .resident = k->resident};
}

/*
 * Q4_S keeps a byte scale and min per block under power-of-two exponents
 * (4.51 bits a weight); its kernels rebuild each block's fp16 scale and
 * min from them, exactly the values kq4s_expand gives, so a Q4_1 matrix
 * holding those computes the same bits. For weights read from memory the
 * smaller bytes win; for a model that stays in the cache the decode is
 * compute-bound and the rebuilding costs: VNNI, one thread, 512x1024 at
 * one token, Q4_S 10.0-10.5 us against Q4_1's 6.4. A resident model's
 * Q4_S matrices (mark_resident) therefore get their scales expanded once
 * (4 bytes a block instead of about 2.3, in one buffer the model owns).
 * Without memory for it they stay Q4_S.
 */
static void q4s_widen(struct mtpd_model *m)
{
    struct q4s_pass ps = {0};
    model_each(m, q4s_one, &ps);
    if (ps.need == 0 || (ps.buf = malloc(ps.need * sizeof *ps.buf)) == NULL)
        return;
    model_each(m, q4s_one, &ps);
    m->q4s_exp = ps.buf;
}

/* q4_interleave's two passes: bytes needed, then each matrix packed. MTP
 * heads that share the output head's weights (head_src) share its copy. */
struct q4x8_pass {
    size_t need, used;
    uint8_t *buf; /* NULL on the counting pass */
    const void *head_src;
    struct kmat head; /* the output head's copy, once made */
    int head_seen, n;
};

static void q4x8_one(struct kmat *k, void *ud)
{
    struct q4x8_pass *ps = ud;
    if (k->data == NULL || (k->dtype != KDT_Q4_S && k->dtype != KDT_Q4_1))
        return;
    int head = k->data == ps->head_src;
    if (head && ps->head_seen) {
        if (ps->buf != NULL)
            *k = ps->head;
        return;
    }
    ps->head_seen |= head;
    size_t b = kq4x8_bytes(k);
    if (ps->buf == NULL) {
        ps->need += b;
        return;
    }
    struct kmat x;
    if (kq4x8_pack(k, ps->buf + ps->used, &x) != 0)
        return;
    ps->used += b;
    ps->n++;
    if (head)
        ps->head = x;
    *k = x;
}

/*
 * On a CPU whose kernels are AVX2 only, the Q4 kernels are bound by the
 * integer pipe, and half of it goes into summing a block's partials
 * across the lanes; with eight rows interleaved (Q4_X8, matmul_q4x8.c)
 * none of that is left: Zen 1, one token, Q4_S 1.24-1.35x the kernel's
 * speed (16384x4096 at two threads: 16.0 -> 19.8 GB/s), the default
 * model's short Q4_1 rows 1.4-2.4x; prefill level. The copy replaces the
 * mapped weights, which are no longer read (the page cache lets them go);
 * without memory for it the matrices stay as they are. Results are the
 * same bits either way.
 */
static void q4_interleave(struct mtpd_model *m)
{
    if (kisa_active() != KISA_AVX2)
        return;
    struct q4x8_pass ps = {.head_src = m->lm_head.data};
    model_each(m, q4x8_one, &ps);
    if (ps.need == 0)
        return;
    if ((ps.buf = aligned_alloc(64, (ps.need + 63) & ~(size_t)63)) == NULL) {
        mtpd_logf(MTPD_LOG_INFO, "Q4 rows interleave: no memory for %.1f MB,"
                  " kept row-major", ps.need / 1e6);
        return;
    }
    ps.head_seen = 0;
    model_each(m, q4x8_one, &ps);
    m->q4x8 = ps.buf;
    mtpd_logf(MTPD_LOG_INFO, "Q4 rows interleaved for AVX2: %d matrices, "
              "%.1f MB", ps.n, ps.used / 1e6);
}

/*
 * A model whose weights (every expert, the MTP modules, one embedding row
 * per token) fit in 3/4 of the last-level cache stays there from one
 * token to the next: its matmuls then skip the row stream, a walk that
 * suits weights read from memory (kernels.h). EPYC Zen 5, 32 MB L3, the
 * default model's decode at q8 (22 MB) and q4 (16 MB): 1.2-1.4x faster
 * without it; at bf16 (41 MB) level either way.
 */
static void mark_resident(struct mtpd_model *m)
{
    size_t b = model_bytes(m, 1), llc = kisa_llc_bytes();
    for (int i = 0; i < m->n_mtp; i++)
        b += kmat_bytes(&m->mtp[i].eh_proj) + kmat_bytes(&m->mtp[i].head) +
             layer_bytes(&m->cfg, &m->mtp[i].block, 1);
    if (llc == 0 || b > llc / 4 * 3)
        return;
    model_each(m, set_resident, NULL);
}
