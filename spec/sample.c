/*
 * sample.c - RNG, logits -> distribution (temperature, top-k, top-p) and
 * categorical sampling. See sample.h for the contracts.
 */
#include "sample.h"

#include <math.h>
#include <stddef.h>

#include "kernels.h"

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
    int best = kargmax(x, n); /* SIMD; the lowest index on ties */
    return best < 0 ? 0 : best;
}

/* Sum of p[0..n) in double with eight independent chains (the compiler
 * may not reorder one chain; eight vectorise and hide the add latency). */
static double sum_f(const float *p, int n)
{
    double a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += p[i + j];
    for (; i < n; i++)
        a[i & 7] += p[i];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Sum of the p[i] >= t, like sum_f (kept apart: sum_f is on spec_sample's
 * hot path, and the compare makes it 2-3x slower there). */
static double sum_ge(const float *p, int n, float t)
{
    double a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += p[i + j] >= t ? p[i + j] : 0.0f;
    for (; i < n; i++)
        a[i & 7] += p[i] >= t ? p[i] : 0.0f;
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

int spec_probs(const struct spec_sampling *s, const float *logits, int n,
               float *out, int32_t *idx)
{
    int32_t amax = spec_argmax(logits, n);
    if (spec_sampling_greedy(s)) {
        for (int i = 0; i < n; i++)
            out[i] = 0.0f;
        out[amax] = 1.0f;
        return 1;
    }
    /* softmax(logits / T) by the SIMD kernel (a vocabulary-sized expf
     * loop is ~50 us, several times a pass); NaN and -inf logits get
     * probability exactly 0 */
    if (!(logits[amax] > -INFINITY)) { /* every logit NaN or -inf */
        for (int i = 0; i < n; i++)
            out[i] = i == amax;
        return 1;
    }
    ksoftmax_scaled(logits, n, 1.0f / s->temperature, out);
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
        /* candidates: idx[0..m) after top-k, else every id */
        double total = 0.0;
        if (truncated)
            for (int i = 0; i < m; i++)
                total += out[idx[i]];
        else
            total = sum_f(out, n);
        double need = (double)s->top_p * total;
        /* Only tokens at or above a threshold tau can be in the nucleus if
         * those already hold top_p of the mass: sort just those. tau falls
         * from a tenth of the largest probability until they do (usually
         * at once: a handful of tokens), down to 0 (all of them). */
        float tau = 0.0f;
        for (float rel = 0.1f; rel >= 1e-6f; rel *= 0.1f) {
            float t = rel * out[amax];
            double csum = 0.0;
            if (truncated) {
                for (int i = 0; i < m; i++)
                    if (out[idx[i]] >= t)
                        csum += out[idx[i]];
            } else {
                csum = sum_ge(out, n, t);
            }
            if (csum >= need) {
                tau = t;
                break;
            }
        }
        int c = 0;
        if (truncated) {
            for (int i = 0; i < m; i++)
                if (out[idx[i]] >= tau)
                    swap32(&idx[i], &idx[c++]);
        } else {
            for (int i = 0; i < n; i++)
                if (out[i] >= tau)
                    idx[c++] = i;
        }
        int sorted_n = c;
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
    int nz = 0;
    for (int i = 0; i < n; i++)
        nz += out[i] > 0.0f;
    if (truncated) {
        float inv = (float)(1.0 / sum_f(out, n));
        for (int i = 0; i < n; i++)
            out[i] *= inv;
    }
    return nz;
}

int32_t spec_sample(const float *p, int n, struct spec_rng *r)
{
    /* u * total, then blocks of 64 summed like the total until the one
     * where the running sum passes it, then that block one by one */
    enum { B = 64 };
    double u = spec_rng_uniform(r) * sum_f(p, n);
    double cum = 0.0;
    int32_t last = -1;
    for (int b = 0; b < n; b += B) {
        int e = n - b < B ? n : b + B;
        double bs = sum_f(p + b, e - b);
        if (cum + bs <= u) {
            cum += bs;
            for (int i = e - 1; i >= b && last < b; i--)
                if (p[i] > 0.0f)
                    last = i;
            continue;
        }
        for (int i = b; i < e; i++) {
            if (p[i] <= 0.0f)
                continue;
            cum += p[i];
            last = i;
            if (u < cum)
                return i;
        }
    }
    return last < 0 ? 0 : last; /* rounding: the last nonzero id */
}
