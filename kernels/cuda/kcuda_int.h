/*
 * kcuda_int.h - what the CUDA backend's .cu files share: the backend
 * handle and the error recording. Internal to kernels/cuda/ (kcuda.h is
 * the public contract). Kept small and stable: other op files build on it.
 *
 * Ops launch on g->stream and take their scratch from g->ws (ws_bytes,
 * 256-byte aligned). Ops run one after another on the one stream, so each
 * op may use the whole workspace for itself; nothing survives an op.
 */
#ifndef MTPD_KCUDA_INT_H
#define MTPD_KCUDA_INT_H

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kcuda {
    int dev;                /* device ordinal */
    int sm_count;           /* multiprocessors */
    cudaStream_t stream;    /* every op runs here */
    cublasLtHandle_t lt;    /* cuBLASLt handle (wide matmuls) */
    void *ws;               /* (dev) op scratch, 256-byte aligned */
    size_t ws_bytes;
    int capturing;          /* between kcuda_graph_begin and _end */
    char desc[160];         /* kcuda_describe's text */
};

/* Records "what: <CUDA error text>" as this thread's last error when e is
 * not cudaSuccess. Returns 0 for cudaSuccess, else MTPD_K_EDEV. */
int kcuda_err(cudaError_t e, const char *what);
/* The same for a cuBLAS(Lt) status. */
int kcuda_blas_err(cublasStatus_t s, const char *what);
/* Records a formatted message as this thread's last error (argument
 * errors of an op: call it before returning MTPD_K_EINVAL so that a graph
 * capture in progress fails at kcuda_graph_end, as kcuda.h promises). */
void kcuda_set_error(const char *fmt, ...);
/* Makes g's device current for the calling thread (a no-op when it is
 * already, cached per thread): 0 or MTPD_K_EDEV. The core calls (memory,
 * copies, graphs) do it; an op launched from a thread that never called
 * one of them should too. */
int kcuda_bind(const struct kcuda *g);

/* After a kernel launch: 0, or MTPD_K_EDEV with the launch error recorded
 * (bad configuration, missing image for the device...). */
static inline int kcuda_launched(const char *what)
{
    return kcuda_err(cudaGetLastError(), what);
}

#ifdef __cplusplus
}
#endif
#endif
