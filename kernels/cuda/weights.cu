/*
 * weights.cu - weights to the device, kept in their checkpoint dtype
 * (kcuda_mat_upload / kcuda_mat_free / kcuda_vec_upload). Each part of a
 * matrix (data, F8 block scales, Q8_0 / Q4_1 scales and mins) gets its own
 * allocation, laid out as on the host (kernels.h), so kdmat's pointers
 * are those of struct kmat on the device.
 */
#include <string.h>

#include "kcuda_dq.cuh"
#include "kcuda_int.h"

/* A new device copy of n host bytes; blocks until copied. */
static int upload(struct kcuda *g, const void *h, size_t n, void **out)
{
    *out = NULL;
    void *d = NULL;
    int rc = kcuda_err(cudaMalloc(&d, n ? n : 1), "cudaMalloc(weights)");
    if (rc == 0 && n)
        rc = kcuda_err(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice,
                                       g->stream),
                       "cudaMemcpy(weights)");
    if (rc == 0)
        rc = kcuda_err(cudaStreamSynchronize(g->stream), "weights upload");
    if (rc) {
        cudaFree(d);
        return rc;
    }
    *out = d;
    return 0;
}

extern "C" void kcuda_mat_free(struct kcuda *g, struct kdmat *d)
{
    if (d == NULL)
        return;
    kcuda_free(g, (void *)d->data);
    kcuda_free(g, (void *)d->scale);
    kcuda_free(g, (void *)d->qd);
    kcuda_free(g, (void *)d->qm);
    memset(d, 0, sizeof *d);
}

/* Q4_S goes up as the Q4_1 matrix it is (kernels.h: the same weights,
 * bit for bit), its scales expanded on the host: the device kernels know
 * Q4_1, and the scale bytes are 1/5 of the weights' at most. */
static int upload_q4s(struct kcuda *g, const struct kmat *h, struct kdmat *d)
{
    if (h->qsc == NULL || h->qmn == NULL || h->qexp == NULL ||
        h->cols % KQ_BLK) {
        kcuda_set_error("kcuda_mat_upload: Q4_S matrix without its scales");
        return MTPD_K_EINVAL;
    }
    size_t nq = (size_t)h->rows * (size_t)(h->cols / KQ_BLK);
    uint16_t *s = (uint16_t *)malloc(2 * nq * sizeof(uint16_t) + 2);
    if (s == NULL) {
        kcuda_set_error("kcuda_mat_upload: out of host memory");
        return MTPD_K_ENOMEM;
    }
    kq4s_expand(h, 0, h->rows, s, s + nq);
    struct kmat q = *h;
    q.dtype = KDT_Q4_1;
    q.qd = s;
    q.qm = s + nq;
    q.qsc = NULL;
    q.qmn = NULL;
    q.qexp = NULL;
    int rc = kcuda_mat_upload(g, &q, d);
    free(s);
    return rc;
}

extern "C" int kcuda_mat_upload(struct kcuda *g, const struct kmat *h,
                                struct kdmat *d)
{
    memset(d, 0, sizeof *d);
    if (h != NULL && h->dtype == KDT_Q4_S && h->data != NULL)
        return upload_q4s(g, h, d);
    if (h == NULL || h->data == NULL || h->rows < 0 || h->cols < 0 ||
        h->dtype < 0 || h->dtype >= KDT_COUNT) {
        kcuda_set_error("kcuda_mat_upload: bad matrix");
        return MTPD_K_EINVAL;
    }
    int quant = h->dtype == KDT_Q8_0 || h->dtype == KDT_Q4_1;
    if ((h->dtype == KDT_F8_E4M3 && (h->scale == NULL || h->blk <= 0)) ||
        (quant && (h->cols % KQ_BLK || h->qd == NULL)) ||
        (h->dtype == KDT_Q4_1 && h->qm == NULL)) {
        kcuda_set_error("kcuda_mat_upload: %s matrix without its scales",
                        h->dtype == KDT_F8_E4M3 ? "F8" : "quantized");
        return MTPD_K_EINVAL;
    }
    int rc = kcuda_bind(g);
    if (rc)
        return rc;
    size_t data_b = (size_t)h->rows * kd_row_bytes(h->dtype, h->cols);
    void *p;
    rc = upload(g, h->data, data_b, &p);
    d->data = p;
    if (rc == 0 && h->dtype == KDT_F8_E4M3) {
        size_t nb = (size_t)((h->rows + h->blk - 1) / h->blk) *
                    (size_t)((h->cols + h->blk - 1) / h->blk);
        rc = upload(g, h->scale, nb * sizeof(float), &p);
        d->scale = (const float *)p;
        d->blk = h->blk;
    }
    size_t nq = (size_t)h->rows * (size_t)(h->cols / KQ_BLK);
    if (rc == 0 && quant) {
        rc = upload(g, h->qd, nq * sizeof(uint16_t), &p);
        d->qd = (const uint16_t *)p;
    }
    if (rc == 0 && h->dtype == KDT_Q4_1) {
        rc = upload(g, h->qm, nq * sizeof(uint16_t), &p);
        d->qm = (const uint16_t *)p;
    }
    if (rc) {
        kcuda_mat_free(g, d);
        return rc;
    }
    d->dtype = h->dtype;
    d->rows = h->rows;
    d->cols = h->cols;
    return 0;
}

extern "C" void *kcuda_vec_upload(struct kcuda *g, const void *h,
                                  enum kdtype t, int n)
{
    if (h == NULL || n < 0 || t < KDT_F32 || t > KDT_F8_E4M3) {
        kcuda_set_error("kcuda_vec_upload: bad vector (dtype %d, n %d)",
                        (int)t, n);
        return NULL;
    }
    void *p = NULL;
    if (kcuda_bind(g) || upload(g, h, kd_row_bytes(t, n), &p))
        return NULL;
    return p;
}
