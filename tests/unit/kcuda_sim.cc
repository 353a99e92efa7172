/*
 * kcuda_sim.cc - kcuda_mla_attend and kcuda_kv_write for kcuda_mock.c
 * (built with KCUDA_MOCK_SIM) that run the real kernels of
 * kernels/cuda/mla_attn_dev.cuh in the CPU simulator of cuda_sim.h: the
 * kernels' indexing, fragment layouts, barriers, shared-memory layout and
 * softmax run as written, on every case of test_kcuda_mla.c. What the
 * simulator cannot say: timing, races between cp.async and reads (its
 * copies are immediate), and anything about the real hardware.
 */
#include "cuda_sim.h"

#define MLA_SIM 1
#include "mla_attn_dev.cuh"

namespace mla {
/* the kernels' dynamic shared memory */
alignas(256) unsigned char smem[sim::SMEM];
} /* namespace mla */

template <int NS, bool F32>
static void run_attn(unsigned parts, size_t smem, const mla::attn_args &a)
{
    sim::launch(parts, 128 * NS, smem, [&] { mla::mla_attn<NS, F32>(a); });
}

extern "C" int mock_sim_attend(void *ws, size_t ws_bytes,
                               const struct kcuda_rows *rw, int layer, int H,
                               const float *qc, float *oc, float scale,
                               const struct kcuda_mla_plan *plan)
{
    const int L = rw->kv_lora, R = rw->rope;
    size_t smem = kcuda_mla_smem(L, R);
    if (smem == 0 || kcuda_mla_workspace(plan, L) > ws_bytes)
        return MTPD_K_EINVAL;
    sim::smem_buf = mla::smem;
    mla::attn_args a =
        mla::attn_args_make(rw, layer, H, qc, oc, scale, plan, ws);
    const int ns = kcuda_mla_threads(L) / 128;
    const bool f32 = rw->kv_dtype == KDT_F32;
    const unsigned parts = plan->n_parts;
    if (ns == 1)
        f32 ? run_attn<1, true>(parts, smem, a)
            : run_attn<1, false>(parts, smem, a);
    else if (ns == 2)
        f32 ? run_attn<2, true>(parts, smem, a)
            : run_attn<2, false>(parts, smem, a);
    else
        f32 ? run_attn<4, true>(parts, smem, a)
            : run_attn<4, false>(parts, smem, a);
    if (plan->cap_merges > 0) {
        unsigned grid = plan->cap_merges < (int)parts ? plan->cap_merges
                                                      : parts;
        sim::launch(grid, 256, 0, [&] { mla::mla_combine(a); });
    }
    return 0;
}

extern "C" int mock_sim_kv_write(const struct kcuda_rows *rw, int layer,
                                 const float *kva, int ldk)
{
    if (rw->n_rows == 0)
        return 0;
    sim::smem_buf = mla::smem;
    size_t off = (size_t)layer * rw->layer_bytes;
    int sh = mla::page_shift(rw->page_pos), mask = rw->page_pos - 1;
    int D = rw->kv_lora + rw->rope;
    if (rw->kv_dtype == KDT_F32)
        sim::launch(rw->n_rows, 128, 0, [&] {
            mla::kv_write<true>(rw->row_seq, rw->row_pos, rw->seq_page0,
                                rw->pages, off, rw->row_bytes, sh, mask, kva,
                                ldk, D);
        });
    else
        sim::launch(rw->n_rows, 128, 0, [&] {
            mla::kv_write<false>(rw->row_seq, rw->row_pos, rw->seq_page0,
                                 rw->pages, off, rw->row_bytes, sh, mask,
                                 kva, ldk, D);
        });
    return 0;
}
