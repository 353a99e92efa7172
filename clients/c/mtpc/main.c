/*
 * main.c - mtpc: the command-line client of `mtpd serve`. Global options,
 * then a command (docs/protocol.md describes what each call does).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "mtpc.h"

#ifndef MTPC_VERSION
#define MTPC_VERSION MTP_CLIENT_VERSION
#endif

static const struct {
    const char *name;
    int (*fn)(const struct mtpc_global *, int, char **);
    const char *what;
} commands[] = {
    {"generate", cmd_generate, "generate text from a prompt (streams)"},
    {"chat", cmd_chat, "interactive chat in one session"},
    {"fim", cmd_fim, "fill in the middle between a prefix and a suffix"},
    {"stats", cmd_stats, "the daemon's counters and acceptance numbers"},
    {"info", cmd_info, "the daemon's version, model and limits"},
    {"tokenize", cmd_tokenize, "text -> token ids"},
    {"detokenize", cmd_detokenize, "token ids -> text"},
    {"session", cmd_session, "open / close / inspect a session"},
    {"bench", cmd_bench, "throughput, latency and acceptance benchmark"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    char def[512];
    mtp_default_address(def, sizeof def);
    fprintf(f,
            "usage: mtpc [--address A] [--token-file F] [--json] COMMAND "
            "[ARGS]\n\n"
            "The command-line client of `mtpd serve`.\n\n"
            "options:\n"
            "  --address A       unix:PATH or tcp:HOST:PORT (default\n"
            "                    $MTPD_ADDRESS, else %s)\n"
            "  --token-file F    send the token in F (first line) with hello;\n"
            "                    needed for TCP on a non-loopback address\n"
            "  --json            machine-readable output (one JSON object)\n"
            "  --version         print the version\n\n"
            "commands:\n",
            def);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\n`mtpc COMMAND --help` explains a command.\n");
}

/* The first line of a token file, without its newline. */
static char *read_token(const char *path)
{
    char *t = read_file(path);
    if (!t)
        return NULL;
    t[strcspn(t, "\r\n")] = 0;
    if (!*t) {
        fprintf(stderr, "mtpc: %s: empty token file\n", path);
        free(t);
        return NULL;
    }
    return t;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"address", required_argument, 0, 'a'},
        {"token-file", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    struct mtpc_global g = {0};
    const char *token_file = NULL;
    int c;
    /* '+': stop at the command; its own options follow it */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            g.address = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'j':
            g.json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("mtpc %s (protocol %d)\n", MTPC_VERSION,
                   MTP_PROTOCOL_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (!g.address)
        g.address = getenv("MTPD_ADDRESS");
    const char *name = argv[optind];
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name))
            continue;
        if (token_file && !(g.token = read_token(token_file)))
            return 1;
        int at = optind;
        optind = 0; /* getopt_long starts afresh for the command */
        int rc = commands[i].fn(&g, argc - at, argv + at);
        free(g.token);
        return rc;
    }
    fprintf(stderr, "mtpc: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}
