/*
 * forward.c - the main model and the MTP modules, top to bottom.
 *
 *   main:  embed -> for each layer (attn_norm -> MLA -> +res -> ffn_norm ->
 *          dense | MoE -> +res) -> model.norm -> lm_head
 *   MTP m: eh_proj([enorm(embed(t_{p+1})) ; hnorm(h_p)]) -> one decoder
 *          block -> shared_head.norm -> shared_head.head
 *
 * Every call validates first, then takes the KV pages its rows need for all
 * its sequences (all or none), and only then touches the caches, so a
 * failed call leaves them as they were (pages it took go back). Lengths
 * advance only at the very end.
 */
#include <string.h>

#include "model_int.h"

void wnorm(const struct mtpd_model *m, float *out, const float *x,
           const struct wvec *w)
{
    krmsnorm(out, x, w->data, w->dtype, w->n, m->cfg.rms_norm_eps);
}

int decoder_block(struct mtpd_ctx *c, const struct layer_w *w, int kv_layer,
                  int n)
{
    int rc = mla_block(c, w, kv_layer, n);
    return rc ? rc : ffn_block(c, w, n);
}

/* Checks rows, capacities and token ids; fills c->rows. module -1 = main.
 * get_len gives the part's current length. */
static int plan_rows(struct mtpd_ctx *c, int module, struct mtpd_kv *const *kvs,
                     const int32_t *const *toks, const int *ntok,
                     const int *lfrom, int n_seqs)
{
    const struct mtpd_model *m = c->m;
    int total = 0;
    for (int s = 0; s < n_seqs; s++) {
        if (!kvs[s] || ntok[s] < 0 || (ntok[s] > 0 && !toks[s]) ||
            kvs[s]->m != m)
            return MTPD_EINVAL;
        if (ntok[s] > c->max_tokens - total)
            return MTPD_EFULL;
        for (int q = 0; q < s; q++)
            if (kvs[q] == kvs[s])
                return MTPD_EINVAL; /* one sequence twice in a call */
        int len = mtpd_kv_len(kvs[s], module);
        if (len < 0)
            return len;
        if (len + ntok[s] > kvs[s]->cap || len + ntok[s] > c->max_ctx)
            return MTPD_EFULL;
        for (int i = 0; i < ntok[s]; i++) {
            if (toks[s][i] < 0 || toks[s][i] >= m->cfg.vocab_size)
                return MTPD_EINVAL;
            struct row_info *ri = &c->rows[total + i];
            ri->kv = kvs[s];
            ri->pos = len + i;
            c->logit_row[total + i] = i >= lfrom[s] ? 1 : -1;
        }
        total += ntok[s];
    }
    c->n_rows = total;
    return total;
}

/* Takes the pages every sequence's new rows need, all or none: on
 * MTPD_ENOMEM the pages taken so far go back and no cache changed. */
static int take_pages(struct mtpd_kv *const *kvs, const int *ntok,
                      int module, int n_seqs)
{
    for (int s = 0; s < n_seqs; s++) {
        int rc = kv_grow(kvs[s], mtpd_kv_len(kvs[s], module) + ntok[s]);
        if (rc) {
            for (int q = 0; q < s; q++)
                kv_fit(kvs[q]);
            return rc;
        }
    }
    return 0;
}

/* After a failed call: give back the pages it took. */
static void drop_pages(struct mtpd_kv *const *kvs, int n_seqs)
{
    for (int s = 0; s < n_seqs; s++)
        kv_fit(kvs[s]);
}

/* Applies the final norm (into c->hidden) and the head to marked rows. */
static int finish(struct mtpd_ctx *c, const struct wvec *norm,
                  const struct kmat *head)
{
    const struct mtpd_model *m = c->m;
    int hid = m->cfg.hidden_size, n = c->n_rows, nl = 0;
    for (int r = 0; r < n; r++) {
        float *h = c->hidden + (size_t)r * hid;
        wnorm(m, h, c->x + (size_t)r * hid, norm);
        if (c->logit_row[r] >= 0) {
            memcpy(c->lg_in + (size_t)nl * hid, h, sizeof(float) * hid);
            c->logit_row[r] = nl++;
        }
    }
    if (nl && kmatmul(c->pool, head, c->lg_in, hid, c->logits,
                      m->cfg.vocab_size, nl))
        return MTPD_EINVAL;
    return 0;
}

static void embed_row(const struct kmat *e, int tok, float *out)
{
    kmat_row_f32(e, tok, out);
}

#define MAX_SEQS_STACK 256

int mtpd_forward(struct mtpd_ctx *c, const struct mtpd_seq *seqs, int n_seqs)
{
    const struct mtpd_model *m = c->m;
    if (n_seqs < 0 || n_seqs > MAX_SEQS_STACK)
        return MTPD_EINVAL;
    struct mtpd_kv *kvs[MAX_SEQS_STACK] = {0};
    const int32_t *toks[MAX_SEQS_STACK] = {0};
    int ntok[MAX_SEQS_STACK] = {0}, lfrom[MAX_SEQS_STACK] = {0};
    for (int s = 0; s < n_seqs; s++) {
        kvs[s] = seqs[s].kv;
        toks[s] = seqs[s].tokens;
        ntok[s] = seqs[s].n_tokens;
        lfrom[s] = seqs[s].logits_from;
    }
    c->n_rows = 0;
    int n = plan_rows(c, -1, kvs, toks, ntok, lfrom, n_seqs);
    if (n <= 0)
        return n;
    int rc = take_pages(kvs, ntok, -1, n_seqs);
    if (rc) {
        c->n_rows = 0;
        return rc;
    }
    if (c->dev) { /* the model is on a GPU (dev_forward.c) */
        struct fwd_call fc = {.module = -1, .n_seqs = n_seqs, .kvs = kvs,
                              .toks = toks, .ntok = ntok, .lfrom = lfrom};
        rc = dev_forward(c, &fc);
    } else {
        int hid = m->cfg.hidden_size, r = 0;
        for (int s = 0; s < n_seqs; s++)
            for (int i = 0; i < ntok[s]; i++, r++)
                embed_row(&m->embed, toks[s][i], c->x + (size_t)r * hid);
        for (int l = 0; l < m->cfg.num_hidden_layers && rc == 0; l++)
            rc = decoder_block(c, &m->layers[l], l, n);
        if (rc == 0)
            rc = finish(c, &m->final_norm, &m->lm_head);
    }
    if (rc) {
        drop_pages(kvs, n_seqs);
        return rc;
    }
    for (int s = 0; s < n_seqs; s++)
        kvs[s]->len_main += ntok[s];
    return 0;
}

int mtpd_mtp_forward(struct mtpd_ctx *c, int module,
                     const struct mtpd_mtp_seq *seqs, int n_seqs)
{
    const struct mtpd_model *m = c->m;
    if (module < 0 || module >= m->n_mtp)
        return MTPD_ENOMTP;
    if (n_seqs < 0 || n_seqs > MAX_SEQS_STACK)
        return MTPD_EINVAL;
    const struct mtp_w *w = &m->mtp[module];
    struct mtpd_kv *kvs[MAX_SEQS_STACK] = {0};
    const int32_t *toks[MAX_SEQS_STACK] = {0};
    const float *hin[MAX_SEQS_STACK] = {0};
    int ntok[MAX_SEQS_STACK] = {0}, lfrom[MAX_SEQS_STACK] = {0};
    for (int s = 0; s < n_seqs; s++) {
        if (seqs[s].n_tokens > 0 && !seqs[s].hidden)
            return MTPD_EINVAL;
        kvs[s] = seqs[s].kv;
        hin[s] = seqs[s].hidden;
        toks[s] = seqs[s].tokens;
        ntok[s] = seqs[s].n_tokens;
        lfrom[s] = seqs[s].logits_from;
    }
    c->n_rows = 0;
    int n = plan_rows(c, module, kvs, toks, ntok, lfrom, n_seqs);
    if (n <= 0)
        return n;
    int rc = take_pages(kvs, ntok, module, n_seqs);
    if (rc) {
        c->n_rows = 0;
        return rc;
    }
    if (c->dev) { /* the model is on a GPU (dev_forward.c) */
        struct fwd_call fc = {.module = module, .n_seqs = n_seqs,
                              .kvs = kvs, .toks = toks, .ntok = ntok,
                              .lfrom = lfrom, .hidden = hin};
        rc = dev_forward(c, &fc);
    } else {
        int hid = m->cfg.hidden_size, r = 0;
        /* cat [n, 2 * hid] = [enorm(embed(t)) ; hnorm(h)]; the embedding
         * is zeroed at absolute position 0 (vLLM's convention). The
         * hidden rows may alias c->hidden (recursive drafting), so read
         * them all first. */
        for (int s = 0; s < n_seqs; s++)
            for (int i = 0; i < ntok[s]; i++, r++) {
                float *e = c->cat + (size_t)r * 2 * hid;
                if (c->rows[r].pos == 0) {
                    memset(e, 0, sizeof(float) * hid);
                } else {
                    embed_row(&w->embed, toks[s][i], e);
                    wnorm(m, e, e, &w->enorm);
                }
                wnorm(m, e + hid, hin[s] + (size_t)i * hid, &w->hnorm);
            }
        rc = kmatmul(c->pool, &w->eh_proj, c->cat, 2 * hid, c->x, hid, n)
                 ? MTPD_EINVAL : 0;
        if (rc == 0)
            rc = decoder_block(c, &w->block,
                               m->cfg.num_hidden_layers + module, n);
        if (rc == 0)
            rc = finish(c, &w->head_norm, &w->head);
    }
    if (rc) {
        drop_pages(kvs, n_seqs);
        return rc;
    }
    for (int s = 0; s < n_seqs; s++)
        kvs[s]->len_mtp[module] += ntok[s];
    return 0;
}
