/*
 * log.h - the library's log lines (internal to model/ and spec/). They go
 * to the callback a program set with mtpd_set_log() (model.h), or nowhere.
 */
#ifndef MTPD_LOG_H
#define MTPD_LOG_H

#include "model.h"

/* Formats one line (no newline, cut at 511 bytes) and hands it to the log
 * callback; costs one load when none is set. Input quoted in a line must
 * go through json_esc() (json.h). */
void mtpd_logf(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
