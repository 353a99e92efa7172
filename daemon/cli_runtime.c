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
    double last; /* when the line was last drawn */
    int drawn;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* "mtpd: loading weights  45% (1.20 of 2.70 GB, 300 of 1000 tensors)",
 * redrawn in place at most 10 times a second; the last call ends the
 * line. */
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
    fprintf(stderr, "\rmtpd: loading weights %3.0f%% (%.2f of %.2f GB, "
            "%ld of %ld tensors)%s", pct > 100 ? 100 : pct,
            p->bytes_done / 1e9, p->bytes_total / 1e9, p->tensors_done,
            p->tensors_total, done ? "\n" : "");
    fflush(stderr);
    pl->drawn = 1;
    pl->last = t;
}

void cli_load_opts(struct mtpd_load_opts *o)
{
    static struct progress_line pl;
    if (!isatty(STDERR_FILENO))
        return;
    pl = (struct progress_line){0};
    o->progress = on_progress;
    o->progress_ud = &pl;
}
