/*
 * core.cu - the CUDA backend's device, stream, memory, copies, graphs and
 * errors (kcuda.h, first two sections) and the copy-bandwidth probe.
 *
 * Errors: every failing CUDA / cuBLAS call is recorded as text in a
 * thread-local buffer (kcuda_last_error) with a per-thread count, so a
 * graph capture can tell at its end whether anything failed while it ran.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcuda_int.h"

/* ---- errors ------------------------------------------------------------ */

static thread_local char err_text[256];
static thread_local unsigned long err_seq; /* errors recorded so far */
static thread_local int bound_dev = -1;    /* device made current here */

extern "C" void kcuda_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_text, sizeof err_text, fmt, ap);
    va_end(ap);
    err_seq++;
}

extern "C" int kcuda_err(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    kcuda_set_error("%s: %s (%s)", what, cudaGetErrorString(e),
                    cudaGetErrorName(e));
    return MTPD_K_EDEV;
}

extern "C" int kcuda_blas_err(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    kcuda_set_error("%s: cuBLAS status %d", what, (int)s);
    return MTPD_K_EDEV;
}

extern "C" const char *kcuda_last_error(void)
{
    return err_text;
}

extern "C" int kcuda_bind(const struct kcuda *g)
{
    if (bound_dev == g->dev)
        return 0;
    int rc = kcuda_err(cudaSetDevice(g->dev), "cudaSetDevice");
    if (rc == 0)
        bound_dev = g->dev;
    return rc;
}

/* ---- device ------------------------------------------------------------ */

extern "C" int kcuda_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) { /* no driver, no device: say why */
        kcuda_err(e, "cudaGetDeviceCount");
        cudaGetLastError(); /* not sticky: clear it for later calls */
        return 0;
    }
    return n;
}

extern "C" void kcuda_close(struct kcuda *g)
{
    if (g == NULL)
        return;
    kcuda_bind(g);
    if (g->stream)
        cudaStreamSynchronize(g->stream);
    if (g->ws)
        cudaFree(g->ws);
    if (g->lt)
        cublasLtDestroy(g->lt);
    if (g->stream)
        cudaStreamDestroy(g->stream);
    free(g);
}

extern "C" int kcuda_open(int dev, size_t workspace_bytes, struct kcuda **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    int n = kcuda_device_count();
    if (dev < 0 || dev >= n) {
        kcuda_set_error("CUDA device %d not present (%d visible)", dev, n);
        snprintf(err, errlen, "%s", err_text);
        return MTPD_K_EINVAL;
    }
    struct kcuda *g = (struct kcuda *)calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errlen, "out of host memory");
        return MTPD_K_ENOMEM;
    }
    g->dev = dev;
    bound_dev = -1; /* set it for real: a context may need creating */
    int rc = kcuda_bind(g);
    cudaDeviceProp pr;
    if (rc == 0)
        rc = kcuda_err(cudaGetDeviceProperties(&pr, dev),
                       "cudaGetDeviceProperties");
    if (rc == 0)
        rc = kcuda_err(cudaStreamCreateWithFlags(&g->stream,
                                                 cudaStreamNonBlocking),
                       "cudaStreamCreate");
    if (rc == 0)
        rc = kcuda_blas_err(cublasLtCreate(&g->lt), "cublasLtCreate");
    if (rc == 0 && workspace_bytes > 0) {
        /* cudaMalloc aligns to 256 bytes at least */
        rc = kcuda_err(cudaMalloc(&g->ws, workspace_bytes),
                       "cudaMalloc(workspace)");
        if (rc == 0)
            g->ws_bytes = workspace_bytes;
    }
    if (rc) {
        snprintf(err, errlen, "%s", err_text);
        kcuda_close(g);
        return rc;
    }
    g->sm_count = pr.multiProcessorCount;
    snprintf(g->desc, sizeof g->desc, "%.100s (sm_%d%d, %d SMs, %.1f GiB)",
             pr.name, pr.major, pr.minor, pr.multiProcessorCount,
             (double)pr.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    *out = g;
    return 0;
}

extern "C" const char *kcuda_describe(const struct kcuda *g)
{
    return g->desc;
}

extern "C" int kcuda_sm_count(const struct kcuda *g)
{
    return g->sm_count;
}

extern "C" int kcuda_mem_info(const struct kcuda *g, size_t *free_b,
                              size_t *total_b)
{
    int rc = kcuda_bind(g);
    if (rc == 0)
        rc = kcuda_err(cudaMemGetInfo(free_b, total_b), "cudaMemGetInfo");
    return rc;
}

/* ---- memory and copies --------------------------------------------------- */

extern "C" void *kcuda_malloc(struct kcuda *g, size_t bytes)
{
    void *p = NULL;
    if (kcuda_bind(g) ||
        kcuda_err(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc"))
        return NULL;
    return p;
}

extern "C" void kcuda_free(struct kcuda *g, void *p)
{
    if (p == NULL || kcuda_bind(g))
        return;
    kcuda_err(cudaFree(p), "cudaFree");
}

extern "C" void *kcuda_host_alloc(struct kcuda *g, size_t bytes)
{
    void *p = NULL;
    if (kcuda_bind(g) ||
        kcuda_err(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault),
                  "cudaHostAlloc"))
        return NULL;
    return p;
}

extern "C" void kcuda_host_free(struct kcuda *g, void *p)
{
    if (p == NULL || kcuda_bind(g))
        return;
    kcuda_err(cudaFreeHost(p), "cudaFreeHost");
}

static int copy(struct kcuda *g, void *dst, const void *src, size_t n,
                cudaMemcpyKind kind, const char *what)
{
    if (n == 0)
        return 0;
    int rc = kcuda_bind(g);
    return rc ? rc
              : kcuda_err(cudaMemcpyAsync(dst, src, n, kind, g->stream), what);
}

extern "C" int kcuda_h2d(struct kcuda *g, void *dst_dev, const void *src,
                         size_t n)
{
    return copy(g, dst_dev, src, n, cudaMemcpyHostToDevice, "kcuda_h2d");
}

extern "C" int kcuda_d2h(struct kcuda *g, void *dst, const void *src_dev,
                         size_t n)
{
    return copy(g, dst, src_dev, n, cudaMemcpyDeviceToHost, "kcuda_d2h");
}

extern "C" int kcuda_d2d(struct kcuda *g, void *dst_dev, const void *src_dev,
                         size_t n)
{
    return copy(g, dst_dev, src_dev, n, cudaMemcpyDeviceToDevice,
                "kcuda_d2d");
}

extern "C" int kcuda_memset(struct kcuda *g, void *dst_dev, int byte,
                            size_t n)
{
    if (n == 0)
        return 0;
    int rc = kcuda_bind(g);
    return rc ? rc
              : kcuda_err(cudaMemsetAsync(dst_dev, byte, n, g->stream),
                          "kcuda_memset");
}

extern "C" int kcuda_sync(struct kcuda *g)
{
    int rc = kcuda_bind(g);
    return rc ? rc
              : kcuda_err(cudaStreamSynchronize(g->stream), "kcuda_sync");
}

/* ---- graphs ---------------------------------------------------------------- */

struct kcuda_graph {
    cudaGraphExec_t exec;
};

/* err_seq when the capture of this thread began */
static thread_local unsigned long cap_seq;

extern "C" int kcuda_graph_begin(struct kcuda *g)
{
    if (g->capturing) {
        kcuda_set_error("kcuda_graph_begin: a capture is already open");
        return MTPD_K_EINVAL;
    }
    int rc = kcuda_bind(g);
    /* thread-local mode: a forbidden call (allocation, sync) made by this
     * thread during the capture fails it; other threads are not touched */
    if (rc == 0)
        rc = kcuda_err(cudaStreamBeginCapture(g->stream,
                                              cudaStreamCaptureModeThreadLocal),
                       "cudaStreamBeginCapture");
    if (rc == 0) {
        g->capturing = 1;
        cap_seq = err_seq;
    }
    return rc;
}

extern "C" int kcuda_graph_end(struct kcuda *g, struct kcuda_graph **out)
{
    *out = NULL;
    if (!g->capturing) {
        kcuda_set_error("kcuda_graph_end: no capture open");
        return MTPD_K_EINVAL;
    }
    g->capturing = 0;
    unsigned long seen = err_seq - cap_seq;
    char first[sizeof err_text];
    memcpy(first, err_text, sizeof first); /* the op's error, kept */
    cudaGraph_t graph = NULL;
    int rc = kcuda_bind(g);
    if (rc == 0)
        rc = kcuda_err(cudaStreamEndCapture(g->stream, &graph),
                       "cudaStreamEndCapture");
    if (seen) { /* name the op's error, not the failed end it caused */
        snprintf(err_text, sizeof err_text, "graph capture: %s", first);
        err_seq++;
        rc = MTPD_K_EDEV;
    }
    struct kcuda_graph *gr = NULL;
    if (rc == 0) {
        gr = (struct kcuda_graph *)calloc(1, sizeof *gr);
        if (gr == NULL)
            rc = MTPD_K_ENOMEM;
    }
    if (rc == 0)
        rc = kcuda_err(cudaGraphInstantiate(&gr->exec, graph, 0),
                       "cudaGraphInstantiate");
    if (graph)
        cudaGraphDestroy(graph); /* the instance keeps what it needs */
    if (rc) {
        free(gr);
        return rc;
    }
    *out = gr;
    return 0;
}

extern "C" int kcuda_graph_launch(struct kcuda *g, struct kcuda_graph *gr)
{
    int rc = kcuda_bind(g);
    return rc ? rc
              : kcuda_err(cudaGraphLaunch(gr->exec, g->stream),
                          "cudaGraphLaunch");
}

extern "C" void kcuda_graph_free(struct kcuda_graph *gr)
{
    if (gr == NULL)
        return;
    cudaGraphExecDestroy(gr->exec);
    free(gr);
}

/* ---- measurement ------------------------------------------------------------ */

extern "C" int kcuda_copy_bandwidth(struct kcuda *g, size_t bytes, int reps,
                                    double *gbps)
{
    *gbps = 0.0;
    if (bytes == 0 || reps <= 0) {
        kcuda_set_error("kcuda_copy_bandwidth: bytes and reps must be > 0");
        return MTPD_K_EINVAL;
    }
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = kcuda_bind(g);
    if (rc == 0)
        rc = kcuda_err(cudaMalloc(&a, bytes), "cudaMalloc(copy src)");
    if (rc == 0)
        rc = kcuda_err(cudaMalloc(&b, bytes), "cudaMalloc(copy dst)");
    if (rc == 0)
        rc = kcuda_err(cudaMemsetAsync(a, 1, bytes, g->stream), "memset");
    if (rc == 0)
        rc = kcuda_err(cudaEventCreate(&e0), "cudaEventCreate");
    if (rc == 0)
        rc = kcuda_err(cudaEventCreate(&e1), "cudaEventCreate");
    float best = 0.0f;
    /* one untimed copy first (clocks up, TLBs warm) */
    for (int i = -1; i < reps && rc == 0; i++) {
        rc = kcuda_err(cudaEventRecord(e0, g->stream), "cudaEventRecord");
        if (rc == 0)
            rc = kcuda_err(cudaMemcpyAsync(b, a, bytes,
                                           cudaMemcpyDeviceToDevice, g->stream),
                           "cudaMemcpyAsync");
        if (rc == 0)
            rc = kcuda_err(cudaEventRecord(e1, g->stream), "cudaEventRecord");
        if (rc == 0)
            rc = kcuda_err(cudaEventSynchronize(e1), "cudaEventSynchronize");
        float ms = 0.0f;
        if (rc == 0)
            rc = kcuda_err(cudaEventElapsedTime(&ms, e0, e1),
                           "cudaEventElapsedTime");
        if (rc == 0 && i >= 0 && ms > 0.0f && (best == 0.0f || ms < best))
            best = ms;
    }
    if (rc == 0 && best > 0.0f)
        *gbps = 2.0 * (double)bytes / (best * 1e-3) / 1e9;
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return rc;
}
