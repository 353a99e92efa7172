/* test_http_json.c - the HTTP replies' JSON writer (daemon/http_json.c):
 * commas, nesting, escaping, bytes that are not UTF-8, numbers; every
 * output must parse with model/json.h and give back what was written. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "http_int.h"

static int fails;
#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #c);                                                    \
            fails++;                                                        \
        }                                                                   \
    } while (0)

static struct json_doc *parse(const struct jw *w)
{
    char err[128];
    struct json_doc *d = json_parse(w->p, w->n, err, sizeof err);
    if (!d)
        fprintf(stderr, "not JSON (%s): %s\n", err, w->p);
    return d;
}

static void test_structure(void)
{
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "a");
    jw_int(&w, -42);
    jw_key(&w, "list");
    jw_arr(&w);
    jw_int(&w, 1);
    jw_obj(&w);
    jw_end(&w);
    jw_arr(&w);
    jw_end(&w);
    jw_null(&w);
    jw_bool(&w, 1);
    jw_end(&w);
    jw_key(&w, "x");
    jw_num(&w, 0.25);
    jw_key(&w, "nan");
    jw_num(&w, NAN);
    jw_key(&w, "raw");
    jw_json(&w, "{\"k\": [1, 2]}");
    jw_end(&w);
    CHECK(!w.oom);
    CHECK(!strcmp(w.p, "{\"a\":-42,\"list\":[1,{},[],null,true],\"x\":0.25,"
                       "\"nan\":null,\"raw\":{\"k\": [1, 2]}}"));
    struct json_doc *d = parse(&w);
    CHECK(d != NULL);
    if (d) {
        const struct json *r = json_root(d);
        int64_t v;
        CHECK(json_int(json_get(r, "a"), &v) == 0 && v == -42);
        CHECK(json_get(r, "list")->len == 5);
        json_doc_free(d);
    }
    jw_free(&w);
}

static void test_strings(void)
{
    /* quotes, backslash, control bytes, DEL, valid multi-byte UTF-8, and
     * bytes that are not UTF-8 (lone continuation, truncated sequence,
     * overlong, surrogate) */
    static const char in[] = "q\"b\\n\n\t\x01\x7f"
                             "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                             "|\x80|\xe2\x82|\xc0\xaf|\xed\xa0\x80|\xff";
    struct jw w;
    jw_init(&w);
    jw_arr(&w);
    jw_str(&w, in, sizeof in - 1);
    jw_cstr(&w, NULL);
    jw_str(&w, "a\0b", 3);
    jw_end(&w);
    CHECK(!w.oom);
    struct json_doc *d = parse(&w);
    CHECK(d != NULL);
    if (d) {
        const char *s = json_str(json_at(json_root(d), 0));
        static const char want[] = "q\"b\\n\n\t\x01\x7f"
                                   "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                                   "|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
                                   "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd"
                                   "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd";
        CHECK(s && !strcmp(s, want));
        if (s && strcmp(s, want))
            fprintf(stderr, "got: %s\n", s);
        CHECK(json_at(json_root(d), 1)->type == JSON_NULL);
        const struct json *z = json_at(json_root(d), 2);
        CHECK(z->len == 3 && !memcmp(z->u.str, "a\0b", 3));
        json_doc_free(d);
    }
    jw_free(&w);
}

int main(void)
{
    test_structure();
    test_strings();
    if (fails)
        fprintf(stderr, "%d checks failed\n", fails);
    else
        printf("test_http_json: ok\n");
    return fails != 0;
}
