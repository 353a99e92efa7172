/* mtp_head.c - accessors of mtp_head.h. */
#include "mtp_head.h"

#include "model_int.h"

const struct kmat *mtpd_mtp_head(const struct mtpd_model *m, int module)
{
    if (!m || module < 0 || module >= m->n_mtp)
        return NULL;
    return &m->mtp[module].head;
}

struct kpool *mtpd_ctx_pool(struct mtpd_ctx *c)
{
    return c ? c->pool : NULL;
}
