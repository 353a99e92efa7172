/*
 * elementwise.cu - the per-token ops of the device forward pass:
 * kcuda_add (residual), kcuda_rmsnorm, kcuda_swiglu, kcuda_embed,
 * kcuda_rope. Same math as their CPU twins (kernels/cpu/norm.c): the
 * rmsnorm sum of squares and the RoPE cos / sin are taken in double as
 * there; results agree to fp32 rounding (nvcc may fuse a multiply and an
 * add into an fma where the CPU rounds twice).
 */
#include <math.h>

#include "kcuda_dq.cuh"
#include "kcuda_int.h"

#define EW_THREADS 256

static unsigned ew_blocks(const struct kcuda *g, size_t n)
{
    size_t b = (n + EW_THREADS - 1) / EW_THREADS;
    size_t cap = (size_t)(g->sm_count > 0 ? g->sm_count : 1) * 16;
    return (unsigned)(b == 0 ? 1 : b < cap ? b : cap);
}

/* ---- y += x ---------------------------------------------------------------- */

__global__ void add_k(float *__restrict__ y, const float *__restrict__ x,
                      size_t n, int vec)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t step = (size_t)gridDim.x * blockDim.x;
    size_t n4 = vec ? n / 4 : 0;
    for (size_t k = i; k < n4; k += step) {
        float4 a = ((float4 *)y)[k], b = ((const float4 *)x)[k];
        a.x += b.x;
        a.y += b.y;
        a.z += b.z;
        a.w += b.w;
        ((float4 *)y)[k] = a;
    }
    for (size_t k = n4 * 4 + i; k < n; k += step)
        y[k] += x[k];
}

extern "C" int kcuda_add(struct kcuda *g, float *y, const float *x, size_t n)
{
    if (n == 0)
        return 0;
    if (y == NULL || x == NULL) {
        kcuda_set_error("kcuda_add: NULL pointer");
        return MTPD_K_EINVAL;
    }
    int vec = (uintptr_t)y % 16 == 0 && (uintptr_t)x % 16 == 0;
    add_k<<<ew_blocks(g, vec ? n / 4 : n), EW_THREADS, 0, g->stream>>>(y, x, n,
                                                                      vec);
    return kcuda_launched("kcuda_add");
}

/* ---- rmsnorm ----------------------------------------------------------------- */

/* One block per row: sum of squares in double (as krmsnorm), then
 * out = x * inv * w. In place is fine: every x is read before the
 * reduction's barrier and each element is rewritten by the thread that
 * reads it. */
__global__ void rmsnorm_k(float *out, int ldo, const float *x, int ldx,
                          const void *__restrict__ w, int wt, int n, float eps)
{
    const float *xr = x + (size_t)blockIdx.x * ldx;
    float *o = out + (size_t)blockIdx.x * ldo;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        ss += (double)v * v;
    }
    for (int s = 16; s > 0; s >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, s);
    __shared__ double part[EW_THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        part[warp] = ss;
    __syncthreads();
    double tot = 0.0;
    for (int k = 0; k < (int)(blockDim.x / 32); k++)
        tot += part[k];
    float inv = (float)(1.0 / sqrt(tot / n + eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        o[i] = xr[i] * inv * kd_vec(w, wt, i);
}

extern "C" int kcuda_rmsnorm(struct kcuda *g, float *out, int ldo,
                             const float *x, int ldx, const void *w,
                             enum kdtype wt, int n_cols, int n_rows, float eps)
{
    if (n_rows == 0 || n_cols == 0)
        return 0;
    if (out == NULL || x == NULL || w == NULL || n_rows < 0 || n_cols < 0 ||
        ldo < n_cols || ldx < n_cols || wt < KDT_F32 || wt > KDT_F8_E4M3) {
        kcuda_set_error("kcuda_rmsnorm: bad arguments");
        return MTPD_K_EINVAL;
    }
    rmsnorm_k<<<n_rows, EW_THREADS, 0, g->stream>>>(out, ldo, x, ldx, w,
                                                    (int)wt, n_cols, eps);
    return kcuda_launched("kcuda_rmsnorm");
}

/* ---- swiglu -------------------------------------------------------------------- */

__global__ void swiglu_k(float *out, int ldo, const float *gate, int ldg,
                         const float *up, int ldu, int n_cols, int n_rows)
{
    size_t total = (size_t)n_rows * n_cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / n_cols, c = i % n_cols;
        float gv = gate[r * ldg + c];
        out[r * ldo + c] = gv / (1.0f + expf(-gv)) * up[r * ldu + c];
    }
}

extern "C" int kcuda_swiglu(struct kcuda *g, float *out, int ldo,
                            const float *gate, int ldg, const float *up,
                            int ldu, int n_cols, int n_rows)
{
    if (n_rows == 0 || n_cols == 0)
        return 0;
    if (out == NULL || gate == NULL || up == NULL || n_rows < 0 ||
        n_cols < 0 || ldo < n_cols || ldg < n_cols || ldu < n_cols) {
        kcuda_set_error("kcuda_swiglu: bad arguments");
        return MTPD_K_EINVAL;
    }
    swiglu_k<<<ew_blocks(g, (size_t)n_rows * n_cols), EW_THREADS, 0,
               g->stream>>>(out, ldo, gate, ldg, up, ldu, n_cols, n_rows);
    return kcuda_launched("kcuda_swiglu");
}

/* ---- embedding ------------------------------------------------------------------ */

/* One block per row. An id outside the table gives zeros (the host
 * checks ids; here a bad one must not read out of bounds). */
__global__ void embed_k(const struct kdmat E, size_t rb,
                        const int32_t *__restrict__ ids, float *out, int ldo,
                        const int32_t *__restrict__ zero_pos)
{
    const int r = blockIdx.x;
    const int id = ids[r];
    const int zero = (zero_pos != NULL && zero_pos[r] == 0) || id < 0 ||
                     id >= E.rows;
    float *o = out + (size_t)r * ldo;
    for (int c = threadIdx.x; c < E.cols; c += blockDim.x)
        o[c] = zero ? 0.0f : kd_get(E, rb, id, c);
}

extern "C" int kcuda_embed(struct kcuda *g, const struct kdmat *E,
                           const int32_t *ids, int n, float *out, int ldo,
                           const int32_t *zero_pos)
{
    if (n == 0)
        return 0;
    if (E == NULL || E->data == NULL || ids == NULL || out == NULL || n < 0 ||
        ldo < E->cols || E->dtype < KDT_F32 || E->dtype >= KDT_COUNT ||
        (E->dtype == KDT_F8_E4M3 && (E->scale == NULL || E->blk <= 0)) ||
        ((E->dtype == KDT_Q8_0 || E->dtype == KDT_Q4_1) && E->qd == NULL) ||
        (E->dtype == KDT_Q4_1 && E->qm == NULL)) {
        kcuda_set_error("kcuda_embed: bad arguments");
        return MTPD_K_EINVAL;
    }
    embed_k<<<n, EW_THREADS, 0, g->stream>>>(
        *E, kd_row_bytes(E->dtype, E->cols), ids, out, ldo, zero_pos);
    return kcuda_launched("kcuda_embed");
}

/* ---- RoPE -------------------------------------------------------------------------- */

/* One block per row: the row's cos / sin (krope_cs: angle pos * inv_freq
 * in fp32, cos and sin in double, times mscale) into shared memory, then
 * every pair of every vector rotated (krope_apply). */
__global__ void rope_k(float *x, int ldx, int off, int stride, int n_vec,
                       int dim, const int32_t *__restrict__ pos,
                       const float *__restrict__ inv_freq, float mscale)
{
    extern __shared__ float cs[]; /* [dim] */
    const int half = dim / 2;
    const int p = pos[blockIdx.x];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float ang = (float)p * inv_freq[i];
        double s, c;
        sincos((double)ang, &s, &c);
        cs[2 * i] = (float)c * mscale;
        cs[2 * i + 1] = (float)s * mscale;
    }
    __syncthreads();
    float *row = x + (size_t)blockIdx.x * ldx + off;
    for (int k = threadIdx.x; k < n_vec * half; k += blockDim.x) {
        int h = k / half, i = k % half;
        float *v = row + (size_t)h * stride + 2 * i;
        float c = cs[2 * i], s = cs[2 * i + 1];
        float a = v[0], b = v[1];
        v[0] = a * c - b * s;
        v[1] = a * s + b * c;
    }
}

extern "C" int kcuda_rope(struct kcuda *g, float *x, int ldx, int off,
                          int stride, int n_vec, int dim, const int32_t *pos,
                          int n_rows, const float *inv_freq, float mscale)
{
    if (n_rows == 0 || n_vec == 0 || dim == 0)
        return 0;
    if (x == NULL || pos == NULL || inv_freq == NULL || n_rows < 0 ||
        n_vec < 0 || dim < 0 || dim % 2 || off < 0 ||
        (n_vec > 1 && stride < dim) ||
        (size_t)dim * sizeof(float) > 48 * 1024 ||
        (size_t)off + (size_t)(n_vec - 1) * stride + dim > (size_t)ldx) {
        kcuda_set_error("kcuda_rope: bad arguments");
        return MTPD_K_EINVAL;
    }
    rope_k<<<n_rows, EW_THREADS, dim * sizeof(float), g->stream>>>(
        x, ldx, off, stride, n_vec, dim, pos, inv_freq, mscale);
    return kcuda_launched("kcuda_rope");
}
