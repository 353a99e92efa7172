/*
 * cmd_bench.c - `mtpc bench`: the prompts through the daemon at each
 * concurrency (N threads, a connection each, streaming so time to first
 * token and inter-token latency are seen), optionally again with
 * speculation off, then the report (bench_report.c).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "mtpc.h"

/* ---- one run: N threads over the requests --------------------------------- */

struct run_ctx {
    const struct mtpc_global *g;
    const struct bench_cfg *cfg;
    char **prompts;
    struct req_rec *recs; /* this run's n_requests records */
    int run_index, draft_tokens;
    double t0;    /* bench start */
    double t_run; /* this run's start */
    atomic_int next, done;
    atomic_llong tokens, drafted, accepted;
};

struct chunk_state {
    struct req_rec *r;
    struct run_ctx *x;
    double t_last;
};

static void itl_push(struct req_rec *r, float v)
{
    if (r->n_itl == r->cap_itl) {
        int cap = r->cap_itl ? r->cap_itl * 2 : 64;
        float *n = realloc(r->itl_ms, (size_t)cap * sizeof *n);
        if (!n)
            return;
        r->itl_ms = n;
        r->cap_itl = cap;
    }
    r->itl_ms[r->n_itl++] = v;
}

static int on_chunk(void *ud, const char *text, size_t len,
                    const int32_t *ids, size_t n)
{
    struct chunk_state *s = ud;
    if (!n)
        return mtpc_interrupted;
    double t = now_s() - s->x->t0;
    if (!s->r->t_first) {
        s->r->t_first = t;
    } else {
        /* a pass's tokens arrive together: spread the gap over them */
        float per = (float)((t - s->t_last) * 1e3 / (double)n);
        for (size_t i = 0; i < n; i++)
            itl_push(s->r, per);
    }
    s->t_last = t;
    atomic_fetch_add(&s->x->tokens, (long long)n);
    return mtpc_interrupted;
}

static void one_request(struct run_ctx *x, mtp_client *c, int i)
{
    const struct bench_cfg *cfg = x->cfg;
    struct req_rec *r = &x->recs[i];
    r->run = x->run_index;
    r->prompt = i % cfg->n_prompts;
    struct mtp_gen_params p;
    mtp_gen_params_init(&p);
    p.prompt = x->prompts[r->prompt];
    p.max_tokens = cfg->max_tokens;
    p.temperature = cfg->temperature;
    p.draft_tokens = x->draft_tokens;
    p.ignore_eos = cfg->ignore_eos;
    p.seed = cfg->seed + r->prompt; /* the same per prompt in every run */
    p.has_seed = true;
    struct chunk_state s = {.r = r, .x = x};
    struct mtp_result res;
    r->ran = true;
    r->t_start = now_s() - x->t0;
    int rc = c ? mtp_generate(c, &p, on_chunk, &s, &res) : MTP_E_CONNECT;
    r->t_end = now_s() - x->t0;
    if (rc < 0) {
        r->status = rc;
        const struct mtp_error *e = c ? mtp_client_error(c) : NULL;
        snprintf(r->error, sizeof r->error, "%s: %s",
                 e ? e->code : "connect", e ? e->message : "no connection");
        return;
    }
    r->n_tokens = (int64_t)res.n_ids;
    snprintf(r->finish_reason, sizeof r->finish_reason, "%s",
             res.finish_reason);
    r->stats = res.stats;
    counts_from_stats(&res.stats, &r->counts);
    atomic_fetch_add(&x->drafted, (long long)r->counts.drafted);
    atomic_fetch_add(&x->accepted, (long long)r->counts.accepted);
    mtp_result_free(&res);
}

static void *worker(void *arg)
{
    struct run_ctx *x = arg;
    int st;
    mtp_client *c = mtp_client_connect(x->g->address, x->g->token, &st, NULL);
    for (;;) {
        int i = atomic_fetch_add(&x->next, 1);
        if (i >= x->cfg->n_requests || mtpc_interrupted)
            break;
        one_request(x, c, i);
        atomic_fetch_add(&x->done, 1);
        if (c && mtp_client_error(c)->status <= MTP_E_ADDRESS)
            break; /* the connection is gone: the other threads go on */
    }
    mtp_client_free(c);
    return NULL;
}

/* The progress line: run, bar, requests done, tokens/s, acceptance. */
static void progress(struct run_ctx *x, int conc, bool baseline, bool final)
{
    int done = atomic_load(&x->done), total = x->cfg->n_requests;
    long long tok = atomic_load(&x->tokens);
    long long dr = atomic_load(&x->drafted), ac = atomic_load(&x->accepted);
    double wall = now_s() - x->t_run;
    int w = 24, fill = total ? done * w / total : w;
    fprintf(stderr, "\r\033[K%s c=%-3d [%.*s%*s] %d/%d requests  %.1f tok/s",
            baseline ? "base" : "spec", conc, fill,
            "########################", w - fill, "", done, total,
            wall > 0 ? (double)tok / wall : 0.0);
    if (dr)
        fprintf(stderr, "  acceptance %.3f", (double)ac / (double)dr);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

/* Runs the requests at one concurrency and draft setting. */
static void run_one(struct run_ctx *x, int conc, bool baseline, bool tty)
{
    pthread_t th[256];
    int n = conc < 256 ? conc : 256;
    int started = 0;
    x->t_run = now_s();
    if (tty)
        progress(x, conc, baseline, false);
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, worker, x) == 0)
            started++;
    while (tty && atomic_load(&x->done) < x->cfg->n_requests &&
           !mtpc_interrupted) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        progress(x, conc, baseline, false);
        /* all threads may have quit on connection errors */
        if (atomic_load(&x->next) >= x->cfg->n_requests + started &&
            atomic_load(&x->done) < x->cfg->n_requests)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (tty)
        progress(x, conc, baseline, true);
}

/* ---- options ----------------------------------------------------------------- */

static const char bench_help[] =
    "usage: mtpc bench --prompts FILE [OPTIONS]\n\n"
    "Measures throughput, latency and MTP draft acceptance. Each prompt\n"
    "(one per line of FILE: text with \\n for a newline, or a JSON object\n"
    "with a \"prompt\" string, as in JSONL datasets) is sent as a\n"
    "streaming generate; at each concurrency N, N threads with their own\n"
    "connection share the requests. While it runs, a progress line shows\n"
    "requests done, tokens/s and the acceptance so far (stderr, when a\n"
    "terminal). Then a table: tokens/s, time to first token (TTFT) and\n"
    "inter-token latency (ITL: the gap between streamed chunks spread over\n"
    "the tokens of the later chunk) p50/p99, acceptance by draft position\n"
    "(unconditional: accepted / drafted at that position; conditional:\n"
    "given positions before it were accepted), mean accepted length\n"
    "(1 + accepted per draft), the draft-length histogram (verify passes\n"
    "per draft length k) and accepted-length histogram (drafts per number\n"
    "of accepted tokens). The acceptance numbers are summed from the\n"
    "requests' own stats, so they equal the daemon's `stats` for them.\n\n"
    "options:\n"
    "  --prompts FILE        the prompts (required)\n"
    "  --concurrency N[,N]   client threads; several values run in turn\n"
    "                        (default 1)\n"
    "  --requests N          requests per run (default: one per prompt;\n"
    "                        more cycle through the prompts)\n"
    "  --draft-tokens K|auto draft length 0..16 or auto (default: the\n"
    "                        daemon's --draft-tokens)\n"
    "  --temperature T       0 = greedy (default)\n"
    "  --max-tokens N        tokens per request (default 128)\n"
    "  --seed S              sampling seed of prompt i is S + i (default 0)\n"
    "  --ignore-eos          always generate --max-tokens tokens\n"
    "  --compare             also run every concurrency with draft_tokens 0\n"
    "                        (same prompts, same run) and report the speed-up\n"
    "  --out DIR             write DIR/results.json (every request's numbers\n"
    "                        and the aggregates) and PNG charts drawn with\n"
    "                        gnuplot: acceptance by position, accepted-length\n"
    "                        and draft-length histograms, tokens/s against\n"
    "                        concurrency (when several are given)\n"
    "  --json                print results.json's content on stdout instead\n"
    "                        of the table\n";

static bool parse_conc(const char *s, struct bench_cfg *cfg)
{
    cfg->n_conc = 0;
    char *dup = strdup(s), *save = NULL;
    bool ok = dup != NULL;
    for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
         t = strtok_r(NULL, ",", &save)) {
        long v;
        if (cfg->n_conc == 16 ||
            !parse_int(t, 1, 256, &v, "--concurrency")) {
            ok = false;
            break;
        }
        cfg->concurrency[cfg->n_conc++] = (int)v;
    }
    free(dup);
    return ok && cfg->n_conc > 0;
}

static int parse_bench_opts(int argc, char **argv, struct bench_cfg *cfg,
                            bool *json)
{
    static const struct option opts[] = {
        {"prompts", required_argument, 0, 'p'},
        {"concurrency", required_argument, 0, 'c'},
        {"requests", required_argument, 0, 'n'},
        {"draft-tokens", required_argument, 0, 'k'},
        {"temperature", required_argument, 0, 't'},
        {"max-tokens", required_argument, 0, 'm'},
        {"seed", required_argument, 0, 's'},
        {"ignore-eos", no_argument, 0, 'e'},
        {"compare", no_argument, 0, 'C'},
        {"out", required_argument, 0, 'o'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            cfg->prompts_file = optarg;
            break;
        case 'c':
            if (!parse_conc(optarg, cfg))
                return 2;
            break;
        case 'n':
            if (!parse_int(optarg, 1, 1000000, &v, "--requests"))
                return 2;
            cfg->n_requests = (int)v;
            break;
        case 'k':
            if (!strcmp(optarg, "auto"))
                cfg->draft_tokens = MTP_DRAFT_AUTO;
            else if (parse_int(optarg, 0, MTP_K_MAX, &v, "--draft-tokens"))
                cfg->draft_tokens = (int)v;
            else
                return 2;
            break;
        case 't':
            if (!parse_double(optarg, &cfg->temperature, "--temperature"))
                return 2;
            if (cfg->temperature < 0) {
                fprintf(stderr, "mtpc bench: --temperature must be >= 0\n");
                return 2;
            }
            break;
        case 'm':
            if (!parse_int(optarg, 1, 1L << 30, &v, "--max-tokens"))
                return 2;
            cfg->max_tokens = (int)v;
            break;
        case 's':
            if (!parse_int(optarg, -(1L << 62), 1L << 62, &v, "--seed"))
                return 2;
            cfg->seed = v;
            break;
        case 'e':
            cfg->ignore_eos = true;
            break;
        case 'C':
            cfg->compare = true;
            break;
        case 'o':
            cfg->out_dir = optarg;
            break;
        case 'j':
            *json = true;
            break;
        case 'h':
            fputs(bench_help, stdout);
            return 0;
        default:
            fputs(bench_help, stderr);
            return 2;
        }
    }
    if (!cfg->prompts_file || optind < argc) {
        fputs(bench_help, stderr);
        return 2;
    }
    return -1;
}

/* ---- the command ---------------------------------------------------------------- */

/* The model name from hello and the daemon's stats JSON (both optional:
 * a daemon that fails them still gets benchmarked). */
static void daemon_info(const struct mtpc_global *g, char *model,
                        size_t mlen, char **stats_json)
{
    mtp_client *c = mtpc_connect(g);
    if (!c)
        return;
    struct mtp_server_info info;
    if (model && mtp_hello(c, g->token, &info) == 0)
        snprintf(model, mlen, "%s", info.model);
    if (stats_json)
        mtp_server_stats(c, NULL, stats_json);
    mtp_client_free(c);
}

static int write_outputs(const struct bench_cfg *cfg, bool json,
                         const struct run_agg *runs, int n_runs,
                         const struct spec_counts *total,
                         const struct spec_counts *spec_total,
                         const struct req_rec *recs, size_t n_recs,
                         const char *model, const char *dstats)
{
    int status = 0;
    if (json)
        report_json(stdout, cfg, runs, n_runs, total, spec_total, recs,
                    n_recs, model, dstats);
    else
        report_table(stdout, cfg, runs, n_runs, spec_total);
    fflush(stdout);
    if (!cfg->out_dir)
        return 0;
    if (mkdir(cfg->out_dir, 0777) < 0 && errno != EEXIST) {
        fprintf(stderr, "mtpc bench: %s: %s\n", cfg->out_dir,
                strerror(errno));
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/results.json", cfg->out_dir);
    FILE *f = fopen(path, "w");
    if (!f || report_json(f, cfg, runs, n_runs, total, spec_total, recs,
                          n_recs, model, dstats) < 0) {
        fprintf(stderr, "mtpc bench: cannot write %s: %s\n", path,
                strerror(errno));
        status = 1;
    } else {
        fprintf(stderr, "wrote %s\n", path);
    }
    if (f && fclose(f) != 0)
        status = 1;
    if (report_charts(cfg->out_dir, cfg, runs, n_runs, spec_total) < 0)
        status = 1;
    return status;
}

int cmd_bench(const struct mtpc_global *g, int argc, char **argv)
{
    struct bench_cfg cfg = {
        .concurrency = {1},
        .n_conc = 1,
        .draft_tokens = MTP_DRAFT_DEFAULT,
        .max_tokens = 128,
    };
    bool json = g->json;
    int rc = parse_bench_opts(argc, argv, &cfg, &json);
    if (rc >= 0)
        return rc;
    char *buf = NULL, **prompts = NULL;
    cfg.n_prompts = load_prompts(cfg.prompts_file, &buf, &prompts);
    if (cfg.n_prompts <= 0) {
        free(buf);
        free(prompts);
        return 1;
    }
    if (!cfg.n_requests)
        cfg.n_requests = cfg.n_prompts;
    char model[128] = "";
    daemon_info(g, model, sizeof model, NULL);
    if (!model[0]) {
        /* connect once up front so a wrong address fails clearly */
        mtp_client *c = mtpc_connect(g);
        if (!c) {
            free(buf);
            free(prompts);
            return 1;
        }
        mtp_client_free(c);
    }

    int n_runs = cfg.n_conc * (cfg.compare ? 2 : 1);
    size_t n_recs = (size_t)n_runs * (size_t)cfg.n_requests;
    struct run_agg *runs = calloc((size_t)n_runs, sizeof *runs);
    struct req_rec *recs = calloc(n_recs, sizeof *recs);
    if (!runs || !recs) {
        fprintf(stderr, "mtpc: out of memory\n");
        free(runs);
        free(recs);
        free(buf);
        free(prompts);
        return 1;
    }
    mtpc_catch_sigint();
    bool tty = isatty(STDERR_FILENO);
    double t0 = now_s();
    int ri = 0;
    for (int ci = 0; ci < cfg.n_conc && !mtpc_interrupted; ci++) {
        /* baseline first, then speculation, at each concurrency */
        for (int b = cfg.compare ? 1 : 0; b >= 0 && !mtpc_interrupted; b--) {
            struct run_agg *run = &runs[ri];
            run->concurrency = cfg.concurrency[ci];
            run->baseline = b;
            run->draft_tokens = b ? 0 : cfg.draft_tokens;
            struct run_ctx x = {
                .g = g,
                .cfg = &cfg,
                .prompts = prompts,
                .recs = recs + (size_t)ri * (size_t)cfg.n_requests,
                .run_index = ri,
                .draft_tokens = run->draft_tokens,
                .t0 = t0,
            };
            for (int i = 0; i < cfg.n_requests; i++)
                x.recs[i].run = ri;
            run_one(&x, run->concurrency, b, tty);
            ri++;
        }
    }
    n_runs = ri;
    n_recs = (size_t)n_runs * (size_t)cfg.n_requests;
    struct spec_counts total = {0}, spec_total = {0};
    int errors = 0;
    for (int i = 0; i < n_runs; i++) {
        run_aggregate(&runs[i], recs, n_recs, i);
        errors += runs[i].n_err;
        counts_add(&total, &runs[i].spec);
        if (!runs[i].baseline)
            counts_add(&spec_total, &runs[i].spec);
    }
    for (int i = 0; i < n_runs; i++)
        for (int j = 0; j < n_runs; j++)
            if (!runs[i].baseline && runs[j].baseline &&
                runs[j].concurrency == runs[i].concurrency &&
                runs[j].tok_s > 0)
                runs[i].speedup = runs[i].tok_s / runs[j].tok_s;
    char *dstats = NULL;
    daemon_info(g, NULL, 0, &dstats);
    int status = write_outputs(&cfg, json, runs, n_runs, &total,
                               &spec_total, recs, n_recs, model, dstats);
    if (errors) {
        /* show the first error: most failures share a cause */
        for (size_t i = 0; i < n_recs; i++)
            if (recs[i].status || !recs[i].ran) {
                fprintf(stderr, "mtpc bench: %d requests failed or were not "
                        "run; first: %s\n", errors,
                        recs[i].ran ? recs[i].error : "not run");
                break;
            }
        status = 1;
    }
    if (mtpc_interrupted) {
        fprintf(stderr, "mtpc bench: interrupted\n");
        status = 1;
    }
    free(dstats);
    for (size_t i = 0; i < n_recs; i++)
        free(recs[i].itl_ms);
    free(recs);
    free(runs);
    free(buf);
    free(prompts);
    return status;
}
