/*
 * cmd_misc.c - the one-call commands: stats, tokenize, detokenize,
 * session.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "mtpc.h"

/* Parses only --json/--help; returns -1 to go on, else an exit status. */
static int simple_opts(int argc, char **argv, bool *json, const char *help)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (c == 'j') {
            *json = true;
        } else if (c == 'h') {
            fputs(help, stdout);
            return 0;
        } else {
            fputs(help, stderr);
            return 2;
        }
    }
    return -1;
}

/* ---- stats -------------------------------------------------------------- */

static const char stats_help[] =
    "usage: mtpc stats [--json]\n\n"
    "The daemon's counters: requests, tokens, sessions, KV cache use, and\n"
    "the speculative-decoding numbers summed over every finished request\n"
    "(acceptance by draft position, mean accepted length, the histogram\n"
    "of draft lengths). --json prints the whole `stats` reply.\n";

/* Prints the spec numbers of st, indented. */
static void print_spec(const struct mtp_stats *st)
{
    printf("  verify passes %lld, drafts %lld, drafted %lld, accepted %lld\n",
           (long long)st->verify_passes, (long long)st->drafts,
           (long long)st->drafted_tokens, (long long)st->accepted_tokens);
    printf("  acceptance rate %.4f, mean accepted length %.3f, "
           "tokens/pass %.3f\n",
           st->acceptance_rate, st->mean_accepted_length,
           st->tokens_per_pass);
    if (st->n_positions) {
        printf("  %-10s %14s %12s\n", "position", "unconditional",
               "conditional");
        for (int i = 0; i < st->n_positions; i++)
            printf("  %-10d %14.4f %12.4f\n", i + 1,
                   st->acceptance_by_position[i],
                   st->acceptance_by_position_conditional[i]);
    }
    if (st->n_k_histogram) {
        printf("  draft length histogram (passes per k):");
        for (int k = 0; k < st->n_k_histogram; k++)
            printf(" %d:%lld", k, (long long)st->k_histogram[k]);
        putchar('\n');
    }
}

int cmd_stats(const struct mtpc_global *g, int argc, char **argv)
{
    bool json = g->json;
    int r = simple_opts(argc, argv, &json, stats_help);
    if (r >= 0)
        return r;
    if (optind < argc) {
        fputs(stats_help, stderr);
        return 2;
    }
    mtp_client *c = mtpc_connect(g);
    if (!c)
        return 1;
    struct mtp_server_stats st;
    char *j = NULL;
    int status = 0;
    if (mtp_server_stats(c, &st, json ? &j : NULL) < 0) {
        status = mtpc_fail(c, "stats");
    } else if (json) {
        puts(j);
    } else {
        printf("uptime %.0f s, requests %lld (%lld active, %lld queued), "
               "sessions %lld\n",
               st.uptime_seconds, (long long)st.requests,
               (long long)st.requests_active, (long long)st.queue_depth,
               (long long)st.sessions);
        printf("tokens generated %lld, prompt tokens %lld (%lld reused), "
               "%.1f tok/s over the last 10 s\n",
               (long long)st.tokens_generated, (long long)st.prompt_tokens,
               (long long)st.prompt_tokens_reused, st.tokens_per_s);
        printf("KV cache %.1f MiB in use of %.1f MiB\n",
               (double)st.kv_bytes_in_use / 1048576.0,
               (double)st.kv_budget_bytes / 1048576.0);
        const msgpack_object *errs =
            mtp_map_get(mtp_client_last_result(c), "errors");
        if (errs && errs->type == MSGPACK_OBJECT_MAP && errs->via.map.size) {
            printf("error replies:");
            for (uint32_t i = 0; i < errs->via.map.size; i++) {
                const msgpack_object_kv *kv = &errs->via.map.ptr[i];
                if (kv->key.type == MSGPACK_OBJECT_STR)
                    printf(" %.*s %llu", (int)kv->key.via.str.size,
                           kv->key.via.str.ptr,
                           (unsigned long long)kv->val.via.u64);
            }
            putchar('\n');
        }
        printf("speculation (finished requests):\n");
        print_spec(&st.spec);
    }
    free(j);
    mtp_client_free(c);
    return status;
}

/* ---- info ------------------------------------------------------------------ */

static const char info_help[] =
    "usage: mtpc info [--json]\n\n"
    "The daemon's `hello`: its version, the model (name, vocabulary,\n"
    "context length, MTP modules, KV bytes per token) and its limits.\n";

int cmd_info(const struct mtpc_global *g, int argc, char **argv)
{
    bool json = g->json;
    int r = simple_opts(argc, argv, &json, info_help);
    if (r >= 0)
        return r;
    if (optind < argc) {
        fputs(info_help, stderr);
        return 2;
    }
    mtp_client *c = mtpc_connect(g);
    if (!c)
        return 1;
    struct mtp_server_info in;
    int status = 0;
    if (mtp_hello(c, g->token, &in) < 0) {
        status = mtpc_fail(c, "hello");
    } else if (json) {
        status = print_last_json(c);
    } else {
        printf("%s %s, protocol %d\n", in.server, in.version, in.protocol);
        printf("model %s: vocabulary %lld, context %lld, %lld MTP module%s, "
               "%lld KV bytes per token\n",
               in.model, (long long)in.vocab_size,
               (long long)in.context_length, (long long)in.mtp_modules,
               in.mtp_modules == 1 ? "" : "s",
               (long long)in.kv_bytes_per_token);
        printf("limits: frame %lld bytes, %lld sessions, max_tokens %lld, "
               "KV budget %.1f MiB\n",
               (long long)in.max_frame, (long long)in.max_sessions,
               (long long)in.max_tokens,
               (double)in.kv_budget_bytes / 1048576.0);
    }
    mtp_client_free(c);
    return status;
}

/* ---- tokenize / detokenize ---------------------------------------------- */

static const char tokenize_help[] =
    "usage: mtpc tokenize [--json] [--no-special] TEXT\n\n"
    "Prints the token ids of TEXT (stdin when TEXT is '-'), space\n"
    "separated. --no-special leaves out the BOS the tokenizer would add.\n";

int cmd_tokenize(const struct mtpc_global *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"no-special", no_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool json = g->json;
    int add_special = -1, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') {
            json = true;
        } else if (c == 'n') {
            add_special = 0;
        } else if (c == 'h') {
            fputs(tokenize_help, stdout);
            return 0;
        } else {
            fputs(tokenize_help, stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        fputs(tokenize_help, stderr);
        return 2;
    }
    char *input = NULL;
    const char *text = argv[optind];
    if (!strcmp(text, "-") && !(text = input = read_file("-")))
        return 1;
    mtp_client *c2 = mtpc_connect(g);
    int status = 1;
    if (c2) {
        int32_t *ids;
        size_t n;
        if (mtp_tokenize(c2, text, add_special, &ids, &n) < 0) {
            status = mtpc_fail(c2, "tokenize");
        } else if (json) {
            status = print_last_json(c2);
            free(ids);
        } else {
            for (size_t i = 0; i < n; i++)
                printf(i ? " %d" : "%d", ids[i]);
            putchar('\n');
            free(ids);
            status = 0;
        }
        mtp_client_free(c2);
    }
    free(input);
    return status;
}

static const char detokenize_help[] =
    "usage: mtpc detokenize [--json] IDS...\n\n"
    "Prints the text of the token ids (separate arguments, or one argument\n"
    "with ids separated by spaces or commas).\n";

int cmd_detokenize(const struct mtpc_global *g, int argc, char **argv)
{
    bool json = g->json;
    int r = simple_opts(argc, argv, &json, detokenize_help);
    if (r >= 0)
        return r;
    if (optind >= argc) {
        fputs(detokenize_help, stderr);
        return 2;
    }
    size_t n = 0, cap = 64;
    int32_t *ids = malloc(cap * sizeof *ids);
    for (int i = optind; i < argc && ids; i++) {
        for (const char *s = argv[i]; *s;) {
            if (*s == ' ' || *s == ',') {
                s++;
                continue;
            }
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "mtpc detokenize: '%s' is not a token id\n",
                        argv[i]);
                free(ids);
                return 2;
            }
            if (n == cap) {
                int32_t *ni = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!ni) {
                    free(ids);
                    ids = NULL;
                    break;
                }
                ids = ni;
            }
            ids[n++] = (int32_t)v;
            s = end;
        }
    }
    if (!ids) {
        fprintf(stderr, "mtpc: out of memory\n");
        return 1;
    }
    mtp_client *c = mtpc_connect(g);
    int status = 1;
    if (c) {
        char *text;
        if (mtp_detokenize(c, ids, n, &text) < 0) {
            status = mtpc_fail(c, "detokenize");
        } else {
            status = json ? print_last_json(c) : (puts(text), 0);
            free(text);
        }
        mtp_client_free(c);
    }
    free(ids);
    return status;
}

/* ---- session -------------------------------------------------------------- */

static const char session_help[] =
    "usage: mtpc session [--json] open | close ID | info ID\n\n"
    "open prints a new session's id; pass it to generate/fim/chat with\n"
    "--session so the daemon reuses its cached prefix. A session outlives\n"
    "the connection and ends with close, when idle too long, or when\n"
    "evicted. info shows its history length, KV bytes and summed stats.\n";

int cmd_session(const struct mtpc_global *g, int argc, char **argv)
{
    bool json = g->json;
    int r = simple_opts(argc, argv, &json, session_help);
    if (r >= 0)
        return r;
    const char *verb = optind < argc ? argv[optind] : "";
    bool needs_id = !strcmp(verb, "close") || !strcmp(verb, "info");
    if (!(needs_id || !strcmp(verb, "open")) ||
        argc - optind != (needs_id ? 2 : 1)) {
        fputs(session_help, stderr);
        return 2;
    }
    const char *id = needs_id ? argv[optind + 1] : NULL;
    mtp_client *c = mtpc_connect(g);
    if (!c)
        return 1;
    int status = 0;
    char sid[MTP_SESSION_ID_LEN + 1];
    struct mtp_session_info info;
    if (!strcmp(verb, "open")) {
        if (mtp_session_open(c, sid) < 0)
            status = mtpc_fail(c, "session open");
        else if (json)
            status = print_last_json(c);
        else
            puts(sid);
    } else if (!strcmp(verb, "close")) {
        if (mtp_session_close(c, id) < 0)
            status = mtpc_fail(c, "session close");
        else if (json)
            status = print_last_json(c);
    } else if (mtp_session_info(c, id, &info) < 0) {
        status = mtpc_fail(c, "session info");
    } else if (json) {
        status = print_last_json(c);
    } else {
        printf("session %s: %lld tokens, %.1f KiB KV, %lld requests%s\n",
               info.session, (long long)info.tokens,
               (double)info.kv_bytes / 1024.0, (long long)info.requests,
               info.busy ? ", busy" : "");
        print_spec(&info.stats);
    }
    mtp_client_free(c);
    return status;
}
