/*
 * cmd_generate.c - `mtpc generate` and `mtpc fim`: one request, its text
 * streamed to stdout as it arrives, a summary on stderr.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mtpc.h"

/* Streaming state: what arrived, and when. */
struct stream {
    double t0, t_first;
    size_t n_ids;
    bool echo; /* print chunks as they come */
};

static int on_chunk(void *ud, const char *text, size_t len,
                    const int32_t *ids, size_t n)
{
    struct stream *s = ud;
    if (n && !s->t_first)
        s->t_first = now_s();
    s->n_ids += n;
    if (s->echo && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return mtpc_interrupted; /* ^C: cancel, keep what came */
}

/* One line about the request on stderr (when it is a terminal or asked). */
static void summary(const struct mtp_result *r, const struct stream *s,
                    double t_end)
{
    const struct mtp_stats *st = &r->stats;
    fprintf(stderr, "[%zu tokens, %s, %.0f ms", r->n_ids, r->finish_reason,
            (t_end - s->t0) * 1e3);
    if (s->t_first)
        fprintf(stderr, ", first token %.0f ms", (s->t_first - s->t0) * 1e3);
    if (st->decode_tokens_per_s > 0)
        fprintf(stderr, ", %.1f tok/s", st->decode_tokens_per_s);
    if (st->drafted_tokens)
        fprintf(stderr, ", acceptance %.2f, %.2f tokens/pass",
                st->acceptance_rate, st->tokens_per_pass);
    if (st->prompt_tokens_reused)
        fprintf(stderr, ", %lld prompt tokens reused",
                (long long)st->prompt_tokens_reused);
    fprintf(stderr, "]\n");
}

/* Runs generate or fim with p; prints as the options say. */
static int run(const struct mtpc_global *g, bool json, bool quiet,
               const char *method, struct mtp_gen_params *p)
{
    mtp_client *c = mtpc_connect(g);
    if (!c)
        return 1;
    mtpc_catch_sigint();
    struct stream s = {.t0 = now_s(), .echo = !json};
    struct mtp_result r;
    int rc = !strcmp(method, "fim") ? mtp_fim(c, p, on_chunk, &s, &r)
                                    : mtp_generate(c, p, on_chunk, &s, &r);
    double t_end = now_s();
    int status = 0;
    if (rc < 0) {
        if (s.n_ids && !json)
            fputc('\n', stdout);
        status = mtpc_fail(c, method);
    } else if (json) {
        status = print_last_json(c);
        if (!strcmp(r.finish_reason, "error"))
            status = 1;
    } else {
        if (isatty(STDOUT_FILENO) &&
            (!r.text_len || r.text[r.text_len - 1] != '\n'))
            fputc('\n', stdout);
        fflush(stdout);
        if (!quiet && isatty(STDERR_FILENO))
            summary(&r, &s, t_end);
        if (!strcmp(r.finish_reason, "error")) {
            fprintf(stderr, "mtpc: %s: the generation failed: %s\n", method,
                    r.error[0] ? r.error : "(no reason given)");
            status = 1;
        }
    }
    mtp_result_free(&r);
    mtp_client_free(c);
    return status;
}

static const char generate_help[] =
    "usage: mtpc generate [OPTIONS] [PROMPT]\n\n"
    "Generates a continuation of PROMPT (or of stdin when PROMPT is absent\n"
    "or '-') and prints it as it arrives. A summary (tokens, latency, time\n"
    "to first token, tokens/s, draft acceptance) goes to stderr when it is\n"
    "a terminal. ^C cancels the request and keeps what came.\n\n"
    "options:\n" GEN_OPTS_HELP
    "  --ids               PROMPT is token ids (space/comma separated)\n"
    "  -q, --quiet         no summary line\n"
    "  --json              print the whole result (text, ids, finish_reason,\n"
    "                      stats) as one JSON object instead\n";

/* Parses "1 2,3" into ids; false on a bad number. */
static bool parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    while (*ids) {
        while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t')
            s++;
        if (!*s)
            return true;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX)
            break;
        if (*n == cap) {
            int32_t *ni = realloc(*ids, (cap *= 2) * sizeof **ids);
            if (!ni)
                break;
            *ids = ni;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    free(*ids);
    *ids = NULL;
    return false;
}

int cmd_generate(const struct mtpc_global *g, int argc, char **argv)
{
    static const struct option opts[] = {
        GEN_LONGOPTS,
        {"ids", no_argument, 0, 'i'},
        {"quiet", no_argument, 0, 'q'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct gen_opts o;
    mtp_gen_params_init(&o.p);
    bool json = g->json, quiet = false, as_ids = false;
    int c;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        int r = gen_opt(&o, c, optarg, "generate");
        if (r == 0)
            continue;
        if (r == 2)
            return 2;
        switch (c) {
        case 'i':
            as_ids = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(generate_help, stdout);
            return 0;
        default:
            fputs(generate_help, stderr);
            return 2;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "mtpc generate: one PROMPT (quote it)\n");
        return 2;
    }
    char *input = NULL;
    const char *text;
    if (optind < argc && strcmp(argv[optind], "-")) {
        text = argv[optind];
    } else {
        if (isatty(STDIN_FILENO))
            fprintf(stderr, "(reading the prompt from stdin; end it with "
                    "^D)\n");
        if (!(input = read_file("-")))
            return 1;
        text = input;
    }
    int32_t *ids = NULL;
    int status;
    if (as_ids) {
        if (!parse_ids(text, &ids, &o.p.n_ids) || !o.p.n_ids) {
            fprintf(stderr, "mtpc generate: --ids: expected token ids\n");
            free(input);
            return 2;
        }
        o.p.ids = ids;
    } else {
        o.p.prompt = text;
    }
    status = run(g, json, quiet, "generate", &o.p);
    free(ids);
    free(input);
    return status;
}

static const char fim_help[] =
    "usage: mtpc fim --prefix-file F --suffix-file F [OPTIONS]\n\n"
    "Fill-in-the-middle: generates the text between the prefix and the\n"
    "suffix (the model's FIM tokens frame them) and prints it as it\n"
    "arrives. '-' reads a file from stdin.\n\n"
    "options:\n"
    "  --prefix-file F     the text before the hole (required)\n"
    "  --suffix-file F     the text after the hole (required)\n" GEN_OPTS_HELP
    "  -q, --quiet         no summary line\n"
    "  --json              print the whole result as one JSON object\n";

int cmd_fim(const struct mtpc_global *g, int argc, char **argv)
{
    static const struct option opts[] = {
        GEN_LONGOPTS,
        {"prefix-file", required_argument, 0, 'P'},
        {"suffix-file", required_argument, 0, 'S'},
        {"quiet", no_argument, 0, 'q'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct gen_opts o;
    mtp_gen_params_init(&o.p);
    bool json = g->json, quiet = false;
    const char *pf = NULL, *sf = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        int r = gen_opt(&o, c, optarg, "fim");
        if (r == 0)
            continue;
        if (r == 2)
            return 2;
        switch (c) {
        case 'P':
            pf = optarg;
            break;
        case 'S':
            sf = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(fim_help, stdout);
            return 0;
        default:
            fputs(fim_help, stderr);
            return 2;
        }
    }
    if (!pf || !sf || optind < argc) {
        fputs(fim_help, stderr);
        return 2;
    }
    if (!strcmp(pf, "-") && !strcmp(sf, "-")) {
        fprintf(stderr, "mtpc fim: only one of the files can be stdin\n");
        return 2;
    }
    char *prefix = read_file(pf), *suffix = prefix ? read_file(sf) : NULL;
    int status = 1;
    if (prefix && suffix) {
        o.p.prefix = prefix;
        o.p.suffix = suffix;
        status = run(g, json, quiet, "fim", &o.p);
    }
    free(prefix);
    free(suffix);
    return status;
}
