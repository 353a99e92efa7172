/*
 * draft_head.c - restricted draft head (see draft_head.h).
 */
#include "draft_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Head row id as BF16 into dst, through the fp32 scratch row. */
static int copy_row(const struct kmat *head, int32_t id, float *row,
                    uint16_t *dst)
{
    if (kmat_row_f32(head, id, row) != 0)
        return -1;
    for (int c = 0; c < head->cols; c++)
        dst[c] = kf32_to_bf16(row[c]);
    return 0;
}

int spec_draft_head_init(struct spec_draft_head *h, const struct kmat *head,
                         const int32_t *ids, int n)
{
    memset(h, 0, sizeof *h);
    if (!head || n < 1 || n > head->rows)
        return -1;
    size_t cols = (size_t)head->cols;
    h->head = head;
    h->ids = malloc(sizeof(int32_t) * (size_t)n);
    h->data = malloc(sizeof(uint16_t) * (size_t)n * cols);
    h->in = calloc((size_t)head->rows, 1);
    float *row = malloc(sizeof(float) * cols);
    int rc = 0;
    if (!h->ids || !h->data || !h->in || !row) {
        rc = -2;
        goto out;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (ids[i] < 0 || ids[i] >= head->rows || h->in[ids[i]]) {
            rc = -1;
            break;
        }
        h->in[ids[i]] = 1;
        h->ids[i] = ids[i];
        rc = copy_row(head, ids[i], row, h->data + (size_t)i * cols);
    }
    h->n = n;
    h->w = (struct kmat){.dtype = KDT_BF16, .rows = n, .cols = head->cols,
                         .data = h->data, .resident = head->resident};
out:
    free(row);
    if (rc)
        spec_draft_head_free(h);
    return rc;
}

void spec_draft_head_free(struct spec_draft_head *h)
{
    free(h->ids);
    free(h->data);
    free(h->in);
    memset(h, 0, sizeof *h);
}

int spec_draft_head_logits(const struct spec_draft_head *h, struct kpool *p,
                           const float *hidden, int ld, int rows, float *out)
{
    return kmatmul(p, &h->w, hidden, ld, out, h->n, rows) ? -1 : 0;
}

int spec_draft_ctx_init(struct spec_draft_ctx *c,
                        const struct spec_draft_head *heads, int n_mod,
                        int cap)
{
    memset(c, 0, sizeof *c);
    if (cap < 1 || n_mod < 1 || n_mod > SPEC_DRAFT_MODS)
        return -1;
    size_t cols = (size_t)heads[0].head->cols;
    c->cap = cap;
    c->n_mod = n_mod;
    c->ids = malloc(sizeof(int32_t) * (size_t)cap);
    c->in = calloc((size_t)heads[0].head->rows, 1);
    c->row = malloc(sizeof(float) * cols);
    int ok = c->ids && c->in && c->row;
    for (int m = 0; m < n_mod && ok; m++)
        ok = (c->data[m] = malloc(sizeof(uint16_t) * (size_t)cap * cols)) !=
             NULL;
    if (!ok) {
        spec_draft_ctx_free(c);
        return -2;
    }
    return 0;
}

void spec_draft_ctx_free(struct spec_draft_ctx *c)
{
    free(c->ids);
    free(c->in);
    free(c->row);
    for (int m = 0; m < SPEC_DRAFT_MODS; m++)
        free(c->data[m]);
    memset(c, 0, sizeof *c);
}

void spec_draft_ctx_reset(struct spec_draft_ctx *c)
{
    for (int i = 0; i < c->n; i++)
        c->in[c->ids[i]] = 0;
    c->n = 0;
}

int spec_draft_ctx_add(struct spec_draft_ctx *c,
                       const struct spec_draft_head *heads, int32_t id)
{
    if (id < 0 || id >= heads[0].head->rows)
        return -1;
    if (heads[0].in[id] || c->in[id] || c->n >= c->cap)
        return 0;
    size_t cols = (size_t)heads[0].head->cols;
    for (int m = 0; m < c->n_mod; m++)
        if (copy_row(heads[m].head, id, c->row,
                     c->data[m] + (size_t)c->n * cols) != 0)
            return -1;
    c->in[id] = 1;
    c->ids[c->n++] = id;
    return 1;
}

int spec_draft_ctx_logits(const struct spec_draft_ctx *c, int m,
                          int hidden_size, struct kpool *p,
                          const float *hidden, float *out)
{
    if (c->n == 0)
        return 0;
    struct kmat w = {.dtype = KDT_BF16, .rows = c->n, .cols = hidden_size,
                     .data = c->data[m]};
    return kmatmul(p, &w, hidden, hidden_size, out, c->n, 1) ? -1 : 0;
}

void spec_draft_head_scatter(const struct spec_draft_head *h,
                             const float *sub,
                             const struct spec_draft_ctx *c,
                             const float *csub, float *full, int vocab)
{
    for (int i = 0; i < vocab; i++)
        full[i] = -INFINITY;
    for (int i = 0; i < h->n; i++)
        full[h->ids[i]] = sub[i];
    for (int i = 0; c && i < c->n; i++)
        full[c->ids[i]] = csub[i];
}
