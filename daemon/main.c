/*
 * main.c - the mtpd command: dispatches to one subcommand per file
 * (cmd_*.c). Nothing else lives here.
 */
#include <stdio.h>
#include <string.h>

#include "cli_runtime.h"
#include "cmd.h"

static const struct cmd_entry {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} cmds[] = {
    {"generate", cmd_generate, "generate text with MTP speculative decoding"},
    {"logits", cmd_logits, "print main-model and MTP logits as JSON"},
    {"tokenize", cmd_tokenize, "encode/decode JSON lines with a tokenizer"},
    {"info", cmd_info, "describe a checkpoint (config, sizes, MTP modules)"},
    {"serve", cmd_serve, "run the daemon: MessagePack-RPC over a socket"},
    {"quantize", cmd_quantize, "write a q8 / q4 / fp8 copy of a checkpoint"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mtpd COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n'mtpd COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("mtpd %s\n", MTPD_VERSION);
        return 0;
    }
    cli_runtime_init(MTPD_LOG_WARN);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "mtpd: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
