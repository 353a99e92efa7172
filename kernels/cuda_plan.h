/*
 * cuda_plan.h - host-side planning of the device MLA attention
 * (kcuda_mla_attend): which CTA attends to which positions of which
 * sequence for which (row, head) query pairs, and how the partial results
 * are merged. Plain C, always built, tested on the CPU
 * (tests/unit/test_cuda_plan.c); the device kernels read the same layout.
 *
 * Work model (our take on FlashMLA's get_mla_metadata): the kernel is
 * persistent, one CTA per "part" (n_parts = SMs x CTAs per SM, fixed).
 * A call's query pairs are cut into tiles of at most KCUDA_MLA_PAIRS
 * pairs: one sequence, a range of its rows, a group of heads; every pair
 * of a tile shares each cache row the CTA loads. A tile's work is its
 * positions [0, vis) (vis: what its last row sees), in chunks of `chunk`
 * positions. The tiles are laid out one after the other (sequence, row
 * tile, head group) as a line of chunks, each tile charged `ovh` chunks
 * more for its fixed cost (loading the queries, writing the result), and
 * the line is cut into n_parts pieces of at most
 *   payload = ceil(total / n_parts) + ovh
 * chunks. A cut inside a tile splits it (flash-decoding): one long
 * sequence spreads over all parts, while many short ones are cut only
 * at the n_parts - 1 part boundaries, so at most n_parts - 1 tiles are
 * split. A piece of a tile in one part is a block.
 *
 * A tile in one block writes its normalised result straight to oc
 * (slot -1). A split tile's blocks write (max, sum, unnormalised latents)
 * per pair to consecutive partial slots of the workspace, in position
 * order, and one merge entry tells the combine kernel to fold those slots
 * into oc in that order.
 *
 * Rows of a sequence must be contiguous in the call (kcuda_rows.seq_row0)
 * and in increasing position order (as mtpd_ctx rows are): the planner
 * takes row i of n to see at most seq_len - n + i + 1 positions. The
 * kernel masks by each row's real position.
 *
 * Per step: kcuda_mla_plan_build() fills the host image, the caller
 * uploads it (kcuda_h2d(g, plan->dev, plan->host, plan->bytes): a fixed
 * size, so the copy can be captured in a CUDA graph; every layer of the
 * step then uses the same plan). The image must not change until that
 * copy has run.
 *
 * The model side, once (at load, per device context):
 *   kcuda_mla_plan_init(&plan, max_rows, max_seqs, H,
 *                       kcuda_mla_parts(kcuda_sm_count(g), L, R), 0);
 *   host = kcuda_host_alloc(g, plan.bytes);
 *   dev = kcuda_malloc(g, plan.bytes);
 *   kcuda_mla_plan_bind(&plan, host, dev);
 *   and a workspace (kcuda_open) of at least kcuda_mla_workspace(&plan, L)
 *   bytes (DeepSeek-V3 on 132 SMs: 262 slots x 64 pairs x 514 floats,
 *   34 MB; the default model: 1054 slots x 64 x 130 floats, 35 MB).
 * Per step, with the step's seq_row0 / seq_len host arrays (those it
 * uploads for kcuda_rows):
 *   kcuda_mla_plan_build(&plan, n_seqs, seq_row0, seq_len);
 *   kcuda_h2d(g, plan.dev, plan.host, plan.bytes);  (captured in the
 *       step's graph; rebuild the image only after the previous launch
 *       has copied it, or keep two plans and alternate)
 *   per layer: kcuda_kv_write, then kcuda_mla_attend(..., &plan).
 * The kernels' grids are fixed by the plan's capacity (n_parts CTAs, and
 * min(n_parts, cap_merges) for the combine), so a graph captured with one
 * plan replays any other plan built into the same image.
 */
#ifndef MTPD_CUDA_PLAN_H
#define MTPD_CUDA_PLAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KCUDA_MLA_PAIRS 64  /* query pairs per tile (4 MMA row tiles) */
#define KCUDA_MLA_CHUNK 64  /* default split granularity, positions */
#define KCUDA_MLA_OVH_POS 256 /* a block's fixed cost, in positions */

/* One CTA work item: pairs (row, head) for rows [row0, row0 + n_rows) of
 * the call (one sequence, seq) and heads [head0, head0 + n_heads), pair
 * p = (p / n_heads, p % n_heads) local, over positions [t0, t1). slot:
 * the partial slot it writes, or -1: it is the tile's only block and
 * writes normalised results to oc. */
struct kcuda_mla_block {
    int32_t seq, row0, n_rows, head0, n_heads, t0, t1, slot;
};

/* A split tile: its partials are slots [slot0, slot0 + n_splits), in
 * position order. */
struct kcuda_mla_merge {
    int32_t row0, n_rows, head0, n_heads, slot0, n_splits, pad[2];
};

/* Counts of the current plan (the image starts with it). */
struct kcuda_mla_hdr {
    int32_t n_blocks, n_merges, n_slots, n_parts, pad[4];
};

struct kcuda_mla_plan {
    /* fixed by kcuda_mla_plan_init */
    int cap_rows, cap_seqs, H, n_parts, chunk, ovh;
    int cap_blocks, cap_merges, cap_slots;
    size_t bytes;            /* of the image (host and device alike) */
    size_t off_part, off_blocks, off_merges; /* arrays in the image */
    /* the image: given by kcuda_mla_plan_bind, owned by the caller */
    void *host;              /* pinned host memory on the CUDA path */
    void *dev;               /* (dev) its mirror, or NULL (CPU tests) */
    /* views into host */
    struct kcuda_mla_hdr *hdr;
    int32_t *part_begin;     /* [n_parts + 1]: part p runs blocks
                                [part_begin[p], part_begin[p + 1]) */
    struct kcuda_mla_block *blocks; /* [cap_blocks] */
    struct kcuda_mla_merge *merges; /* [cap_merges] */
};

/*
 * Sets the capacities of a plan: at most cap_rows rows and cap_seqs
 * sequences per call, H heads, n_parts CTAs (kcuda_mla_parts), splits at
 * multiples of chunk positions (0: KCUDA_MLA_CHUNK). Contexts of any
 * length fit (a tile's positions never add blocks, only parts do):
 *   cap_blocks = cap_rows * ceil(H / min(H, 64)) + n_parts - 1
 *   cap_merges = n_parts - 1, cap_slots = 2 * (n_parts - 1)
 * plan->bytes is then the image size to allocate (host, pinned, and
 * device, 16-byte aligned) before kcuda_mla_plan_bind. MTPD_K_EINVAL on
 * a bad argument.
 */
int kcuda_mla_plan_init(struct kcuda_mla_plan *p, int cap_rows, int cap_seqs,
                        int H, int n_parts, int chunk);
/* Gives the plan its image: host (plan->bytes, 16-byte aligned) and its
 * device mirror dev (may be NULL). Sets an empty plan. */
int kcuda_mla_plan_bind(struct kcuda_mla_plan *p, void *host, void *dev);
/*
 * Plans one call of n_seqs sequences: rows [seq_row0[s], seq_row0[s + 1])
 * are sequence s's (seq_row0 [n_seqs + 1], the array of kcuda_rows), and
 * seq_len[s] its positions after the call (>= its rows when it has any).
 * Sequences without rows get no blocks. MTPD_K_EINVAL on bad input,
 * MTPD_K_ENOMEM when the call exceeds the capacities (the plan is then
 * empty).
 */
int kcuda_mla_plan_build(struct kcuda_mla_plan *p, int n_seqs,
                         const int32_t *seq_row0, const int32_t *seq_len);
/* The tile shape for a sequence of n rows: *hg heads by *rt rows, fewest
 * tiles (rt * hg <= KCUDA_MLA_PAIRS). */
void kcuda_mla_tile_shape(int n, int H, int *rt, int *hg);
/* Workspace bytes kcuda_mla_attend needs for this plan's capacity and
 * kv_lora: cap_slots * KCUDA_MLA_PAIRS * (kv_lora + 2) floats. */
size_t kcuda_mla_workspace(const struct kcuda_mla_plan *p, int kv_lora);
/* n_parts for kcuda_mla_plan_init: sm_count x the CTAs of the attention
 * kernel one SM holds for this kv_lora / rope (its shared memory and
 * threads, as mla_attn.cu sizes them). */
int kcuda_mla_parts(int sm_count, int kv_lora, int rope);
/* Shared memory bytes of the attention kernel's CTA and its threads (the
 * kernel uses these same numbers); 0 when the shape is unsupported. The
 * kernel takes kv_lora up to 512 and rope up to 64 with kv_lora + rope a
 * multiple of 16 and kv_lora a multiple of 8 (<= 128), 16 (<= 256) or 32
 * (<= 512): DeepSeek-V3 (512, 64), the default model (128, 16), the test
 * checkpoints (48, 16), (96, 16). */
size_t kcuda_mla_smem(int kv_lora, int rope);
int kcuda_mla_threads(int kv_lora);

#ifdef __cplusplus
}
#endif
#endif
