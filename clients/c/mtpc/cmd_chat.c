/*
 * cmd_chat.c - `mtpc chat`: an interactive conversation in one daemon
 * session. Every turn sends the whole conversation as `messages`; the
 * daemon reuses the cached prefix the session already holds, which the
 * per-turn line shows (prompt tokens reused, time to first token).
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MTPC_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include "mtpc.h"

struct convo {
    struct mtp_message *m; /* contents owned */
    size_t n, cap;
};

static bool convo_add(struct convo *cv, const char *role, const char *text,
                      size_t len)
{
    if (cv->n == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 16;
        struct mtp_message *nm = realloc(cv->m, cap * sizeof *nm);
        if (!nm)
            return false;
        cv->m = nm;
        cv->cap = cap;
    }
    char *copy = strndup(text, len);
    if (!copy)
        return false;
    cv->m[cv->n].role = role;
    cv->m[cv->n++].content = copy;
    return true;
}

/* Drops every message after the first keep. */
static void convo_truncate(struct convo *cv, size_t keep)
{
    while (cv->n > keep)
        free((char *)cv->m[--cv->n].content);
}

/* One line of input without its newline (NULL at EOF); free() it. */
static char *read_line(bool tty)
{
#ifdef MTPC_HAVE_LIBEDIT
    if (tty) {
        char *l = readline("> ");
        if (l && *l)
            add_history(l);
        return l;
    }
#endif
    if (tty) {
        fputs("> ", stdout);
        fflush(stdout);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n && line[n - 1] == '\n')
        line[n - 1] = 0;
    return line;
}

struct turn {
    double t0, t_first;
    bool echo;
};

static int on_chunk(void *ud, const char *text, size_t len,
                    const int32_t *ids, size_t n)
{
    struct turn *t = ud;
    if (n && !t->t_first)
        t->t_first = now_s();
    if (t->echo && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return mtpc_interrupted;
}

/* The per-turn numbers: a line on stderr, or a JSON line on stdout. */
static void report_turn(int turn, const struct mtp_result *r,
                        const struct turn *t, double t_end, bool json)
{
    const struct mtp_stats *st = &r->stats;
    double lat = (t_end - t->t0) * 1e3;
    double ttft = t->t_first ? (t->t_first - t->t0) * 1e3 : lat;
    if (json) {
        printf("{\"turn\": %d, \"text\": ", turn);
        json_puts(stdout, r->text, r->text_len);
        printf(", \"finish_reason\": \"%s\", \"latency_ms\": %.3f, "
               "\"ttft_ms\": %.3f, \"prompt_tokens\": %lld, "
               "\"prompt_tokens_reused\": %lld, \"generated_tokens\": %lld, "
               "\"acceptance_rate\": %.6f, \"mean_accepted_length\": %.6f, "
               "\"decode_tokens_per_s\": %.3f}\n",
               r->finish_reason, lat, ttft, (long long)st->prompt_tokens,
               (long long)st->prompt_tokens_reused,
               (long long)st->generated_tokens, st->acceptance_rate,
               st->mean_accepted_length, st->decode_tokens_per_s);
        fflush(stdout);
        return;
    }
    fprintf(stderr, "[latency %.0f ms, first token %.0f ms, %lld tokens, "
            "%.1f tok/s, prompt %lld tokens (%lld reused), acceptance "
            "%.2f%s%s]\n",
            lat, ttft, (long long)st->generated_tokens,
            st->decode_tokens_per_s, (long long)st->prompt_tokens,
            (long long)st->prompt_tokens_reused, st->acceptance_rate,
            strcmp(r->finish_reason, "stop") ? ", " : "",
            strcmp(r->finish_reason, "stop") ? r->finish_reason : "");
}

static const char chat_help[] =
    "usage: mtpc chat [OPTIONS]\n\n"
    "An interactive conversation (line editing when built with libedit).\n"
    "All turns run in one daemon session and send the whole conversation,\n"
    "so the daemon computes only the new tokens of each turn; after each\n"
    "reply a line gives its latency, time to first token, tokens/s, the\n"
    "prompt tokens reused from the session's cache and the draft\n"
    "acceptance. Input lines: /reset starts over, /quit (or EOF) ends.\n"
    "^C cancels a reply in progress.\n\n"
    "options:\n"
    "  --system TEXT       a system message first\n" GEN_OPTS_HELP
    "  --json              one JSON object per turn on stdout (text and\n"
    "                      numbers), nothing else\n";

int cmd_chat(const struct mtpc_global *g, int argc, char **argv)
{
    static const struct option opts[] = {
        GEN_LONGOPTS,
        {"system", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct gen_opts o;
    mtp_gen_params_init(&o.p);
    bool json = g->json;
    const char *system = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int r = gen_opt(&o, c, optarg, "chat");
        if (r == 0)
            continue;
        if (r == 2)
            return 2;
        if (c == 's') {
            system = optarg;
        } else if (c == 'j') {
            json = true;
        } else if (c == 'h') {
            fputs(chat_help, stdout);
            return 0;
        } else {
            fputs(chat_help, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fputs(chat_help, stderr);
        return 2;
    }
    mtp_client *cl = mtpc_connect(g);
    if (!cl)
        return 1;
    char sid[MTP_SESSION_ID_LEN + 1];
    bool own_session = !o.p.session;
    if (own_session) {
        if (mtp_session_open(cl, sid) < 0) {
            int st = mtpc_fail(cl, "session open");
            mtp_client_free(cl);
            return st;
        }
        o.p.session = sid;
    }
    bool tty = isatty(STDIN_FILENO);
    struct convo cv = {0};
    int status = 0, turn = 0;
    if (system && !convo_add(&cv, "system", system, strlen(system)))
        status = 1;
    size_t keep = cv.n;
    char *line;
    while (status == 0 && (line = read_line(tty))) {
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) {
            free(line);
            break;
        }
        if (!strcmp(line, "/reset")) {
            convo_truncate(&cv, keep);
            if (!json)
                fprintf(stderr, "[conversation reset]\n");
            free(line);
            continue;
        }
        if (!*line) {
            free(line);
            continue;
        }
        bool ok = convo_add(&cv, "user", line, strlen(line));
        free(line);
        if (!ok) {
            fprintf(stderr, "mtpc: out of memory\n");
            status = 1;
            break;
        }
        o.p.messages = cv.m;
        o.p.n_messages = cv.n;
        mtpc_interrupted = 0;
        mtpc_catch_sigint();
        struct turn t = {.t0 = now_s(), .echo = !json};
        struct mtp_result r;
        if (mtp_generate(cl, &o.p, on_chunk, &t, &r) < 0) {
            status = mtpc_fail(cl, "chat");
            break;
        }
        double t_end = now_s();
        if (!json && (!r.text_len || r.text[r.text_len - 1] != '\n'))
            putchar('\n');
        fflush(stdout);
        report_turn(++turn, &r, &t, t_end, json);
        if (!convo_add(&cv, "assistant", r.text, r.text_len)) {
            fprintf(stderr, "mtpc: out of memory\n");
            status = 1;
        }
        mtp_result_free(&r);
    }
    if (own_session && mtp_session_close(cl, sid) < 0 && status == 0 &&
        mtp_client_error(cl)->status != MTP_E_UNKNOWN_SESSION)
        status = mtpc_fail(cl, "session close");
    convo_truncate(&cv, 0);
    free(cv.m);
    mtp_client_free(cl);
    return status;
}
