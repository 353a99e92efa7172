/*
 * fuzz_proto.c - libFuzzer target: the daemon's frame decoder
 * (daemon/frame.c) and request validation (daemon/proto.c) on arbitrary
 * bytes, fed in pieces as a socket would deliver them.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Idaemon -Iinclude/mtpd -Ispec \
 *     -Imodel tests/fuzz/fuzz_proto.c daemon/frame.c daemon/proto.c \
 *     $(pkg-config --cflags --libs msgpack) -o build/fuzz_proto
 *   build/fuzz_proto -max_total_time=20 tests/fuzz/corpus
 * (tools/test.sh does this.)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "frame.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct frame_dec d;
    /* a small frame limit so the limits are reached too */
    frame_dec_init(&d, 4096);
    struct proto_limits lim = {.vocab_size = 8192, .max_ids = 4096};
    size_t at = 0;
    /* the first byte picks the piece size: 1..256 bytes per read */
    size_t piece = size ? (size_t)data[0] + 1 : 1;
    while (at < size) {
        size_t n = size - at < piece ? size - at : piece;
        if (frame_dec_feed(&d, data + at, n) < 0)
            break;
        at += n;
        const char *f;
        size_t fl;
        int st;
        while ((st = frame_dec_next(&d, &f, &fl)) == FRAME_READY) {
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            if (msgpack_unpack_next(&u, f, fl, &off) ==
                MSGPACK_UNPACK_SUCCESS) {
                struct srv_req r;
                struct srv_error e;
                proto_parse(&u.data, &lim, &r, &e);
                srv_req_free(&r);
            }
            msgpack_unpacked_destroy(&u);
        }
        if (st < 0)
            break;
    }
    frame_dec_free(&d);
    return 0;
}
