/*
 * backend.cu - CUDA kernel backend (kernels.h contract on device memory).
 *
 * Placeholder unit: it only proves the nvcc toolchain is wired into the
 * build (meson option -Dcuda, -gencode for sm_90 by default). The device
 * implementations of kmatmul & co. will live beside it, one op family per
 * .cu file, as in kernels/cpu/.
 */
#include <cuda_runtime.h>

extern "C" {
int kcuda_device_count(void);
}

/* Number of CUDA devices visible, 0 when none (or no driver). */
extern "C" int kcuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        return 0;
    return n;
}
