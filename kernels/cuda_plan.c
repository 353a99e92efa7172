/*
 * cuda_plan.c - host-side planning of the device MLA attention (see
 * cuda_plan.h for the work model). Plain C: built and tested without
 * CUDA.
 */
#include <string.h>

#include "cuda_plan.h"
#include "kernels.h"

/* Kernel geometry (kernels/cuda/mla_attn.cu uses these numbers too): a
 * CTA has 4 warps per column slice of kv_lora (1, 2 or 4 slices of at
 * most 128 columns), holds KCUDA_MLA_PAIRS queries and 3 stages of 32
 * cache rows in bf16 (rows padded by 16 bytes), one 32-position tile of
 * probabilities, and row statistics. */
#define SM90_SMEM_PER_SM 233472 /* bytes an SM shares among its CTAs */
#define SM90_SMEM_PER_CTA 232448 /* most one CTA may take */
#define SM_THREADS 2048
#define MLA_REGS 128             /* registers per thread we budget */

static int mla_slices(int kv_lora)
{
    return kv_lora <= 128 ? 1 : kv_lora <= 256 ? 2 : 4;
}

int kcuda_mla_threads(int kv_lora)
{
    return 128 * mla_slices(kv_lora);
}

size_t kcuda_mla_smem(int kv_lora, int rope)
{
    /* S takes 16 elements of a row per step; each warp's share of the
     * latent columns is whole 8-column MMA tiles */
    if (kv_lora < 8 || kv_lora > 512 || rope < 0 || rope > 64 ||
        (kv_lora + rope) % 16 || kv_lora % (8 * mla_slices(kv_lora)))
        return 0;
    size_t dp = (size_t)kv_lora + rope + 8; /* bf16 row, padded */
    size_t q = KCUDA_MLA_PAIRS * dp * 2;
    size_t k = 3 * 32 * dp * 2;
    size_t p = KCUDA_MLA_PAIRS * (32 + 8) * 2;
    /* row maxima and sums of up to 4 warps a row tile, rescale factors,
     * final maxima, positions */
    size_t st = (2 * 4 + 3) * KCUDA_MLA_PAIRS * 4;
    return q + k + p + st;
}

int kcuda_mla_parts(int sm_count, int kv_lora, int rope)
{
    size_t smem = kcuda_mla_smem(kv_lora, rope);
    if (sm_count < 1 || smem == 0)
        return 0;
    int threads = kcuda_mla_threads(kv_lora);
    int by_smem = (int)(SM90_SMEM_PER_SM / (smem + 1024));
    int by_threads = SM_THREADS / threads;
    int by_regs = 65536 / (MLA_REGS * threads);
    int n = by_smem < by_threads ? by_smem : by_threads;
    n = n < by_regs ? n : by_regs;
    return sm_count * (n > 0 ? n : 1);
}

void kcuda_mla_tile_shape(int n, int H, int *rt, int *hg)
{
    long best = -1;
    int hmax = H < KCUDA_MLA_PAIRS ? H : KCUDA_MLA_PAIRS;
    *rt = 1;
    *hg = hmax;
    /* most heads first: on a tie, more heads share each query row load */
    for (int g = hmax; g >= 1; g--) {
        int r = KCUDA_MLA_PAIRS / g;
        r = r < n ? r : n;
        long tiles = (long)((n + r - 1) / r) * ((H + g - 1) / g);
        if (best < 0 || tiles < best) {
            best = tiles;
            *rt = r;
            *hg = g;
        }
    }
}

static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

int kcuda_mla_plan_init(struct kcuda_mla_plan *p, int cap_rows, int cap_seqs,
                        int H, int n_parts, int chunk)
{
    if (!p || cap_rows < 0 || cap_seqs < 0 || H < 1 || n_parts < 1 ||
        chunk < 0)
        return MTPD_K_EINVAL;
    memset(p, 0, sizeof(*p));
    p->cap_rows = cap_rows;
    p->cap_seqs = cap_seqs;
    p->H = H;
    p->n_parts = n_parts;
    p->chunk = chunk ? chunk : KCUDA_MLA_CHUNK;
    p->ovh = (KCUDA_MLA_OVH_POS + p->chunk - 1) / p->chunk;
    /* a row is in at most ceil(H / min(H, PAIRS)) tiles (the shape of
     * one row per tile is among those kcuda_mla_tile_shape weighs); the
     * n_parts - 1 cuts between parts add a block each when inside a
     * tile, so at most n_parts - 1 tiles split (merge entries), and a
     * tile cut j times has j + 1 pieces (slots): at most 2 (n_parts - 1) */
    int hmax = H < KCUDA_MLA_PAIRS ? H : KCUDA_MLA_PAIRS;
    long blocks = (long)cap_rows * ((H + hmax - 1) / hmax) + n_parts - 1;
    if (blocks > INT32_MAX / 2)
        return MTPD_K_EINVAL;
    p->cap_blocks = (int)blocks;
    p->cap_merges = n_parts - 1;
    p->cap_slots = 2 * (n_parts - 1);
    p->off_part = align16(sizeof(struct kcuda_mla_hdr));
    p->off_blocks = p->off_part + align16(sizeof(int32_t) * (n_parts + 1));
    p->off_merges = p->off_blocks +
                    sizeof(struct kcuda_mla_block) * (size_t)p->cap_blocks;
    p->bytes = p->off_merges +
               sizeof(struct kcuda_mla_merge) * (size_t)p->cap_merges;
    return 0;
}

/* An empty plan: no blocks, every part's range empty. */
static void plan_clear(struct kcuda_mla_plan *p)
{
    memset(p->hdr, 0, sizeof(*p->hdr));
    p->hdr->n_parts = p->n_parts;
    memset(p->part_begin, 0, sizeof(int32_t) * (size_t)(p->n_parts + 1));
}

int kcuda_mla_plan_bind(struct kcuda_mla_plan *p, void *host, void *dev)
{
    if (!p || !host || ((uintptr_t)host & 15) || ((uintptr_t)dev & 15) ||
        p->bytes == 0)
        return MTPD_K_EINVAL;
    char *h = host;
    p->host = host;
    p->dev = dev;
    p->hdr = (struct kcuda_mla_hdr *)h;
    p->part_begin = (int32_t *)(h + p->off_part);
    p->blocks = (struct kcuda_mla_block *)(h + p->off_blocks);
    p->merges = (struct kcuda_mla_merge *)(h + p->off_merges);
    plan_clear(p);
    return 0;
}

/* One tile: a sequence's rows [r0, r0 + nr) (call rows), heads
 * [h0, h0 + nh), positions [0, vis) in nch chunks. */
struct tile {
    int seq, r0, nr, h0, nh, vis, nch;
};

/* The walk over the line of chunks: the part being filled, its budget. */
struct walk {
    struct kcuda_mla_plan *p;
    long payload, budget;
    int part, nb, nm, ns;
};

static int emit(struct walk *w, const struct tile *t, int c0, int c1,
                int slot)
{
    struct kcuda_mla_plan *p = w->p;
    if (w->nb >= p->cap_blocks || slot >= p->cap_slots)
        return MTPD_K_ENOMEM;
    long e = (long)c1 * p->chunk;
    p->blocks[w->nb++] = (struct kcuda_mla_block){
        .seq = t->seq, .row0 = t->r0, .n_rows = t->nr, .head0 = t->h0,
        .n_heads = t->nh, .t0 = c0 * p->chunk,
        .t1 = e < t->vis ? (int)e : t->vis, .slot = slot};
    return 0;
}

/* Closes the part being filled; the next one starts with a full budget. */
static void next_part(struct walk *w)
{
    w->p->part_begin[++w->part] = w->nb;
    w->budget = w->payload;
}

/* Lays one tile's chunks into the parts: whole while the part's budget
 * holds it and its overhead, else as much as the budget leaves after the
 * overhead (a split: the tile goes on in the next part). Why n_parts
 * parts always suffice: a piece costs its chunks + ovh, so all pieces
 * cost total + cuts * ovh (cuts: splits made); a part that ends with a
 * cut spends exactly payload = ceil(total / n_parts) + ovh, one that
 * does not at least payload - ovh; so the first n_parts - 1 parts spend
 * at least (n_parts - 1) * ceil(total / n_parts) + cuts * ovh, leaving
 * the last part at most ceil(total / n_parts). That the last part takes
 * whatever is left is a safety net. */
static int place(struct walk *w, const struct tile *t)
{
    struct kcuda_mla_plan *p = w->p;
    int done = 0, k = 0, slot0 = -1;
    while (done < t->nch) {
        long rem = t->nch - done, take;
        if (w->part == p->n_parts - 1 || rem + p->ovh <= w->budget)
            take = rem;
        else if (w->budget - p->ovh >= 1)
            take = w->budget - p->ovh;
        else {
            next_part(w);
            continue;
        }
        if (take < rem && k == 0) { /* the tile splits: its merge entry */
            if (w->nm >= p->cap_merges)
                return MTPD_K_ENOMEM;
            slot0 = w->ns;
            p->merges[w->nm++] = (struct kcuda_mla_merge){
                .row0 = t->r0, .n_rows = t->nr, .head0 = t->h0,
                .n_heads = t->nh, .slot0 = slot0};
        }
        int rc = emit(w, t, done, done + (int)take,
                      slot0 < 0 ? -1 : slot0 + k);
        if (rc)
            return rc;
        if (slot0 >= 0) {
            w->ns++;
            p->merges[w->nm - 1].n_splits++;
        }
        k++;
        done += (int)take;
        w->budget -= take + p->ovh;
        if (done < t->nch)
            next_part(w);
    }
    return 0;
}

/* Calls fn on every tile of the call in order (sequence, row tile, head
 * group); stops at the first error. */
static int for_tiles(struct kcuda_mla_plan *p, int n_seqs,
                     const int32_t *seq_row0, const int32_t *seq_len,
                     int (*fn)(void *, const struct tile *), void *arg)
{
    for (int s = 0; s < n_seqs; s++) {
        int n = seq_row0[s + 1] - seq_row0[s], rt, hg;
        if (n == 0)
            continue;
        kcuda_mla_tile_shape(n, p->H, &rt, &hg);
        for (int r = 0; r < n; r += rt) {
            struct tile t = {.seq = s, .r0 = seq_row0[s] + r,
                             .nr = n - r < rt ? n - r : rt};
            /* row i of n sees at most seq_len - n + i + 1 positions */
            t.vis = seq_len[s] - n + r + t.nr;
            t.nch = (t.vis + p->chunk - 1) / p->chunk;
            for (int h = 0; h < p->H; h += hg) {
                t.h0 = h;
                t.nh = p->H - h < hg ? p->H - h : hg;
                int rc = fn(arg, &t);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

static int count_tile(void *arg, const struct tile *t)
{
    long *c = arg;
    c[0] += t->nch;
    c[1]++;
    return 0;
}

static int place_tile(void *arg, const struct tile *t)
{
    return place(arg, t);
}

int kcuda_mla_plan_build(struct kcuda_mla_plan *p, int n_seqs,
                         const int32_t *seq_row0, const int32_t *seq_len)
{
    if (!p || !p->host || n_seqs < 0 || (n_seqs && (!seq_row0 || !seq_len)))
        return MTPD_K_EINVAL;
    plan_clear(p);
    if (n_seqs > p->cap_seqs)
        return MTPD_K_ENOMEM;
    if (n_seqs == 0)
        return 0;
    if (seq_row0[0] != 0)
        return MTPD_K_EINVAL;
    for (int s = 0; s < n_seqs; s++) {
        int n = seq_row0[s + 1] - seq_row0[s];
        if (n < 0 || (n > 0 && seq_len[s] < n))
            return MTPD_K_EINVAL;
    }
    if (seq_row0[n_seqs] > p->cap_rows)
        return MTPD_K_ENOMEM;
    long cnt[2] = {0, 0}; /* chunks, tiles */
    for_tiles(p, n_seqs, seq_row0, seq_len, count_tile, cnt);
    long total = cnt[0] + cnt[1] * p->ovh;
    struct walk w = {.p = p};
    w.payload = (total + p->n_parts - 1) / p->n_parts + p->ovh;
    w.budget = w.payload;
    int rc = for_tiles(p, n_seqs, seq_row0, seq_len, place_tile, &w);
    if (rc) {
        plan_clear(p);
        return rc;
    }
    while (w.part < p->n_parts)
        p->part_begin[++w.part] = w.nb;
    p->hdr->n_blocks = w.nb;
    p->hdr->n_merges = w.nm;
    p->hdr->n_slots = w.ns;
    return 0;
}

size_t kcuda_mla_workspace(const struct kcuda_mla_plan *p, int kv_lora)
{
    return (size_t)p->cap_slots * KCUDA_MLA_PAIRS * ((size_t)kv_lora + 2) *
           sizeof(float);
}
