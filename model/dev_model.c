/*
 * dev_model.c - the model's weights on a GPU, uploaded once at load, and
 * the KV pages of its pools in device memory.
 *
 * Every matrix keeps its checkpoint dtype (bf16 as bf16, F8_E4M3 with its
 * block scales, mtpd's Q8_0 / Q4_1 with theirs): the kcuda ops dequantise
 * inside their kernels. The exception is kv_b_proj, uploaded in the dense
 * form absorption reads (layer_w.kv_bd: the checkpoint's F32 / BF16 / F16,
 * or absorb.c's fp32 copy; an F8 or Q8_0 kv_b the CPU reads in place is
 * converted to fp32 for the upload). Tied matrices (lm_head = embed,
 * an MTP module's embed / head = the main one's) are uploaded once.
 *
 * The upload goes layer by layer and reports progress through the load's
 * callback (bytes of checkpoint tensors uploaded so far). The host
 * weights (the mmap'd checkpoint) stay: spec/'s draft head reads an MTP
 * head on the CPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_int.h"
#include "log.h"
#include "safetensors.h"

int dev_built(void) { return 1; }

int dev_count(char *why, size_t whylen)
{
    int n = kcuda_device_count();
    if (n <= 0) {
        const char *e = kcuda_last_error();
        snprintf(why, whylen, "%s", e && *e ? e : "none visible (no driver "
                 "or no GPU)");
        return 0;
    }
    return n;
}

int dev_err(int krc)
{
    switch (krc) {
    case 0: return 0;
    case MTPD_K_EINVAL: return MTPD_EINVAL;
    case MTPD_K_ENOMEM: return MTPD_ENOMEM;
    default: return MTPD_ENODEV; /* MTPD_K_EDEV: the device failed */
    }
}

/* ---- upload ------------------------------------------------------------ */

struct uploader {
    struct dev_model *dm;
    struct mtpd_load_progress pr;
    mtpd_load_progress_fn progress;
    void *progress_ud;
    char *err;
    size_t errlen;
    int rc;      /* first failure */
};

static void up_fail(struct uploader *u, int krc, const char *what)
{
    if (u->rc)
        return;
    u->rc = krc == MTPD_K_ENOMEM || krc == 0 ? MTPD_ENOMEM : dev_err(krc);
    const char *e = kcuda_last_error();
    snprintf(u->err, u->errlen, "cuda:%d: uploading %s: %s", u->dm->index,
             what, e && *e ? e : "out of device memory");
}

/* Tensors a host matrix stands for (data, scales, mins) and their bytes. */
static void count(struct uploader *u, const struct kmat *h)
{
    u->pr.tensors_done += 1 + (h->scale != NULL) + (h->qd != NULL) +
                          (h->qm != NULL);
    u->pr.bytes_done += kmat_bytes(h);
}

static void up_mat(struct uploader *u, const struct kmat *h, struct kdmat *d,
                   const char *what)
{
    memset(d, 0, sizeof(*d));
    if (u->rc || !h->data)
        return; /* not in this model (q when q_lora_rank > 0, ...) */
    int krc = kcuda_mat_upload(u->dm->g, h, d);
    if (krc) {
        memset(d, 0, sizeof(*d));
        up_fail(u, krc, what);
        return;
    }
    u->dm->bytes += kmat_bytes(h);
    count(u, h);
}

/* kv_b in the dense form the device's absorption reads: an F8 or Q8_0
 * kv_b the CPU reads in place (absorb.c) goes up as fp32, converted
 * here. */
static void up_kvb(struct uploader *u, const struct kmat *h, struct kdmat *d,
                   const char *what)
{
    if ((h->dtype != KDT_F8_E4M3 && h->dtype != KDT_Q8_0) || u->rc ||
        !h->data) {
        up_mat(u, h, d, what);
        return;
    }
    memset(d, 0, sizeof(*d));
    size_t cols = (size_t)h->cols;
    float *f = malloc(sizeof(float) * (size_t)h->rows * cols);
    if (!f) {
        up_fail(u, MTPD_K_ENOMEM, what);
        return;
    }
    for (int r = 0; r < h->rows; r++)
        kmat_row_f32(h, r, f + (size_t)r * cols);
    struct kmat k = {.dtype = KDT_F32, .rows = h->rows, .cols = h->cols,
                     .data = f};
    int krc = kcuda_mat_upload(u->dm->g, &k, d);
    free(f);
    if (krc) {
        memset(d, 0, sizeof(*d));
        up_fail(u, krc, what);
        return;
    }
    u->dm->bytes += kmat_bytes(&k);
    count(u, h);
}

static void up_vec(struct uploader *u, const struct wvec *h,
                   struct dev_vec *d, const char *what)
{
    memset(d, 0, sizeof(*d));
    if (u->rc || !h->data)
        return;
    d->d = kcuda_vec_upload(u->dm->g, h->data, h->dtype, h->n);
    if (!d->d) {
        up_fail(u, MTPD_K_ENOMEM, what);
        return;
    }
    d->t = h->dtype;
    d->n = h->n;
    size_t b = kdtype_size(h->dtype) * (size_t)h->n;
    u->dm->bytes += b;
    u->pr.tensors_done++;
    u->pr.bytes_done += b;
}

static void up_mlp(struct uploader *u, const struct expert_w *h,
                   struct dev_mlp *d, const char *what)
{
    up_mat(u, &h->gate, &d->gate, what);
    up_mat(u, &h->up, &d->up, what);
    up_mat(u, &h->down, &d->down, what);
}

static void free_mlp(struct kcuda *g, struct dev_mlp *d)
{
    kcuda_mat_free(g, &d->gate);
    kcuda_mat_free(g, &d->up);
    kcuda_mat_free(g, &d->down);
}

static void free_vec(struct kcuda *g, struct dev_vec *v)
{
    kcuda_free(g, (void *)v->d);
    v->d = NULL;
}

static void up_layer(struct uploader *u, const struct mtpd_config *c,
                     const struct layer_w *h, struct dev_layer *d,
                     const char *name)
{
    char what[96];
#define WHAT(part) (snprintf(what, sizeof what, "%s %s", name, part), what)
    up_vec(u, &h->attn_norm, &d->attn_norm, WHAT("input_layernorm"));
    up_vec(u, &h->ffn_norm, &d->ffn_norm, WHAT("post_attention_layernorm"));
    up_vec(u, &h->q_a_norm, &d->q_a_norm, WHAT("q_a_layernorm"));
    up_vec(u, &h->kv_a_norm, &d->kv_a_norm, WHAT("kv_a_layernorm"));
    up_mat(u, &h->q_a, &d->q_a, WHAT("q_a_proj"));
    up_mat(u, &h->q_b, &d->q_b, WHAT("q_b_proj"));
    up_mat(u, &h->q, &d->q, WHAT("q_proj"));
    up_mat(u, &h->kv_a, &d->kv_a, WHAT("kv_a_proj_with_mqa"));
    up_kvb(u, &h->kv_bd, &d->kv_b, WHAT("kv_b_proj"));
    up_mat(u, &h->o, &d->o, WHAT("o_proj"));
    d->is_moe = h->is_moe;
    if (!h->is_moe) {
        up_mlp(u, &h->dense, &d->dense, WHAT("mlp"));
        return;
    }
    up_mat(u, &h->router, &d->router, WHAT("mlp.gate"));
    if (h->router_bias && !u->rc) {
        d->router_bias = kcuda_vec_upload(u->dm->g, h->router_bias, KDT_F32,
                                          c->n_routed_experts);
        if (!d->router_bias)
            up_fail(u, MTPD_K_ENOMEM, WHAT("e_score_correction_bias"));
        u->pr.tensors_done++;
        u->pr.bytes_done += sizeof(float) * (size_t)c->n_routed_experts;
    }
    int E = c->n_routed_experts;
    d->experts = calloc((size_t)E, sizeof(*d->experts));
    if (!d->experts) {
        if (!u->rc) {
            u->rc = MTPD_ENOMEM;
            snprintf(u->err, u->errlen, "out of memory");
        }
        return;
    }
    d->n_experts = E;
    for (int e = 0; e < E && !u->rc; e++)
        up_mlp(u, &h->experts[e], &d->experts[e], WHAT("experts"));
    if (u->rc)
        return;
    struct kdmat *gate = malloc(sizeof(*gate) * (size_t)E * 3);
    if (!gate) {
        u->rc = MTPD_ENOMEM;
        snprintf(u->err, u->errlen, "out of memory");
        return;
    }
    struct kdmat *up = gate + E, *down = gate + 2 * E;
    for (int e = 0; e < E; e++) {
        gate[e] = d->experts[e].gate;
        up[e] = d->experts[e].up;
        down[e] = d->experts[e].down;
    }
    int krc = kcuda_experts_new(u->dm->g, E, gate, up, down, &d->ex);
    free(gate);
    if (krc) {
        d->ex = NULL;
        up_fail(u, krc, WHAT("expert tables"));
        return;
    }
    d->has_shared = h->has_shared;
    if (h->has_shared)
        up_mlp(u, &h->shared, &d->shared, WHAT("shared_experts"));
#undef WHAT
}

static void free_layer(struct kcuda *g, struct dev_layer *d)
{
    struct dev_vec *v[] = {&d->attn_norm, &d->ffn_norm, &d->q_a_norm,
                           &d->kv_a_norm};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        free_vec(g, v[i]);
    struct kdmat *w[] = {&d->q_a, &d->q_b, &d->q, &d->kv_a, &d->kv_b, &d->o,
                         &d->router};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        kcuda_mat_free(g, w[i]);
    free_mlp(g, &d->dense);
    kcuda_free(g, (void *)d->router_bias);
    d->router_bias = NULL;
    kcuda_experts_free(g, d->ex); /* the tables, before their matrices */
    d->ex = NULL;
    for (int e = 0; d->experts && e < d->n_experts; e++)
        free_mlp(g, &d->experts[e]);
    free(d->experts);
    d->experts = NULL;
    free_mlp(g, &d->shared);
}

static void report(struct uploader *u)
{
    if (!u->progress)
        return;
    struct mtpd_load_progress p = u->pr; /* never past the totals */
    if (p.bytes_done > p.bytes_total)
        p.bytes_done = p.bytes_total;
    if (p.tensors_done > p.tensors_total)
        p.tensors_done = p.tensors_total;
    u->progress(u->progress_ud, &p);
}

/* ---- KV pages in device memory ----------------------------------------- */

/* A zeroed page (rows never written read as finite numbers, as on the
 * CPU). Zeroed synchronously on the model's stream, so the page is clean
 * before any context's stream writes it. */
static void *page_alloc(void *ud, size_t bytes)
{
    struct dev_model *dm = ud;
    pthread_mutex_lock(&dm->page_mu);
    void *p = kcuda_malloc(dm->g, bytes);
    if (p && (kcuda_memset(dm->g, p, 0, bytes) || kcuda_sync(dm->g))) {
        kcuda_free(dm->g, p);
        p = NULL;
    }
    pthread_mutex_unlock(&dm->page_mu);
    return p;
}

static void page_free(void *ud, void *page)
{
    struct dev_model *dm = ud;
    pthread_mutex_lock(&dm->page_mu);
    kcuda_free(dm->g, page);
    pthread_mutex_unlock(&dm->page_mu);
}

/* ---- the model --------------------------------------------------------- */

/* Whether the device kernels take this model's shapes: the attention
 * kernel's kv_lora / rope (cuda_plan.h), the router's top-k (kcuda.h). */
static int shape_supported(const struct mtpd_config *c, char *why,
                           size_t whylen)
{
    if (kcuda_mla_smem(c->kv_lora_rank, c->qk_rope_head_dim) == 0) {
        snprintf(why, whylen, "the device attention does not take "
                 "kv_lora_rank %d with qk_rope_head_dim %d", c->kv_lora_rank,
                 c->qk_rope_head_dim);
        return 0;
    }
    if (c->n_routed_experts > 0 && c->num_experts_per_tok > KCUDA_MOE_MAX_K) {
        snprintf(why, whylen, "the device MoE takes at most %d experts per "
                 "token, not %d", KCUDA_MOE_MAX_K, c->num_experts_per_tok);
        return 0;
    }
    return 1;
}

int dev_model_open(struct mtpd_model *m, int index,
                   const struct mtpd_load_opts *o, char *err, size_t errlen)
{
    const struct mtpd_config *c = &m->cfg;
    char why[160];
    if (!shape_supported(c, why, sizeof why)) {
        snprintf(err, errlen, "--device cuda:%d: this model cannot run on "
                 "the device: %s", index, why);
        return MTPD_ENODEV;
    }
    struct dev_model *dm = calloc(1, sizeof(*dm));
    if (!dm) {
        snprintf(err, errlen, "out of memory");
        return MTPD_ENOMEM;
    }
    dm->index = index;
    pthread_mutex_init(&dm->page_mu, NULL);
    m->dev = dm; /* dev_model_close frees what was made, on any failure */
    char kerr[256] = "";
    int krc = kcuda_open(index, 0, &dm->g, kerr, sizeof kerr);
    if (krc) {
        dm->g = NULL;
        snprintf(err, errlen, "--device cuda:%d: no CUDA device: %s", index,
                 kerr[0] ? kerr : kcuda_last_error());
        return MTPD_ENODEV;
    }
    mtpd_logf(MTPD_LOG_INFO, "cuda:%d: %s", index, kcuda_describe(dm->g));
    struct uploader u = {.dm = dm, .progress = o->progress,
                         .progress_ud = o->progress_ud, .err = err,
                         .errlen = errlen};
    u.pr.tensors_total = (long)st_count(m->st);
    u.pr.bytes_total = st_total_bytes(m->st);

    up_mat(&u, &m->embed, &dm->embed, "model.embed_tokens");
    up_vec(&u, &m->final_norm, &dm->final_norm, "model.norm");
    dm->own_head = m->lm_head.data != m->embed.data;
    if (dm->own_head)
        up_mat(&u, &m->lm_head, &dm->lm_head, "lm_head");
    else
        dm->lm_head = dm->embed;
    report(&u);
    dm->layers = calloc((size_t)c->num_hidden_layers, sizeof(*dm->layers));
    if (!dm->layers && !u.rc) {
        u.rc = MTPD_ENOMEM;
        snprintf(err, errlen, "out of memory");
    }
    for (int l = 0; l < c->num_hidden_layers && !u.rc; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer %d", l);
        dm->n_layers = l + 1; /* freed by dev_model_close from here on */
        up_layer(&u, c, &m->layers[l], &dm->layers[l], name);
        report(&u);
    }
    for (int k = 0; k < m->n_mtp && !u.rc; k++) {
        const struct mtp_w *h = &m->mtp[k];
        struct dev_mtp *d = &dm->mtp[k];
        char name[32];
        snprintf(name, sizeof name, "MTP module %d", k);
        dm->n_mtp = k + 1;
        d->own_embed = h->embed.data != m->embed.data;
        if (d->own_embed)
            up_mat(&u, &h->embed, &d->embed, name);
        else
            d->embed = dm->embed;
        d->own_head = h->head.data != m->lm_head.data;
        if (d->own_head)
            up_mat(&u, &h->head, &d->head, name);
        else
            d->head = dm->lm_head;
        up_vec(&u, &h->enorm, &d->enorm, name);
        up_vec(&u, &h->hnorm, &d->hnorm, name);
        up_vec(&u, &h->head_norm, &d->head_norm, name);
        up_mat(&u, &h->eh_proj, &d->eh_proj, name);
        up_layer(&u, c, &h->block, &d->block, name);
        report(&u);
    }
    if (!u.rc) {
        dm->inv_freq = kcuda_vec_upload(dm->g, m->inv_freq, KDT_F32,
                                        c->qk_rope_head_dim / 2);
        if (!dm->inv_freq)
            up_fail(&u, MTPD_K_ENOMEM, "rope inv_freq");
    }
    if (u.rc)
        return u.rc; /* the caller frees the model, and dm with it */
    u.pr.tensors_done = u.pr.tensors_total; /* unbound extras: done too */
    u.pr.bytes_done = u.pr.bytes_total;
    report(&u);
    m->kv_pages = (struct kv_page_ops){.alloc = page_alloc,
                                       .free = page_free, .ud = dm};
    mtpd_logf(MTPD_LOG_INFO, "cuda:%d: %.1f MB of weights on the device",
              index, dm->bytes / 1e6);
    return 0;
}

void dev_model_close(struct mtpd_model *m)
{
    struct dev_model *dm = m->dev;
    if (!dm)
        return;
    struct kcuda *g = dm->g;
    if (g) {
        for (int l = 0; l < dm->n_layers; l++)
            free_layer(g, &dm->layers[l]);
        for (int k = 0; k < dm->n_mtp; k++) {
            struct dev_mtp *d = &dm->mtp[k];
            if (d->own_embed)
                kcuda_mat_free(g, &d->embed);
            if (d->own_head)
                kcuda_mat_free(g, &d->head);
            kcuda_mat_free(g, &d->eh_proj);
            free_vec(g, &d->enorm);
            free_vec(g, &d->hnorm);
            free_vec(g, &d->head_norm);
            free_layer(g, &d->block);
        }
        if (dm->own_head)
            kcuda_mat_free(g, &dm->lm_head);
        kcuda_mat_free(g, &dm->embed);
        free_vec(g, &dm->final_norm);
        kcuda_free(g, (void *)dm->inv_freq);
        kcuda_close(g);
    }
    free(dm->layers);
    pthread_mutex_destroy(&dm->page_mu);
    free(dm);
    m->dev = NULL;
    m->kv_pages = (struct kv_page_ops){0};
}
