/* test_frame.c - the frame decoder (daemon/frame.c) and request
 * validation (daemon/proto.c) without a socket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "proto.h"

static int fails;
#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #c);                                                    \
            fails++;                                                        \
        }                                                                   \
    } while (0)

static size_t pack_request(char *buf, size_t cap, const char *method,
                           const char *key, int val)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, method, strlen(method));
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, key ? 2 : 1);
    msgpack_pack_str_with_body(&pk, "prompt", 6);
    msgpack_pack_str_with_body(&pk, "def f(", 6);
    if (key) {
        msgpack_pack_str_with_body(&pk, key, strlen(key));
        msgpack_pack_int(&pk, val);
    }
    size_t n = sb.size < cap ? sb.size : cap;
    memcpy(buf, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static int parse(const char *p, size_t n, struct srv_req *r,
                 struct srv_error *e)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, p, n, &off) != MSGPACK_UNPACK_SUCCESS)
        return -3;
    struct proto_limits lim = {.vocab_size = 100, .max_ids = 50};
    int rc = proto_parse(&u.data, &lim, r, e);
    msgpack_unpacked_destroy(&u);
    return rc;
}

int main(void)
{
    char buf[256];
    size_t n = pack_request(buf, sizeof buf, "generate", "max_tokens", 5);
    struct frame_dec d;
    const char *f;
    size_t fl;

    /* byte by byte, two frames back to back */
    frame_dec_init(&d, 1024);
    int ready = 0;
    for (int rep = 0; rep < 2; rep++)
        for (size_t i = 0; i < n; i++) {
            CHECK(frame_dec_feed(&d, buf + i, 1) == 0);
            int st = frame_dec_next(&d, &f, &fl);
            if (i + 1 < n)
                CHECK(st == FRAME_NEED_MORE);
            else if (st == FRAME_READY && fl == n && !memcmp(f, buf, n))
                ready++;
        }
    CHECK(ready == 2);
    frame_dec_free(&d);

    /* a str claiming 4 GiB: refused from its header */
    frame_dec_init(&d, 1024);
    const unsigned char big[] = {0x94, 0x00, 0x01, 0xdb, 0xff, 0xff, 0xff,
                                 0xff};
    frame_dec_feed(&d, big, sizeof big);
    CHECK(frame_dec_next(&d, &f, &fl) == FRAME_ERR_TOO_BIG);
    frame_dec_free(&d);
    /* an array claiming 2^32-1 elements */
    frame_dec_init(&d, 1 << 20);
    const unsigned char arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    frame_dec_feed(&d, arr, sizeof arr);
    CHECK(frame_dec_next(&d, &f, &fl) == FRAME_ERR_TOO_BIG);
    frame_dec_free(&d);
    /* not an array; the reserved byte */
    frame_dec_init(&d, 1024);
    frame_dec_feed(&d, "GET / HTTP/1.0\r\n", 16);
    CHECK(frame_dec_next(&d, &f, &fl) == FRAME_ERR_BAD);
    frame_dec_free(&d);
    frame_dec_init(&d, 1024);
    const unsigned char res[] = {0x91, 0xc1};
    frame_dec_feed(&d, res, sizeof res);
    CHECK(frame_dec_next(&d, &f, &fl) == FRAME_ERR_BAD);
    frame_dec_free(&d);
    /* nesting */
    frame_dec_init(&d, 1024);
    unsigned char deep[40];
    memset(deep, 0x91, sizeof deep);
    frame_dec_feed(&d, deep, sizeof deep);
    CHECK(frame_dec_next(&d, &f, &fl) == FRAME_ERR_DEPTH);
    frame_dec_free(&d);

    /* validation */
    struct srv_req r;
    struct srv_error e;
    CHECK(parse(buf, n, &r, &e) == 0);
    CHECK(r.method == SRV_M_GENERATE && r.msgid == 7 && r.max_tokens == 5);
    CHECK(r.prompt == SRV_PROMPT_TEXT && !strcmp(r.text, "def f("));
    srv_req_free(&r);
    n = pack_request(buf, sizeof buf, "generate", "max_tokens", 0);
    CHECK(parse(buf, n, &r, &e) == -1);
    CHECK(e.code == SRV_E_BAD_PARAMS && !strcmp(e.field, "max_tokens"));
    srv_req_free(&r);
    n = pack_request(buf, sizeof buf, "generate", "max_tokens", 51);
    CHECK(parse(buf, n, &r, &e) == -1);
    CHECK(e.code == SRV_E_OVER_LIMIT && !strcmp(e.limit, "max_tokens"));
    srv_req_free(&r);
    n = pack_request(buf, sizeof buf, "generate", "stream", 1);
    CHECK(parse(buf, n, &r, &e) == -1 && !strcmp(e.field, "stream"));
    srv_req_free(&r);
    n = pack_request(buf, sizeof buf, "nope", NULL, 0);
    CHECK(parse(buf, n, &r, &e) == -1 && e.code == SRV_E_UNKNOWN_METHOD);
    CHECK(r.msgid == 7);
    srv_req_free(&r);
    const unsigned char notrpc[] = {0x93, 0x05, 0x01, 0x02};
    CHECK(parse((const char *)notrpc, sizeof notrpc, &r, &e) == -2);
    srv_req_free(&r);

    if (fails)
        fprintf(stderr, "%d checks failed\n", fails);
    else
        printf("frame: all checks passed\n");
    return fails != 0;
}
