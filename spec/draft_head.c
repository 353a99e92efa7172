/*
 * draft_head.c - restricted draft head (see draft_head.h).
 */
#include "draft_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int spec_draft_head_init(struct spec_draft_head *h, const struct kmat *head,
                         const int32_t *ids, int n)
{
    memset(h, 0, sizeof *h);
    if (!head || n < 1 || n > head->rows)
        return -1;
    int cols = head->cols;
    h->ids = malloc(sizeof(int32_t) * (size_t)n);
    h->data = malloc(sizeof(uint16_t) * (size_t)n * (size_t)cols);
    float *row = malloc(sizeof(float) * (size_t)cols);
    unsigned char *seen = calloc((size_t)head->rows, 1);
    int rc = 0;
    if (!h->ids || !h->data || !row || !seen) {
        rc = -2;
        goto out;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (ids[i] < 0 || ids[i] >= head->rows || seen[ids[i]]) {
            rc = -1;
            break;
        }
        seen[ids[i]] = 1;
        h->ids[i] = ids[i];
        if (kmat_row_f32(head, ids[i], row) != 0) {
            rc = -1;
            break;
        }
        uint16_t *dst = h->data + (size_t)i * (size_t)cols;
        for (int c = 0; c < cols; c++)
            dst[c] = kf32_to_bf16(row[c]);
    }
    h->n = n;
    h->w = (struct kmat){.dtype = KDT_BF16, .rows = n, .cols = cols,
                         .data = h->data};
out:
    free(row);
    free(seen);
    if (rc)
        spec_draft_head_free(h);
    return rc;
}

void spec_draft_head_free(struct spec_draft_head *h)
{
    free(h->ids);
    free(h->data);
    memset(h, 0, sizeof *h);
}

int spec_draft_head_logits(const struct spec_draft_head *h, struct kpool *p,
                           const float *hidden, int ld, int rows, float *out)
{
    return kmatmul(p, &h->w, hidden, ld, out, h->n, rows) ? -1 : 0;
}

void spec_draft_head_scatter(const struct spec_draft_head *h,
                             const float *sub, float *full, int vocab)
{
    for (int i = 0; i < vocab; i++)
        full[i] = -INFINITY;
    for (int i = 0; i < h->n; i++)
        full[h->ids[i]] = sub[i];
}
