/*
 * restart.c - a new generation on an existing sequence (multi-turn,
 * prefix reuse): keep the cached positions the new token list shares with
 * the sequence's history, truncate the rest, prefill the new tail.
 *
 * What may be kept (docs/spec.md, "MTP cache alignment"): main position p
 * depends on x_0..x_p; MTP row q of every module depends on x_0..x_{q+1}.
 * With c leading tokens shared, main keeps at most c positions and every
 * module at most c - 1 rows. The refill that follows the prefill needs
 *   - module 0: the main hidden state of each row it computes, which only
 *     the prefill's own rows give: module 0 keeps exactly what main keeps;
 *   - module m >= 1: module m-1's output at the row before its first new
 *     row, which the same refill computes only if module m keeps one row
 *     more than module m-1 (row 0 needs nothing: zeros).
 * So main and module 0 keep R rows, module m keeps R + m, with R the
 * largest value all those limits allow (or everything restarts at 0).
 */
#include "spec_int.h"

#include <string.h>

static int min_i(int a, int b)
{
    return a < b ? a : b;
}

/* Positions main keeps for tokens[0..n) with c leading tokens shared. */
static int reusable(const struct spec_seq *s, int c, int n, int n_mod)
{
    int r = min_i(min_i(c, n - 1), mtpd_kv_len(s->kv, -1));
    for (int m = 0; m < n_mod; m++)
        r = min_i(r, min_i(c - 1, mtpd_kv_len(s->kv, m)) - m);
    return r < 0 ? 0 : r;
}

int spec_seq_restart(struct spec_seq *s, const struct spec_params *p,
                     const int32_t *tokens, int n)
{
    struct spec_engine *e = s->e;
    int k_cfg, k_max, n_mod;
    if (!tokens || n < 1 || spec_seq_plan(e, p, &k_cfg, &k_max, &n_mod) < 0)
        return MTPD_EINVAL;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->vocab)
            return MTPD_EINVAL;
    int cap = min_i(spec_seq_cap(e, p), mtpd_kv_capacity(s->kv));
    if (n > cap)
        return MTPD_EFULL;
    int rc = spec_seq_toks(s, n + 1);
    if (rc == MTPD_OK)
        rc = spec_seq_buffers(s, p, n_mod, k_max);
    if (rc < 0)
        return rc;

    int c = 0;
    while (c < n && c < s->n_toks && tokens[c] == s->toks[c])
        c++;
    int r = reusable(s, c, n, n_mod);
    int chain = 1; /* module m keeps r + m (see the top of the file) */
    for (int m = 0; m < n_mod; m++)
        if (r + m > min_i(c - 1, mtpd_kv_len(s->kv, m)))
            chain = 0;
    if (!chain)
        r = 0;
    if (mtpd_kv_len(s->kv, -1) > r)
        mtpd_kv_truncate(s->kv, -1, r);
    for (int m = 0; m < e->n_mtp; m++) {
        /* unused modules keep only rows that stay valid */
        int keep = m < n_mod ? (chain ? r + m : 0) : c - 1;
        if (keep < 0)
            keep = 0;
        if (mtpd_kv_len(s->kv, m) > keep)
            mtpd_kv_truncate(s->kv, m, keep);
    }
    memcpy(s->toks, tokens, (size_t)n * sizeof(int32_t));
    if (s->reserve > cap)
        s->reserve = cap;
    spec_seq_start(s, p, n, k_cfg, k_max, n_mod);
    /* pages above what is kept go back now, not at the next step */
    spec_seq_hold(s, r);
    return r;
}
