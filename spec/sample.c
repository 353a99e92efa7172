/*
 * sample.c - RNG, logits -> distribution (temperature, top-k, top-p) and
 * categorical sampling. See sample.h for the contracts.
 */
#include "sample.h"

#include <math.h>
#include <stddef.h>

/* ---- RNG ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void spec_rng_seed(struct spec_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t spec_rng_next(struct spec_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double spec_rng_uniform(struct spec_rng *r)
{
    return (double)(spec_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- ordering: by value descending, then id ascending ----------------- */

static inline int before(const float *v, int32_t a, int32_t b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

static void swap32(int32_t *a, int32_t *b)
{
    int32_t t = *a;
    *a = *b;
    *b = t;
}

/* Partitions idx[lo..hi] around a median-of-three pivot; returns the
 * pivot's final slot. */
static int partition(const float *v, int32_t *idx, int lo, int hi)
{
    int mid = lo + (hi - lo) / 2;
    if (before(v, idx[mid], idx[lo]))
        swap32(&idx[mid], &idx[lo]);
    if (before(v, idx[hi], idx[lo]))
        swap32(&idx[hi], &idx[lo]);
    if (before(v, idx[hi], idx[mid]))
        swap32(&idx[hi], &idx[mid]);
    swap32(&idx[mid], &idx[hi]); /* pivot (the median) to hi */
    int32_t piv = idx[hi];
    int s = lo;
    for (int i = lo; i < hi; i++)
        if (before(v, idx[i], piv))
            swap32(&idx[i], &idx[s++]);
    swap32(&idx[s], &idx[hi]);
    return s;
}

/* Rearranges idx[0..n) so idx[0..k) are the k first in the order. */
static void select_first(const float *v, int32_t *idx, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int p = partition(v, idx, lo, hi);
        if (p == k || p == k - 1)
            return;
        if (p < k)
            lo = p + 1;
        else
            hi = p - 1;
    }
}

static void sort_order(const float *v, int32_t *idx, int lo, int hi)
{
    while (hi - lo > 16) {
        int p = partition(v, idx, lo, hi);
        /* recurse into the smaller side to bound the stack */
        if (p - lo < hi - p) {
            sort_order(v, idx, lo, p - 1);
            lo = p + 1;
        } else {
            sort_order(v, idx, p + 1, hi);
            hi = p - 1;
        }
    }
    for (int i = lo + 1; i <= hi; i++) {
        int32_t x = idx[i];
        int j = i - 1;
        while (j >= lo && before(v, x, idx[j])) {
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = x;
    }
}

/* ---- distributions --------------------------------------------------- */

int32_t spec_argmax(const float *x, int n)
{
    int32_t best = -1;
    for (int i = 0; i < n; i++) {
        if (x[i] != x[i])
            continue; /* NaN */
        if (best < 0 || x[i] > x[best])
            best = i;
    }
    return best < 0 ? 0 : best;
}

int spec_probs(const struct spec_sampling *s, const float *logits, int n,
               float *out, int32_t *idx)
{
    if (spec_sampling_greedy(s)) {
        int32_t a = spec_argmax(logits, n);
        for (int i = 0; i < n; i++)
            out[i] = 0.0f;
        out[a] = 1.0f;
        return 1;
    }
    float mx = logits[spec_argmax(logits, n)];
    float inv_t = 1.0f / s->temperature;
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        out[i] = l == l ? expf((l - mx) * inv_t) : 0.0f;
    }
    int m = n; /* candidates idx[0..m) when truncating */
    int truncated = 0;
    if (s->top_k > 0 && s->top_k < n) {
        for (int i = 0; i < n; i++)
            idx[i] = i;
        select_first(out, idx, n, s->top_k);
        m = s->top_k;
        truncated = 1;
    }
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        if (!truncated)
            for (int i = 0; i < n; i++)
                idx[i] = i;
        double total = 0.0;
        for (int i = 0; i < m; i++)
            total += out[idx[i]];
        /* Only tokens above a small threshold can be in the nucleus if
         * they already hold top_p of the mass: sort just those then. */
        float tau = 1e-4f; /* relative to the max, which is 1 */
        int c = 0;
        double csum = 0.0;
        for (int i = 0; i < m; i++)
            if (out[idx[i]] >= tau) {
                csum += out[idx[i]];
                swap32(&idx[i], &idx[c++]);
            }
        double need = (double)s->top_p * total;
        int sorted_n = csum >= need ? c : m;
        sort_order(out, idx, 0, sorted_n - 1);
        double cum = 0.0;
        int keep = sorted_n;
        for (int i = 0; i < sorted_n; i++) {
            cum += out[idx[i]];
            if (cum >= need) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
        truncated = 1;
    }
    if (truncated) {
        /* zero everything outside idx[0..m): mark kept ones negative */
        for (int i = 0; i < m; i++)
            out[idx[i]] = -out[idx[i]] - 1.0f;
        for (int i = 0; i < n; i++)
            out[i] = out[i] < 0.0f ? -(out[i] + 1.0f) : 0.0f;
    }
    double sum = 0.0;
    int nz = 0;
    for (int i = 0; i < n; i++) {
        sum += out[i];
        nz += out[i] > 0.0f;
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        out[i] *= inv;
    return nz;
}

int32_t spec_sample(const float *p, int n, struct spec_rng *r)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += p[i];
    double u = spec_rng_uniform(r) * sum;
    double cum = 0.0;
    int32_t last = -1;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0.0f)
            continue;
        cum += p[i];
        last = i;
        if (u < cum)
            return i;
    }
    return last < 0 ? 0 : last; /* rounding: the last nonzero id */
}
