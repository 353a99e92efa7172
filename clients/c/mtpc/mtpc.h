/*
 * mtpc.h - the mtpc command: global options, commands, shared helpers.
 */
#ifndef MTPC_H
#define MTPC_H

#include <stdbool.h>
#include <stdio.h>

#include "mtp_client.h"

/* Options given before the command. */
struct mtpc_global {
    const char *address; /* NULL: the daemon's default */
    char *token;         /* read from --token-file, owned */
    bool json;
};

/* Commands: argv[0] is the command name; return the exit status
 * (0 ok, 1 a failure reported on stderr, 2 a usage error). */
int cmd_generate(const struct mtpc_global *g, int argc, char **argv);
int cmd_fim(const struct mtpc_global *g, int argc, char **argv);
int cmd_chat(const struct mtpc_global *g, int argc, char **argv);
int cmd_info(const struct mtpc_global *g, int argc, char **argv);
int cmd_stats(const struct mtpc_global *g, int argc, char **argv);
int cmd_tokenize(const struct mtpc_global *g, int argc, char **argv);
int cmd_detokenize(const struct mtpc_global *g, int argc, char **argv);
int cmd_session(const struct mtpc_global *g, int argc, char **argv);
int cmd_bench(const struct mtpc_global *g, int argc, char **argv);

/* --- opts.c --------------------------------------------------------------- */

/* Generation options shared by generate, fim, chat. */
#define GEN_LONGOPTS                                                        \
    {"max-tokens", required_argument, 0, 1001},                             \
        {"temperature", required_argument, 0, 1002},                        \
        {"top-p", required_argument, 0, 1003},                              \
        {"top-k", required_argument, 0, 1004},                              \
        {"seed", required_argument, 0, 1005},                               \
        {"draft-tokens", required_argument, 0, 1006},                       \
        {"stop", required_argument, 0, 1007},                               \
        {"session", required_argument, 0, 1008},                            \
        {"ignore-eos", no_argument, 0, 1009}
#define GEN_OPTS_HELP                                                       \
    "  --max-tokens N      at most N generated tokens (daemon default 256)\n" \
    "  --temperature T     0 = greedy (default), > 0 samples\n"             \
    "  --top-p P           nucleus sampling mass in (0, 1]\n"               \
    "  --top-k K           sample from the K most likely (0 = off)\n"       \
    "  --seed S            sampling seed\n"                                 \
    "  --draft-tokens K    MTP draft length 0..16 or 'auto' (0 = no\n"      \
    "                      speculation; default: the daemon's)\n"         \
    "  --stop STR          stop string (repeatable, at most 16)\n"          \
    "  --session ID        run in this session (mtpc session open)\n"       \
    "  --ignore-eos        keep generating past end-of-sequence\n"

/* Stop strings collected from --stop. */
struct gen_opts {
    struct mtp_gen_params p;
    const char *stops[16];
};

/* Handles one GEN_LONGOPTS option (c its value); returns 0, 1 when c is
 * not one of them, or 2 after printing a usage error. */
int gen_opt(struct gen_opts *o, int c, const char *arg, const char *cmd);

/* Parses an int/double option value; prints a usage error and returns
 * false when it is not one. */
bool parse_int(const char *s, long lo, long hi, long *v, const char *what);
bool parse_double(const char *s, double *v, const char *what);

/* Connects as the global options say; prints the error and returns NULL
 * on failure. */
mtp_client *mtpc_connect(const struct mtpc_global *g);
/* Prints "mtpc: what: code: message" for the client's last error;
 * returns 1 (the exit status). */
int mtpc_fail(mtp_client *c, const char *what);

/* Reads a whole file ("-" = stdin) as a NUL-terminated string (free());
 * NULL with a message on failure. */
char *read_file(const char *path);

/* Writes s as a JSON string. */
void json_puts(FILE *f, const char *s, size_t n);
/* Prints the client's last result as JSON on stdout; returns 0 or 1. */
int print_last_json(mtp_client *c);

/* Seconds of a monotonic clock. */
double now_s(void);

/* A short help text for a command when argv holds -h/--help. */
bool wants_help(int argc, char **argv);

/* SIGINT sets this; long calls cancel when they see it. */
extern volatile int mtpc_interrupted;
void mtpc_catch_sigint(void);

#endif
