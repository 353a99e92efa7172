/*
 * cmd_generate.c - `mtpd generate`: one generation with MTP speculative
 * decoding (include/mtpd/spec.h), streamed as text or reported as JSON.
 *
 *   mtpd generate --model DIR (--prompt TEXT | --ids 1,2,3) [options]
 *
 * --json prints one object:
 *   {"ids": [...], "text": "...", "finish_reason": "stop|length|context",
 *    "draft_tokens": K|"auto", "device": "cpu|cuda:N", "stats": {...}}
 * (include/mtpd/stats.h defines every stats field). Without --json the text is
 * written to stdout as tokens are accepted (include/mtpd/textout.h: stop strings,
 * whole UTF-8 characters) and a one-line summary goes to stderr. A
 * sequence that ends with "error" exits 1 with spec_seq_error's message.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_runtime.h"
#include "cli_util.h"
#include "cmd.h"
#include "spec.h"
#include "spec_test.h"
#include "draft_vocab.h"
#include "textout.h"
#ifdef MTPD_HAVE_TOKENIZER
#include "tokenizer.h"
#endif

#define MAX_STOPS 16
#define MAX_ROLLBACK_CHECKS 16

static void generate_usage(FILE *f)
{
    fprintf(f,
"usage: mtpd generate --model DIR (--prompt TEXT | --ids 1,2,3) [options]\n"
"\n"
"Generates with the main model, drafting with its MTP modules and verifying\n"
"k+1 positions per forward pass. Greedy output is identical to plain\n"
"decoding; sampled output has the main model's distribution.\n"
"\n"
"  --model DIR          Hugging Face checkpoint directory\n"
"  --prompt TEXT        prompt text (needs tokenizer.json in DIR)\n"
"  --ids LIST           prompt as comma-separated token ids\n"
"  --chat               wrap --prompt as one user message in the model's\n"
"                       chat template (assistant turn opened)\n"
"  --max-tokens N       most tokens to generate (default 128)\n"
"  --draft-tokens K     draft length per pass: 0 = plain decoding, 1..%d,\n"
"                       or 'auto' = choose per pass from recent acceptance\n"
"                       and measured pass costs (default auto; plain\n"
"                       decoding when the model has no MTP module)\n"
"  --auto-max K         largest k 'auto' may choose (default 4)\n"
"  --temperature T      0 = greedy (default 0); > 0 samples, drafts are\n"
"                       sampled from the MTP distribution and accepted by\n"
"                       rejection sampling\n"
"  --top-p P            nucleus sampling mass (default 1 = off)\n"
"  --top-k K            keep the K most likely tokens (default 0 = off)\n"
"  --seed S             RNG seed (default 0); with a fixed k the run is\n"
"                       reproducible ('auto' picks k from timings)\n"
"  --stop STR           stop string (repeatable, up to %d; needs the\n"
"                       tokenizer); the text is cut before it\n"
"  --ignore-eos         do not stop at the EOS token\n"
"  --eos ID             end-of-sequence id (default: eos_token_id of\n"
"                       config.json)\n"
"  --ctx N              KV cache positions, prompt + output (default: the\n"
"                       model's max_position_embeddings)\n"
"  --draft-vocab FILE   restrict the MTP draft head to the ids listed in\n"
"                       FILE (most frequent first; tools/draft_vocab.py\n"
"                       writes it), 'off' for the full vocabulary\n"
"                       (default: DIR/draft_vocab.txt when it exists)\n"
"  --draft-vocab-size N use the first N ids of that list (default 512)\n"
"  --draft-ctx-tokens N also draft the ids seen in the prompt and output,\n"
"                       up to N of them beyond the list (default 1024;\n"
"                       0 = the list only)\n"
"  --threads N          compute threads (default 2)\n"
"  --device D           where the model runs: auto (default: a CUDA GPU\n"
"                       when this build has CUDA and one is present, else\n"
"                       the CPU), cpu, cuda (GPU 0) or cuda:N\n"
"  --kv-dtype T         f32 (default) or bf16: the KV cache in BF16 takes\n"
"                       half the memory (speed about the same); logits\n"
"                       then differ from f32 by ~1e-2 relative (greedy\n"
"                       speculation still equals greedy plain decoding)\n"
"  --act-dtype T        f32 (default) or bf16: BF16 weights multiply\n"
"                       activations rounded to bf16, as llama.cpp does,\n"
"                       on CPUs with AVX512-BF16 (about 2x prefill compute;\n"
"                       top-1 agrees with f32 ~99.7%%; greedy speculation\n"
"                       still equals greedy plain decoding). No effect\n"
"                       elsewhere\n"
"  --json               print one JSON object instead of streaming text\n"
"                       (\"device\" says where the model ran)\n"
"  --trace              with --json: add \"passes\": [[k, accepted], ...]\n"
"  --check-rollback     after passes with rejections, compare the live\n"
"                       caches with a fresh prefill (adds \"rollback_check\"\n"
"                       to --json; slow, for tests)\n"
"  --compare-k LIST     benchmark mode (implies --json): one sequence per\n"
"                       draft length in LIST (e.g. 0,1,2,auto), stepped in\n"
"                       turn pass by pass so machine noise hits all alike;\n"
"                       prints {\"compare\": [{\"k\", \"ids\", \"stats\"}, ...],\n"
"                       \"device\"}\n"
"  --n-samples N        batch mode (with --ids, implies --json): run N\n"
"                       sequences per prompt with seeds S, S+1, ..., all\n"
"                       advanced together (one verify pass carries them\n"
"                       all); --ids may hold several prompts split by ';'.\n"
"                       Prints {\"samples\": [{\"prompt\", \"seed\", \"ids\",\n"
"                       \"finish_reason\"}, ...], \"device\", \"stats\": {...}}\n"
"  --help               this text\n",
        SPEC_K_MAX, MAX_STOPS);
}

/* Per-run output state shared with the token callback. */
struct gen_out {
    int json;
    struct spec_textout *text; /* decoded text and stop strings */
#ifdef MTPD_HAVE_TOKENIZER
    struct mtpd_tok *tok;
#endif
};

static void print_released(struct gen_out *g, int final)
{
    const char *p;
    size_t n = spec_textout_release(g->text, &p, final);
    if (!g->json && n) {
        fwrite(p, 1, n, stdout);
        fflush(stdout);
    }
}

static int on_token(void *ud, struct spec_seq *s, int32_t tok)
{
    (void)s;
    struct gen_out *g = ud;
    int r = spec_textout_push(g->text, tok);
    print_released(g, 0);
    return r == 1 ? SPEC_TOK_STOP : SPEC_TOK_CONTINUE;
}

static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20)
                printf("\\u%04x", c);
            else
                putchar(c);
        }
    }
    putchar('"');
}

struct gen_opts {
    const char *dir, *prompt, *ids_s;
    const char *stops[MAX_STOPS];
    int n_stops;
    long max_tokens, draft, auto_max, top_k, threads, ctx;
    unsigned long long seed;
    double temperature, top_p;
    int chat, json, trace, check_rollback, ignore_eos;
    long n_samples;
    long eos; /* -2: from the config */
    const char *draft_vocab;
    long draft_vocab_size;
    long draft_ctx_tokens;
    int kv_bf16;
    int act_bf16;
    const char *compare_k;
    const char *device;      /* --device; NULL = auto */
    const char *device_used; /* where the model was loaded */
};

/* 0 ok, 1 --help printed, 2 usage error. */
static int parse_args(int argc, char **argv, struct gen_opts *o)
{
    const char *v;
    for (int i = 1; i < argc; i++) {
        int r;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            generate_usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--chat")) {
            o->chat = 1;
        } else if (!strcmp(a, "--trace")) {
            o->trace = 1;
        } else if (!strcmp(a, "--check-rollback")) {
            o->check_rollback = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = 1;
        } else if ((r = cli_opt(argc, argv, &i, "--model", &v))) {
            if (r < 0)
                return 2;
            o->dir = v;
        } else if ((r = cli_opt(argc, argv, &i, "--prompt", &v))) {
            if (r < 0)
                return 2;
            o->prompt = v;
        } else if ((r = cli_opt(argc, argv, &i, "--ids", &v))) {
            if (r < 0)
                return 2;
            o->ids_s = v;
        } else if ((r = cli_opt(argc, argv, &i, "--stop", &v))) {
            if (r < 0)
                return 2;
            if (o->n_stops == MAX_STOPS || !*v) {
                fprintf(stderr, "mtpd: error: --stop: at most %d non-empty "
                        "strings\n", MAX_STOPS);
                return 2;
            }
            o->stops[o->n_stops++] = v;
        } else if ((r = cli_opt(argc, argv, &i, "--max-tokens", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 24, &o->max_tokens)) {
                fprintf(stderr, "mtpd: error: --max-tokens needs 1..%d\n",
                        1 << 24);
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--draft-tokens", &v))) {
            if (r < 0)
                return 2;
            if (!strcmp(v, "auto")) {
                o->draft = SPEC_K_AUTO;
            } else if (cli_parse_int(v, 0, SPEC_K_MAX, &o->draft)) {
                fprintf(stderr, "mtpd: error: --draft-tokens needs 0..%d or "
                        "'auto'\n", SPEC_K_MAX);
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--auto-max", &v))) {
            if (r < 0 || cli_parse_int(v, 1, SPEC_K_MAX, &o->auto_max)) {
                fprintf(stderr, "mtpd: error: --auto-max needs 1..%d\n",
                        SPEC_K_MAX);
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--temperature", &v))) {
            if (r < 0 || cli_parse_float(v, &o->temperature) ||
                o->temperature < 0) {
                fprintf(stderr, "mtpd: error: --temperature needs a number "
                        ">= 0\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--top-p", &v))) {
            if (r < 0 || cli_parse_float(v, &o->top_p) || o->top_p <= 0 ||
                o->top_p > 1) {
                fprintf(stderr, "mtpd: error: --top-p needs (0, 1]\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--top-k", &v))) {
            if (r < 0 || cli_parse_int(v, 0, 1 << 30, &o->top_k)) {
                fprintf(stderr, "mtpd: error: --top-k needs an integer "
                        ">= 0\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--seed", &v))) {
            char *end;
            if (r < 0 || !*v || *v == '-' ||
                (o->seed = strtoull(v, &end, 10), *end)) {
                fprintf(stderr, "mtpd: error: --seed needs a non-negative "
                        "integer\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--threads", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 256, &o->threads)) {
                fprintf(stderr, "mtpd: error: --threads needs 1..256\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--kv-dtype", &v))) {
            if (r < 0 || cli_parse_kv_dtype(v, &o->kv_bf16))
                return 2;
        } else if ((r = cli_opt(argc, argv, &i, "--act-dtype", &v))) {
            if (r < 0 || cli_parse_act_dtype(v, &o->act_bf16))
                return 2;
        } else if ((r = cli_opt(argc, argv, &i, "--device", &v))) {
            if (r < 0 || cli_parse_device(v))
                return 2;
            o->device = v;
        } else if ((r = cli_opt(argc, argv, &i, "--eos", &v))) {
            if (r < 0 || cli_parse_int(v, 0, INT32_MAX, &o->eos)) {
                fprintf(stderr, "mtpd: error: --eos needs a token id\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--compare-k", &v))) {
            if (r < 0)
                return 2;
            o->compare_k = v;
        } else if ((r = cli_opt(argc, argv, &i, "--draft-vocab", &v))) {
            if (r < 0)
                return 2;
            o->draft_vocab = v;
        } else if ((r = cli_opt(argc, argv, &i, "--draft-vocab-size", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 24, &o->draft_vocab_size)) {
                fprintf(stderr, "mtpd: error: --draft-vocab-size needs a "
                        "positive integer\n");
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--draft-ctx-tokens", &v))) {
            if (r < 0 || cli_parse_int(v, 0, 1 << 24, &o->draft_ctx_tokens)) {
                fprintf(stderr, "mtpd: error: --draft-ctx-tokens needs "
                        "0..%d\n", 1 << 24);
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--n-samples", &v))) {
            if (r < 0 || cli_parse_int(v, 1, 1 << 20, &o->n_samples)) {
                fprintf(stderr, "mtpd: error: --n-samples needs 1..%d\n",
                        1 << 20);
                return 2;
            }
        } else if ((r = cli_opt(argc, argv, &i, "--ctx", &v))) {
            if (r < 0 || cli_parse_int(v, 2, 1 << 24, &o->ctx)) {
                fprintf(stderr, "mtpd: error: --ctx needs 2..%d\n", 1 << 24);
                return 2;
            }
        } else {
            fprintf(stderr, "mtpd: error: unknown option '%s'\n", a);
            generate_usage(stderr);
            return 2;
        }
    }
    if (!o->dir || (!o->prompt == !o->ids_s)) {
        fprintf(stderr, "mtpd: error: --model and one of --prompt / --ids "
                "are required\n");
        generate_usage(stderr);
        return 2;
    }
    if (o->compare_k && (o->n_samples || o->check_rollback)) {
        fprintf(stderr, "mtpd: error: --compare-k excludes --n-samples and "
                "--check-rollback\n");
        return 2;
    }
    if (o->n_samples && (!o->ids_s || o->n_stops || o->check_rollback)) {
        fprintf(stderr, "mtpd: error: --n-samples needs --ids and no --stop "
                "or --check-rollback\n");
        return 2;
    }
    if (o->chat && !o->prompt) {
        fprintf(stderr, "mtpd: error: --chat needs --prompt\n");
        return 2;
    }
    return 0;
}

/* Prompt ids from --ids or the tokenizer. Returns the count or -1. */
static int prompt_ids(const struct gen_opts *o, struct gen_out *g,
                      int32_t **ids)
{
    if (o->ids_s) {
        int n = cli_parse_ids(o->ids_s, ids);
        if (n <= 0)
            fprintf(stderr, "mtpd: error: --ids: expected comma-separated "
                    "non-negative integers\n");
        return n > 0 ? n : -1;
    }
#ifdef MTPD_HAVE_TOKENIZER
    char err[256] = "";
    struct mtpd_tok_enc *enc = mtpd_tok_enc_new(g->tok);
    struct mtpd_tok_ids out = {0};
    int rc;
    if (!enc) {
        fprintf(stderr, "mtpd: error: out of memory\n");
        return -1;
    }
    if (o->chat) {
        struct mtpd_tok_msg msg = {"user", o->prompt, strlen(o->prompt)};
        rc = mtpd_tok_chat_encode(enc, &msg, 1, 1, &out, err, sizeof err);
    } else {
        rc = mtpd_tok_encode(enc, o->prompt, strlen(o->prompt),
                             MTPD_TOK_ADD_SPECIAL, &out, err, sizeof err);
    }
    mtpd_tok_enc_free(enc);
    if (rc < 0 || out.n == 0) {
        fprintf(stderr, "mtpd: error: --prompt: %s\n",
                rc < 0 ? err : "encodes to no tokens");
        mtpd_tok_ids_free(&out);
        return -1;
    }
    *ids = out.v; /* the caller frees with free() */
    return (int)out.n;
#else
    (void)g;
    return -1;
#endif
}

static void print_json(const struct gen_opts *o, struct gen_out *g,
                       struct spec_seq *s, double rb_main, double rb_mtp,
                       int rb_n)
{
    int n;
    const int32_t *ids = spec_seq_output(s, &n);
    printf("{\"ids\": [");
    for (int i = 0; i < n; i++)
        printf(i ? ", %" PRId32 : "%" PRId32, ids[i]);
    printf("], \"text\": ");
    size_t tlen;
    const char *text = spec_textout_text(g->text, &tlen);
    if (text)
        json_str(text, tlen);
    else
        printf("null");
    printf(", \"finish_reason\": \"%s\"",
           spec_finish_str(spec_seq_finish(s)));
    if (o->draft == SPEC_K_AUTO)
        printf(", \"draft_tokens\": \"auto\"");
    else
        printf(", \"draft_tokens\": %ld", o->draft);
    printf(", \"device\": \"%s\"", o->device_used);
    const char *notice = spec_seq_notice(s);
    if (notice) {
        printf(", \"notice\": ");
        json_str(notice, strlen(notice));
    }
    char buf[4096];
    int len = spec_stats_json(spec_seq_stats(s), buf, sizeof buf);
    if (len > 0 && (size_t)len < sizeof buf)
        printf(", \"stats\": %s", buf);
    if (o->trace) {
        const int32_t *tk, *ta;
        int np = spec_seq_trace_get(s, &tk, &ta);
        printf(", \"passes\": [");
        for (int i = 0; i < np; i++)
            printf(i ? ", [%d, %d]" : "[%d, %d]", tk[i], ta[i]);
        printf("]");
    }
    if (o->check_rollback)
        printf(", \"rollback_check\": {\"checks\": %d, \"main_max_abs_diff\": "
               "%.9g, \"mtp_max_abs_diff\": %.9g}",
               rb_n, rb_main, rb_mtp);
    printf("}\n");
}

static void print_summary(struct spec_seq *s)
{
    const struct spec_stats *st = spec_seq_stats(s);
    fprintf(stderr,
            "\n[mtpd] %s: %" PRId64 " prompt + %" PRId64 " generated tokens; "
            "prefill %.1f tok/s, decode %.1f tok/s; %" PRId64 " passes, "
            "acceptance %.1f%%, mean accepted length %.2f\n",
            spec_finish_str(spec_seq_finish(s)), st->prompt_tokens,
            st->generated_tokens, spec_stats_prefill_tps(st),
            spec_stats_decode_tps(st), st->passes,
            100.0 * spec_stats_accept_rate(st),
            spec_stats_mean_accepted_len(st));
}

/* --n-samples: every prompt of o->ids_s (split by ';') times n_samples,
 * seeds o->seed + i, all stepped together. Returns the exit status. */
static int run_batch(const struct gen_opts *o, struct spec_engine *e,
                     const struct spec_params *base)
{
    int status = 1, n_prompts = 0, n = 0;
    char *list = strdup(o->ids_s);
    struct spec_seq **seqs = NULL;
    int *prompt_of = NULL;
    if (!list)
        return 1;
    for (char *p = list; p; p = strchr(p, ';'), p = p ? p + 1 : NULL)
        n_prompts++;
    long total = (long)n_prompts * o->n_samples;
    seqs = calloc((size_t)total, sizeof *seqs);
    prompt_of = calloc((size_t)total, sizeof *prompt_of);
    if (!seqs || !prompt_of)
        goto out;
    char *save = NULL;
    int pi = 0;
    for (char *tok = strtok_r(list, ";", &save); tok;
         tok = strtok_r(NULL, ";", &save), pi++) {
        int32_t *ids;
        int np = cli_parse_ids(tok, &ids);
        if (np <= 0) {
            fprintf(stderr, "mtpd: error: --ids: prompt %d: expected "
                    "comma-separated non-negative integers\n", pi);
            status = 2;
            goto out;
        }
        for (long j = 0; j < o->n_samples; j++) {
            struct spec_params p = *base;
            p.seed = o->seed + (unsigned long long)j;
            int rc = spec_seq_new(e, &p, ids, np, &seqs[n]);
            if (rc < 0) {
                fprintf(stderr, "mtpd: error: prompt %d: %s\n", pi,
                        mtpd_err_str(rc));
                free(ids);
                status = rc == MTPD_ENOMEM ? 1 : 2;
                goto out;
            }
            if (o->trace)
                spec_seq_trace(seqs[n], (int)o->max_tokens + 1);
            prompt_of[n++] = pi;
        }
        free(ids);
    }
    if (n && spec_seq_notice(seqs[0]))
        fprintf(stderr, "mtpd: notice: %s\n", spec_seq_notice(seqs[0]));
    for (;;) {
        int running = 0;
        for (int i = 0; i < n; i++)
            running += spec_seq_finish(seqs[i]) == SPEC_RUNNING;
        if (!running)
            break;
        int rc = spec_step(e, seqs, n);
        if (rc < 0) {
            fprintf(stderr, "mtpd: error: forward: %s\n", mtpd_err_str(rc));
            goto out;
        }
    }
    struct spec_stats agg = {0};
    printf("{\"samples\": [");
    for (int i = 0; i < n; i++) {
        int m;
        const int32_t *ids = spec_seq_output(seqs[i], &m);
        printf("%s{\"prompt\": %d, \"seed\": %llu, \"ids\": [",
               i ? ", " : "", prompt_of[i],
               o->seed + (unsigned long long)(i % o->n_samples));
        for (int j = 0; j < m; j++)
            printf(j ? ", %" PRId32 : "%" PRId32, ids[j]);
        printf("], \"finish_reason\": \"%s\"",
               spec_finish_str(spec_seq_finish(seqs[i])));
        if (o->trace) {
            const int32_t *tk, *ta;
            int np = spec_seq_trace_get(seqs[i], &tk, &ta);
            printf(", \"passes\": [");
            for (int j = 0; j < np; j++)
                printf(j ? ", [%d, %d]" : "[%d, %d]", tk[j], ta[j]);
            printf("]");
        }
        printf("}");
        spec_stats_add(&agg, spec_seq_stats(seqs[i]));
    }
    char buf[4096];
    int len = spec_stats_json(&agg, buf, sizeof buf);
    printf("], \"device\": \"%s\", \"stats\": %s}\n", o->device_used,
           len > 0 && (size_t)len < sizeof buf ? buf : "null");
    status = 0;
    for (int i = 0; i < n; i++)
        if (spec_seq_finish(seqs[i]) == SPEC_FINISH_ERROR) {
            fprintf(stderr, "mtpd: error: sample %d: %s\n", i,
                    spec_seq_error(seqs[i]));
            status = 1;
        }
out:
    for (int i = 0; i < n; i++)
        spec_seq_free(seqs[i]);
    free(seqs);
    free(prompt_of);
    free(list);
    return status;
}

#define MAX_COMPARE 16

/* --compare-k: one sequence per k, stepped round-robin. */
static int run_compare(const struct gen_opts *o, struct spec_engine *e,
                       const struct spec_params *base, const int32_t *ids,
                       int n_ids)
{
    struct spec_seq *seqs[MAX_COMPARE] = {0};
    char names[MAX_COMPARE][16];
    int n = 0, status = 1;
    char *list = strdup(o->compare_k), *save = NULL;
    if (!list)
        return 1;
    for (char *t = strtok_r(list, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        long k;
        struct spec_params p = *base;
        if (!strcmp(t, "auto")) {
            k = SPEC_K_AUTO;
        } else if (cli_parse_int(t, 0, SPEC_K_MAX, &k)) {
            fprintf(stderr, "mtpd: error: --compare-k: '%s' is not 0..%d or "
                    "auto\n", t, SPEC_K_MAX);
            status = 2;
            goto out;
        }
        if (n == MAX_COMPARE) {
            fprintf(stderr, "mtpd: error: --compare-k: at most %d values\n",
                    MAX_COMPARE);
            status = 2;
            goto out;
        }
        p.draft_tokens = (int)k;
        snprintf(names[n], sizeof names[n], "%s", t);
        int rc = spec_seq_new(e, &p, ids, n_ids, &seqs[n]);
        if (rc < 0) {
            fprintf(stderr, "mtpd: error: %s\n", mtpd_err_str(rc));
            goto out;
        }
        n++;
    }
    for (int running = 1; running;) {
        running = 0;
        for (int i = 0; i < n; i++) {
            if (spec_seq_finish(seqs[i]) != SPEC_RUNNING)
                continue;
            int rc = spec_step(e, &seqs[i], 1);
            if (rc < 0) {
                fprintf(stderr, "mtpd: error: forward: %s\n",
                        mtpd_err_str(rc));
                goto out;
            }
            running = 1;
        }
    }
    printf("{\"compare\": [");
    for (int i = 0; i < n; i++) {
        int m;
        const int32_t *out = spec_seq_output(seqs[i], &m);
        printf("%s{\"k\": \"%s\", \"finish_reason\": \"%s\", \"ids\": [",
               i ? ", " : "", names[i], spec_finish_str(spec_seq_finish(seqs[i])));
        for (int j = 0; j < m; j++)
            printf(j ? ", %" PRId32 : "%" PRId32, out[j]);
        char buf[4096];
        int len = spec_stats_json(spec_seq_stats(seqs[i]), buf, sizeof buf);
        printf("], \"stats\": %s}", len > 0 && (size_t)len < sizeof buf
                                          ? buf : "null");
    }
    printf("], \"device\": \"%s\"}\n", o->device_used);
    status = 0;
out:
    for (int i = 0; i < n; i++)
        spec_seq_free(seqs[i]);
    free(list);
    return status;
}

/* A log line when other processes kept the compute threads waiting. */
static void note_busy_machine(const struct spec_engine *e)
{
    long fb, solo, runs;
    spec_engine_pool_stats(e, &fb, &solo, &runs);
    if (fb > 0)
        fprintf(stderr, "mtpd: note: compute ran on one thread in %ld of "
                "%ld parallel sections (%ld fallbacks): the threads kept "
                "waiting for each other (a CPU busy with other work, or a "
                "model too small to share); --threads 1 may be as fast\n",
                solo, runs, fb);
}

int cmd_generate(int argc, char **argv)
{
    struct gen_opts o = {.max_tokens = 128, .draft = SPEC_K_AUTO,
                         .auto_max = 4, .threads = 2, .top_p = 1.0,
                         .eos = -2, .draft_vocab_size = 512,
                         .draft_ctx_tokens = 1024};
    int r = parse_args(argc, argv, &o);
    if (r)
        return r == 1 ? 0 : 2;
    if (cli_device_check(o.device))
        return 1;

    struct gen_out g = {.json = o.json};
    char err[512] = "";
    int status = 1, n_prompt = 0;
    int32_t *ids = NULL;
    struct mtpd_model *m = NULL;
    struct spec_engine *e = NULL;
    struct spec_seq *s = NULL;

    const struct mtpd_tok *text_tok = NULL;
#ifdef MTPD_HAVE_TOKENIZER
    if (mtpd_tok_load_dir(&g.tok, o.dir, err, sizeof err) < 0) {
        g.tok = NULL;
        if (o.prompt || o.n_stops) {
            fprintf(stderr, "mtpd: error: tokenizer: %s\n", err);
            return 1;
        }
    }
    text_tok = g.tok;
#else
    if (o.prompt || o.n_stops) {
        fprintf(stderr, "mtpd: error: --prompt/--stop need the tokenizer, "
                "which this build lacks; use --ids\n");
        return 2;
    }
#endif
    if (spec_textout_new(text_tok, o.stops, o.n_stops, &g.text) < 0) {
        fprintf(stderr, "mtpd: error: out of memory\n");
        goto out;
    }
    if (!o.n_samples) {
        n_prompt = prompt_ids(&o, &g, &ids);
        if (n_prompt < 0) {
            status = o.ids_s ? 2 : 1;
            goto out;
        }
    }
    struct mtpd_load_opts lo = {.kv_bf16 = o.kv_bf16,
                                .act_bf16 = o.act_bf16, .device = o.device};
    cli_load_opts(&lo);
    if (mtpd_model_load(o.dir, &lo, &m, err, sizeof err) < 0) {
        fprintf(stderr, "mtpd: error: %s\n", err);
        goto out;
    }
    if (cli_device_confirm(m, o.device))
        goto out;
    o.device_used = cli_model_device(m);
    struct spec_engine_opts eo = {.n_threads = (int)o.threads};
    int32_t *dv = NULL;
    if (!o.draft_vocab || strcmp(o.draft_vocab, "off") != 0) {
        char path[4096];
        if (o.draft_vocab)
            snprintf(path, sizeof path, "%s", o.draft_vocab);
        else
            snprintf(path, sizeof path, "%s/draft_vocab.txt", o.dir);
        int nv = spec_draft_vocab_read(path, (int)o.draft_vocab_size, &dv);
        if (nv == MTPD_EIO && !o.draft_vocab) {
            nv = 0; /* no default list: the full vocabulary */
        } else if (nv < 0) {
            fprintf(stderr, "mtpd: error: --draft-vocab: %s: %s\n", path,
                    nv == MTPD_EIO ? "cannot open"
                    : nv == MTPD_EFORMAT ? "no ids (or an id too big)"
                                         : mtpd_err_str(nv));
            goto out;
        }
        eo.draft_vocab = dv;
        eo.n_draft_vocab = nv;
        eo.n_draft_ctx = (int)o.draft_ctx_tokens;
    }
    int rc = spec_engine_new(m, &eo, &e);
    free(dv);
    if (rc < 0) {
        fprintf(stderr, "mtpd: error: engine: %s\n", mtpd_err_str(rc));
        goto out;
    }
    mtpd_ctx_set_attn_split(spec_engine_ctx(e), cli_attn_split());
    const char *brk = getenv("MTPD_SPEC_BREAK_ACCEPT"); /* tests only */
    spec_engine_set_break_accept(e, brk && *brk && strcmp(brk, "0") != 0);
    struct spec_params p;
    spec_params_default(&p, m);
    p.sampling.temperature = (float)o.temperature;
    p.sampling.top_k = (int)o.top_k;
    p.sampling.top_p = (float)o.top_p;
    p.seed = o.seed;
    p.draft_tokens = (int)o.draft;
    p.auto_k_max = (int)o.auto_max;
    p.max_tokens = (int)o.max_tokens;
    p.kv_capacity = (int)o.ctx;
    if (o.eos >= 0)
        p.eos_id = (int)o.eos;
    if (o.ignore_eos)
        p.eos_id = -1;
    if (o.n_samples) {
        status = run_batch(&o, e, &p);
        note_busy_machine(e);
        goto out;
    }
    if (o.compare_k) {
        status = run_compare(&o, e, &p, ids, n_prompt);
        note_busy_machine(e);
        goto out;
    }
    p.on_token = on_token;
    p.ud = &g;
    rc = spec_seq_new(e, &p, ids, n_prompt, &s);
    if (rc < 0) {
        fprintf(stderr, "mtpd: error: %s\n",
                rc == MTPD_EFULL ? "the prompt does not fit the context"
                : rc == MTPD_EINVAL ? "a prompt id is not below vocab_size"
                                    : mtpd_err_str(rc));
        status = rc == MTPD_ENOMEM ? 1 : 2;
        goto out;
    }
    if (spec_seq_notice(s))
        fprintf(stderr, "mtpd: notice: %s\n", spec_seq_notice(s));
    if (o.trace && spec_seq_trace(s, (int)o.max_tokens + 1) < 0)
        goto out;

    double rb_main = 0, rb_mtp = 0;
    int rb_n = 0, rb_after_pause = 0;
    int64_t pauses = 0;
    while (spec_seq_finish(s) == SPEC_RUNNING) {
        rc = spec_step(e, &s, 1);
        if (rc < 0) {
            fprintf(stderr, "mtpd: error: forward: %s\n", mtpd_err_str(rc));
            goto out;
        }
        int k, a;
        /* besides the first rejections, the first one after each pause of
         * draft-tokens auto: it checks the MTP caches' catch-up */
        if (spec_seq_stats(s)->pauses > pauses) {
            pauses = spec_seq_stats(s)->pauses;
            rb_after_pause = 1;
        }
        if (o.check_rollback &&
            (rb_n < MAX_ROLLBACK_CHECKS ||
             (rb_after_pause && rb_n < 2 * MAX_ROLLBACK_CHECKS)) &&
            spec_seq_finish(s) == SPEC_RUNNING && spec_seq_last_pass(s, &k, &a)
            && a < k) {
            rb_after_pause = 0;
            double dm, dq;
            rc = spec_seq_check_rollback(e, s, &dm, &dq);
            if (rc < 0) {
                fprintf(stderr, "mtpd: error: rollback check: %s\n",
                        mtpd_err_str(rc));
                goto out;
            }
            rb_main = dm > rb_main ? dm : rb_main;
            rb_mtp = dq > rb_mtp ? dq : rb_mtp;
            rb_n++;
        }
    }
    spec_textout_finish(g.text);
    print_released(&g, 1);
    if (spec_textout_failures(g.text))
        fprintf(stderr, "mtpd: warning: some token text could not be "
                "decoded\n");
    if (o.json)
        print_json(&o, &g, s, rb_main, rb_mtp, rb_n);
    else
        print_summary(s);
    status = spec_seq_finish(s) == SPEC_FINISH_ERROR ? 1 : 0;
    if (status)
        fprintf(stderr, "mtpd: error: %s\n", spec_seq_error(s));
    note_busy_machine(e);
out:
    spec_seq_free(s);
    spec_engine_free(e);
    mtpd_model_free(m);
    free(ids);
    spec_textout_free(g.text);
#ifdef MTPD_HAVE_TOKENIZER
    mtpd_tok_free(g.tok);
#endif
    return status;
}
