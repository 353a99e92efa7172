/*
 * accept.c - acceptance rules (see accept.h).
 */
#include "accept.h"

int spec_accept_token(int32_t d, const float *p, const float *q,
                      struct spec_rng *r, int break_accept)
{
    double u = spec_rng_uniform(r);
    if (break_accept)
        return 1;
    /* accept iff u < p/q, written without the division (q(d) > 0 since d
     * was drawn from q; if it is 0 anyway, accept iff p(d) > 0) */
    return u * (double)q[d] < (double)p[d];
}

int32_t spec_sample_residual(const float *p, const float *q, int n,
                             float *scratch, struct spec_rng *r)
{
    int any = 0;
    for (int i = 0; i < n; i++) {
        float x = p[i] - q[i];
        scratch[i] = x > 0.0f ? x : 0.0f;
        any |= x > 0.0f;
    }
    return spec_sample(any ? scratch : p, n, r);
}

int spec_accept_greedy(const int32_t *draft, int k, const int32_t *target,
                       int32_t *next)
{
    int a = 0;
    while (a < k && draft[a] == target[a])
        a++;
    *next = target[a];
    return a;
}
