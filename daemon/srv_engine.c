/* srv_engine.c - the daemon's calls into spec/'s serving API (see
 * srv_engine.h): one place, so the scheduler reads as policy. */
#include "srv_engine.h"

int srv_seq_begin(struct spec_engine *e, struct spec_seq **seq,
                  const struct spec_params *p, const int32_t *tokens, int n,
                  int reuse)
{
    if (*seq && !reuse) {
        spec_seq_free(*seq);
        *seq = NULL;
    }
    if (!*seq) {
        int rc = spec_seq_new(e, p, tokens, n, seq);
        return rc < 0 ? rc : 0;
    }
    return spec_seq_restart(*seq, p, tokens, n);
}

int srv_seq_reserve(struct spec_seq *s, int n)
{
    return spec_seq_reserve(s, n);
}

int srv_seq_cancel(struct spec_seq *s)
{
    spec_seq_cancel(s);
    return 1;
}

int srv_step(struct spec_engine *e, struct spec_seq **seqs, int n,
             int max_rows)
{
    return spec_step_ex(e, seqs, n, max_rows, NULL, NULL);
}

size_t srv_kv_cost(const struct spec_engine *e, int n)
{
    return spec_engine_kv_cost(e, n);
}

size_t srv_seq_kv_bytes(struct spec_seq *s)
{
    return mtpd_kv_bytes(spec_seq_kv(s));
}

const char *srv_seq_error(const struct spec_seq *s)
{
    return spec_seq_error(s);
}

int srv_pool_new(const struct mtpd_model *m, size_t budget,
                 struct mtpd_kv_pool **out)
{
    struct mtpd_kv_pool_opts o = {.budget_bytes = budget};
    return mtpd_kv_pool_new(m, &o, out);
}

void srv_pool_free(struct mtpd_kv_pool *p)
{
    if (p)
        mtpd_kv_pool_free(p);
}
