/*
 * mla_attn.cu - MLA attention over the paged latent cache on the device
 * (kcuda.h: kcuda_kv_write, kcuda_mla_attend; CPU twins: mla_block's
 * cache write, mla.c / mla_chunk.c / mla_split.c).
 *
 * kcuda_mla_attend runs two kernels over a plan (kernels/cuda_plan.h):
 *
 * 1. mla_attn: persistent, one CTA per plan part, running the part's
 *    blocks one after the other. A block is up to 64 query pairs (rows x
 *    heads of one sequence) over a range of positions. Per block:
 *    - the queries [64, L + R] go to shared memory as bf16 (fp32 in
 *      memory; converted once per block);
 *    - the cache is read in tiles of 32 positions, each row L + R
 *      elements, 16-byte pieces: bf16 caches by cp.async straight into
 *      shared memory, 3 stages (tile i + 2 in flight while tile i is
 *      used); f32 caches by 16-byte loads converted to bf16 on the way
 *      in, one tile at a time (the f32 cache is the reference path, its
 *      speed is secondary). Consecutive threads take consecutive 16-byte
 *      pieces of a row (rows are contiguous in a page), so a warp's loads
 *      are 512 contiguous bytes; each row's page comes from the page table
 *      (pages[seq_page0[s] + t / page_pos]);
 *    - all 64 pairs use every cache row read: one read per 64 (row, head)
 *      pairs (the plan puts up to 64 heads of a decode row, or k + 1 rows
 *      x 64 / (k + 1) heads of a verify, in one block);
 *    - scores S = Q K^T [64 x 32] and O += P V [64 x L] on the tensor
 *      cores (mma.sync m16n8k16, bf16 in, fp32 accumulate; V is the
 *      first L columns of the same K tile in shared memory, read with
 *      ldmatrix.trans). O: warps of 4 row tiles (16 pairs) x NS column
 *      slices of L (NS = 1, 2, 4 for L <= 128, 256, 512), each keeping
 *      16 pairs x L / NS columns in registers (at most 64 floats a
 *      thread). S: 4 warps (one per SM sub-partition), G per live row
 *      tile (G = 4, 2, 1 for 1, 2, 4 row tiles of pairs), each over
 *      32 / G positions: a row tile's queries, which are most of the
 *      shared-memory traffic, are read by as few warps as keep the 4
 *      sub-partitions busy. The S warps swap row maxima through shared
 *      memory, write P (bf16) and the rescale factors there, and keep
 *      the running max and sum; every O warp of a live row tile then
 *      rescales its O and adds P V. Warps whose 16 pairs are all empty
 *      (few heads) skip the products;
 *    - online softmax in base 2 (scores times scale * log2 e), masked by
 *      each pair's row position (causal) and the block's range;
 *    - the result: normalised to oc when the block is its tile's only
 *      block, else (max, sum, unnormalised latents) to its partial slot.
 *    3 barriers a tile: tile loaded; row maxima; P and rescale factors.
 *    Shared memory per CTA (kcuda_mla_smem): Q 64 x (D + 8) bf16, K
 *    3 x 32 x (D + 8) bf16, P 64 x 40 bf16, row maxima and sums 4 x 64
 *    floats, rescale factors and maxima 64 floats each, positions 64
 *    ints, D = L + R; rows padded by 16 bytes so the 8 rows of an
 *    ldmatrix fall on 8 different 16-byte bank groups. DeepSeek-V3
 *    (L 512, R 64): 190 KiB, one CTA of 512 threads per SM; the default
 *    model (L 128, R 16): 55 KiB, 4 CTAs of 128 threads per SM.
 * 2. mla_combine: for each split tile of the plan, each pair's partial
 *    slots folded in position order (their max, then the weighted sum),
 *    divided by the total sum, into oc.
 *
 * Precision: products in bf16 (queries, cache rows and probabilities
 * rounded to bf16; an f32 cache is read at bf16 precision too), sums and
 * softmax in fp32.
 *
 * The kernels are in mla_attn_dev.cuh (tests/unit/test_mla_sim runs them
 * in a CPU simulator); this file holds the host side. Expected speed (not
 * measured: no GPU yet): with few heads a block (H = 16, one row) the
 * kernel is bound by HBM (~150 KB of shared-memory traffic and ~0.6 us of
 * mma latency a 32-position tile against ~1 us of HBM time at 4.8 TB/s
 * over 132 SMs); with 128 heads one row needs 242 FLOP a cache byte
 * (3 TB/s would take 725 TFLOPS) and mma.sync with ldmatrix moves ~400 KB
 * of shared memory a tile, so expect about half of 3 TB/s there; wgmma
 * (operands straight from shared memory, as FlashMLA) is the way up.
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#include "cuda_plan.h"
#include "kcuda_int.h"

#include "mla_attn_dev.cuh"

namespace {

using namespace mla;

/* Checks the cache description of rw for these ops; sets the error. */
int rows_check(const struct kcuda_rows *rw, int layer, const char *op)
{
    size_t es = rw->kv_dtype == KDT_F32 ? 4 : 2;
    if ((rw->kv_dtype != KDT_F32 && rw->kv_dtype != KDT_BF16) ||
        rw->page_pos < 1 || (rw->page_pos & (rw->page_pos - 1)) ||
        layer < 0 || rw->n_rows < 0 || rw->kv_lora < 1 || rw->rope < 0 ||
        (rw->kv_lora + rw->rope) % 8 ||
        rw->row_bytes < (size_t)(rw->kv_lora + rw->rope) * es ||
        rw->row_bytes % 16 || rw->layer_bytes % 16 ||
        rw->layer_bytes < rw->row_bytes * (size_t)rw->page_pos ||
        (rw->n_rows > 0 && (!rw->row_seq || !rw->row_pos ||
                            !rw->seq_page0 || !rw->pages))) {
        kcuda_set_error("%s: bad cache description (dtype %d, page_pos %d, "
                        "kv_lora %d, rope %d, row_bytes %zu)",
                        op, (int)rw->kv_dtype, rw->page_pos, rw->kv_lora,
                        rw->rope, rw->row_bytes);
        return MTPD_K_EINVAL;
    }
    return 0;
}

template <int NS, bool F32>
int launch_attn(const struct kcuda *g, const attn_args &a, int parts,
                size_t smem)
{
    /* the dynamic shared memory limit: the most any shape of this
     * instance takes (kv_lora 128 * NS, rope 64), once per device (not a
     * stream operation: allowed while a graph is captured) */
    static unsigned set_for; /* bit per device ordinal < 32 */
    unsigned bit = g->dev < 32 ? 1u << g->dev : 0;
    if (!(__atomic_load_n(&set_for, __ATOMIC_RELAXED) & bit)) {
        int rc = kcuda_err(cudaFuncSetAttribute(
                               mla_attn<NS, F32>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)kcuda_mla_smem(128 * NS, 64)),
                           "mla_attn: cudaFuncSetAttribute");
        if (rc)
            return rc;
        __atomic_fetch_or(&set_for, bit, __ATOMIC_RELAXED);
    }
    mla_attn<NS, F32><<<parts, 128 * NS, smem, g->stream>>>(a);
    return kcuda_launched("mla_attn");
}

} /* namespace */

extern "C" int kcuda_kv_write(struct kcuda *g, const struct kcuda_rows *rw,
                              int layer, const float *kva, int ldk)
{
    int rc = rows_check(rw, layer, "kcuda_kv_write");
    if (rc)
        return rc;
    int D = rw->kv_lora + rw->rope;
    if (rw->n_rows == 0)
        return 0;
    if (!kva || ldk < D) {
        kcuda_set_error("kcuda_kv_write: kva %p, ldk %d < %d", (void *)kva,
                        ldk, D);
        return MTPD_K_EINVAL;
    }
    if ((rc = kcuda_bind(g)))
        return rc;
    size_t off = (size_t)layer * rw->layer_bytes;
    int sh = page_shift(rw->page_pos), mask = rw->page_pos - 1;
    if (rw->kv_dtype == KDT_F32)
        kv_write<true><<<rw->n_rows, 128, 0, g->stream>>>(
            rw->row_seq, rw->row_pos, rw->seq_page0, rw->pages, off,
            rw->row_bytes, sh, mask, kva, ldk, D);
    else
        kv_write<false><<<rw->n_rows, 128, 0, g->stream>>>(
            rw->row_seq, rw->row_pos, rw->seq_page0, rw->pages, off,
            rw->row_bytes, sh, mask, kva, ldk, D);
    return kcuda_launched("kv_write");
}

extern "C" int kcuda_mla_attend(struct kcuda *g, const struct kcuda_rows *rw,
                                int layer, int H, const float *qc, float *oc,
                                float scale,
                                const struct kcuda_mla_plan *plan)
{
    int rc = rows_check(rw, layer, "kcuda_mla_attend");
    if (rc)
        return rc;
    const int L = rw->kv_lora, R = rw->rope;
    size_t smem = kcuda_mla_smem(L, R);
    size_t ws = plan ? kcuda_mla_workspace(plan, L) : 0;
    if (!plan || !plan->dev || plan->H != H || H < 1 || smem == 0 ||
        ws > g->ws_bytes || (rw->n_rows > 0 && (!qc || !oc)) ||
        rw->n_rows > plan->cap_rows || rw->n_seqs > plan->cap_seqs) {
        kcuda_set_error("kcuda_mla_attend: bad arguments (plan %p, H %d, "
                        "kv_lora %d, rope %d, workspace %zu of %zu)",
                        (const void *)plan, H, L, R, ws, g->ws_bytes);
        return MTPD_K_EINVAL;
    }
    if ((rc = kcuda_bind(g)))
        return rc;
    attn_args a = attn_args_make(rw, layer, H, qc, oc, scale, plan, g->ws);

    const int ns = kcuda_mla_threads(L) / 128, f32 = rw->kv_dtype == KDT_F32;
    const int parts = plan->n_parts;
    if (ns == 1)
        rc = f32 ? launch_attn<1, true>(g, a, parts, smem)
                 : launch_attn<1, false>(g, a, parts, smem);
    else if (ns == 2)
        rc = f32 ? launch_attn<2, true>(g, a, parts, smem)
                 : launch_attn<2, false>(g, a, parts, smem);
    else
        rc = f32 ? launch_attn<4, true>(g, a, parts, smem)
                 : launch_attn<4, false>(g, a, parts, smem);
    if (rc || plan->cap_merges == 0)
        return rc;
    int grid = plan->cap_merges < parts ? plan->cap_merges : parts;
    mla_combine<<<grid, 256, 0, g->stream>>>(a);
    return kcuda_launched("mla_combine");
}
