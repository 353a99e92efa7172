/* cli_util.h - small helpers shared by the subcommands' option parsing. */
#ifndef MTPD_CLI_UTIL_H
#define MTPD_CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parses "1,2,3" into a malloc'd array (caller frees). Returns the count,
 * or -1 on a malformed list (empty items, non-digits, > INT32_MAX). */
int cli_parse_ids(const char *s, int32_t **out);

/* Parses a whole decimal int in [lo, hi]; 0 ok, -1 otherwise. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
/* Parses a whole finite float; 0 ok, -1 otherwise. */
int cli_parse_float(const char *s, double *out);

/* "--kv-dtype f32|bf16" -> *bf16 (0/1); 0 ok, -1 (error printed). */
int cli_parse_kv_dtype(const char *s, int *bf16);
/* "--act-dtype f32|bf16" (mtpd_load_opts.act_bf16) likewise. */
int cli_parse_act_dtype(const char *s, int *bf16);

/* Matches option argv[*i] against `name` ("--name VALUE" or
 * "--name=VALUE"). Returns 0 when it is another option; 1 with *val set
 * (and *i advanced past a separate value); -1 when the value is missing
 * (an error line is printed). */
int cli_opt(int argc, char **argv, int *i, const char *name,
            const char **val);

#endif
