/*
 * test_spec_textout.c - the library's streamed text (spec/textout.h) on
 * the committed default model's tokenizer: released pieces are whole
 * UTF-8 characters and add up to the decoded text, a stop string that
 * spans tokens is never released in part; and the draft-vocabulary file
 * reader (spec/draft_vocab.h). Run from the project root.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "draft_vocab.h"
#include "model.h"
#include "textout.h"
#include "tokenizer.h"
#include "unit_test.h"

#define MODEL_DIR "models/mtpd-code-small"

static const char *TEXT =
    "def naïve(x):  # café → 日本語 🎉\n    return x * 2  # done\n";

static struct mtpd_tok *g_tok;

static int encode(const char *text, struct mtpd_tok_ids *ids)
{
    char err[256];
    struct mtpd_tok_enc *enc = mtpd_tok_enc_new(g_tok);
    if (!enc)
        return -1;
    int rc = mtpd_tok_encode(enc, text, strlen(text), 0, ids, err,
                             sizeof err);
    mtpd_tok_enc_free(enc);
    return rc;
}

/* Pushes ids one by one, collecting what is released; every piece must
 * be valid UTF-8 on its own. Returns the index of the push that matched a
 * stop string, or n. */
static int stream(struct spec_textout *t, const int32_t *ids, int n,
                  struct mtpd_tok_buf *got, int *bad_piece)
{
    int i;
    for (i = 0; i < n; i++) {
        int r = spec_textout_push(t, ids[i]);
        const char *p;
        size_t len = spec_textout_release(t, &p, 0);
        if (!mtpd_tok_utf8_valid(p, len))
            *bad_piece = 1;
        mtpd_tok_buf_append(got, p, len);
        if (r == 1)
            break;
    }
    spec_textout_finish(t);
    const char *p;
    size_t len = spec_textout_release(t, &p, 1);
    mtpd_tok_buf_append(got, p, len);
    return i;
}

static enum test_return test_stream_utf8(void)
{
    struct mtpd_tok_ids ids = {0};
    CHECK(encode(TEXT, &ids) == 0 && ids.n > 10, "encode");
    struct spec_textout *t;
    CHECK(spec_textout_new(g_tok, NULL, 0, &t) == 0, "new");
    struct mtpd_tok_buf got = {0};
    int bad = 0;
    CHECK(stream(t, ids.v, (int)ids.n, &got, &bad) == (int)ids.n, "stopped");
    CHECK(!bad, "a released piece splits a UTF-8 character");
    CHECK(got.n == strlen(TEXT) && !memcmp(got.p, TEXT, got.n),
          "released '%s'", got.p ? got.p : "");
    size_t len;
    const char *all = spec_textout_text(t, &len);
    CHECK(all && len == got.n && !memcmp(all, TEXT, len), "text");
    CHECK(!spec_textout_matched(t) && !spec_textout_failures(t), "state");
    /* some token of TEXT is a part of a character (the emoji), or this
     * test would not test the hold-back */
    int partial = 0;
    for (size_t i = 0; i < ids.n; i++) {
        struct mtpd_tok_buf one = {0};
        char err[64];
        mtpd_tok_decode(g_tok, ids.v + i, 1, 0, &one, err, sizeof err);
        partial |= one.n && strstr(one.p, "\xef\xbf\xbd") != NULL;
        mtpd_tok_buf_free(&one);
    }
    CHECK(partial, "no token of the text splits a character");
    spec_textout_free(t);
    mtpd_tok_buf_free(&got);
    mtpd_tok_ids_free(&ids);
    return TEST_PASS;
}

static enum test_return test_stop_across_tokens(void)
{
    struct mtpd_tok_ids ids = {0};
    CHECK(encode(TEXT, &ids) == 0, "encode");
    const char *stops[] = {"café → 日本", "never there"};
    struct spec_textout *t;
    CHECK(spec_textout_new(g_tok, stops, 2, &t) == 0, "new");
    struct mtpd_tok_buf got = {0};
    int bad = 0;
    int at = stream(t, ids.v, (int)ids.n, &got, &bad);
    size_t cut = (size_t)(strstr(TEXT, stops[0]) - TEXT);
    CHECK(at < (int)ids.n && spec_textout_matched(t), "no match");
    CHECK(!bad, "a released piece splits a UTF-8 character");
    CHECK(got.n == cut && !memcmp(got.p, TEXT, cut),
          "released %zu bytes, the stop string starts at %zu", got.n, cut);
    CHECK(spec_textout_push(t, ids.v[0]) == 1, "push after the match");
    size_t len;
    spec_textout_text(t, &len);
    CHECK(len == cut, "text after the match");
    spec_textout_free(t);
    mtpd_tok_buf_free(&got);
    mtpd_tok_ids_free(&ids);
    return TEST_PASS;
}

static enum test_return test_no_tokenizer_and_bad_ids(void)
{
    struct spec_textout *t;
    const char *stops[] = {"x"};
    CHECK(spec_textout_new(NULL, stops, 1, &t) == MTPD_EINVAL && !t,
          "stop strings without a tokenizer");
    CHECK(spec_textout_new(NULL, NULL, 0, &t) == 0, "new");
    size_t len;
    CHECK(spec_textout_push(t, 5) == 0 && !spec_textout_text(t, &len) &&
          len == 0, "no text without a tokenizer");
    spec_textout_free(t);
    CHECK(spec_textout_new(g_tok, NULL, 0, &t) == 0, "new");
    CHECK(spec_textout_push(t, mtpd_tok_n_ids(g_tok) + 100) == MTPD_EFORMAT,
          "bad id");
    struct mtpd_tok_ids ids = {0};
    CHECK(encode("ok", &ids) == 0, "encode");
    for (size_t i = 0; i < ids.n; i++)
        CHECK(spec_textout_push(t, ids.v[i]) == 0, "push");
    const char *p;
    len = spec_textout_release(t, &p, 1);
    CHECK(len == 2 && !memcmp(p, "ok", 2) && spec_textout_failures(t) == 1,
          "after a bad id");
    mtpd_tok_ids_free(&ids);
    spec_textout_free(t);
    return TEST_PASS;
}

/* Writes s to a new temporary file; its path into path (64 bytes). */
static int temp_file(const char *s, char *path)
{
    strcpy(path, "/tmp/mtpd-vocab-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    close(fd);
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static enum test_return test_draft_vocab_file(void)
{
    char path[64];
    int32_t *ids;
    CHECK(temp_file("# most frequent first 1 2\n5, 7\n 9#x 3\n11", path) == 0,
          "temp file");
    int n = spec_draft_vocab_read(path, 100, &ids);
    CHECK(n == 4 && ids[0] == 5 && ids[1] == 7 && ids[2] == 9 && ids[3] == 11,
          "read %d", n);
    free(ids);
    n = spec_draft_vocab_read(path, 2, &ids);
    CHECK(n == 2 && ids[1] == 7, "first 2: %d", n);
    free(ids);
    unlink(path);
    CHECK(spec_draft_vocab_read(path, 10, &ids) == MTPD_EIO && !ids,
          "missing file");
    CHECK(temp_file("# nothing\n", path) == 0, "temp file");
    CHECK(spec_draft_vocab_read(path, 10, &ids) == MTPD_EFORMAT && !ids,
          "no ids");
    unlink(path);
    CHECK(temp_file("1 99999999999\n", path) == 0, "temp file");
    CHECK(spec_draft_vocab_read(path, 10, &ids) == MTPD_EFORMAT && !ids,
          "id too big");
    unlink(path);
    return TEST_PASS;
}

static const struct test_case tests[] = {
    {"stream_utf8", test_stream_utf8},
    {"stop_across_tokens", test_stop_across_tokens},
    {"no_tokenizer_and_bad_ids", test_no_tokenizer_and_bad_ids},
    {"draft_vocab_file", test_draft_vocab_file},
};

int main(int argc, char **argv)
{
    char err[512];
    if (mtpd_tok_load_dir(&g_tok, MODEL_DIR, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", MODEL_DIR, err);
        return 1;
    }
    int rc = test_main(tests, (int)(sizeof tests / sizeof tests[0]), argc,
                       argv);
    mtpd_tok_free(g_tok);
    return rc;
}
