/*
 * verify.c - acceptance after the verify forward: the main model's logits
 * for rows x_L, d_1..d_k (positions L..L+k) decide how many drafts stand
 * and which token comes next (accept.h has the rules). The main cache is
 * truncated to the accepted length; nothing is recomputed.
 */
#include "spec_int.h"

#include "accept.h"

static const float *row_logits(struct spec_engine *e, struct spec_seq *s,
                               int j)
{
    return mtpd_ctx_logits(e->ctx, s->rows_at + j);
}

static void trace_pass(struct spec_seq *s, int k, int a)
{
    s->last_k = k;
    s->last_a = a;
    if (s->trace_n < s->trace_cap) {
        s->trace_k[s->trace_n] = k;
        s->trace_a[s->trace_n] = a;
        s->trace_n++;
    }
}

int spec_verify_accept(struct spec_engine *e, struct spec_seq *s)
{
    int L = s->main_len_before, k = s->k, a = 0;
    const int32_t *d = s->toks + L + 1;
    int32_t next;
    if (spec_sampling_greedy(&s->p.sampling)) {
        for (;;) {
            next = spec_argmax(row_logits(e, s, a), e->vocab);
            if (a == k || (next != d[a] && !e->break_accept))
                break;
            a++;
        }
    } else {
        const struct spec_sampling *sp = &s->p.sampling;
        for (;;) {
            spec_probs(sp, row_logits(e, s, a), e->vocab, e->pbuf, e->ibuf);
            if (a == k) {
                next = spec_sample(e->pbuf, e->vocab, &s->rng);
                break;
            }
            const float *q = s->q + (size_t)a * (size_t)e->vocab;
            if (!spec_accept_token(d[a], e->pbuf, q, &s->rng,
                                   e->break_accept)) {
                next = spec_sample_residual(e->pbuf, q, e->vocab, e->rbuf,
                                            &s->rng);
                break;
            }
            a++;
        }
    }
    spec_stats_pass(&s->st, k, a);
    if (s->k_cfg == SPEC_K_AUTO)
        spec_adapt_observe(&s->ad, k, a);
    trace_pass(s, k, a);

    mtpd_kv_truncate(s->kv, -1, L + a + 1);
    s->toks[L + 1 + a] = next;
    s->n_toks = L + a + 2;
    for (int j = 0; j <= a; j++)
        if (!spec_emit(s, s->toks[L + 1 + j]))
            break;
    return a;
}

void spec_first_token(struct spec_engine *e, struct spec_seq *s,
                      const float *logits)
{
    int32_t t;
    if (spec_sampling_greedy(&s->p.sampling)) {
        t = spec_argmax(logits, e->vocab);
    } else {
        spec_probs(&s->p.sampling, logits, e->vocab, e->pbuf, e->ibuf);
        t = spec_sample(e->pbuf, e->vocab, &s->rng);
    }
    s->toks[s->n_prompt] = t;
    s->n_toks = s->n_prompt + 1;
    spec_emit(s, t);
}
