/*
 * opts.c - option parsing, connecting, error printing and small I/O
 * helpers shared by mtpc's commands.
 */
#include "mtpc.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile int mtpc_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    mtpc_interrupted = 1;
}

void mtpc_catch_sigint(void)
{
    /* the first ^C cancels the running request, a second one kills */
    struct sigaction sa = {.sa_handler = on_sigint,
                           .sa_flags = (int)SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return true;
    }
    return false;
}

bool parse_int(const char *s, long lo, long hi, long *v, const char *what)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) {
        fprintf(stderr, "mtpc: %s: expected an integer in %ld..%ld, got "
                "'%s'\n", what, lo, hi, s);
        return false;
    }
    *v = x;
    return true;
}

bool parse_double(const char *s, double *v, const char *what)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) {
        fprintf(stderr, "mtpc: %s: expected a number, got '%s'\n", what, s);
        return false;
    }
    *v = x;
    return true;
}

int gen_opt(struct gen_opts *o, int c, const char *arg, const char *cmd)
{
    struct mtp_gen_params *p = &o->p;
    long v;
    switch (c) {
    case 1001:
        if (!parse_int(arg, 1, 1L << 30, &v, "--max-tokens"))
            return 2;
        p->max_tokens = (int)v;
        return 0;
    case 1002:
        if (!parse_double(arg, &p->temperature, "--temperature"))
            return 2;
        if (p->temperature < 0) {
            fprintf(stderr, "mtpc %s: --temperature must be >= 0\n", cmd);
            return 2;
        }
        return 0;
    case 1003:
        if (!parse_double(arg, &p->top_p, "--top-p"))
            return 2;
        if (p->top_p <= 0 || p->top_p > 1) {
            fprintf(stderr, "mtpc %s: --top-p must be in (0, 1]\n", cmd);
            return 2;
        }
        return 0;
    case 1004:
        if (!parse_int(arg, 0, 1L << 30, &v, "--top-k"))
            return 2;
        p->top_k = (int)v;
        return 0;
    case 1005:
        if (!parse_int(arg, -(1L << 62), 1L << 62, &v, "--seed"))
            return 2;
        p->seed = v;
        p->has_seed = true;
        return 0;
    case 1006:
        if (!strcmp(arg, "auto")) {
            p->draft_tokens = MTP_DRAFT_AUTO;
            return 0;
        }
        if (!parse_int(arg, 0, MTP_K_MAX, &v, "--draft-tokens"))
            return 2;
        p->draft_tokens = (int)v;
        return 0;
    case 1007:
        if (p->n_stop >= sizeof o->stops / sizeof o->stops[0]) {
            fprintf(stderr, "mtpc %s: at most 16 --stop strings\n", cmd);
            return 2;
        }
        o->stops[p->n_stop++] = arg;
        p->stop = o->stops;
        return 0;
    case 1008:
        p->session = arg;
        return 0;
    case 1009:
        p->ignore_eos = true;
        return 0;
    default:
        return 1;
    }
}

mtp_client *mtpc_connect(const struct mtpc_global *g)
{
    int st;
    struct mtp_error e;
    mtp_client *c = mtp_client_connect(g->address, g->token, &st, &e);
    if (!c) {
        fprintf(stderr, "mtpc: cannot connect: %s: %s\n", e.code, e.message);
        if (st == MTP_E_CONNECT && !g->address)
            fprintf(stderr, "mtpc: is `mtpd serve` running? (--address "
                    "unix:PATH or tcp:HOST:PORT picks another daemon)\n");
    }
    return c;
}

int mtpc_fail(mtp_client *c, const char *what)
{
    const struct mtp_error *e = mtp_client_error(c);
    fprintf(stderr, "mtpc: %s: %s: %s", what, e->code, e->message);
    if (e->field[0])
        fprintf(stderr, " (field %s)", e->field);
    if (e->limit[0])
        fprintf(stderr, " (limit %s)", e->limit);
    fputc('\n', stderr);
    return 1;
}

char *read_file(const char *path)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "mtpc: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    bool err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!buf || err) {
        fprintf(stderr, "mtpc: %s: %s\n", path,
                buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

void json_puts(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

int print_last_json(mtp_client *c)
{
    char *j = mtp_to_json(mtp_client_last_result(c));
    if (!j) {
        fprintf(stderr, "mtpc: out of memory\n");
        return 1;
    }
    puts(j);
    free(j);
    return 0;
}
