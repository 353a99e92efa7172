/*
 * dev_none.c - the CUDA side of the model in a build without CUDA (nvcc
 * was not found): no device, and the device calls are never reached
 * (device_select refuses every CUDA device first).
 */
#include <stdio.h>

#include "model_int.h"

int dev_built(void) { return 0; }

int dev_count(char *why, size_t whylen)
{
    snprintf(why, whylen, "this build has no CUDA");
    return 0;
}

int dev_model_open(struct mtpd_model *m, int index,
                   const struct mtpd_load_opts *o, char *err, size_t errlen)
{
    (void)m, (void)index, (void)o;
    snprintf(err, errlen, "this build has no CUDA");
    return MTPD_ENODEV;
}

void dev_model_close(struct mtpd_model *m) { (void)m; }

int dev_ctx_open(struct mtpd_ctx *c)
{
    (void)c;
    return MTPD_ENODEV;
}

void dev_ctx_close(struct mtpd_ctx *c) { (void)c; }

int dev_forward(struct mtpd_ctx *c, const struct fwd_call *fc)
{
    (void)c, (void)fc;
    return MTPD_ENODEV;
}

void dev_ctx_set_graphs(struct mtpd_ctx *c, int on) { (void)c, (void)on; }
