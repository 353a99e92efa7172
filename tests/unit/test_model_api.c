/*
 * test_model_api.c - the library's process-wide settings and load hooks:
 * log lines reach the callback (and nothing else), the load progress runs
 * forward to its total, the CPU code path is chosen by call, and json_esc
 * makes input quoted in error messages printable UTF-8.
 *
 *   test_model_api CHECKPOINT_DIR   (a committed golden preset)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model.h"
#include "unit_test.h"

static const char *g_dir;

struct log_rec {
    int n, n_info;
    char last[512];
};

static void on_log(void *ud, int level, const char *msg)
{
    struct log_rec *r = ud;
    r->n++;
    r->n_info += level == MTPD_LOG_INFO;
    snprintf(r->last, sizeof r->last, "%s", msg);
}

struct prog_rec {
    int calls, backwards;
    struct mtpd_load_progress last;
};

static void on_progress(void *ud, const struct mtpd_load_progress *p)
{
    struct prog_rec *r = ud;
    if (r->calls && (p->bytes_done < r->last.bytes_done ||
                     p->tensors_done < r->last.tensors_done))
        r->backwards++;
    r->calls++;
    r->last = *p;
}

static enum test_return test_log_and_progress(void)
{
    struct log_rec lr = {0};
    struct prog_rec pr = {0};
    mtpd_set_log(on_log, &lr);
    struct mtpd_load_opts o = {.progress = on_progress, .progress_ud = &pr};
    char err[512];
    struct mtpd_model *m;
    int rc = mtpd_model_load(g_dir, &o, &m, err, sizeof err);
    mtpd_set_log(NULL, NULL);
    CHECK(rc == 0, "%s", err);
    int layers = mtpd_model_config(m)->num_hidden_layers;
    mtpd_model_free(m);
    CHECK(lr.n_info >= 2, "%d info lines", lr.n_info);
    CHECK(strstr(lr.last, "loaded") != NULL, "last line: %s", lr.last);
    CHECK(!strchr(lr.last, '\n'), "a log line holds no newline");
    /* one call per main layer at least, then the final one */
    CHECK(pr.calls >= layers + 1, "%d progress calls, %d layers", pr.calls,
          layers);
    CHECK(pr.backwards == 0, "progress went backwards %d times",
          pr.backwards);
    CHECK(pr.last.tensors_total > 0 && pr.last.bytes_total > 0, "no totals");
    CHECK(pr.last.tensors_done == pr.last.tensors_total &&
              pr.last.bytes_done == pr.last.bytes_total,
          "ends at %ld/%ld tensors, %zu/%zu bytes", pr.last.tensors_done,
          pr.last.tensors_total, pr.last.bytes_done, pr.last.bytes_total);

    /* without a sink the load logs nowhere (and does not crash) */
    lr = (struct log_rec){0};
    CHECK(mtpd_model_load(g_dir, NULL, &m, err, sizeof err) == 0, "%s", err);
    mtpd_model_free(m);
    CHECK(lr.n == 0, "a line went to a removed sink");
    /* a failed load fills err and logs no error of its own */
    mtpd_set_log(on_log, &lr);
    rc = mtpd_model_load("/nonexistent/mtpd", NULL, &m, err, sizeof err);
    mtpd_set_log(NULL, NULL);
    CHECK(rc < 0 && m == NULL && err[0], "rc %d", rc);
    return TEST_PASS;
}

static enum test_return test_isa(void)
{
    const char *best = mtpd_isa_best();
    /* the default is the best path but AMX-BF16 (model.h) */
    const char *dflt = strcmp(best, "amx") == 0 ? "avx512" : best;
    CHECK(strcmp(mtpd_isa(), dflt) == 0, "default %s, best %s", mtpd_isa(),
          best);
    CHECK(mtpd_set_isa("scalar") == 0, "scalar always works");
    CHECK(strcmp(mtpd_isa(), "scalar") == 0, "active %s", mtpd_isa());
    CHECK(mtpd_set_isa("sse9") == MTPD_EINVAL, "unknown name accepted");
    CHECK(strcmp(mtpd_isa(), "scalar") == 0, "failed call changed the path");
    static const char *const all[] = {"scalar", "avx2", "avx512", "amx"};
    int best_i = 0;
    for (int i = 0; i < 4; i++)
        if (!strcmp(all[i], best))
            best_i = i;
    for (int i = 0; i < 4; i++) {
        int rc = mtpd_set_isa(all[i]);
        CHECK((rc == 0) == (i <= best_i), "%s: rc %d (best %s)", all[i], rc,
              best);
        CHECK(rc != 0 || !strcmp(mtpd_isa(), all[i]), "%s: active %s",
              all[i], mtpd_isa());
    }
    CHECK(mtpd_set_isa(NULL) == 0 && !strcmp(mtpd_isa(), dflt),
          "NULL: back to the default");
    CHECK(mtpd_set_isa("") == 0 && !strcmp(mtpd_isa(), dflt), "\"\"");
    return TEST_PASS;
}

/* Valid UTF-8 without C0/C1 controls or DEL (what json_esc promises). */
static int printable_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int w = json_utf8_width(*p);
        if (w == 0)
            return 0;
        if (w == 1) {
            if (*p < 0x20 || *p == 0x7F)
                return 0;
            p++;
            continue;
        }
        if (!json_utf8_second_ok(p[0], p[1]))
            return 0;
        for (int k = 2; k < w; k++)
            if (!json_utf8_cont(p[k]))
                return 0;
        if (p[0] == 0xC2 && p[1] < 0xA0)
            return 0;
        p += w;
    }
    return 1;
}

static enum test_return test_json_esc(void)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } v[] = {
        {"model.norm.weight", 17, "model.norm.weight"},
        {"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14,
         "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"},
        {"a\\b", 3, "a\\\\b"},
        {"\x07\x1B[31m\x7F", 7, "\\x07\\x1B[31m\\x7F"},
        {"nul\0x", 5, "nul\\x00x"},
        {"\xFF\xFE", 2, "\\xFF\\xFE"},
        {"\xC2\x85|\xC2\xA0", 5, "\\xC2\\x85|\xC2\xA0"},   /* C1 NEL; NBSP */
        {"\xC0\xAF", 2, "\\xC0\\xAF"},                     /* overlong */
        {"\xED\xB3\xBF", 3, "\\xED\\xB3\\xBF"},            /* surrogate */
        {"\xE2\x82", 2, "\\xE2\\x82"},                     /* truncated */
        {"\xF4\x90\x80\x80", 4, "\\xF4\\x90\\x80\\x80"},   /* > U+10FFFF */
    };
    char out[JSON_ESC_CAP];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *r = json_esc(out, sizeof out, v[i].in, v[i].n);
        CHECK(r == out, "returns out");
        CHECK(strcmp(out, v[i].want) == 0, "case %zu: got '%s' want '%s'", i,
              out, v[i].want);
        CHECK(printable_utf8(out), "case %zu not printable", i);
    }
    /* cut to fit at a character boundary, with "..." */
    const char *euro = "\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC";
    for (size_t cap = 8; cap <= 16; cap++) {
        char small[16];
        json_esc(small, cap, euro, 12);
        size_t n = strlen(small);
        CHECK(n < cap, "cap %zu: %zu bytes", cap, n);
        CHECK(printable_utf8(small), "cap %zu cut a character", cap);
        if (cap <= 12)
            CHECK(n >= 3 && !strcmp(small + n - 3, "..."), "cap %zu: '%s'",
                  cap, small);
        else
            CHECK(strcmp(small, euro) == 0, "cap %zu: fits, '%s'", cap, small);
    }
    char small[8];
    json_esc(small, sizeof small, "\x01\x02\x03", 3); /* 12 bytes escaped */
    CHECK(strcmp(small, "\\x01...") == 0, "got '%s'", small);
    CHECK(strcmp(json_escz(out, sizeof out, NULL), "(null)") == 0, "NULL");
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"log_and_progress", test_log_and_progress},
        {"isa", test_isa},
        {"json_esc", test_json_esc},
    };
    if (argc < 2) {
        fprintf(stderr, "usage: test_model_api CHECKPOINT_DIR [TEST]\n");
        return 2;
    }
    g_dir = argv[1];
    return test_main(tests, (int)(sizeof(tests) / sizeof(tests[0])), argc - 1,
                     argv + 1);
}
