/*
 * cli_runtime.h - what the mtpd command takes from its environment and
 * terminal and hands to the library, which reads neither: the log sink,
 * MTPD_ISA, MTPD_ROW_STREAM, MTPD_ATTN_SPLIT, a progress line for long
 * loads, and the --device option of every command that loads a model.
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
/* The same progress line for another long job (what: its verb, e.g.
 * "quantizing"); leaves fn and ud as they are when stderr is no
 * terminal. */
void cli_progress(const char *what, mtpd_load_progress_fn *fn, void **ud);

/* ---- --device auto|cpu|cuda|cuda:N (mtpd_load_opts.device) ---- */

/* Checks the form of a --device value. 0 ok; -1 with an error line
 * printed (a usage error). */
int cli_parse_device(const char *dev);
/* Before a load: can the device asked for be had? NULL, "auto" and "cpu"
 * always can. 0 yes; -1 with one error line printed (no CUDA in this
 * build, no GPU visible, no device N). */
int cli_device_check(const char *dev);
/* After a load: where its forward passes run ("cpu", "cuda:0"). */
const char *cli_model_device(const struct mtpd_model *m);
/* After a load with --device cuda[:N]: 0 when the model is there; -1 with
 * one error line printed when it landed elsewhere. */
int cli_device_confirm(const struct mtpd_model *m, const char *dev);
/* 1 when this build has the CUDA backend (meson -Dcuda). */
int cli_cuda_build(void);
/* CUDA devices this build can use (0 without CUDA or a GPU). */
int cli_cuda_devices(void);

#endif
