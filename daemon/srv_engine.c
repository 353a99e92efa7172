/* srv_engine.c - see srv_engine.h.
 *
 * TEMPORARY: spec_seq_restart / reserve / cancel / spec_step_ex /
 * spec_engine_kv_cost are declared in spec.h but implemented on other
 * branches. Until they are merged this file stands in for them:
 * "restart" builds a new sequence over the whole token list (no prefix
 * reuse), reserve is a no-op, cancel is done by the scheduler, the step is
 * spec_step, and the cost is bytes per token times whole 64-position
 * pages. Nothing outside this file knows. */
#include "srv_engine.h"

int srv_seq_begin(struct spec_engine *e, struct spec_seq **seq,
                  const struct spec_params *p, const int32_t *tokens, int n)
{
    struct spec_seq *s = NULL;
    int rc = spec_seq_new(e, p, tokens, n, &s);
    if (rc < 0)
        return rc;
    spec_seq_free(*seq);
    *seq = s;
    return 0;
}

int srv_seq_reserve(struct spec_seq *s, int n)
{
    (void)s;
    (void)n;
    return 0;
}

int srv_seq_cancel(struct spec_seq *s)
{
    (void)s;
    return 0;
}

int srv_step(struct spec_engine *e, struct spec_seq **seqs, int n,
             int max_rows)
{
    (void)max_rows;
    return spec_step(e, seqs, n);
}

size_t srv_kv_cost(const struct spec_engine *e, int n)
{
    size_t pages = ((size_t)n + 63) / 64;
    return pages * 64 * mtpd_kv_bytes_per_token(spec_engine_model(e));
}

const char *srv_seq_error(const struct spec_seq *s)
{
    return spec_seq_finish(s) == SPEC_FINISH_ERROR ? "generation failed" : "";
}

int srv_pool_new(const struct mtpd_model *m, size_t budget,
                 struct mtpd_kv_pool **out)
{
    (void)m;
    (void)budget;
    *out = NULL; /* the daemon's own accounting (session.c) enforces it */
    return 0;
}

void srv_pool_free(struct mtpd_kv_pool *p)
{
    (void)p;
}
