/* mla_ref.cu - test-only reference kcuda_kv_write / kcuda_mla_attend for
 * the CPU emulator (the real mla_attn.cu uses inline PTX): one block per
 * row, one per (row, head), plain loops. */
#include "kcuda_int.h"
#include "cuda_plan.h"

__device__ static float kvget(const char *row, int f32, int i)
{
    if (f32)
        return ((const float *)row)[i];
    unsigned u = (unsigned)((const unsigned short *)row)[i] << 16;
    return __uint_as_float(u);
}

__device__ static const char *slot_of(const struct kcuda_rows rw, int layer,
                                      int s, int p)
{
    const char *pg = (const char *)rw.pages[rw.seq_page0[s] + p / rw.page_pos];
    return pg + (size_t)layer * rw.layer_bytes +
           (size_t)(p % rw.page_pos) * rw.row_bytes;
}

__global__ void ref_kvw(const struct kcuda_rows rw, int layer,
                        const float *kva, int ldk)
{
    int r = blockIdx.x;
    int s = rw.row_seq[r], p = rw.row_pos[r];
    char *slot = (char *)slot_of(rw, layer, s, p);
    int D = rw.kv_lora + rw.rope;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = kva[(size_t)r * ldk + i];
        if (rw.kv_dtype == KDT_F32) {
            ((float *)slot)[i] = v;
        } else {
            unsigned u = __float_as_uint(v);
            u += 0x7fff + ((u >> 16) & 1); /* round to nearest even */
            ((unsigned short *)slot)[i] = (unsigned short)(u >> 16);
        }
    }
}

__global__ void ref_attend(const struct kcuda_rows rw, int layer, int H,
                           const float *qc, float *oc, float scale)
{
    int r = blockIdx.x, h = blockIdx.y;
    int s = rw.row_seq[r], p = rw.row_pos[r];
    int L = rw.kv_lora, R = rw.rope, f32 = rw.kv_dtype == KDT_F32;
    const float *q = qc + ((size_t)r * H + h) * (L + R);
    float *o = oc + ((size_t)r * H + h) * L;
    float m = -INFINITY, l = 0.0f;
    for (int i = 0; i < L; i++)
        o[i] = 0.0f;
    for (int j = 0; j <= p; j++) {
        const char *row = slot_of(rw, layer, s, j);
        float sc = 0.0f;
        for (int i = 0; i < L + R; i++)
            sc += q[i] * kvget(row, f32, i);
        sc *= scale;
        float mn = sc > m ? sc : m;
        float a = expf(m - mn), b = expf(sc - mn);
        for (int i = 0; i < L; i++)
            o[i] = o[i] * a + b * kvget(row, f32, i);
        l = l * a + b;
        m = mn;
    }
    for (int i = 0; i < L; i++)
        o[i] /= l;
}

extern "C" int kcuda_kv_write(struct kcuda *g, const struct kcuda_rows *rw,
                              int layer, const float *kva, int ldk)
{
    if (rw->n_rows == 0)
        return 0;
    ref_kvw<<<rw->n_rows, 32, 0, g->stream>>>(*rw, layer, kva, ldk);
    return kcuda_launched("ref_kv_write");
}

extern "C" int kcuda_mla_attend(struct kcuda *g, const struct kcuda_rows *rw,
                                int layer, int H, const float *qc, float *oc,
                                float scale,
                                const struct kcuda_mla_plan *plan)
{
    if (rw->n_rows == 0)
        return 0;
    if (!plan || !plan->dev)
        return MTPD_K_EINVAL;
    ref_attend<<<dim3(rw->n_rows, H), 1, 0, g->stream>>>(*rw, layer, H, qc,
                                                          oc, scale);
    return kcuda_launched("ref_attend");
}
