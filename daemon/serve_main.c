/*
 * serve_main.c - `mtpd serve`: options, startup (model, tokenizer,
 * engine, KV pool, state dir, sockets, compute thread), signals and the
 * graceful shutdown. srv.h describes the threads and the other files.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef MTPD_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include <event2/event.h>
#include <event2/thread.h>

#include "cli_runtime.h"
#include "cli_util.h"
#include "cmd.h"
#include "http.h"
#include "srv.h"
#include "srv_engine.h"
#include "srv_log.h"

double srv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double srv_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int srv_token_equal(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char d = an != bn;
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int srv_mem_stats(uint64_t *allocated, uint64_t *resident)
{
    int got = 0;
#ifdef MTPD_HAVE_JEMALLOC
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    mallctl("epoch", &epoch, &sz, &epoch, sz); /* refresh the stats */
    size_t v, vsz = sizeof v;
    if (mallctl("stats.allocated", &v, &vsz, NULL, 0) == 0) {
        *allocated = v;
        got |= SRV_MEM_ALLOCATED;
    }
    vsz = sizeof v;
    if (mallctl("stats.resident", &v, &vsz, NULL, 0) == 0) {
        *resident = v;
        got |= SRV_MEM_RESIDENT;
    }
#else
    (void)allocated;
    (void)resident;
#endif
    return got;
}

static void serve_usage(FILE *f)
{
    fprintf(f,
"usage: mtpd serve --model DIR [options]\n"
"\n"
"Serves the model over MessagePack-RPC (docs/protocol.md): sessions that\n"
"keep their KV caches between requests, all running generations advanced\n"
"together in one batched speculative-decoding pass.\n"
"\n"
"  --model DIR            Hugging Face checkpoint directory (required)\n"
"  --listen ADDR          unix:PATH, tcp:HOST:PORT or tcp:PORT (loopback);\n"
"                         may repeat (default:\n"
"                         unix:$XDG_RUNTIME_DIR/mtpd/mtpd.sock, else\n"
"                         unix:$TMPDIR/mtpd-$UID/mtpd.sock). TCP on a\n"
"                         non-loopback host needs --auth-token-file\n"
"  --threads N            compute threads (default 2)\n"
"  --device D             where the model runs: auto (default: a CUDA GPU\n"
"                         when this build has CUDA and one is present,\n"
"                         else the CPU), cpu, cuda (GPU 0) or cuda:N; the\n"
"                         start line, stats and /metrics say which\n"
"  --act-dtype T          f32 (default) or bf16: BF16 weights multiply\n"
"                         bf16-rounded activations on CPUs with\n"
"                         AVX512-BF16, as llama.cpp does (about 2x prefill\n"
"                         compute; top-1 agrees with f32 ~99.7%%)\n"
"  --kv-budget B|auto     bytes of KV cache for all sessions (suffixes k, M,\n"
"                         G); auto = a quarter of physical memory (default)\n"
"  --max-sessions N       open sessions at most (default 256)\n"
"  --session-idle S       close sessions unused for S seconds (default 3600;\n"
"                         0 = never)\n"
"  --state-dir DIR        write session token histories here at shutdown and\n"
"                         load them at start (KV rebuilt on first use)\n"
"  --auth-token-file F    token that TCP clients must send in hello\n"
"  --draft-tokens K|auto  default draft length per pass (default auto)\n"
"  --log-level L          debug, info (default), warn, error\n"
"  --max-frame B          largest request frame in bytes (default 16M)\n"
"  --max-queue N          generations in flight before new ones get\n"
"                         'overloaded' (default 128)\n"
"  --max-inflight N       requests in flight per connection (default 64)\n"
"  --max-outbuf B         unsent reply bytes per connection before it is\n"
"                         dropped as a reader that does not read (default\n"
"                         64M)\n"
"  --max-conns N          open connections at most; more are closed at\n"
"                         once (default 1024)\n"
"  --shutdown-grace S     on SIGTERM/SIGINT, seconds running generations\n"
"                         may take to finish (default 5)\n"
"  --step-rows N          rows per batched pass: long prompts are\n"
"                         prefilled in chunks of this (default 256)\n"
"  --no-batching          benchmarks: one pass per sequence instead of one\n"
"                         pass for all\n"
"  --no-prefix-reuse      benchmarks: compute every request from scratch\n"
"  --http [HOST:]PORT     also serve HTTP (docs/http.md; host default\n"
"                         127.0.0.1): OpenAI-compatible\n"
"                         /v1/chat/completions, /v1/completions,\n"
"                         /v1/models, /health, /metrics and a page at /.\n"
"                         Off unless given; a non-loopback host needs\n"
"                         --auth-token-file (Authorization: Bearer)\n"
"  --http-max-body B      largest HTTP request body (default 8M)\n"
"  --http-timeout S       seconds to read an HTTP request; idle\n"
"                         keep-alive connections close after it (default\n"
"                         30)\n"
"  --http-conversations N recent HTTP conversations kept as sessions for\n"
"                         prefix reuse (default 8; 0 = off)\n"
"  --help                 this text\n"
"\n"
"Signals: SIGTERM/SIGINT stop gracefully (state written, exit 0); SIGHUP\n"
"is ignored (logged).\n");
}

/* "123", "64k", "16M", "2G" -> bytes; -1 on a malformed value. */
static int parse_bytes(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1ull << 10, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1ull << 20, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1ull << 30, end++;
    if (*end || v > (~0ull) / mul)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static int parse_args(int argc, char **argv, struct srv_config *c)
{
    const char *v;
    long n;
    for (int i = 1; i < argc; i++) {
        int r;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            serve_usage(stdout);
            return 1;
        } else if (!strcmp(a, "--no-batching")) {
            c->no_batching = 1;
        } else if (!strcmp(a, "--no-prefix-reuse")) {
            c->no_prefix_reuse = 1;
        } else if ((r = cli_opt(argc, argv, &i, "--model", &v))) {
            if (r < 0)
                return 2;
            c->model_dir = v;
        } else if ((r = cli_opt(argc, argv, &i, "--listen", &v))) {
            if (r < 0)
                return 2;
            if (c->n_listen == SRV_MAX_LISTEN) {
                fprintf(stderr, "mtpd: error: at most %d --listen\n",
                        SRV_MAX_LISTEN);
                return 2;
            }
            c->listen[c->n_listen++] = v;
        } else if ((r = cli_opt(argc, argv, &i, "--threads", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 256, &n))
                goto bad;
            c->threads = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--device", &v))) {
            if (r < 0 || cli_parse_device(v))
                return 2;
            c->device = v;
        } else if ((r = cli_opt(argc, argv, &i, "--act-dtype", &v))) {
            if (r < 0 || cli_parse_act_dtype(v, &c->act_bf16))
                return 2;
        } else if ((r = cli_opt(argc, argv, &i, "--kv-budget", &v))) {
            if (r < 0)
                return 2;
            if (!strcmp(v, "auto"))
                c->kv_budget = 0;
            else if (parse_bytes(v, &c->kv_budget) || !c->kv_budget)
                goto bad;
        } else if ((r = cli_opt(argc, argv, &i, "--max-sessions", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 20, &n))
                goto bad;
            c->max_sessions = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--session-idle", &v))) {
            if (r < 0 || cli_parse_float(v, &c->session_idle) ||
                c->session_idle < 0)
                goto bad;
        } else if ((r = cli_opt(argc, argv, &i, "--state-dir", &v))) {
            if (r < 0)
                return 2;
            c->state_dir = v;
        } else if ((r = cli_opt(argc, argv, &i, "--auth-token-file", &v))) {
            if (r < 0)
                return 2;
            c->auth_token_file = v;
        } else if ((r = cli_opt(argc, argv, &i, "--draft-tokens", &v))) {
            if (r < 0)
                return 2;
            if (!strcmp(v, "auto"))
                c->draft_tokens = SPEC_K_AUTO;
            else if (cli_parse_int(v, 0, SPEC_K_MAX, &n))
                goto bad;
            else
                c->draft_tokens = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--log-level", &v))) {
            if (r < 0 || srv_log_parse_level(v) < 0)
                goto bad;
            srv_log_level = srv_log_parse_level(v);
        } else if ((r = cli_opt(argc, argv, &i, "--max-frame", &v))) {
            if (r < 0 || parse_bytes(v, &c->max_frame) || c->max_frame < 64 ||
                c->max_frame > (1u << 30))
                goto bad;
        } else if ((r = cli_opt(argc, argv, &i, "--max-queue", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 20, &n))
                goto bad;
            c->max_queue = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--max-inflight", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 20, &n))
                goto bad;
            c->max_inflight = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--max-outbuf", &v))) {
            if (r < 0 || parse_bytes(v, &c->max_outbuf) || c->max_outbuf < 1024)
                goto bad;
        } else if ((r = cli_opt(argc, argv, &i, "--max-conns", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 20, &n))
                goto bad;
            c->max_conns = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--shutdown-grace", &v))) {
            if (r < 0 || cli_parse_float(v, &c->shutdown_grace) ||
                c->shutdown_grace < 0)
                goto bad;
        } else if ((r = cli_opt(argc, argv, &i, "--http", &v))) {
            if (r < 0)
                return 2;
            c->http_addr = v;
        } else if ((r = cli_opt(argc, argv, &i, "--http-max-body", &v))) {
            if (r < 0 || parse_bytes(v, &c->http_max_body) ||
                c->http_max_body < 1024 || c->http_max_body > (1u << 30))
                goto bad;
        } else if ((r = cli_opt(argc, argv, &i, "--http-timeout", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 86400, &n))
                goto bad;
            c->http_timeout = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--http-conversations",
                                &v))) {
            if (r < 0 || cli_parse_int(v, 0, 64, &n))
                goto bad;
            c->http_conversations = (int)n;
        } else if ((r = cli_opt(argc, argv, &i, "--step-rows", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 16, &n))
                goto bad;
            c->step_rows = (int)n;
        } else {
            fprintf(stderr, "mtpd: error: unknown option '%s'\n", a);
            serve_usage(stderr);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "mtpd: error: bad value for %s (see mtpd serve "
                "--help)\n", a);
        return 2;
    }
    if (!c->model_dir) {
        fprintf(stderr, "mtpd: error: --model is required\n");
        serve_usage(stderr);
        return 2;
    }
    return 0;
}

static char default_listen[4200];

static const char *default_socket(void)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg) {
        snprintf(default_listen, sizeof default_listen,
                 "unix:%s/mtpd/mtpd.sock", xdg);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(default_listen, sizeof default_listen,
                 "unix:%s/mtpd-%u/mtpd.sock", tmp && *tmp ? tmp : "/tmp",
                 (unsigned)getuid());
    }
    return default_listen;
}

static size_t auto_kv_budget(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0)
        return (size_t)1 << 30;
    return (size_t)pages * (size_t)psz / 4;
}

static int read_token_file(struct srv *s)
{
    FILE *f = fopen(s->cfg.auth_token_file, "r");
    if (!f) {
        SRV_LOG(SLOG_ERROR, "--auth-token-file %s: %s",
                s->cfg.auth_token_file, strerror(errno));
        return -1;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                 buf[n - 1] == ' '))
        n--;
    if (n == 0) {
        SRV_LOG(SLOG_ERROR, "--auth-token-file %s is empty",
                s->cfg.auth_token_file);
        return -1;
    }
    s->auth_token = malloc(n + 1);
    if (!s->auth_token)
        return -1;
    memcpy(s->auth_token, buf, n);
    s->auth_token[n] = 0;
    s->auth_len = n;
    return 0;
}

/* DIR/draft_vocab.txt (as `mtpd generate` uses it): the first 512 ids. */
static int read_draft_vocab(const char *dir, int32_t **out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/draft_vocab.txt", dir);
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    enum { MAX = 512 };
    int32_t *ids = malloc(sizeof(int32_t) * MAX);
    int n = 0, c;
    long v = -1;
    while (ids && n < MAX && (c = fgetc(f)) != EOF) {
        if (c == '#')
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
        if (c >= '0' && c <= '9') {
            v = (v < 0 ? 0 : v * 10) + (c - '0');
            if (v > INT32_MAX)
                break;
        } else if (v >= 0) {
            ids[n++] = (int32_t)v;
            v = -1;
        }
    }
    if (ids && v >= 0 && v <= INT32_MAX && n < MAX)
        ids[n++] = (int32_t)v;
    fclose(f);
    if (n == 0) {
        free(ids);
        return 0;
    }
    *out = ids;
    return n;
}

/* ---- shutdown ---- */

static void finish_shutdown(struct srv *s)
{
    if (s->shutting_down == 2)
        return;
    s->shutting_down = 2;
    session_save_all(s);
    SRV_LOG(SLOG_INFO, "shutdown complete");
    /* the last replies are flushed (conn.c stops the loop when the last
     * connection is gone), for at most 2 s */
    struct timeval cap = {2, 0};
    event_base_loopexit(s->base, &cap);
    for (struct conn *c = s->conns, *nx; c; c = nx) {
        nx = c->next;
        conn_close(c, 1);
    }
    if (!s->conns && !http_flushing(s))
        event_base_loopbreak(s->base);
}

void srv_shutdown_check(struct srv *s)
{
    if (s->shutting_down == 1 && s->jobs_inflight == 0)
        finish_shutdown(s);
}

static void begin_shutdown(struct srv *s, const char *why)
{
    if (s->shutting_down)
        return;
    s->shutting_down = 1;
    SRV_LOG(SLOG_INFO, "%s: stopping (no new connections; %d running "
            "generations get %.0f s to finish)", why, s->jobs_inflight,
            s->cfg.shutdown_grace);
    srv_listen_close(s);
    http_begin_shutdown(s);
    double g = s->cfg.shutdown_grace;
    struct timeval tv = {(time_t)g, (suseconds_t)((g - (double)(time_t)g) * 1e6)};
    evtimer_add(s->ev_grace, &tv);
    srv_shutdown_check(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct srv *s = arg;
    if (sig == SIGHUP) {
        SRV_LOG(SLOG_INFO, "SIGHUP: nothing to reload");
        return;
    }
    if (s->shutting_down) {
        SRV_LOG(SLOG_INFO, "second signal: ending generations now");
        event_active(s->ev_grace, EV_TIMEOUT, 0);
        return;
    }
    begin_shutdown(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* The grace period is over: the running generations end with finish
 * reason "shutdown" at their next pass. */
static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct srv *s = arg;
    if (s->shutting_down != 1)
        return;
    for (struct conn *c = s->conns; c; c = c->next)
        for (struct job *j = c->jobs; j; j = j->cnext)
            atomic_store(&j->cancel, 2);
    http_cancel_all(s, 2);
    /* jobs of gone connections were cancelled already */
    srv_shutdown_check(s);
}

/* Once a second: idle sessions. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    session_expire_idle(arg);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_reap(arg);
}

static void srv_free(struct srv *s)
{
    while (s->conns)
        conn_close(s->conns, 0);
    conn_reap(s);
    http_free(s);
    srv_listen_close(s);
    /* sessions: their sequences go to the compute thread, which frees
     * them before it exits */
    while (s->sessions.head) {
        s->sessions.head->busy = 0;
        session_close(s, s->sessions.head);
    }
    sched_stop(&s->sched);
    struct event *evs[] = {s->ev_term, s->ev_int, s->ev_hup, s->ev_tick,
                           s->ev_reap, s->ev_grace};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    spec_engine_free(s->engine);
    srv_pool_free(s->pool);
    mtpd_tok_enc_free(s->enc);
    mtpd_tok_free(s->tok);
    mtpd_model_free(s->model);
    free(s->auth_token);
    if (s->base)
        event_base_free(s->base);
}

static int srv_init(struct srv *s)
{
    char err[512] = "";
    if (s->cfg.auth_token_file && read_token_file(s) < 0)
        return -1;
    if (mtpd_tok_load_dir(&s->tok, s->cfg.model_dir, err, sizeof err) < 0) {
        SRV_LOG(SLOG_ERROR, "tokenizer: %s", err);
        s->tok = NULL;
        return -1;
    }
    if (!(s->enc = mtpd_tok_enc_new(s->tok)))
        return -1;
    struct mtpd_load_opts lo = {.device = s->cfg.device,
                                .act_bf16 = s->cfg.act_bf16};
    if (mtpd_model_load(s->cfg.model_dir, &lo, &s->model, err,
                        sizeof err) < 0) {
        SRV_LOG(SLOG_ERROR, "model: %s", err);
        return -1;
    }
    if (cli_device_confirm(s->model, s->cfg.device))
        return -1;
    s->device = cli_model_device(s->model);
    s->act_dtype = mtpd_model_act_dtype(s->model);
    int rc = srv_pool_new(s->model, s->cfg.kv_budget, &s->pool);
    if (rc < 0) {
        SRV_LOG(SLOG_ERROR, "KV pool: %s", mtpd_err_str(rc));
        return -1;
    }
    struct spec_engine_opts eo = {.n_threads = s->cfg.threads,
                                  .max_rows = s->cfg.step_rows,
                                  .kv_pool = s->pool};
    int32_t *dv = NULL;
    int nv = read_draft_vocab(s->cfg.model_dir, &dv);
    if (nv > 0) {
        eo.draft_vocab = dv;
        eo.n_draft_vocab = nv;
        eo.n_draft_ctx = 1024;
    }
    rc = spec_engine_new(s->model, &eo, &s->engine);
    free(dv);
    if (rc < 0) {
        SRV_LOG(SLOG_ERROR, "engine: %s", mtpd_err_str(rc));
        return -1;
    }
    if (!(s->base = event_base_new()))
        return -1;
    if (sched_start(s) < 0) {
        SRV_LOG(SLOG_ERROR, "cannot start the compute thread");
        return -1;
    }
    session_load_all(s); /* problems are logged, never fatal */
    if (srv_listen_all(s) < 0)
        return -1;
    if (s->cfg.http_addr && http_start(s) < 0)
        return -1;
    s->ev_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->ev_int = evsignal_new(s->base, SIGINT, on_signal, s);
    s->ev_hup = evsignal_new(s->base, SIGHUP, on_signal, s);
    s->ev_tick = event_new(s->base, -1, EV_PERSIST, on_tick, s);
    s->ev_reap = event_new(s->base, -1, 0, on_reap, s);
    s->ev_grace = evtimer_new(s->base, on_grace, s);
    struct timeval sec = {1, 0};
    if (!s->ev_term || !s->ev_int || !s->ev_hup || !s->ev_tick ||
        !s->ev_reap || !s->ev_grace ||
        evsignal_add(s->ev_term, NULL) || evsignal_add(s->ev_int, NULL) ||
        evsignal_add(s->ev_hup, NULL) || event_add(s->ev_tick, &sec))
        return -1;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    static struct srv srv; /* one per process; big, so not on the stack */
    struct srv *s = &srv;
    s->cfg = (struct srv_config){
        .threads = 2, .max_sessions = 256, .session_idle = 3600,
        .draft_tokens = SPEC_K_AUTO, .max_frame = FRAME_DEFAULT_MAX,
        .max_queue = 128, .max_inflight = 64, .max_outbuf = 64u << 20,
        .max_conns = 1024,
        .shutdown_grace = 5, .step_rows = 256,
        .http_max_body = 8u << 20, .http_timeout = 30,
        .http_conversations = 8};
    int r = parse_args(argc, argv, &s->cfg);
    if (r)
        return r == 1 ? 0 : 2;
    if (cli_device_check(s->cfg.device))
        return 1;
    if (!s->cfg.n_listen)
        s->cfg.listen[s->cfg.n_listen++] = default_socket();
    if (!s->cfg.kv_budget)
        s->cfg.kv_budget = auto_kv_budget();
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() < 0) {
        SRV_LOG(SLOG_ERROR, "libevent without thread support");
        return 1;
    }
    s->start_time = srv_now();
    if (srv_init(s) < 0) {
        srv_free(s);
        return 1;
    }
    char addrs[1024] = "";
    for (int i = 0; i < s->cfg.n_listen; i++)
        snprintf(addrs + strlen(addrs), sizeof addrs - strlen(addrs), "%s%s",
                 i ? " " : "", s->cfg.listen[i]);
    if (s->cfg.http_addr)
        snprintf(addrs + strlen(addrs), sizeof addrs - strlen(addrs),
                 " http://%s", s->cfg.http_addr);
    const struct mtpd_config *mc = mtpd_model_config(s->model);
    char cuda_note[64] = "built without CUDA";
    if (cli_cuda_build())
        snprintf(cuda_note, sizeof cuda_note, "CUDA build, %d GPU%s visible",
                 cli_cuda_devices(), cli_cuda_devices() == 1 ? "" : "s");
    SRV_LOG(SLOG_INFO, "mtpd %s serving %s (vocab %d, context %d, %d MTP "
            "modules) on %s; KV budget %zu bytes (%.1f MiB, %zu bytes per "
            "token); device %s (%s); %d threads", MTPD_VERSION,
            s->cfg.model_dir,
            mc->vocab_size, mc->max_position_embeddings,
            spec_engine_n_mtp(s->engine), addrs, s->cfg.kv_budget,
            (double)s->cfg.kv_budget / (1 << 20),
            mtpd_kv_bytes_per_token(s->model), s->device, cuda_note,
            s->cfg.threads);
    event_base_dispatch(s->base);
    srv_free(s);
    return 0;
}
