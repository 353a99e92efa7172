/* cli_runtime.c - environment, log sink and load progress of the mtpd
 * command (see cli_runtime.h). */
#include "cli_runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

static int g_level = MTPD_LOG_WARN;

static void log_stderr(void *ud, int level, const char *msg)
{
    (void)ud;
    if (level > g_level)
        return;
    const char *tag = level == MTPD_LOG_ERROR  ? "error: "
                      : level == MTPD_LOG_WARN ? "warning: "
                                               : "";
    fprintf(stderr, "mtpd: %s%s\n", tag, msg);
}

void cli_log_level(int level) { g_level = level; }

void cli_runtime_init(int level)
{
    g_level = level;
    mtpd_set_log(log_stderr, NULL);
    const char *rs = getenv("MTPD_ROW_STREAM"); /* benchmarks: 0 or 1 */
    if (rs && (rs[0] == '0' || rs[0] == '1') && rs[1] == '\0')
        mtpd_set_row_stream(rs[0] - '0');
    const char *isa = getenv("MTPD_ISA"); /* tests, benchmarks */
    if (!isa || !*isa)
        return;
    if (mtpd_set_isa(isa) == 0)
        return;
    char q[JSON_ESC_CAP];
    int known = !strcmp(isa, "scalar") || !strcmp(isa, "avx2") ||
                !strcmp(isa, "avx512") || !strcmp(isa, "amx");
    if (known)
        fprintf(stderr, "mtpd: warning: MTPD_ISA=%s not supported, using %s\n",
                isa, mtpd_isa());
    else
        fprintf(stderr, "mtpd: warning: ignoring unknown MTPD_ISA=%s\n",
                json_escz(q, sizeof q, isa));
}

int cli_attn_split(void)
{
    const char *s = getenv("MTPD_ATTN_SPLIT"); /* tests, benchmarks */
    if (s && (s[0] == '0' || s[0] == '1') && s[1] == '\0')
        return s[0] - '0';
    return -1;
}

struct progress_line {
    const char *what; /* "loading weights", "quantizing" */
    double last;      /* when the line was last drawn */
    int drawn;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* "mtpd: loading weights  45% (1.20 of 2.70 GB, 300 of 1000 tensors)"
 * (or another verb), redrawn in place at most 10 times a second; the last
 * call ends the line. */
static void on_progress(void *ud, const struct mtpd_load_progress *p)
{
    struct progress_line *pl = ud;
    int done = p->tensors_done >= p->tensors_total;
    double t = now_s();
    if (!done && pl->drawn && t - pl->last < 0.1)
        return;
    double pct = p->bytes_total
                     ? 100.0 * (double)p->bytes_done / (double)p->bytes_total
                     : 100.0;
    fprintf(stderr, "\rmtpd: %s %3.0f%% (%.2f of %.2f GB, "
            "%ld of %ld tensors)%s", pl->what, pct > 100 ? 100 : pct,
            p->bytes_done / 1e9, p->bytes_total / 1e9, p->tensors_done,
            p->tensors_total, done ? "\n" : "");
    fflush(stderr);
    pl->drawn = 1;
    pl->last = t;
}

void cli_progress(const char *what, mtpd_load_progress_fn *fn, void **ud)
{
    static struct progress_line pl;
    if (!isatty(STDERR_FILENO))
        return;
    pl = (struct progress_line){.what = what};
    *fn = on_progress;
    *ud = &pl;
}

void cli_load_opts(struct mtpd_load_opts *o)
{
    cli_progress("loading weights", &o->progress, &o->progress_ud);
}

/* ---- --device ---- */

int cli_cuda_build(void)
{
#ifdef MTPD_CUDA
    return 1;
#else
    return 0;
#endif
}

int cli_cuda_devices(void)
{
    return mtpd_cuda_devices();
}

/* "cuda" -> 0, "cuda:N" -> N; -1 when dev is not a CUDA device name. */
static long cuda_index(const char *dev)
{
    if (!dev || strncmp(dev, "cuda", 4) != 0)
        return -1;
    if (dev[4] == '\0')
        return 0;
    if (dev[4] != ':' || dev[5] < '0' || dev[5] > '9')
        return -1;
    char *end;
    long n = strtol(dev + 5, &end, 10);
    return *end || n > 1023 ? -1 : n;
}

int cli_parse_device(const char *dev)
{
    if (!strcmp(dev, "auto") || !strcmp(dev, "cpu") || cuda_index(dev) >= 0)
        return 0;
    char q[JSON_ESC_CAP];
    fprintf(stderr, "mtpd: error: --device: '%s' is not auto, cpu, cuda or "
            "cuda:N\n", json_escz(q, sizeof q, dev));
    return -1;
}

int cli_device_check(const char *dev)
{
    long idx = cuda_index(dev);
    if (idx < 0)
        return 0;
    if (!cli_cuda_build()) {
        fprintf(stderr, "mtpd: error: --device %s: this mtpd was built "
                "without CUDA (meson -Dcuda=disabled, or no nvcc); use "
                "--device cpu\n", dev);
        return -1;
    }
    int n = cli_cuda_devices();
    if (n <= 0) {
        fprintf(stderr, "mtpd: error: --device %s: no CUDA GPU found (no "
                "device visible, or no NVIDIA driver); use --device cpu\n",
                dev);
        return -1;
    }
    if (idx >= n) {
        if (n == 1)
            fprintf(stderr, "mtpd: error: --device %s: there is one CUDA "
                    "device (cuda:0)\n", dev);
        else
            fprintf(stderr, "mtpd: error: --device %s: there are %d CUDA "
                    "devices (cuda:0 to cuda:%d)\n", dev, n, n - 1);
        return -1;
    }
    return 0;
}

const char *cli_model_device(const struct mtpd_model *m)
{
    const char *d = mtpd_model_device(m);
    return d && *d ? d : "cpu";
}

int cli_device_confirm(const struct mtpd_model *m, const char *dev)
{
    long idx = cuda_index(dev);
    if (idx < 0)
        return 0;
    const char *got = cli_model_device(m);
    if (cuda_index(got) == idx)
        return 0;
    fprintf(stderr, "mtpd: error: --device %s: the model was loaded on %s "
            "(this library has no device forward pass)\n", dev, got);
    return -1;
}
