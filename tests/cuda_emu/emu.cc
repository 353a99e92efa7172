/*
 * emu.cc - the CPU stand-in for CUDA declared in include/ (emu.h): device
 * memory is host memory, every stream runs in order at once (or is
 * recorded while captured), a kernel's blocks run one after another and a
 * block's threads as coroutines switched at barriers, cuBLASLt's matmul is
 * a plain loop. Meant to run kernels/cuda/ where there is no GPU, to check
 * its indexing, reductions, launch configurations and host logic; it says
 * nothing about speed, memory ordering between blocks or the hardware's
 * own conversions.
 *
 * Environment: EMU_SMS (SM count reported, default 132), EMU_NO_DEVICE
 * (report no device: the tests' skip path), EMU_LT_NO_ALGO (cuBLASLt
 * finds no algorithm: kcuda_matmul's fallback).
 */
#undef _FORTIFY_SOURCE /* longjmp between coroutine stacks */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#include <vector>

#include "cublasLt.h"
#include "cuda_runtime.h"

/* ---- coroutines: the threads of one block -------------------------------- */

enum { CO_RUN, CO_WAIT_BLOCK, CO_WAIT_WARP, CO_DONE };

struct co {
    emu_thread t;
    int state, started;
    jmp_buf jb;
    ucontext_t uc;
};

#define EMU_MAX_THREADS 1024
#define EMU_STACK (256 * 1024)
#define EMU_SMEM (48 * 1024)

emu_thread *emu_cur;
dim3 emu_block_idx, emu_block_dim, emu_grid_dim;
alignas(256) unsigned char emu_dyn_smem[EMU_SMEM];

static co cos_[EMU_MAX_THREADS];
static char *stacks;
static jmp_buf sched_jb;
static co *running;
static std::function<void()> *cur_body;
static unsigned char warp_buf[EMU_MAX_THREADS / 32][2][32][8];

static void co_entry(void)
{
    (*cur_body)();
    running->state = CO_DONE;
    _longjmp(sched_jb, 1);
}

static void yield_as(int st)
{
    co *c = running;
    c->state = st;
    if (!_setjmp(c->jb))
        _longjmp(sched_jb, 1);
    emu_cur = &c->t; /* resumed */
}

void emu_syncthreads(void) { yield_as(CO_WAIT_BLOCK); }
void emu_syncwarp(void) { yield_as(CO_WAIT_WARP); }

void emu_warp_put(const void *v, size_t n, unsigned parity)
{
    memcpy(warp_buf[emu_cur->warp][parity][emu_cur->lane], v, n);
}

void emu_warp_get(void *v, size_t n, unsigned parity, int lane)
{
    memcpy(v, warp_buf[emu_cur->warp][parity][lane & 31], n);
}

static int next_i; /* not a local: kept across the longjmps */

static void run_block(int n, std::function<void()> &body)
{
    if (stacks == NULL) {
        stacks = (char *)malloc((size_t)EMU_MAX_THREADS * EMU_STACK);
        if (stacks == NULL) {
            fprintf(stderr, "emu: no memory for stacks\n");
            abort();
        }
    }
    cur_body = &body;
    for (int i = 0; i < n; i++) {
        co *c = &cos_[i];
        unsigned bx = emu_block_dim.x, by = emu_block_dim.y;
        c->t.tid = dim3(i % bx, (i / bx) % by, i / (bx * by));
        c->t.lane = i % 32;
        c->t.warp = i / 32;
        c->t.shfl = 0;
        c->state = CO_RUN;
        c->started = 0;
    }
    for (;;) {
        for (next_i = 0; next_i < n; next_i++) {
            co *c = &cos_[next_i];
            if (c->state != CO_RUN)
                continue;
            running = c;
            emu_cur = &c->t;
            if (!_setjmp(sched_jb)) {
                if (!c->started) {
                    c->started = 1;
                    getcontext(&c->uc);
                    c->uc.uc_stack.ss_sp = stacks + (size_t)next_i * EMU_STACK;
                    c->uc.uc_stack.ss_size = EMU_STACK;
                    c->uc.uc_link = NULL;
                    makecontext(&c->uc, co_entry, 0);
                    setcontext(&c->uc);
                } else {
                    _longjmp(c->jb, 1);
                }
            }
        }
        int alive = 0, all_block = 1;
        for (int i = 0; i < n; i++)
            if (cos_[i].state != CO_DONE) {
                alive++;
                all_block &= cos_[i].state == CO_WAIT_BLOCK;
            }
        if (alive == 0)
            return;
        if (all_block) {
            for (int i = 0; i < n; i++)
                if (cos_[i].state == CO_WAIT_BLOCK)
                    cos_[i].state = CO_RUN;
            continue;
        }
        int released = 0;
        for (int w = 0; w * 32 < n; w++) {
            int waiting = 0, other = 0;
            for (int i = w * 32; i < n && i < w * 32 + 32; i++) {
                if (cos_[i].state == CO_WAIT_WARP)
                    waiting++;
                else if (cos_[i].state != CO_DONE)
                    other++;
            }
            if (waiting && !other) {
                for (int i = w * 32; i < n && i < w * 32 + 32; i++)
                    if (cos_[i].state == CO_WAIT_WARP)
                        cos_[i].state = CO_RUN;
                released = 1;
            }
        }
        if (!released) {
            fprintf(stderr, "emu: deadlock in block (%u,%u,%u): threads wait "
                            "at different barriers\n",
                    emu_block_idx.x, emu_block_idx.y, emu_block_idx.z);
            abort();
        }
    }
}

/* ---- streams, capture ------------------------------------------------------- */

struct emu_graph {
    std::vector<std::function<void()>> work;
};

struct emu_stream {
    emu_graph *cap; /* capturing into this, or NULL */
    int invalid;    /* the capture saw a forbidden call */
};

static cudaError_t last_err = cudaSuccess;
static int capturing; /* streams capturing now */

static cudaError_t fail(cudaError_t e)
{
    last_err = e;
    return e;
}

void emu_enqueue(cudaStream_t st, std::function<void()> work)
{
    if (st && st->cap)
        st->cap->work.push_back(work);
    else
        work();
}

void emu_launch(const emu_cfg &c, std::function<void()> body)
{
    unsigned long nt = (unsigned long)c.block.x * c.block.y * c.block.z;
    if (nt == 0 || nt > 1024 || c.block.z > 64 || c.grid.x == 0 ||
        c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7fffffffu ||
        c.grid.y > 65535 || c.grid.z > 65535 || c.smem > EMU_SMEM) {
        fprintf(stderr, "emu: bad launch grid (%u,%u,%u) block (%u,%u,%u) "
                        "smem %zu\n",
                c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z,
                c.smem);
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    emu_cfg cfg = c;
    emu_enqueue(c.st, [cfg, body]() mutable {
        emu_grid_dim = cfg.grid;
        emu_block_dim = cfg.block;
        int n = (int)(cfg.block.x * cfg.block.y * cfg.block.z);
        for (unsigned z = 0; z < cfg.grid.z; z++)
            for (unsigned y = 0; y < cfg.grid.y; y++)
                for (unsigned x = 0; x < cfg.grid.x; x++) {
                    emu_block_idx = dim3(x, y, z);
                    memset(emu_dyn_smem, 0xff, cfg.smem); /* garbage: NaN */
                    run_block(n, body);
                }
    });
}

/* ---- runtime calls ---------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 0;
    if (getenv("EMU_NO_DEVICE"))
        return fail(cudaErrorNoDevice);
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev)
{
    return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (dev != 0)
        return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    strcpy(p->name, "CPU emulation of CUDA");
    p->major = 9;
    const char *s = getenv("EMU_SMS");
    p->multiProcessorCount = s ? atoi(s) : 132;
    p->totalGlobalMem = (size_t)16 << 30;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new emu_stream{NULL, 0};
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}

static cudaError_t forbidden_in_capture(void)
{
    return fail(cudaErrorStreamCaptureUnsupported);
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (s && s->cap) {
        s->invalid = 1;
        return forbidden_in_capture();
    }
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = NULL;
    if (capturing)
        return forbidden_in_capture();
    size_t b = (n + 255) / 256 * 256;
    *p = aligned_alloc(256, b ? b : 256);
    if (*p == NULL)
        return fail(cudaErrorMemoryAllocation);
    memset(*p, 0xff, b); /* uninitialised device memory reads as NaN */
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (capturing)
        return forbidden_in_capture();
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned)
{
    *p = malloc(n ? n : 1);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind,
                            cudaStream_t st)
{
    emu_enqueue(st, [=]() { memmove(d, s, n); });
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st)
{
    emu_enqueue(st, [=]() { memset(d, v, n); });
    return cudaSuccess;
}

cudaError_t cudaMemset2DAsync(void *d, size_t pitch, int v, size_t w,
                              size_t h, cudaStream_t st)
{
    if (w > pitch)
        return fail(cudaErrorInvalidValue);
    emu_enqueue(st, [=]() {
        for (size_t r = 0; r < h; r++)
            memset((char *)d + r * pitch, v, w);
    });
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
    *fr = (size_t)8 << 30;
    *tot = (size_t)16 << 30;
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    default: return "emulated error";
    }
}

const char *cudaGetErrorName(cudaError_t e)
{
    static char buf[32];
    snprintf(buf, sizeof buf, "cudaError %d", (int)e);
    return buf;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_err;
    last_err = cudaSuccess;
    return e;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
    if (s == NULL || s->cap)
        return fail(cudaErrorIllegalState);
    s->cap = new emu_graph;
    s->invalid = 0;
    capturing++;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    *g = NULL;
    if (s == NULL || s->cap == NULL)
        return fail(cudaErrorIllegalState);
    capturing--;
    emu_graph *gr = s->cap;
    s->cap = NULL;
    if (s->invalid || last_err != cudaSuccess) { /* a launch failed */
        delete gr;
        last_err = cudaSuccess;
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *g = gr;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g,
                                 unsigned long long)
{
    *e = new emu_graph(*g);
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e)
{
    delete e;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s)
{
    for (auto &w : e->work)
        emu_enqueue(s, w);
    return cudaSuccess;
}

struct emu_event {
    double t;
};

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = new emu_event{0};
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    emu_enqueue(s, [e]() {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        e->t = ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    });
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(b->t - a->t);
    if (*ms <= 0)
        *ms = 1e-3f;
    return cudaSuccess;
}

/* ---- cuBLASLt ------------------------------------------------------------------ */

struct emu_lt {
    int unused;
};
struct emu_lt_op {
    int ta, tb;
};
struct emu_lt_layout {
    cudaDataType_t t;
    uint64_t rows, cols;
    int64_t ld;
};
struct emu_lt_pref {
    size_t ws;
    uint32_t al[4];
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new emu_lt{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d,
                                        cublasComputeType_t ct,
                                        cudaDataType_t st)
{
    if (ct != CUBLAS_COMPUTE_32F || st != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new emu_lt_op{0, 0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a,
                                              const void *v, size_t n)
{
    if (n != sizeof(cublasOperation_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    int op = *(const cublasOperation_t *)v == CUBLAS_OP_T;
    if (a == CUBLASLT_MATMUL_DESC_TRANSA)
        d->ta = op;
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB)
        d->tb = op;
    else
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l,
                                          cudaDataType_t t, uint64_t rows,
                                          uint64_t cols, int64_t ld)
{
    if (ld < (int64_t)rows || (t != CUDA_R_32F && t != CUDA_R_16BF))
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new emu_lt_pref{0, {256, 256, 256, 256}};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a,
    const void *v, size_t n)
{
    if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES && n == sizeof(size_t))
        p->ws = *(const size_t *)v;
    else if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
             a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES &&
             n == sizeof(uint32_t))
        p->al[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] =
            *(const uint32_t *)v;
    else
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t h, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
    cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
    cublasLtMatmulPreference_t p, int req, cublasLtMatmulHeuristicResult_t *res,
    int *n)
{
    if (req < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    memset(res, 0, sizeof *res);
    memcpy(res->algo.al, p->al, sizeof p->al);
    res->algo.ws = p->ws;
    *n = getenv("EMU_LT_NO_ALGO") ? 0 : 1; /* kcuda_matmul's fallback */
    return CUBLAS_STATUS_SUCCESS;
}

static float lt_get(const emu_lt_layout *l, const void *p, uint64_t i,
                    uint64_t j)
{
    size_t k = (size_t)(i + j * (uint64_t)l->ld);
    if (l->t == CUDA_R_32F)
        return ((const float *)p)[k];
    return __uint_as_float((unsigned)((const uint16_t *)p)[k] << 16);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                              const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D,
                              cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws,
                              size_t ws_bytes, cudaStream_t st)
{
    uint64_t m = lc->rows, n = lc->cols;
    uint64_t am = op->ta ? la->cols : la->rows, ak = op->ta ? la->rows : la->cols;
    uint64_t bk = op->tb ? lb->cols : lb->rows, bn = op->tb ? lb->rows : lb->cols;
    const void *ptr[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)ptr[i] % algo->al[i]) /* the algorithm assumed more */
            return CUBLAS_STATUS_INVALID_VALUE;
    if (am != m || bn != n || ak != bk || ld->rows != m || ld->cols != n ||
        lc->t != CUDA_R_32F || la->t != lb->t || ws_bytes > algo->ws ||
        (ws_bytes && ws == NULL))
        return CUBLAS_STATUS_INVALID_VALUE;
    float a = *(const float *)alpha, b = *(const float *)beta;
    emu_lt_layout LA = *la, LB = *lb, LC = *lc, LD = *ld;
    int ta = op->ta, tb = op->tb;
    emu_enqueue(st, [=]() {
        if (ws_bytes)
            memset(ws, 0xff, ws_bytes); /* scratch is the library's */
        for (uint64_t j = 0; j < n; j++)
            for (uint64_t i = 0; i < m; i++) {
                float s = 0.0f;
                for (uint64_t k = 0; k < ak; k++) {
                    float x = ta ? lt_get(&LA, A, k, i) : lt_get(&LA, A, i, k);
                    float y = tb ? lt_get(&LB, B, j, k) : lt_get(&LB, B, k, j);
                    s = fmaf(x, y, s);
                }
                float r = a * s;
                if (b != 0.0f)
                    r += b * lt_get(&LC, C, i, j);
                ((float *)D)[i + j * (uint64_t)LD.ld] = r;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
