/*
 * device.c - where a model's forward passes run: mtpd_load_opts.device
 * parsed and checked against what this build and this machine have.
 *
 *   NULL, "" or "auto"  a CUDA GPU when the build has CUDA and one is
 *                       usable (device 0), else the CPU
 *   "cpu"               the CPU
 *   "cuda", "cuda:N"    CUDA device 0 / N; MTPD_ENODEV when the build has
 *                       no CUDA or the device is not there
 *
 * The CUDA side answers through dev_built() / dev_count() (dev_model.c, or
 * dev_none.c in a build without CUDA), so this file has no #ifdef.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "model_int.h"

#define DEVICE_INDEX_MAX 1024

/* "cuda" -> 0, "cuda:N" -> N; -1 for anything else. */
static int parse_cuda(const char *s)
{
    if (strncmp(s, "cuda", 4) != 0)
        return -1;
    s += 4;
    if (!*s)
        return 0;
    if (*s++ != ':' || !*s)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v >= DEVICE_INDEX_MAX)
            return -1;
    }
    return (int)v;
}

int device_is_auto(const char *device)
{
    return !device || !*device || strcmp(device, "auto") == 0;
}

int device_select(const char *device, int *index, char *err, size_t errlen)
{
    *index = -1;
    int is_auto = device_is_auto(device);
    if (!is_auto && strcmp(device, "cpu") == 0)
        return 0;
    int want = is_auto ? 0 : parse_cuda(device);
    if (want < 0) {
        char q[JSON_ESC_CAP];
        snprintf(err, errlen, "--device %s: unknown device (auto, cpu, "
                 "cuda or cuda:N)", json_escz(q, sizeof q, device));
        return MTPD_EINVAL;
    }
    if (!dev_built()) {
        if (is_auto) {
            mtpd_logf(MTPD_LOG_INFO, "device auto: cpu (this build has no "
                      "CUDA)");
            return 0;
        }
        snprintf(err, errlen, "--device %s: this build has no CUDA (nvcc "
                 "was not found at build time)", device);
        return MTPD_ENODEV;
    }
    char why[256] = "";
    int n = dev_count(why, sizeof why);
    if (n <= 0) {
        if (is_auto) {
            mtpd_logf(MTPD_LOG_INFO, "device auto: cpu (no CUDA device: %s)",
                      why);
            return 0;
        }
        snprintf(err, errlen, "--device %s: no CUDA device: %s", device,
                 why);
        return MTPD_ENODEV;
    }
    if (want >= n) {
        snprintf(err, errlen, "--device %s: no CUDA device: %d present "
                 "(cuda:0 .. cuda:%d)", device, n, n - 1);
        return MTPD_ENODEV;
    }
    if (is_auto)
        mtpd_logf(MTPD_LOG_INFO, "device auto: cuda:0 (%d CUDA device(s))",
                  n);
    *index = want;
    return 0;
}

const char *mtpd_model_device(const struct mtpd_model *m)
{
    return m->device_name;
}

int mtpd_cuda_devices(void)
{
    char why[256];
    if (!dev_built())
        return 0;
    int n = dev_count(why, sizeof why);
    return n > 0 ? n : 0;
}
