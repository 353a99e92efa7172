/*
 * settings.c - process-wide settings of the library: where its log lines
 * go and which SIMD code path the CPU ops take.
 *
 * The library never prints and never reads the environment; a program
 * (the mtpd CLI, the daemon) decides both and passes them down here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "model_int.h"

static mtpd_log_fn g_log_fn;
static void *g_log_ud;

void mtpd_set_log(mtpd_log_fn fn, void *ud)
{
    g_log_fn = fn;
    g_log_ud = ud;
}

void mtpd_logf(int level, const char *fmt, ...)
{
    mtpd_log_fn fn = g_log_fn;
    if (!fn)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(g_log_ud, level, msg);
}

/* "amx" is AVX-512 with AMX tiles for BF16 weights (kernels.h); the
 * plain "avx512" (and the default) is without them. Q8_0 / Q4_1 use
 * AMX-INT8 tiles for several tokens on either (the same bits). */
int mtpd_set_isa(const char *name)
{
    if (!name || !*name) {
        if (kisa_set(kisa_detect()) != MTPD_K_OK)
            return MTPD_EINVAL;
        kisa_set_amx(0); /* the default: isa.c says why */
        return MTPD_OK;
    }
    if (strcmp(name, "amx") == 0) {
        if (!kisa_has_amx())
            return MTPD_EINVAL;
        kisa_set(KISA_AVX512);
        kisa_set_amx(1);
        return MTPD_OK;
    }
    for (int i = 0; i < KISA_COUNT; i++)
        if (strcmp(name, kisa_str((enum kisa)i)) == 0) {
            if (kisa_set((enum kisa)i) != MTPD_K_OK)
                return MTPD_EINVAL;
            kisa_set_amx(0);
            return MTPD_OK;
        }
    return MTPD_EINVAL;
}

void mtpd_set_row_stream(int on) { kisa_set_row_stream(on); }

int mtpd_row_stream(void) { return kisa_row_stream(); }

const char *mtpd_isa(void)
{
    return kisa_amx_active() ? "amx" : kisa_str(kisa_active());
}

const char *mtpd_isa_best(void)
{
    return kisa_has_amx() ? "amx" : kisa_str(kisa_detect());
}
