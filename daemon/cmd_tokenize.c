/*
 * cmd_tokenize.c - `mtpd tokenize`: JSON lines in, JSON lines out.
 *
 *   mtpd tokenize (--model DIR | --tokenizer FILE [--config FILE])
 *                 [--decode [--stream]] [--chat] [--fim] [--no-special]
 *                 [--add-bos] [--info] [--bench FILE [--repeat N]]
 *
 * encode (default)  {"text": "..."}              -> {"ids": [...]}
 * --decode          {"ids": [...]}               -> {"text": "..."}
 * --decode --stream same, decoding one id at a time through the
 *                   incremental decoder (for parity tests)
 * --chat            {"messages": [{"role", "content"}...],
 *                    "add_generation_prompt": true} -> {"ids": [...]}
 * --fim             {"prefix": "...", "suffix": "..."} -> {"ids": [...]}
 * A bad line gets {"error": "..."} and processing continues; the exit
 * status is 1 if any line failed or the tokenizer did not load, 2 for a
 * usage error.
 *
 * Encoding equals tokenizers.Tokenizer.encode(text).ids (post-processor
 * applied). --no-special: special tokens written in the text are plain
 * text and the post-processor adds nothing; with --decode, special tokens
 * are dropped (skip_special_tokens). --add-bos: bos/eos as
 * tokenizer_config.json's add_bos_token/add_eos_token say, instead of the
 * post-processor (transformers 4.x LlamaTokenizerFast).
 * --info prints {"n_ids", "bos_id", "eos_id", "chat_template"}.
 * --bench FILE reads JSON lines {"text": ...} from FILE, then encodes all
 * the texts --repeat times (3), each time with a fresh encoder (cold word
 * cache), and prints {"texts", "bytes", "tokens", "best_s", "mb_per_s"}
 * (MB = 10^6 bytes); only the encode calls are timed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../model/json.h"
#include "tokenizer.h"
#include "cmd.h"

enum mode { M_ENCODE, M_DECODE, M_CHAT, M_FIM };

struct opts {
    const char *model, *tokenizer, *config, *bench;
    enum mode mode;
    int stream, no_special, add_bos, info, repeat;
};

static void usage(void)
{
    fprintf(stderr,
            "usage: mtpd tokenize (--model DIR | --tokenizer FILE "
            "[--config FILE])\n"
            "                     [--decode [--stream] | --chat | --fim] "
            "[--no-special] [--add-bos]\n"
            "                     [--info] [--bench FILE [--repeat N]]\n"
            "reads JSON lines on stdin: {\"text\"} -> {\"ids\"}; --decode "
            "{\"ids\"} -> {\"text\"};\n"
            "--chat {\"messages\"} -> {\"ids\"}; --fim {\"prefix\", "
            "\"suffix\"} -> {\"ids\"}\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->repeat = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        if (strcmp(a, "--model") == 0)
            val = &o->model;
        else if (strcmp(a, "--tokenizer") == 0)
            val = &o->tokenizer;
        else if (strcmp(a, "--config") == 0)
            val = &o->config;
        else if (strcmp(a, "--bench") == 0)
            val = &o->bench;
        else if (strcmp(a, "--repeat") == 0) {
            if (i + 1 >= argc || (o->repeat = atoi(argv[++i])) < 1) {
                fprintf(stderr, "mtpd tokenize: --repeat needs N >= 1\n");
                return -1;
            }
            continue;
        } else if (strcmp(a, "--decode") == 0)
            o->mode = M_DECODE;
        else if (strcmp(a, "--chat") == 0)
            o->mode = M_CHAT;
        else if (strcmp(a, "--fim") == 0)
            o->mode = M_FIM;
        else if (strcmp(a, "--stream") == 0)
            o->stream = 1;
        else if (strcmp(a, "--no-special") == 0)
            o->no_special = 1;
        else if (strcmp(a, "--add-bos") == 0)
            o->add_bos = 1;
        else if (strcmp(a, "--info") == 0)
            o->info = 1;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 1;
        } else {
            fprintf(stderr, "mtpd tokenize: unknown option '%s'\n", a);
            usage();
            return -1;
        }
        if (val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mtpd tokenize: %s needs a value\n", a);
                return -1;
            }
            *val = argv[++i];
        }
    }
    if (!o->model == !o->tokenizer) {
        fprintf(stderr,
                "mtpd tokenize: give exactly one of --model, --tokenizer\n");
        usage();
        return -1;
    }
    if (o->stream && o->mode != M_DECODE) {
        fprintf(stderr, "mtpd tokenize: --stream needs --decode\n");
        return -1;
    }
    return 0;
}

/* ---- output line buffer ---- */

struct obuf {
    char *p;
    size_t n, cap;
    int oom;
};

static int ob_reserve(struct obuf *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->n + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void ob_put(struct obuf *b, const char *s, size_t n)
{
    if (ob_reserve(b, n) < 0)
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
#define OB_LIT(b, lit) ob_put((b), (lit), sizeof(lit) - 1)

static void ob_json_str(struct obuf *b, const char *s, size_t n)
{
    size_t need = json_escape(NULL, 0, s, n);
    if (ob_reserve(b, need) < 0)
        return;
    json_escape(b->p + b->n, need + 1, s, n);
    b->n += need;
}

static void ob_ids(struct obuf *b, const int32_t *v, size_t n)
{
    OB_LIT(b, "{\"ids\": [");
    if (ob_reserve(b, n * 13 + 4) < 0)
        return;
    char *p = b->p + b->n;
    for (size_t i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
            *p++ = ' ';
        }
        uint32_t x = (uint32_t)v[i]; /* ids are >= 0 */
        char tmp[12];
        int k = 0;
        do {
            tmp[k++] = (char)('0' + x % 10);
            x /= 10;
        } while (x);
        while (k)
            *p++ = tmp[--k];
    }
    b->n = (size_t)(p - b->p);
    OB_LIT(b, "]}\n");
}

static void ob_error(struct obuf *b, const char *msg)
{
    OB_LIT(b, "{\"error\": ");
    ob_json_str(b, msg, strlen(msg));
    OB_LIT(b, "}\n");
}

/* ---- one input line ---- */

struct ctx {
    struct opts *o;
    struct mtpd_tok *tok;
    struct mtpd_tok_enc *enc;
    struct mtpd_tok_ids ids;
    struct mtpd_tok_buf text;
    struct mtpd_tok_msg *msgs;
    size_t msgcap;
};

static const struct json *want(const struct json *root, const char *key,
                               enum json_type t, char *err, size_t errlen)
{
    const struct json *v = json_get(root, key);
    if (!v || v->type != t) {
        snprintf(err, errlen, "expected key \"%s\" of type %s", key,
                 json_type_str(t));
        return NULL;
    }
    return v;
}

static int do_decode(struct ctx *c, const struct json *root, char *err,
                     size_t errlen)
{
    const struct json *arr = want(root, "ids", JSON_ARRAY, err, errlen);
    if (!arr)
        return -1;
    c->ids.n = 0;
    for (size_t i = 0; i < arr->len; i++) {
        int64_t v;
        if (json_int(arr->u.items[i], &v) < 0 || v < INT32_MIN ||
            v > INT32_MAX) {
            snprintf(err, errlen, "ids[%zu]: expected a 32-bit integer", i);
            return -1;
        }
        int32_t id = (int32_t)v;
        if (mtpd_tok_ids_append(&c->ids, &id, 1) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    unsigned flags = c->o->no_special ? MTPD_TOK_SKIP_SPECIAL : 0;
    c->text.n = 0;
    if (!c->o->stream)
        return mtpd_tok_decode(c->tok, c->ids.v, c->ids.n, flags, &c->text,
                               err, errlen) < 0 ? -1 : 0;
    struct mtpd_tok_stream s;
    mtpd_tok_stream_init(&s, c->tok, flags);
    for (size_t i = 0; i < c->ids.n; i++) {
        size_t before = c->text.n;
        if (mtpd_tok_stream_push(&s, c->ids.v[i], &c->text, err, errlen) < 0)
            return -1;
        /* the contract: every piece is whole UTF-8 characters */
        if (!mtpd_tok_utf8_valid(c->text.p + before, c->text.n - before)) {
            snprintf(err, errlen,
                     "internal: streamed piece %zu is not whole UTF-8", i);
            return -1;
        }
    }
    if (mtpd_tok_stream_finish(&s, &c->text) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int do_chat(struct ctx *c, const struct json *root, char *err,
                   size_t errlen)
{
    const struct json *arr = want(root, "messages", JSON_ARRAY, err, errlen);
    if (!arr)
        return -1;
    if (arr->len > c->msgcap) {
        struct mtpd_tok_msg *m = realloc(c->msgs, arr->len * sizeof(*m));
        if (!m) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        c->msgs = m;
        c->msgcap = arr->len;
    }
    for (size_t i = 0; i < arr->len; i++) {
        const struct json *m = arr->u.items[i];
        const struct json *role = json_get(m, "role");
        const struct json *content = json_get(m, "content");
        if (!role || role->type != JSON_STRING || !content ||
            content->type != JSON_STRING) {
            snprintf(err, errlen,
                     "messages[%zu]: expected {\"role\": string, "
                     "\"content\": string}",
                     i);
            return -1;
        }
        c->msgs[i] = (struct mtpd_tok_msg){role->u.str, content->u.str,
                                           content->len};
    }
    int gen = 1;
    const struct json *g = json_get(root, "add_generation_prompt");
    if (g && json_bool(g, &gen) < 0) {
        snprintf(err, errlen, "add_generation_prompt: expected a boolean");
        return -1;
    }
    c->ids.n = 0;
    return mtpd_tok_chat_encode(c->enc, c->msgs, arr->len, gen, &c->ids, err,
                                errlen) < 0 ? -1 : 0;
}

static void do_line(struct ctx *c, const char *line, size_t len,
                    struct obuf *ob, int *failed)
{
    char err[512], jerr[200];
    struct json_doc *doc = json_parse(line, len, jerr, sizeof(jerr));
    if (!doc) {
        snprintf(err, sizeof(err), "bad JSON: %s", jerr);
        goto fail;
    }
    const struct json *root = json_root(doc);
    int rc = -1;
    if (root->type != JSON_OBJECT) {
        snprintf(err, sizeof(err), "expected a JSON object");
    } else if (c->o->mode == M_ENCODE) {
        const struct json *t = want(root, "text", JSON_STRING, err, sizeof(err));
        unsigned flags = c->o->no_special ? MTPD_TOK_NO_PARSE_SPECIAL
                                          : MTPD_TOK_ADD_SPECIAL;
        if (c->o->add_bos)
            flags |= MTPD_TOK_ADD_BOS;
        c->ids.n = 0;
        if (t)
            rc = mtpd_tok_encode(c->enc, t->u.str, t->len, flags, &c->ids,
                                 err, sizeof(err)) < 0 ? -1 : 0;
    } else if (c->o->mode == M_DECODE) {
        rc = do_decode(c, root, err, sizeof(err));
    } else if (c->o->mode == M_CHAT) {
        rc = do_chat(c, root, err, sizeof(err));
    } else {
        const struct json *p = want(root, "prefix", JSON_STRING, err,
                                    sizeof(err));
        const struct json *s = p ? want(root, "suffix", JSON_STRING, err,
                                        sizeof(err))
                                 : NULL;
        c->ids.n = 0;
        if (p && s)
            rc = mtpd_tok_fim_encode(c->enc, p->u.str, p->len, s->u.str,
                                     s->len, &c->ids, err, sizeof(err)) < 0
                     ? -1
                     : 0;
    }
    json_doc_free(doc);
    if (rc < 0)
        goto fail;
    if (c->o->mode == M_DECODE) {
        OB_LIT(ob, "{\"text\": ");
        ob_json_str(ob, c->text.p ? c->text.p : "", c->text.n);
        OB_LIT(ob, "}\n");
    } else {
        ob_ids(ob, c->ids.v, c->ids.n);
    }
    return;
fail:
    *failed = 1;
    ob_error(ob, err);
}

/* ---- --info, --bench ---- */

static int do_info(struct ctx *c)
{
    const char *t = mtpd_tok_chat_template_name(c->tok);
    printf("{\"n_ids\": %ld, \"bos_id\": %ld, \"eos_id\": %ld, "
           "\"chat_template\": %s%s%s}\n",
           (long)mtpd_tok_n_ids(c->tok), (long)mtpd_tok_bos_id(c->tok),
           (long)mtpd_tok_eos_id(c->tok), t ? "\"" : "", t ? t : "null",
           t ? "\"" : "");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Loads the texts of a JSON-lines file into one buffer; off[i]..off[i+1]
 * delimit text i. Returns the count or -1. */
static long load_texts(const char *path, struct mtpd_tok_buf *all,
                       size_t **off)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "mtpd tokenize: cannot open %s\n", path);
        return -1;
    }
    char *line = NULL, jerr[200];
    size_t cap = 0, n = 0, ocap = 0;
    ssize_t k;
    long lineno = 0, rc = 0;
    *off = NULL;
    while ((k = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (k <= 1)
            continue;
        struct json_doc *doc = json_parse(line, (size_t)k, jerr, sizeof(jerr));
        const struct json *t = doc ? json_get(json_root(doc), "text") : NULL;
        if (!t || t->type != JSON_STRING) {
            fprintf(stderr, "mtpd tokenize: %s:%ld: expected {\"text\": ...}"
                    "\n", path, lineno);
            json_doc_free(doc);
            rc = -1;
            break;
        }
        if (n + 2 > ocap) {
            ocap = ocap ? ocap * 2 : 1024;
            size_t *o = realloc(*off, ocap * sizeof(*o));
            if (!o) {
                json_doc_free(doc);
                rc = -1;
                break;
            }
            *off = o;
        }
        (*off)[n++] = all->n;
        int e = mtpd_tok_buf_append(all, t->u.str, t->len);
        json_doc_free(doc);
        if (e < 0) {
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    if (rc < 0 || !*off) {
        if (rc == 0)
            fprintf(stderr, "mtpd tokenize: %s: no texts\n", path);
        return -1;
    }
    (*off)[n] = all->n;
    return (long)n;
}

static int do_bench(struct ctx *c)
{
    struct mtpd_tok_buf all = {0};
    size_t *off = NULL;
    long n = load_texts(c->o->bench, &all, &off);
    if (n < 0) {
        mtpd_tok_buf_free(&all);
        return 1;
    }
    double best = 1e30;
    size_t ntok = 0;
    char err[512];
    int rc = 0;
    for (int r = 0; r < c->o->repeat && rc == 0; r++) {
        struct mtpd_tok_enc *enc = mtpd_tok_enc_new(c->tok);
        if (!enc) {
            rc = 1;
            break;
        }
        c->ids.n = 0;
        double t0 = now_s();
        for (long i = 0; i < n && rc == 0; i++)
            if (mtpd_tok_encode(enc, all.p + off[i], off[i + 1] - off[i],
                                MTPD_TOK_ADD_SPECIAL, &c->ids, err,
                                sizeof(err)) < 0) {
                fprintf(stderr, "mtpd tokenize: text %ld: %s\n", i + 1, err);
                rc = 1;
            }
        double dt = now_s() - t0;
        mtpd_tok_enc_free(enc);
        if (dt < best)
            best = dt;
        ntok = c->ids.n;
    }
    if (rc == 0)
        printf("{\"texts\": %ld, \"bytes\": %zu, \"tokens\": %zu, "
               "\"best_s\": %.6f, \"mb_per_s\": %.3f}\n",
               n, all.n, ntok, best, (double)all.n / 1e6 / best);
    free(off);
    mtpd_tok_buf_free(&all);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc < 0 ? 2 : 0;
    struct ctx c = {.o = &o};
    char err[512];
    rc = o.model ? mtpd_tok_load_dir(&c.tok, o.model, err, sizeof(err))
                 : mtpd_tok_load(&c.tok, o.tokenizer, o.config, err,
                                 sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "mtpd tokenize: %s\n", err);
        return 1;
    }
    c.enc = mtpd_tok_enc_new(c.tok);
    if (!c.enc) {
        fprintf(stderr, "mtpd tokenize: out of memory\n");
        mtpd_tok_free(c.tok);
        return 1;
    }
    int status = 0;
    if (o.info) {
        status = do_info(&c);
    } else if (o.bench) {
        status = do_bench(&c);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        struct obuf ob = {0};
        int failed = 0;
        while ((n = getline(&line, &cap, stdin)) >= 0) {
            size_t len = (size_t)n;
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
            if (len == 0)
                continue;
            ob.n = 0;
            do_line(&c, line, len, &ob, &failed);
            if (ob.oom) {
                fprintf(stderr, "mtpd tokenize: out of memory\n");
                status = 1;
                break;
            }
            if (fwrite(ob.p, 1, ob.n, stdout) != ob.n) {
                status = 1;
                break;
            }
            fflush(stdout);
        }
        free(line);
        free(ob.p);
        if (!status && failed)
            status = 1;
    }
    mtpd_tok_ids_free(&c.ids);
    mtpd_tok_buf_free(&c.text);
    free(c.msgs);
    mtpd_tok_enc_free(c.enc);
    mtpd_tok_free(c.tok);
    return status;
}
