/*
 * cli_runtime.h - what the mtpd command takes from its environment and
 * terminal and hands to the library, which reads neither: the log sink,
 * MTPD_ISA, MTPD_ATTN_SPLIT, and a progress line for long loads.
 */
#ifndef MTPD_CLI_RUNTIME_H
#define MTPD_CLI_RUNTIME_H

#include "model.h"

/* Once at start-up: library log lines at or above `level` (MTPD_LOG_*) go
 * to stderr as "mtpd: ...", and MTPD_ISA=scalar|avx2|avx512|amx picks the
 * CPU code path (a warning on stderr when unknown or not supported). */
void cli_runtime_init(int level);
/* Library log lines up to this level are printed from now on. */
void cli_log_level(int level);

/* MTPD_ATTN_SPLIT=0|1 for mtpd_ctx_set_attn_split(); -1 (auto) when unset
 * or anything else. */
int cli_attn_split(void);

/* Load options with the progress callback set when stderr is a terminal
 * (a line redrawn in place, ended with a newline when the load is done). */
void cli_load_opts(struct mtpd_load_opts *o);

#endif
