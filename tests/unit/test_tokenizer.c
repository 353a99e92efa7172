/*
 * test_tokenizer.c - C unit tests for model/tokenizer.
 *
 * Self-contained (no ../shared): writes small tokenizer.json files to a
 * temp dir. Covers the lossy/streaming UTF-8 decoder against Rust's
 * from_utf8_lossy expectations and against itself under every split, the
 * heap BPE against a naive quadratic reference, a 1 MB word, load errors
 * naming the key, and encode/decode argument errors. The parity with HF
 * tokenizers is tests/tokenizer/test_parity.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "tok_internal.h"
#include "tokenizer.h"

static int failures;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
        }                                                                      \
    } while (0)

static uint64_t rng = 0x1234567;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* ---------------- UTF-8 ---------------- */

static void lossy_all(const char *s, size_t n, struct mtpd_tok_buf *out)
{
    unsigned char pend[4];
    int np = 0;
    out->n = 0;
    tok_buf_put(out, "", 0);
    tok_utf8_lossy_feed(pend, &np, s, n, out);
    tok_utf8_lossy_flush(pend, &np, out);
}

#define R "\xEF\xBF\xBD"
static void test_lossy_vectors(void)
{
    /* expectations of Rust's String::from_utf8_lossy */
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } v[] = {
        {"abc", 3, "abc"},
        {"\xE2\x82", 2, R},
        {"\xE2\x82" "A", 3, R "A"},
        {"\xC0\x80", 2, R R},
        {"\xE0\x80", 2, R R},
        {"\xED\xA0\x80", 3, R R R},
        {"\xF4\x90\x80\x80", 4, R R R R},
        {"\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80"},
        {"\xF0\x9F\x98", 3, R},
        {"\xF0\x9F" "A\x80", 4, R "A" R},
        {"\x80\xBF", 2, R R},
        {"\xFF", 1, R},
        {"\xE4\xB8\x96\xE7", 4, "\xE4\xB8\x96" R},
        {"\xC3\xA9\xC3", 3, "\xC3\xA9" R},
    };
    struct mtpd_tok_buf out = {0};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        lossy_all(v[i].in, v[i].n, &out);
        CHECK(out.n == strlen(v[i].want) && !memcmp(out.p, v[i].want, out.n),
              "vector %zu", i);
    }
    mtpd_tok_buf_free(&out);
}

/* Streaming in random pieces must equal one-shot decoding. */
static void test_lossy_stream(void)
{
    struct mtpd_tok_buf a = {0}, b = {0};
    static const unsigned char alphabet[] = {
        'a', 0x80, 0xBF, 0xC2, 0xC3, 0xDF, 0xE0, 0xE2, 0xED, 0xEF,
        0xF0, 0xF4, 0xF5, 0xFF, 0x9F, 0xA0, 0x8F, 0x90, 0xA9, 0x82};
    char s[64];
    for (int it = 0; it < 20000; it++) {
        size_t n = rnd() % sizeof(s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)alphabet[rnd() % sizeof(alphabet)];
        lossy_all(s, n, &a);
        unsigned char pend[4];
        int np = 0;
        b.n = 0;
        tok_buf_put(&b, "", 0);
        size_t i = 0;
        while (i < n) {
            size_t k = 1 + rnd() % 5;
            if (k > n - i)
                k = n - i;
            size_t before = b.n;
            tok_utf8_lossy_feed(pend, &np, s + i, k, &b);
            /* every emitted piece is whole, valid UTF-8 */
            CHECK(mtpd_tok_utf8_valid(b.p + before, b.n - before),
                  "piece not valid UTF-8");
            i += k;
        }
        tok_utf8_lossy_flush(pend, &np, &b);
        CHECK(a.n == b.n && !memcmp(a.p, b.p, a.n), "stream != batch (it %d)",
              it);
        CHECK(mtpd_tok_utf8_valid(a.p, a.n), "lossy output invalid");
    }
    mtpd_tok_buf_free(&a);
    mtpd_tok_buf_free(&b);
}

static void test_utf8_check(void)
{
    size_t bad = 0;
    CHECK(tok_utf8_check("h\xC3\xA9llo", 6, &bad) == 0, "valid");
    CHECK(tok_utf8_check("abc\xED\xA0\x80", 6, &bad) < 0 && bad == 3,
          "surrogate at %zu", bad);
    CHECK(tok_utf8_check("abcdefghij\xC0\x80", 12, &bad) < 0 && bad == 10,
          "overlong at %zu", bad);
    CHECK(tok_utf8_check("\xF0\x9F\x98", 3, &bad) < 0 && bad == 0,
          "truncated");
}

/* ---------------- tokenizer files ---------------- */

static char tmpdir[64];

static void write_file(const char *name, const char *text, char *path,
                       size_t cap)
{
    snprintf(path, cap, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

struct sb {
    char *p;
    size_t n, cap;
};
static void sb_add(struct sb *b, const char *s)
{
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        b->cap = (b->n + k + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            exit(1);
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}
static void sb_json(struct sb *b, const char *s, size_t n)
{
    size_t need = json_escape(NULL, 0, s, n);
    char *t = malloc(need + 1);
    json_escape(t, need + 1, s, n);
    sb_add(b, t);
    free(t);
}

/* byte-level char string of byte c */
static void blchar(unsigned c, char out[4], size_t *n)
{
    *n = (size_t)json_utf8_put(out, tok_bl_byte_to_cp(c));
}

/*
 * A byte-level tokenizer over the alphabet "abcd" with merges given as
 * pairs of vocab strings; vocab = 256 bytes + merge results.
 * pre_tokenizer: ByteLevel without regex, so a whole text is one word.
 */
static char *make_bpe_json(char merges[][2][32], int nm, const char *extra)
{
    struct sb b = {0};
    sb_add(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
               "\"added_tokens\":[");
    sb_add(&b, extra ? extra : "");
    sb_add(&b, "],\"normalizer\":null,\"pre_tokenizer\":{\"type\":"
               "\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":"
               "true,\"use_regex\":false},\"post_processor\":null,"
               "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":"
               "\"BPE\",\"dropout\":null,\"unk_token\":null,\"vocab\":{");
    char num[32];
    for (unsigned c = 0; c < 256; c++) {
        char u[4];
        size_t n;
        blchar(c, u, &n);
        if (c)
            sb_add(&b, ",");
        sb_json(&b, u, n);
        snprintf(num, sizeof(num), ":%u", c);
        sb_add(&b, num);
    }
    for (int i = 0; i < nm; i++) {
        char cat[64];
        snprintf(cat, sizeof(cat), "%s%s", merges[i][0], merges[i][1]);
        sb_add(&b, ",");
        sb_json(&b, cat, strlen(cat));
        snprintf(num, sizeof(num), ":%d", 256 + i);
        sb_add(&b, num);
    }
    sb_add(&b, "},\"merges\":[");
    for (int i = 0; i < nm; i++) {
        char m[80];
        snprintf(m, sizeof(m), "%s %s", merges[i][0], merges[i][1]);
        if (i)
            sb_add(&b, ",");
        sb_json(&b, m, strlen(m));
    }
    sb_add(&b, "]}}");
    return b.p;
}

/* Classic quadratic BPE: merge the lowest-rank adjacent pair, leftmost
 * first, until none applies. Strings compared via the vocab. */
static size_t naive_bpe(const struct mtpd_tok *tok, const char *w, size_t n,
                        int32_t *out)
{
    size_t m = n;
    for (size_t i = 0; i < n; i++)
        out[i] = tok->byte_id[(unsigned char)w[i]];
    for (;;) {
        uint64_t best = UINT64_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            const struct tok_u64slot *s = tok_u64map_find(
                &tok->merges, ((uint64_t)(uint32_t)out[i] << 32) |
                                  (uint32_t)out[i + 1]);
            if (s && (s->val >> 32) < best) {
                best = s->val >> 32;
                at = i;
            }
        }
        if (best == UINT64_MAX)
            return m;
        const struct tok_u64slot *s = tok_u64map_find(
            &tok->merges,
            ((uint64_t)(uint32_t)out[at] << 32) | (uint32_t)out[at + 1]);
        out[at] = (int32_t)(uint32_t)s->val;
        memmove(out + at + 1, out + at + 2, (m - at - 2) * sizeof(*out));
        m--;
    }
}

static void test_bpe_vs_naive(void)
{
    /* random merges over "abcd": each merge joins two existing tokens */
    char toks[200][32];
    int nt = 4;
    char merges[150][2][32];
    int nm = 0;
    strcpy(toks[0], "a");
    strcpy(toks[1], "b");
    strcpy(toks[2], "c");
    strcpy(toks[3], "d");
    while (nm < 150) {
        int x = (int)(rnd() % (uint32_t)nt), y = (int)(rnd() % (uint32_t)nt);
        if (strlen(toks[x]) + strlen(toks[y]) >= 31)
            continue;
        char cat[64];
        snprintf(cat, sizeof(cat), "%s%s", toks[x], toks[y]);
        int dup = 0;
        for (int i = 0; i < nt; i++)
            dup |= !strcmp(toks[i], cat);
        if (dup)
            continue;
        strcpy(merges[nm][0], toks[x]);
        strcpy(merges[nm][1], toks[y]);
        strcpy(toks[nt++], cat);
        nm++;
    }
    char *json = make_bpe_json(merges, nm, NULL);
    char path[128], err[256];
    write_file("bpe.json", json, path, sizeof(path));
    free(json);
    struct mtpd_tok *tok;
    int rc = mtpd_tok_load(&tok, path, NULL, err, sizeof(err));
    CHECK(rc == 0, "load: %s", err);
    if (rc)
        return;
    struct mtpd_tok_enc *enc = mtpd_tok_enc_new(tok);
    struct mtpd_tok_ids ids = {0};
    int32_t ref[600];
    char w[600];
    for (int it = 0; it < 3000; it++) {
        size_t n = 1 + rnd() % (it < 2000 ? 40 : 590);
        for (size_t i = 0; i < n; i++)
            w[i] = "abcd"[rnd() % 4];
        ids.n = 0;
        rc = mtpd_tok_encode(enc, w, n, 0, &ids, err, sizeof(err));
        size_t m = naive_bpe(tok, w, n, ref);
        CHECK(rc == 0 && ids.n == m &&
                  !memcmp(ids.v, ref, m * sizeof(int32_t)),
              "word %.*s", (int)n, w);
        /* decode round trip */
        struct mtpd_tok_buf t = {0};
        rc = mtpd_tok_decode(tok, ids.v, ids.n, 0, &t, err, sizeof(err));
        CHECK(rc == 0 && t.n == n && !memcmp(t.p, w, n), "roundtrip");
        mtpd_tok_buf_free(&t);
    }
    mtpd_tok_ids_free(&ids);
    mtpd_tok_enc_free(enc);
    mtpd_tok_free(tok);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A 1 MB word must not be quadratic. */
static void test_long_word(void)
{
    char merges[3][2][32] = {{"a", "b"}, {"ab", "ab"}, {"abab", "abab"}};
    char *json = make_bpe_json(merges, 3, NULL);
    char path[128], err[256];
    write_file("long.json", json, path, sizeof(path));
    free(json);
    struct mtpd_tok *tok;
    int rc = mtpd_tok_load(&tok, path, NULL, err, sizeof(err));
    CHECK(rc == 0, "load: %s", err);
    if (rc)
        return;
    size_t n = 1 << 20;
    char *w = malloc(n);
    for (size_t i = 0; i < n; i++)
        w[i] = "ab"[i & 1];
    struct mtpd_tok_enc *enc = mtpd_tok_enc_new(tok);
    struct mtpd_tok_ids ids = {0};
    double t0 = now_s();
    rc = mtpd_tok_encode(enc, w, n, 0, &ids, err, sizeof(err));
    double dt = now_s() - t0;
    CHECK(rc == 0 && ids.n == n / 8, "got %zu ids", ids.n);
    int all = 1;
    for (size_t i = 0; i < ids.n; i++)
        all &= ids.v[i] == 258; /* "abababab" */
    CHECK(all, "ids");
    CHECK(dt < 10.0, "1 MB word took %.2f s (quadratic?)", dt);
    printf("1 MB word: %.3f s\n", dt);
    free(w);
    mtpd_tok_ids_free(&ids);
    mtpd_tok_enc_free(enc);
    mtpd_tok_free(tok);
}

/* ---------------- errors ---------------- */

static void expect_load_error(const char *json, int code, const char *needle)
{
    char path[128], err[512] = "";
    write_file("bad.json", json, path, sizeof(path));
    struct mtpd_tok *tok = NULL;
    int rc = mtpd_tok_load(&tok, path, NULL, err, sizeof(err));
    CHECK(rc == code && tok == NULL && strstr(err, needle),
          "rc %d, err '%s' (want %d, '%s')", rc, err, code, needle);
    mtpd_tok_free(tok);
}

static void test_load_errors(void)
{
    const char *bpe_ok =
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
        "\"merges\":[\"a b\"]}";
    char buf[2048];
    expect_load_error("{\"added_tokens\":[]}", MTPD_TOK_EFORMAT,
                      "missing key 'model'");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}",
                      MTPD_TOK_EUNSUPPORTED, "model.type");
    snprintf(buf, sizeof(buf),
             "{%s,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":"
             "[{\"type\":\"ByteLevel\"},{\"type\":\"Foo\"}]}}",
             bpe_ok);
    expect_load_error(buf, MTPD_TOK_EUNSUPPORTED,
                      "pre_tokenizer.pretokenizers[1]");
    snprintf(buf, sizeof(buf),
             "{%s,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":"
             "[{\"type\":\"Metaspace\"}]}}",
             bpe_ok);
    expect_load_error(buf, MTPD_TOK_EUNSUPPORTED,
                      "pre_tokenizer.pretokenizers[0].type");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,"
                      "\"b\":1},\"merges\":[\"a b\"]}}",
                      MTPD_TOK_EFORMAT, "model.merges[0]: token 'ab'");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,"
                      "\"b\":1,\"ab\":2},\"merges\":[\"a b c\"]}}",
                      MTPD_TOK_EFORMAT, "model.merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                      "\"merges\":[[\"a\"]]}}",
                      MTPD_TOK_EFORMAT, "model.merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},"
                      "\"merges\":[]}}",
                      MTPD_TOK_EFORMAT, "model.vocab['a']");
    snprintf(buf, sizeof(buf),
             "{%s,\"normalizer\":{\"type\":\"NFC\"}}", bpe_ok);
    expect_load_error(buf, MTPD_TOK_EUNSUPPORTED, "normalizer.type");
    snprintf(buf, sizeof(buf),
             "{%s,\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":"
             "{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}",
             bpe_ok);
    expect_load_error(buf, MTPD_TOK_EUNSUPPORTED, "pre_tokenizer.pattern");
    snprintf(buf, sizeof(buf),
             "{%s,\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":"
             "{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}}",
             bpe_ok);
    expect_load_error(buf, MTPD_TOK_EFORMAT, "pre_tokenizer.behavior");
    snprintf(buf, sizeof(buf), "{%s,\"decoder\":{\"type\":\"WordPiece\"}}",
             bpe_ok);
    expect_load_error(buf, MTPD_TOK_EUNSUPPORTED, "decoder.type");
    snprintf(buf, sizeof(buf), "{%s,\"truncation\":{\"max_length\":5}}",
             bpe_ok);
    expect_load_error(buf, MTPD_TOK_EUNSUPPORTED, "truncation");
    expect_load_error("{\"model\": ", MTPD_TOK_EFORMAT, "line 1");
    char err[256];
    struct mtpd_tok *tok;
    CHECK(mtpd_tok_load(&tok, "/nonexistent/tokenizer.json", NULL, err,
                        sizeof(err)) == MTPD_TOK_EIO,
          "missing file: %s", err);
}

static void test_runtime_errors(void)
{
    char merges[1][2][32] = {{"a", "b"}};
    char *json = make_bpe_json(
        merges, 1,
        "{\"id\":257,\"content\":\"<s>\",\"special\":true,\"normalized\":"
        "false}");
    char path[128], err[256];
    write_file("rt.json", json, path, sizeof(path));
    free(json);
    struct mtpd_tok *tok;
    int rc = mtpd_tok_load(&tok, path, NULL, err, sizeof(err));
    CHECK(rc == 0, "load: %s", err);
    if (rc)
        return;
    struct mtpd_tok_enc *enc = mtpd_tok_enc_new(tok);
    struct mtpd_tok_ids ids = {0};
    rc = mtpd_tok_encode(enc, "ab\xED\xA0\x80", 5, 0, &ids, err, sizeof(err));
    CHECK(rc == MTPD_TOK_EUTF8 && strstr(err, "offset 2") && ids.n == 0,
          "utf8: %d %s", rc, err);
    rc = mtpd_tok_encode(enc, "ab<s>ab", 7, 0, &ids, err, sizeof(err));
    CHECK(rc == 0 && ids.n == 3 && ids.v[0] == 256 && ids.v[1] == 257,
          "special");
    ids.n = 0;
    rc = mtpd_tok_encode(enc, "<s>", 3, MTPD_TOK_NO_PARSE_SPECIAL, &ids, err,
                         sizeof(err));
    CHECK(rc == 0 && ids.n == 3, "no-parse-special: %zu ids", ids.n);
    int32_t bad[] = {97, 98, 9999};
    struct mtpd_tok_buf t = {0};
    rc = mtpd_tok_decode(tok, bad, 3, 0, &t, err, sizeof(err));
    CHECK(rc == MTPD_TOK_ERANGE && strstr(err, "9999"), "range: %s", err);
    int32_t neg = -1;
    rc = mtpd_tok_decode(tok, &neg, 1, 0, &t, err, sizeof(err));
    CHECK(rc == MTPD_TOK_ERANGE, "negative id");
    int32_t sp[] = {256, 257, 97};
    t.n = 0;
    rc = mtpd_tok_decode(tok, sp, 3, MTPD_TOK_SKIP_SPECIAL, &t, err,
                         sizeof(err));
    CHECK(rc == 0 && !strcmp(t.p, "aba"), "skip special: '%s'", t.p);
    struct mtpd_tok_stream s;
    mtpd_tok_stream_init(&s, tok, 0);
    CHECK(mtpd_tok_stream_push(&s, 1 << 30, &t, err, sizeof(err)) ==
              MTPD_TOK_ERANGE,
          "stream range");
    struct mtpd_tok_msg msg = {"user", "hi", 2};
    rc = mtpd_tok_chat_encode(enc, &msg, 1, 1, &ids, err, sizeof(err));
    CHECK(rc == MTPD_TOK_ETEMPLATE, "chat without template: %d", rc);
    rc = mtpd_tok_fim_encode(enc, "a", 1, "b", 1, &ids, err, sizeof(err));
    CHECK(rc == MTPD_TOK_ETEMPLATE && strstr(err, "fim"), "fim: %s", err);
    mtpd_tok_buf_free(&t);
    mtpd_tok_ids_free(&ids);
    mtpd_tok_enc_free(enc);
    mtpd_tok_free(tok);
}

static void cleanup(void)
{
    static const char *const files[] = {"bpe.json", "long.json", "bad.json",
                                        "rt.json"};
    char p[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", tmpdir, files[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mtpd-tok-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_lossy_vectors();
    test_lossy_stream();
    test_utf8_check();
    test_bpe_vs_naive();
    test_long_word();
    test_load_errors();
    test_runtime_errors();
    cleanup();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("tokenizer unit tests: ok\n");
    return 0;
}
