/*
 * test_cuda_plan.c - the host-side plan of the device MLA attention
 * (kernels/cuda_plan.c), on the CPU: coverage (every (row, head,
 * position it sees) in exactly one block), the merge layout, balance
 * across parts, limits and capacity errors, and an emulation that runs a
 * plan with a plain-C split softmax (per-block max / sum / latents, merged
 * in the plan's order) against the unsplit attention.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_plan.h"
#include "kernels.h"
#include "unit_test.h"

/* ---- a call and its plan -------------------------------------------- */

struct call {
    int n_seqs, H;
    int32_t *row0; /* [n_seqs + 1] */
    int32_t *len;  /* [n_seqs] */
    int n_rows;
};

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static int rnd_in(int lo, int hi) /* [lo, hi] */
{
    return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

static float rnd_f(void)
{
    return (float)rnd() / 2097152.0f - 1.0f; /* [-1, 1) */
}

static int call_new(struct call *c, int n_seqs, const int *rows,
                    const int *len, int H)
{
    c->n_seqs = n_seqs;
    c->H = H;
    c->row0 = calloc((size_t)n_seqs + 1, sizeof(int32_t));
    c->len = calloc((size_t)n_seqs + 1, sizeof(int32_t));
    if (!c->row0 || !c->len)
        return -1;
    for (int s = 0; s < n_seqs; s++) {
        c->row0[s + 1] = c->row0[s] + rows[s];
        c->len[s] = len[s];
    }
    c->n_rows = c->row0[n_seqs];
    return 0;
}

static void call_free(struct call *c)
{
    free(c->row0);
    free(c->len);
}

/* Sequence of call row r, and its position (rows are a sequence's last
 * positions, in order). */
static int row_seq(const struct call *c, int r)
{
    int s = 0;
    while (c->row0[s + 1] <= r)
        s++;
    return s;
}

static int row_pos(const struct call *c, int r)
{
    int s = row_seq(c, r);
    return c->len[s] - (c->row0[s + 1] - c->row0[s]) + (r - c->row0[s]);
}

static void *plan_new(struct kcuda_mla_plan *p, int cap_rows, int cap_seqs,
                      int H, int parts, int chunk)
{
    if (kcuda_mla_plan_init(p, cap_rows, cap_seqs, H, parts, chunk))
        return NULL;
    void *host = aligned_alloc(16, (p->bytes + 15) & ~(size_t)15);
    if (!host || kcuda_mla_plan_bind(p, host, NULL)) {
        free(host);
        return NULL;
    }
    return host;
}

/* ---- structural checks ------------------------------------------------ */

static long chunks_of(const struct kcuda_mla_plan *p,
                      const struct kcuda_mla_block *b)
{
    return (b->t1 - b->t0 + p->chunk - 1) / p->chunk;
}

static int same_tile(const struct kcuda_mla_block *a,
                     const struct kcuda_mla_block *b)
{
    return a->seq == b->seq && a->row0 == b->row0 &&
           a->n_rows == b->n_rows && a->head0 == b->head0 &&
           a->n_heads == b->n_heads;
}

/*
 * Everything a plan promises, checked from its arrays alone: counts within
 * capacity; part ranges; blocks inside their sequence; every (row, head)
 * pair's blocks chain over exactly [0, pos + 1) (each position it sees
 * once, none twice, none missed); slots used once each, a block without
 * a slot is its tile's only block, every slotted block in exactly one
 * merge entry whose slots follow the positions; and each part's cost
 * (chunks + ovh per block) within ceil(total / n_parts) + ovh, the last
 * part's within ceil(total / n_parts), total counting each tile's
 * overhead once.
 */
static enum test_return check_plan(const struct kcuda_mla_plan *p,
                                   const struct call *c)
{
    const struct kcuda_mla_hdr *hd = p->hdr;
    int nb = hd->n_blocks, H = p->H;
    CHECK(hd->n_parts == p->n_parts, "n_parts %d", hd->n_parts);
    CHECK(nb >= 0 && nb <= p->cap_blocks, "n_blocks %d cap %d", nb,
          p->cap_blocks);
    CHECK(hd->n_merges >= 0 && hd->n_merges <= p->cap_merges, "merges %d",
          hd->n_merges);
    CHECK(hd->n_slots >= 0 && hd->n_slots <= p->cap_slots, "slots %d",
          hd->n_slots);
    CHECK(p->part_begin[0] == 0 && p->part_begin[p->n_parts] == nb,
          "part ends %d %d", p->part_begin[0], p->part_begin[p->n_parts]);
    for (int i = 0; i < p->n_parts; i++)
        CHECK(p->part_begin[i] <= p->part_begin[i + 1], "part %d", i);

    size_t np = (size_t)c->n_rows * H;
    int *next = calloc(np ? np : 1, sizeof(int));   /* next position due */
    int *slot_use = calloc((size_t)p->cap_slots + 1, sizeof(int));
    int *in_merge = calloc((size_t)nb + 1, sizeof(int));
    int *slot_blk = malloc(sizeof(int) * ((size_t)p->cap_slots + 1));
    enum test_return ret = TEST_FAIL;
    if (!next || !slot_use || !in_merge || !slot_blk)
        goto out;
    for (int i = 0; i <= p->cap_slots; i++)
        slot_blk[i] = -1;
    for (int i = 0; i < nb; i++) {
        const struct kcuda_mla_block *b = &p->blocks[i];
        if (!(b->seq >= 0 && b->seq < c->n_seqs && b->n_rows >= 1 &&
              b->n_heads >= 1 &&
              b->n_rows * b->n_heads <= KCUDA_MLA_PAIRS &&
              b->row0 >= c->row0[b->seq] &&
              b->row0 + b->n_rows <= c->row0[b->seq + 1] &&
              b->head0 >= 0 && b->head0 + b->n_heads <= H && b->t0 >= 0 &&
              b->t0 < b->t1 && b->t1 <= c->len[b->seq] &&
              b->t0 % p->chunk == 0 && b->slot >= -1 &&
              b->slot < hd->n_slots)) {
            fprintf(stderr, "  block %d: seq %d rows %d+%d heads %d+%d "
                    "[%d, %d) slot %d\n", i, b->seq, b->row0, b->n_rows,
                    b->head0, b->n_heads, b->t0, b->t1, b->slot);
            goto out;
        }
        for (int r = b->row0; r < b->row0 + b->n_rows; r++)
            for (int h = b->head0; h < b->head0 + b->n_heads; h++) {
                int *nx = &next[(size_t)r * H + h];
                if (b->t0 != *nx) {
                    fprintf(stderr, "  block %d: pair (%d, %d) starts at "
                            "%d, due %d\n", i, r, h, b->t0, *nx);
                    goto out;
                }
                *nx = b->t1;
            }
        if (b->slot >= 0) {
            if (slot_use[b->slot]++) {
                fprintf(stderr, "  slot %d used twice\n", b->slot);
                goto out;
            }
            slot_blk[b->slot] = i;
        } else if (b->t0 != 0 || b->t1 != row_pos(c, b->row0 + b->n_rows -
                                                       1) + 1) {
            fprintf(stderr, "  block %d without slot is not a whole tile\n",
                    i);
            goto out;
        }
    }
    for (int r = 0; r < c->n_rows; r++)
        for (int h = 0; h < H; h++)
            if (next[(size_t)r * H + h] < row_pos(c, r) + 1) {
                fprintf(stderr, "  pair (%d, %d) covered to %d of %d\n", r,
                        h, next[(size_t)r * H + h], row_pos(c, r) + 1);
                goto out;
            }
    int slots = 0;
    for (int m = 0; m < hd->n_merges; m++) {
        const struct kcuda_mla_merge *e = &p->merges[m];
        if (e->n_splits < 2 || e->slot0 < 0 ||
            e->slot0 + e->n_splits > hd->n_slots) {
            fprintf(stderr, "  merge %d: slots %d+%d\n", m, e->slot0,
                    e->n_splits);
            goto out;
        }
        if (slot_blk[e->slot0] < 0) {
            fprintf(stderr, "  merge %d: slot %d unused\n", m, e->slot0);
            goto out;
        }
        const struct kcuda_mla_block *f = &p->blocks[slot_blk[e->slot0]];
        for (int k = 0; k < e->n_splits; k++) {
            int bi = slot_blk[e->slot0 + k];
            const struct kcuda_mla_block *b = bi < 0 ? NULL : &p->blocks[bi];
            if (!b || in_merge[bi]++ || b->row0 != e->row0 ||
                b->n_rows != e->n_rows || b->head0 != e->head0 ||
                b->n_heads != e->n_heads || !same_tile(b, f) ||
                (k == 0 && b->t0 != 0) ||
                (k > 0 && b->t0 != p->blocks[slot_blk[e->slot0 + k - 1]].t1)) {
                fprintf(stderr, "  merge %d split %d: block %d\n", m, k, bi);
                goto out;
            }
        }
        slots += e->n_splits;
    }
    for (int i = 0; i < nb; i++)
        if (p->blocks[i].slot >= 0 && !in_merge[i]) {
            fprintf(stderr, "  block %d's slot is in no merge\n", i);
            goto out;
        }
    if (slots != hd->n_slots) {
        fprintf(stderr, "  %d slots merged of %d\n", slots, hd->n_slots);
        goto out;
    }

    /* balance */
    long chunks = 0, tiles = nb, max = 0;
    for (int i = 0; i < nb; i++)
        chunks += chunks_of(p, &p->blocks[i]);
    for (int m = 0; m < hd->n_merges; m++)
        tiles -= p->merges[m].n_splits - 1;
    long total = chunks + tiles * p->ovh;
    long bound = (total + p->n_parts - 1) / p->n_parts + p->ovh;
    for (int q = 0; q < p->n_parts; q++) {
        long cost = 0;
        for (int i = p->part_begin[q]; i < p->part_begin[q + 1]; i++)
            cost += chunks_of(p, &p->blocks[i]) + p->ovh;
        max = cost > max ? cost : max;
    }
    if (max > bound) {
        fprintf(stderr, "  part cost %ld > bound %ld (total %ld, %d parts)\n",
                max, bound, total, p->n_parts);
        goto out;
    }
    /* the last part gets at most an even share (cuda_plan.c's place()) */
    long last = 0;
    for (int i = p->part_begin[p->n_parts - 1]; i < nb; i++)
        last += chunks_of(p, &p->blocks[i]) + p->ovh;
    if (last > (total + p->n_parts - 1) / p->n_parts) {
        fprintf(stderr, "  last part cost %ld > %ld\n", last,
                (total + p->n_parts - 1) / p->n_parts);
        goto out;
    }
    ret = TEST_PASS;
out:
    free(next);
    free(slot_use);
    free(in_merge);
    free(slot_blk);
    return ret;
}

/* ---- emulation -------------------------------------------------------- */

/*
 * Runs the plan on the CPU: queries q [rows, H, L + R], each sequence's
 * cache kv[s] [len, L + R]; blocks as the attention kernel runs them
 * (per pair: max, sum and unnormalised latents over the block's
 * positions the pair sees; straight to out, or to its slot), then merge
 * entries as the combine kernel (the slots' max, then the weighted sums
 * in slot order). out [rows, H, L].
 */
static void emulate(const struct kcuda_mla_plan *p, const struct call *c,
                    int L, int R, const float *q, float *const *kv,
                    float scale, float *out, float *ws_m, float *ws_l,
                    float *ws_o)
{
    int D = L + R, H = p->H;
    int maxlen = 1;
    for (int i = 0; i < c->n_seqs; i++)
        maxlen = c->len[i] > maxlen ? c->len[i] : maxlen;
    float *s = malloc(sizeof(float) * (size_t)maxlen);
    for (int q_ = 0; q_ < p->n_parts; q_++)
        for (int i = p->part_begin[q_]; i < p->part_begin[q_ + 1]; i++) {
            const struct kcuda_mla_block *b = &p->blocks[i];
            for (int pr = 0; pr < b->n_rows * b->n_heads; pr++) {
                int r = b->row0 + pr / b->n_heads;
                int h = b->head0 + pr % b->n_heads;
                const float *qv = q + ((size_t)r * H + h) * D;
                int e = row_pos(c, r) + 1;
                e = e < b->t1 ? e : b->t1;
                float m = -INFINITY, l = 0.0f, o[512];
                memset(o, 0, sizeof(float) * (size_t)L);
                for (int t = b->t0; t < e; t++) {
                    const float *k = kv[b->seq] + (size_t)t * D;
                    float d = 0.0f;
                    for (int j = 0; j < D; j++)
                        d += qv[j] * k[j];
                    s[t - b->t0] = scale * d;
                    m = s[t - b->t0] > m ? s[t - b->t0] : m;
                }
                for (int t = b->t0; t < e; t++) {
                    float w = expf(s[t - b->t0] - m);
                    const float *k = kv[b->seq] + (size_t)t * D;
                    l += w;
                    for (int j = 0; j < L; j++)
                        o[j] += w * k[j];
                }
                if (b->slot < 0) {
                    float *dst = out + ((size_t)r * H + h) * L;
                    for (int j = 0; j < L; j++)
                        dst[j] = o[j] / l;
                } else {
                    size_t sl = (size_t)b->slot * KCUDA_MLA_PAIRS + pr;
                    ws_m[sl] = m;
                    ws_l[sl] = l;
                    memcpy(ws_o + sl * L, o, sizeof(float) * (size_t)L);
                }
            }
        }
    for (int mi = 0; mi < p->hdr->n_merges; mi++) {
        const struct kcuda_mla_merge *e = &p->merges[mi];
        for (int pr = 0; pr < e->n_rows * e->n_heads; pr++) {
            int r = e->row0 + pr / e->n_heads, h = e->head0 + pr % e->n_heads;
            float M = -INFINITY, l = 0.0f;
            for (int k = 0; k < e->n_splits; k++) {
                float mk = ws_m[(size_t)(e->slot0 + k) * KCUDA_MLA_PAIRS + pr];
                M = mk > M ? mk : M;
            }
            float *dst = out + ((size_t)r * H + h) * L;
            memset(dst, 0, sizeof(float) * (size_t)L);
            for (int k = 0; k < e->n_splits; k++) {
                size_t sl = (size_t)(e->slot0 + k) * KCUDA_MLA_PAIRS + pr;
                if (!(ws_m[sl] > -INFINITY))
                    continue; /* the split holds none of this pair's */
                float w = expf(ws_m[sl] - M);
                l += w * ws_l[sl];
                for (int j = 0; j < L; j++)
                    dst[j] += w * ws_o[sl * L + j];
            }
            for (int j = 0; j < L; j++)
                dst[j] /= l;
        }
    }
    free(s);
}

/* The unsplit attention of one pair, in double. */
static void reference(const struct call *c, int L, int R, const float *q,
                      float *const *kv, float scale, int r, int h,
                      double *o)
{
    int D = L + R, H = c->H, s = row_seq(c, r), n = row_pos(c, r) + 1;
    const float *qv = q + ((size_t)r * H + h) * D;
    double *sc = malloc(sizeof(double) * (size_t)n), m = -INFINITY, l = 0;
    for (int t = 0; t < n; t++) {
        double d = 0;
        for (int j = 0; j < D; j++)
            d += (double)qv[j] * kv[s][(size_t)t * D + j];
        sc[t] = scale * d;
        m = sc[t] > m ? sc[t] : m;
    }
    for (int j = 0; j < L; j++)
        o[j] = 0;
    for (int t = 0; t < n; t++) {
        double w = exp(sc[t] - m);
        l += w;
        for (int j = 0; j < L; j++)
            o[j] += w * kv[s][(size_t)t * D + j];
    }
    for (int j = 0; j < L; j++)
        o[j] /= l;
    free(sc);
}

/* Random queries and caches for call c; plan it with parts / chunk, run
 * the emulation and compare every pair with the reference: max |diff| /
 * max |ref| of the pair within 1e-5. */
static enum test_return emulate_call(const struct call *c, int L, int R,
                                     int parts, int chunk, float qmag)
{
    struct kcuda_mla_plan p;
    void *host = plan_new(&p, c->n_rows, c->n_seqs, c->H, parts, chunk);
    CHECK(host, "plan_new");
    int rc = kcuda_mla_plan_build(&p, c->n_seqs, c->row0, c->len);
    CHECK(rc == 0, "build %d", rc);
    enum test_return ret = check_plan(&p, c);
    int D = L + R, H = c->H;
    size_t pairs = (size_t)c->n_rows * H;
    float *q = malloc(sizeof(float) * pairs * D);
    float *out = malloc(sizeof(float) * pairs * L);
    size_t ns = (size_t)p.cap_slots * KCUDA_MLA_PAIRS + 1;
    float *ws_m = malloc(sizeof(float) * ns);
    float *ws_l = malloc(sizeof(float) * ns);
    float *ws_o = malloc(sizeof(float) * ns * L);
    float **kv = calloc((size_t)c->n_seqs, sizeof(float *));
    double *ref = malloc(sizeof(double) * (size_t)L);
    CHECK(q && out && ws_m && ws_l && ws_o && kv && ref, "alloc");
    CHECK(kcuda_mla_workspace(&p, L) >=
          (size_t)p.hdr->n_slots * KCUDA_MLA_PAIRS * (L + 2) * sizeof(float),
          "workspace");
    for (size_t i = 0; i < pairs * D; i++)
        q[i] = qmag * rnd_f();
    for (size_t i = 0; i < pairs * L; i++)
        out[i] = NAN;
    for (int s = 0; s < c->n_seqs; s++) {
        kv[s] = malloc(sizeof(float) * (size_t)c->len[s] * D + 1);
        CHECK(kv[s], "alloc");
        for (size_t i = 0; i < (size_t)c->len[s] * D; i++)
            kv[s][i] = rnd_f();
    }
    float scale = 1.0f / sqrtf((float)D);
    if (ret == TEST_PASS)
        emulate(&p, c, L, R, q, kv, scale, out, ws_m, ws_l, ws_o);
    double worst = 0;
    for (int r = 0; r < c->n_rows && ret == TEST_PASS; r++)
        for (int h = 0; h < H; h++) {
            reference(c, L, R, q, kv, scale, r, h, ref);
            double dmax = 0, rmax = 0;
            const float *o = out + ((size_t)r * H + h) * L;
            for (int j = 0; j < L; j++) {
                double d = fabs(o[j] - ref[j]);
                dmax = d > dmax || d != d ? d : dmax;
                rmax = fabs(ref[j]) > rmax ? fabs(ref[j]) : rmax;
            }
            double rel = dmax / rmax;
            worst = rel > worst || rel != rel ? rel : worst;
            if (!(rel <= 1e-5)) {
                fprintf(stderr, "  pair (%d, %d): rel %.3g\n", r, h, rel);
                ret = TEST_FAIL;
                break;
            }
        }
    for (int s = 0; s < c->n_seqs; s++)
        free(kv[s]);
    free(kv);
    free(q);
    free(out);
    free(ws_m);
    free(ws_l);
    free(ws_o);
    free(ref);
    free(host);
    return ret;
}

/* ---- tests ------------------------------------------------------------ */

/* Plans call c with the given parts / chunk and checks it; *out gets the
 * plan (host image owned by *host) when asked. */
static enum test_return plan_check(const struct call *c, int parts, int chunk,
                                   struct kcuda_mla_plan *out, void **host)
{
    struct kcuda_mla_plan p;
    void *h = plan_new(&p, c->n_rows, c->n_seqs, c->H, parts, chunk);
    CHECK(h, "plan_new");
    int rc = kcuda_mla_plan_build(&p, c->n_seqs, c->row0, c->len);
    if (rc) {
        free(h);
        CHECK(0, "build %d", rc);
    }
    enum test_return ret = check_plan(&p, c);
    if (out && ret == TEST_PASS) {
        *out = p;
        *host = h;
    } else {
        free(h);
    }
    return ret;
}

static enum test_return test_tile_shape(void)
{
    static const int hs[] = {1, 3, 8, 16, 64, 128, 100};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        for (int n = 1; n <= 300; n++) {
            int rt, hg, H = hs[i];
            kcuda_mla_tile_shape(n, H, &rt, &hg);
            CHECK(rt >= 1 && hg >= 1 && rt <= n && hg <= H &&
                  rt * hg <= KCUDA_MLA_PAIRS, "n %d H %d: %d x %d", n, H, rt,
                  hg);
            long tiles = (long)((n + rt - 1) / rt) * ((H + hg - 1) / hg);
            /* never more tiles than one row per tile needs */
            int hm = H < KCUDA_MLA_PAIRS ? H : KCUDA_MLA_PAIRS;
            CHECK(tiles <= (long)n * ((H + hm - 1) / hm), "n %d H %d", n, H);
            /* and a tile holds at least a quarter of PAIRS or all pairs */
            long pairs = (long)n * H;
            CHECK(pairs / tiles >= (pairs < 16 ? pairs : 16), "n %d H %d", n,
                  H);
        }
    int rt, hg;
    kcuda_mla_tile_shape(1, 128, &rt, &hg);
    CHECK(rt == 1 && hg == 64, "decode, 128 heads: %d x %d", rt, hg);
    kcuda_mla_tile_shape(4, 128, &rt, &hg);
    CHECK(rt * hg == 64, "verify k+1 = 4, 128 heads: %d x %d", rt, hg);
    kcuda_mla_tile_shape(1, 8, &rt, &hg);
    CHECK(rt == 1 && hg == 8, "decode, 8 heads: %d x %d", rt, hg);
    kcuda_mla_tile_shape(8, 8, &rt, &hg);
    CHECK(rt == 8 && hg == 8, "8 rows, 8 heads: %d x %d", rt, hg);
    return TEST_PASS;
}

/* The memory-bound shape of the benchmark: 64 sequences x 4096 positions,
 * 1 row each, 128 heads, 132 SMs: every tile whole in one part, no split,
 * no part idle but the few left over. */
static enum test_return test_decode_batch(void)
{
    int rows[64], len[64];
    for (int s = 0; s < 64; s++) {
        rows[s] = 1;
        len[s] = 4096;
    }
    struct call c;
    CHECK(call_new(&c, 64, rows, len, 128) == 0, "alloc");
    struct kcuda_mla_plan p;
    void *host = NULL;
    enum test_return ret = plan_check(&c, 132, 0, &p, &host);
    if (ret == TEST_PASS) {
        int busy = 0;
        for (int q = 0; q < p.n_parts; q++)
            busy += p.part_begin[q + 1] > p.part_begin[q];
        if (p.hdr->n_blocks != 128 || p.hdr->n_merges != 0 || busy != 128) {
            fprintf(stderr, "  %d blocks, %d merges, %d busy parts\n",
                    p.hdr->n_blocks, p.hdr->n_merges, busy);
            ret = TEST_FAIL;
        }
    }
    free(host);
    call_free(&c);
    return ret;
}

/* One long sequence, one row: spread over the parts (flash-decoding):
 * the most any part gets within overhead + 1 chunk of an even share of
 * the chunks, and all parts busy but the one or two the rounding leaves
 * with the remainder. */
static enum test_return test_long_sequence(void)
{
    static const int lens[] = {100000, 1 << 20, 1 << 30};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        int rows = 1, len = lens[i];
        struct call c;
        CHECK(call_new(&c, 1, &rows, &len, 128) == 0, "alloc");
        struct kcuda_mla_plan p;
        void *host = NULL;
        enum test_return ret = plan_check(&c, 132, 0, &p, &host);
        if (ret == TEST_PASS) {
            long hi = 0, all = 0;
            int busy = 0;
            for (int q = 0; q < p.n_parts; q++) {
                long cost = 0;
                for (int b = p.part_begin[q]; b < p.part_begin[q + 1]; b++)
                    cost += chunks_of(&p, &p.blocks[b]);
                hi = cost > hi ? cost : hi;
                all += cost;
                busy += cost > 0;
            }
            /* 2 head groups of 64: 2 tiles, each over ~66 parts */
            if ((double)hi > (double)all / p.n_parts + p.ovh + 1 ||
                busy < p.n_parts - 2 || p.hdr->n_merges != 2) {
                fprintf(stderr, "  len %d: max part %ld chunks of %ld, "
                        "%d busy, %d merges\n", len, hi, all, busy,
                        p.hdr->n_merges);
                ret = TEST_FAIL;
            }
        }
        free(host);
        call_free(&c);
        if (ret != TEST_PASS)
            return ret;
    }
    return TEST_PASS;
}

/* Many short sequences: no tile split but at part boundaries (at most
 * n_parts - 1 splits), and none at all when each is below a chunk. */
static enum test_return test_many_short(void)
{
    enum { N = 4096 };
    static int rows[N], len[N];
    for (int s = 0; s < N; s++) {
        rows[s] = 1 + s % 3;
        len[s] = rows[s] + s % 50;
    }
    struct call c;
    CHECK(call_new(&c, N, rows, len, 16) == 0, "alloc");
    struct kcuda_mla_plan p;
    void *host = NULL;
    enum test_return ret = plan_check(&c, 132, 64, &p, &host);
    if (ret == TEST_PASS && p.hdr->n_merges != 0) {
        fprintf(stderr, "  %d tiles of one chunk split\n", p.hdr->n_merges);
        ret = TEST_FAIL;
    }
    free(host);
    for (int s = 0; s < N && ret == TEST_PASS; s++)
        c.len[s] = c.row0[s + 1] - c.row0[s] + 100 + s % 700;
    if (ret == TEST_PASS)
        ret = plan_check(&c, 132, 64, &p, &host);
    if (ret == TEST_PASS) {
        if (p.hdr->n_merges > p.n_parts - 1) {
            fprintf(stderr, "  %d splits\n", p.hdr->n_merges);
            ret = TEST_FAIL;
        }
        free(host);
    }
    call_free(&c);
    return ret;
}

static enum test_return test_limits(void)
{
    struct kcuda_mla_plan p;
    void *host = plan_new(&p, 16, 4, 8, 10, 0);
    CHECK(host, "plan_new");
    enum test_return ret = TEST_FAIL;
    /* no sequences; sequences without rows */
    int32_t r0[5] = {0, 0, 0, 0, 0}, len[4] = {5, 0, 7, 1};
    if (kcuda_mla_plan_build(&p, 0, r0, len) || p.hdr->n_blocks)
        goto out;
    if (kcuda_mla_plan_build(&p, 4, r0, len) || p.hdr->n_blocks ||
        p.part_begin[p.n_parts])
        goto out;
    /* one position */
    int32_t r1[2] = {0, 1}, l1[1] = {1};
    if (kcuda_mla_plan_build(&p, 1, r1, l1) || p.hdr->n_blocks != 1 ||
        p.blocks[0].t0 != 0 || p.blocks[0].t1 != 1 || p.blocks[0].slot != -1)
        goto out;
    /* capacity: rows, sequences (the plan is left empty) */
    int32_t r2[2] = {0, 17}, l2[1] = {100};
    if (kcuda_mla_plan_build(&p, 1, r2, l2) != MTPD_K_ENOMEM ||
        p.hdr->n_blocks)
        goto out;
    int32_t r3[6] = {0, 1, 2, 3, 4, 5}, l3[5] = {9, 9, 9, 9, 9};
    if (kcuda_mla_plan_build(&p, 5, r3, l3) != MTPD_K_ENOMEM)
        goto out;
    /* bad input: fewer positions than rows, rows going back, NULLs */
    int32_t r4[2] = {0, 3}, l4[1] = {2};
    if (kcuda_mla_plan_build(&p, 1, r4, l4) != MTPD_K_EINVAL)
        goto out;
    int32_t r5[3] = {0, 3, 2}, l5[2] = {5, 5};
    if (kcuda_mla_plan_build(&p, 2, r5, l5) != MTPD_K_EINVAL)
        goto out;
    int32_t r6[2] = {1, 3}, l6[1] = {5};
    if (kcuda_mla_plan_build(&p, 1, r6, l6) != MTPD_K_EINVAL)
        goto out;
    if (kcuda_mla_plan_build(&p, 1, NULL, l6) != MTPD_K_EINVAL ||
        kcuda_mla_plan_build(&p, -1, r6, l6) != MTPD_K_EINVAL)
        goto out;
    /* init and bind arguments */
    struct kcuda_mla_plan q;
    if (kcuda_mla_plan_init(&q, 1, 1, 0, 1, 0) != MTPD_K_EINVAL ||
        kcuda_mla_plan_init(&q, 1, 1, 8, 0, 0) != MTPD_K_EINVAL ||
        kcuda_mla_plan_init(&q, -1, 1, 8, 1, 0) != MTPD_K_EINVAL ||
        kcuda_mla_plan_init(&q, 1 << 30, 1, 128, 1, 0) != MTPD_K_EINVAL)
        goto out;
    if (kcuda_mla_plan_init(&q, 1, 1, 8, 4, 0) ||
        kcuda_mla_plan_bind(&q, (char *)host + 4, NULL) != MTPD_K_EINVAL)
        goto out;
    /* a plan built for the first call, then an empty one */
    if (kcuda_mla_plan_build(&p, 1, r1, l1) ||
        kcuda_mla_plan_build(&p, 0, r1, l1) || p.hdr->n_blocks ||
        p.part_begin[p.n_parts])
        goto out;
    /* one part takes everything; capacities as documented */
    struct call c;
    int rows[3] = {1, 4, 70}, lens[3] = {3000, 20, 5000};
    CHECK(call_new(&c, 3, rows, lens, 128) == 0, "alloc");
    ret = plan_check(&c, 1, 0, NULL, NULL);
    call_free(&c);
    if (ret != TEST_PASS)
        goto out;
    ret = TEST_FAIL;
    if (kcuda_mla_plan_init(&q, 100, 8, 128, 132, 64) ||
        q.cap_blocks != 100 * 2 + 131 || q.cap_merges != 131 ||
        q.cap_slots != 262 ||
        kcuda_mla_workspace(&q, 512) != 262ul * 64 * 514 * 4)
        goto out;
    /* kernel geometry */
    if (kcuda_mla_smem(512, 64) == 0 || kcuda_mla_smem(512, 64) > 232448 ||
        kcuda_mla_smem(128, 16) == 0 || kcuda_mla_smem(500, 64) ||
        kcuda_mla_smem(512, 72) || kcuda_mla_smem(544, 64) ||
        kcuda_mla_smem(128, 8) || kcuda_mla_smem(48, 16) == 0 ||
        kcuda_mla_smem(96, 16) == 0 || kcuda_mla_smem(24, 8) == 0 ||
        kcuda_mla_smem(200, 8) || kcuda_mla_smem(264, 8) ||
        kcuda_mla_smem(40, 16) || kcuda_mla_threads(512) != 512 ||
        kcuda_mla_threads(128) != 128 ||
        kcuda_mla_parts(132, 512, 64) != 132 ||
        kcuda_mla_parts(132, 128, 16) < 264 || kcuda_mla_parts(0, 512, 64))
        goto out;
    ret = TEST_PASS;
out:
    free(host);
    return ret;
}

/* Random calls: structure and balance on many shapes, parts and chunks. */
static enum test_return test_random_plans(void)
{
    static const int hs[] = {1, 3, 8, 16, 128};
    static const int parts[] = {1, 2, 7, 132, 264, 1000};
    static const int chunks[] = {0, 1, 16, 64, 100};
    for (int it = 0; it < 400; it++) {
        int n = rnd_in(1, 40), rows[40], len[40];
        for (int s = 0; s < n; s++) {
            int kind = rnd_in(0, 3); /* decode, verify, prefill, none */
            rows[s] = kind == 0 ? 1 : kind == 1 ? rnd_in(2, 6)
                    : kind == 2 ? rnd_in(7, 150) : 0;
            len[s] = rows[s] + rnd_in(0, rnd_in(0, 1) ? 100 : 20000);
        }
        struct call c;
        CHECK(call_new(&c, n, rows, len, hs[rnd() % 5]) == 0, "alloc");
        enum test_return ret = plan_check(&c, parts[rnd() % 6],
                                          chunks[rnd() % 5], NULL, NULL);
        call_free(&c);
        if (ret != TEST_PASS) {
            fprintf(stderr, "  iteration %d\n", it);
            return ret;
        }
    }
    return TEST_PASS;
}

/* The emulation on chosen calls: decode batch, verify rows, a prefill
 * chunk, sequences of different lengths, with more and fewer parts. */
static enum test_return test_emulation(void)
{
    struct {
        int n, rows[6], len[6], H, L, R, parts, chunk;
    } cs[] = {
        {1, {1}, {1000}, 8, 128, 16, 132, 0},          /* split decode */
        {1, {4}, {777}, 8, 128, 16, 60, 16},           /* verify k+1 */
        {3, {1, 4, 2}, {300, 50, 999}, 8, 64, 16, 7, 32},
        {2, {70, 3}, {200, 401}, 3, 32, 16, 5, 16},    /* prefill chunk */
        {6, {1, 1, 1, 1, 1, 1}, {1, 2, 3, 64, 65, 500}, 128, 32, 0, 9, 1},
        {2, {5, 1}, {5, 1}, 16, 96, 32, 3, 1},         /* rows = positions */
        {1, {2}, {3000}, 2, 128, 64, 1, 0},            /* one part */
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        struct call c;
        CHECK(call_new(&c, cs[i].n, cs[i].rows, cs[i].len, cs[i].H) == 0,
              "alloc");
        enum test_return ret = emulate_call(&c, cs[i].L, cs[i].R,
                                            cs[i].parts, cs[i].chunk, 3.0f);
        call_free(&c);
        if (ret != TEST_PASS) {
            fprintf(stderr, "  case %zu\n", i);
            return ret;
        }
    }
    return TEST_PASS;
}

/* The emulation on random small calls. */
static enum test_return test_emulation_random(void)
{
    for (int it = 0; it < 40; it++) {
        int n = rnd_in(1, 6), rows[6], len[6];
        for (int s = 0; s < n; s++) {
            rows[s] = rnd_in(0, 3) ? rnd_in(1, 5) : rnd_in(0, 80);
            len[s] = rows[s] + rnd_in(0, 600);
        }
        struct call c;
        CHECK(call_new(&c, n, rows, len, rnd_in(1, 12)) == 0, "alloc");
        enum test_return ret = emulate_call(&c, 32 * rnd_in(1, 3),
                                            16 * rnd_in(0, 2), rnd_in(1, 40),
                                            rnd_in(1, 80), 4.0f * rnd_f());
        call_free(&c);
        if (ret != TEST_PASS) {
            fprintf(stderr, "  iteration %d\n", it);
            return ret;
        }
    }
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"tile_shape", test_tile_shape},
        {"decode_batch", test_decode_batch},
        {"long_sequence", test_long_sequence},
        {"many_short", test_many_short},
        {"limits", test_limits},
        {"random_plans", test_random_plans},
        {"emulation", test_emulation},
        {"emulation_random", test_emulation_random},
    };
    return test_main(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
