/*
 * test_mtp_client.c - libmtp_client's frame handling against a fake daemon
 * on a socketpair: requests as docs/protocol.md shapes them, replies split
 * into single bytes, chunks for other msgids, error values with their
 * codes, cancel from the chunk callback and from another thread, protocol
 * errors, garbage and oversized frames, hang-ups.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../../tests/unit/unit_test.h"
#include "mtp_client.h"

/* ---- the fake daemon ------------------------------------------------------ */

struct fake {
    int fd;
    msgpack_unpacker up;
    msgpack_unpacked req;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    bool bytewise; /* send replies one byte per write */
};

static void fake_init(struct fake *f, int fd)
{
    memset(f, 0, sizeof *f);
    f->fd = fd;
    msgpack_unpacker_init(&f->up, 4096);
    msgpack_unpacked_init(&f->req);
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
}

static void fake_free(struct fake *f)
{
    msgpack_unpacked_destroy(&f->req);
    msgpack_unpacker_destroy(&f->up);
    msgpack_sbuffer_destroy(&f->sb);
    if (f->fd >= 0)
        close(f->fd);
}

/* Reads one request; returns its params map (NULL on EOF or bad shape)
 * and its msgid and method. */
static const msgpack_object *fake_read(struct fake *f, uint32_t *msgid,
                                       char *method, size_t mlen)
{
    while (msgpack_unpacker_next(&f->up, &f->req) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacker_reserve_buffer(&f->up, 4096);
        ssize_t n = read(f->fd, msgpack_unpacker_buffer(&f->up), 4096);
        if (n <= 0)
            return NULL;
        msgpack_unpacker_buffer_consumed(&f->up, (size_t)n);
    }
    const msgpack_object *o = &f->req.data;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
        return NULL;
    const msgpack_object *a = o->via.array.ptr;
    if (a[0].via.u64 != 0 || a[2].type != MSGPACK_OBJECT_STR ||
        a[3].type != MSGPACK_OBJECT_ARRAY || a[3].via.array.size != 1)
        return NULL;
    *msgid = (uint32_t)a[1].via.u64;
    size_t n = a[2].via.str.size < mlen - 1 ? a[2].via.str.size : mlen - 1;
    memcpy(method, a[2].via.str.ptr, n);
    method[n] = 0;
    return &a[3].via.array.ptr[0];
}

static void fake_flush(struct fake *f)
{
    size_t step = f->bytewise ? 1 : f->sb.size;
    for (size_t at = 0; at < f->sb.size; at += step)
        if (write(f->fd, f->sb.data + at,
                  at + step <= f->sb.size ? step : f->sb.size - at) < 0)
            break;
    msgpack_sbuffer_clear(&f->sb);
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* [1, msgid, nil, <caller packs the result>] */
static void fake_ok_begin(struct fake *f, uint32_t msgid)
{
    msgpack_pack_array(&f->pk, 4);
    msgpack_pack_int(&f->pk, 1);
    msgpack_pack_uint32(&f->pk, msgid);
    msgpack_pack_nil(&f->pk);
}

static void fake_error(struct fake *f, uint32_t msgid, const char *code,
                       const char *msg, const char *xkey, const char *xval)
{
    msgpack_pack_array(&f->pk, 4);
    msgpack_pack_int(&f->pk, 1);
    msgpack_pack_uint32(&f->pk, msgid);
    msgpack_pack_map(&f->pk, xkey ? 3 : 2);
    pk_str(&f->pk, "code");
    pk_str(&f->pk, code);
    pk_str(&f->pk, "message");
    pk_str(&f->pk, msg);
    if (xkey) {
        pk_str(&f->pk, xkey);
        pk_str(&f->pk, xval);
    }
    msgpack_pack_nil(&f->pk);
    fake_flush(f);
}

static void fake_chunk(struct fake *f, uint32_t msgid, const char *text,
                       const int *ids, int n)
{
    msgpack_pack_array(&f->pk, 3);
    msgpack_pack_int(&f->pk, 2);
    pk_str(&f->pk, "generate.chunk");
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_map(&f->pk, 3);
    pk_str(&f->pk, "msgid");
    msgpack_pack_uint32(&f->pk, msgid);
    pk_str(&f->pk, "text");
    pk_str(&f->pk, text);
    pk_str(&f->pk, "ids");
    msgpack_pack_array(&f->pk, (size_t)n);
    for (int i = 0; i < n; i++)
        msgpack_pack_int(&f->pk, ids[i]);
    fake_flush(f);
}

/* A generate result {ids, text, finish_reason, stats}. */
static void fake_gen_result(struct fake *f, uint32_t msgid, const char *text,
                            const int *ids, int n, const char *finish)
{
    fake_ok_begin(f, msgid);
    msgpack_pack_map(&f->pk, 4);
    pk_str(&f->pk, "ids");
    msgpack_pack_array(&f->pk, (size_t)n);
    for (int i = 0; i < n; i++)
        msgpack_pack_int(&f->pk, ids[i]);
    pk_str(&f->pk, "text");
    pk_str(&f->pk, text);
    pk_str(&f->pk, "finish_reason");
    pk_str(&f->pk, finish);
    pk_str(&f->pk, "stats");
    msgpack_pack_map(&f->pk, 5);
    pk_str(&f->pk, "generated_tokens");
    msgpack_pack_int(&f->pk, n);
    pk_str(&f->pk, "acceptance_by_position");
    msgpack_pack_array(&f->pk, 2);
    msgpack_pack_double(&f->pk, 0.75);
    msgpack_pack_double(&f->pk, 0.5);
    pk_str(&f->pk, "k_histogram");
    msgpack_pack_array(&f->pk, 3);
    msgpack_pack_int(&f->pk, 1);
    msgpack_pack_int(&f->pk, 0);
    msgpack_pack_int(&f->pk, 4);
    pk_str(&f->pk, "prompt_tokens_reused");
    msgpack_pack_int(&f->pk, 7);
    pk_str(&f->pk, "decode_seconds");
    msgpack_pack_float(&f->pk, 0.25f);
    fake_flush(f);
}

/* A test: the fake daemon's script runs on its own thread. */
typedef void (*script_fn)(struct fake *f, void *arg);
struct running {
    pthread_t th;
    struct fake f;
    script_fn fn;
    void *arg;
};

static void *script_main(void *p)
{
    struct running *r = p;
    r->fn(&r->f, r->arg);
    fake_free(&r->f);
    return NULL;
}

static mtp_client *start(struct running *r, script_fn fn, void *arg,
                         bool bytewise)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return NULL;
    fake_init(&r->f, sv[1]);
    r->f.bytewise = bytewise;
    r->fn = fn;
    r->arg = arg;
    pthread_create(&r->th, NULL, script_main, r);
    return mtp_client_from_fd(sv[0]);
}

static void finish(struct running *r, mtp_client *c)
{
    mtp_client_free(c); /* closes our end: a script waiting reads EOF */
    pthread_join(r->th, NULL);
}

/* ---- scripts and tests ------------------------------------------------------- */

static const msgpack_object *field(const msgpack_object *m, const char *k)
{
    return mtp_map_get(m, k);
}

static void script_tokenize(struct fake *f, void *arg)
{
    char method[32];
    uint32_t id;
    const msgpack_object *p = fake_read(f, &id, method, sizeof method);
    const msgpack_object *t = field(p, "text");
    const msgpack_object *as = field(p, "add_special");
    bool ok = p && !strcmp(method, "tokenize") && t &&
              t->via.str.size == 5 && !memcmp(t->via.str.ptr, "hello", 5) &&
              as && as->type == MSGPACK_OBJECT_BOOLEAN && !as->via.boolean;
    if (!ok) {
        fake_error(f, id, "bad_params", "fake: unexpected request", NULL,
                   NULL);
        return;
    }
    fake_ok_begin(f, id);
    msgpack_pack_map(&f->pk, 1);
    pk_str(&f->pk, "ids");
    msgpack_pack_array(&f->pk, 3);
    msgpack_pack_int(&f->pk, 0);
    msgpack_pack_int(&f->pk, 70000);
    msgpack_pack_int(&f->pk, 5);
    fake_flush(f);
}

static enum test_return test_tokenize_bytewise(void)
{
    struct running r;
    mtp_client *c = start(&r, script_tokenize, NULL, true);
    CHECK(c, "client");
    int32_t *ids;
    size_t n;
    int rc = mtp_tokenize(c, "hello", 0, &ids, &n);
    CHECK(rc == MTP_OK, "rc %d: %s", rc, mtp_client_error(c)->message);
    CHECK(n == 3 && ids[0] == 0 && ids[1] == 70000 && ids[2] == 5,
          "ids n=%zu", n);
    free(ids);
    finish(&r, c);
    return TEST_PASS;
}

struct gen_seen {
    char text[256];
    int ids[64];
    int n_ids, chunks;
    int cancel_after; /* return nonzero from the callback at this chunk */
};

static int on_chunk(void *ud, const char *text, size_t len,
                    const int32_t *ids, size_t n)
{
    struct gen_seen *s = ud;
    strncat(s->text, text, len);
    for (size_t i = 0; i < n && s->n_ids < 64; i++)
        s->ids[s->n_ids++] = ids[i];
    s->chunks++;
    return s->cancel_after && s->chunks == s->cancel_after;
}

static void script_generate(struct fake *f, void *arg)
{
    char method[32];
    uint32_t id;
    const msgpack_object *p = fake_read(f, &id, method, sizeof method);
    const msgpack_object *dt = field(p, "draft_tokens");
    const msgpack_object *st = field(p, "stream");
    const msgpack_object *stop = field(p, "stop");
    const msgpack_object *mt = field(p, "max_tokens");
    bool ok = p && !strcmp(method, "generate") && field(p, "prompt") &&
              dt && dt->type == MSGPACK_OBJECT_STR &&
              dt->via.str.size == 4 && st &&
              st->type == MSGPACK_OBJECT_BOOLEAN && st->via.boolean &&
              stop && stop->type == MSGPACK_OBJECT_ARRAY &&
              stop->via.array.size == 2 && mt && mt->via.u64 == 9 &&
              !field(p, "temperature") && !field(p, "session") &&
              field(p, "seed") && p->via.map.size == 6;
    if (!ok) {
        fake_error(f, id, "bad_params", "fake: unexpected request", NULL,
                   NULL);
        return;
    }
    int a[] = {10, 11}, b[] = {12}, x[] = {99};
    fake_chunk(f, id + 100, "other", x, 1); /* not ours */
    fake_chunk(f, id, "he", a, 2);
    /* an unrelated notification, then a response to another msgid */
    msgpack_pack_array(&f->pk, 3);
    msgpack_pack_int(&f->pk, 2);
    pk_str(&f->pk, "log");
    msgpack_pack_array(&f->pk, 0);
    fake_ok_begin(f, id + 7);
    msgpack_pack_map(&f->pk, 0);
    fake_flush(f);
    fake_chunk(f, id, "llo", b, 1);
    int all[] = {10, 11, 12};
    fake_gen_result(f, id, "hello", all, 3, "length");
}

static enum test_return test_generate_stream(void)
{
    struct running r;
    mtp_client *c = start(&r, script_generate, NULL, true);
    struct mtp_gen_params p;
    mtp_gen_params_init(&p);
    const char *stops[] = {"\n\n", "END"};
    p.prompt = "say hello";
    p.draft_tokens = MTP_DRAFT_AUTO;
    p.max_tokens = 9;
    p.stop = stops;
    p.n_stop = 2;
    p.seed = 3;
    p.has_seed = true;
    struct gen_seen s = {0};
    struct mtp_result res;
    int rc = mtp_generate(c, &p, on_chunk, &s, &res);
    CHECK(rc == MTP_OK, "rc %d: %s", rc, mtp_client_error(c)->message);
    CHECK(!strcmp(s.text, "hello") && s.chunks == 2, "streamed '%s' in %d",
          s.text, s.chunks);
    CHECK(s.n_ids == 3 && s.ids[2] == 12, "streamed ids %d", s.n_ids);
    CHECK(!strcmp(res.text, "hello") && res.n_ids == 3 && res.ids[0] == 10,
          "result '%s'", res.text);
    CHECK(!strcmp(res.finish_reason, "length"), "finish %s",
          res.finish_reason);
    CHECK(res.stats.generated_tokens == 3 && res.stats.n_positions == 2 &&
              res.stats.acceptance_by_position[0] == 0.75 &&
              res.stats.n_k_histogram == 3 && res.stats.k_histogram[2] == 4 &&
              res.stats.prompt_tokens_reused == 7 &&
              res.stats.decode_seconds == 0.25,
          "stats");
    mtp_result_free(&res);
    finish(&r, c);
    return TEST_PASS;
}

static void script_errors(struct fake *f, void *arg)
{
    char method[32];
    uint32_t id;
    if (!fake_read(f, &id, method, sizeof method))
        return;
    fake_error(f, id, "unknown_session", "no session abc", NULL, NULL);
    if (!fake_read(f, &id, method, sizeof method))
        return;
    fake_error(f, id, "over_limit", "max_tokens over 4096", "limit",
               "max_tokens");
    if (!fake_read(f, &id, method, sizeof method))
        return;
    fake_error(f, id, "bad_params", "temperature: expected a float >= 0",
               "field", "temperature");
    if (!fake_read(f, &id, method, sizeof method))
        return;
    fake_error(f, id, "brand_new", "a code from a newer daemon", NULL, NULL);
    if (!fake_read(f, &id, method, sizeof method))
        return;
    fake_ok_begin(f, id); /* session.close then works */
    msgpack_pack_map(&f->pk, 1);
    pk_str(&f->pk, "closed");
    msgpack_pack_true(&f->pk);
    fake_flush(f);
}

static enum test_return test_errors(void)
{
    struct running r;
    mtp_client *c = start(&r, script_errors, NULL, false);
    struct mtp_session_info info;
    int rc = mtp_session_info(c, "abc", &info);
    const struct mtp_error *e = mtp_client_error(c);
    CHECK(rc == MTP_E_UNKNOWN_SESSION && e->status == rc &&
              !strcmp(e->code, "unknown_session") &&
              !strcmp(e->message, "no session abc"),
          "rc %d code %s msg %s", rc, e->code, e->message);
    rc = mtp_session_close(c, "abc");
    CHECK(rc == MTP_E_OVER_LIMIT && !strcmp(e->limit, "max_tokens"),
          "rc %d limit %s", rc, e->limit);
    rc = mtp_session_close(c, "abc");
    CHECK(rc == MTP_E_BAD_PARAMS && !strcmp(e->field, "temperature") &&
              !e->limit[0],
          "rc %d field %s", rc, e->field);
    rc = mtp_session_close(c, "abc");
    CHECK(rc == MTP_E_SERVER_OTHER && !strcmp(e->code, "brand_new"),
          "rc %d code %s", rc, e->code);
    rc = mtp_session_close(c, "abc"); /* the connection still works */
    CHECK(rc == MTP_OK && e->status == MTP_OK, "rc %d", rc);
    CHECK(!strcmp(mtp_status_str(MTP_E_KV_BUDGET), "kv_budget") &&
              mtp_status_from_code("busy", 4) == MTP_E_BUSY &&
              mtp_status_from_code("io", 2) == MTP_E_SERVER_OTHER,
          "status names");
    finish(&r, c);
    return TEST_PASS;
}

/* The client cancels: the fake checks it gets `cancel` naming the running
 * request, answers it, then ends the generation as the daemon does. */
static void script_cancel(struct fake *f, void *arg)
{
    int *wait_pipe = arg; /* when set: tell the test the request arrived */
    char method[32];
    uint32_t id, cid;
    if (!fake_read(f, &id, method, sizeof method))
        return;
    int a[] = {1};
    if (wait_pipe) {
        if (write(wait_pipe[1], "x", 1) < 0)
            return;
    } else {
        fake_chunk(f, id, "a", a, 1);
    }
    const msgpack_object *p = fake_read(f, &cid, method, sizeof method);
    const msgpack_object *m = field(p, "msgid");
    if (!p || strcmp(method, "cancel") || !m || m->via.u64 != id) {
        fake_error(f, id, "internal", "fake: expected cancel", NULL, NULL);
        return;
    }
    fake_ok_begin(f, cid);
    msgpack_pack_map(&f->pk, 1);
    pk_str(&f->pk, "cancelled");
    msgpack_pack_true(&f->pk);
    fake_flush(f);
    fake_gen_result(f, id, wait_pipe ? "" : "a", a, wait_pipe ? 0 : 1,
                    "cancelled");
}

static enum test_return test_cancel_from_callback(void)
{
    struct running r;
    mtp_client *c = start(&r, script_cancel, NULL, false);
    struct mtp_gen_params p;
    mtp_gen_params_init(&p);
    p.ids = (const int32_t[]){1, 2, 3};
    p.n_ids = 3;
    struct gen_seen s = {.cancel_after = 1};
    struct mtp_result res;
    int rc = mtp_generate(c, &p, on_chunk, &s, &res);
    CHECK(rc == MTP_OK, "rc %d: %s", rc, mtp_client_error(c)->message);
    CHECK(!strcmp(res.finish_reason, "cancelled"), "finish %s",
          res.finish_reason);
    mtp_result_free(&res);
    finish(&r, c);
    return TEST_PASS;
}

struct canceller {
    mtp_client *c;
    int fd;
};

static void *cancel_thread(void *p)
{
    struct canceller *k = p;
    char ch;
    if (read(k->fd, &ch, 1) == 1)
        mtp_client_cancel(k->c);
    return NULL;
}

static enum test_return test_cancel_from_thread(void)
{
    int pp[2];
    CHECK(pipe(pp) == 0, "pipe");
    struct running r;
    mtp_client *c = start(&r, script_cancel, pp, false);
    struct canceller k = {c, pp[0]};
    pthread_t th;
    pthread_create(&th, NULL, cancel_thread, &k);
    struct mtp_gen_params p;
    mtp_gen_params_init(&p);
    p.prompt = "x";
    struct mtp_result res;
    int rc = mtp_generate(c, &p, NULL, NULL, &res);
    pthread_join(th, NULL);
    close(pp[0]);
    close(pp[1]);
    CHECK(rc == MTP_OK, "rc %d: %s", rc, mtp_client_error(c)->message);
    CHECK(!strcmp(res.finish_reason, "cancelled") && res.n_ids == 0,
          "finish %s", res.finish_reason);
    mtp_result_free(&res);
    CHECK(mtp_client_cancel(c) == MTP_OK, "idle cancel is a no-op");
    finish(&r, c);
    return TEST_PASS;
}

static void script_protocol_error(struct fake *f, void *arg)
{
    char method[32];
    uint32_t id;
    if (!fake_read(f, &id, method, sizeof method))
        return;
    msgpack_pack_array(&f->pk, 3);
    msgpack_pack_int(&f->pk, 2);
    pk_str(&f->pk, "error");
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_map(&f->pk, 2);
    pk_str(&f->pk, "code");
    pk_str(&f->pk, "protocol");
    pk_str(&f->pk, "message");
    pk_str(&f->pk, "frame over 16 MiB");
    fake_flush(f);
}

static enum test_return test_protocol_error(void)
{
    struct running r;
    mtp_client *c = start(&r, script_protocol_error, NULL, false);
    int rc = mtp_server_stats(c, NULL, NULL);
    CHECK(rc == MTP_E_PROTOCOL &&
              !strcmp(mtp_client_error(c)->message, "frame over 16 MiB"),
          "rc %d %s", rc, mtp_client_error(c)->message);
    rc = mtp_server_stats(c, NULL, NULL);
    CHECK(rc == MTP_E_IO, "after a protocol error: rc %d", rc);
    finish(&r, c);
    return TEST_PASS;
}

static void script_raw(struct fake *f, void *arg)
{
    const char *what = arg;
    char method[32];
    uint32_t id;
    if (!fake_read(f, &id, method, sizeof method))
        return;
    if (!strcmp(what, "garbage")) {
        /* 0xc1 is never used in msgpack */
        if (write(f->fd, "\xc1\xc1\xc1\xc1", 4) < 0)
            return;
    } else if (!strcmp(what, "big")) {
        char big[2000];
        memset(big, 'x', sizeof big);
        msgpack_pack_array(&f->pk, 4);
        msgpack_pack_int(&f->pk, 1);
        msgpack_pack_uint32(&f->pk, id);
        msgpack_pack_nil(&f->pk);
        msgpack_pack_str(&f->pk, sizeof big);
        msgpack_pack_str_body(&f->pk, big, sizeof big);
        fake_flush(f);
    } else if (!strcmp(what, "notrpc")) {
        msgpack_pack_map(&f->pk, 0);
        fake_flush(f);
    } /* "hangup": close without a reply */
    shutdown(f->fd, SHUT_WR);
    char buf[64];
    while (read(f->fd, buf, sizeof buf) > 0) {
    }
}

static enum test_return test_bad_streams(void)
{
    static const struct {
        const char *what;
        int status;
    } cases[] = {{"garbage", MTP_E_BAD_REPLY},
                 {"big", MTP_E_BAD_REPLY},
                 {"notrpc", MTP_E_BAD_REPLY},
                 {"hangup", MTP_E_IO}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct running r;
        mtp_client *c = start(&r, script_raw, (void *)cases[i].what, false);
        mtp_client_set_max_frame(c, 1000);
        mtp_client_set_timeout(c, 10000);
        int rc = mtp_client_call(c, "stats", NULL, 0, NULL, NULL, NULL);
        CHECK(rc == cases[i].status, "%s: rc %d (%s)", cases[i].what, rc,
              mtp_client_error(c)->message);
        finish(&r, c);
    }
    return TEST_PASS;
}

static void script_silent(struct fake *f, void *arg)
{
    char method[32];
    uint32_t id;
    fake_read(f, &id, method, sizeof method);
    fake_read(f, &id, method, sizeof method); /* waits for EOF */
}

static enum test_return test_timeout(void)
{
    struct running r;
    mtp_client *c = start(&r, script_silent, NULL, false);
    mtp_client_set_timeout(c, 50);
    int rc = mtp_client_call(c, "stats", NULL, 0, NULL, NULL, NULL);
    CHECK(rc == MTP_E_TIMEOUT, "rc %d", rc);
    finish(&r, c);
    return TEST_PASS;
}

static enum test_return test_json(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "t\"x");
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "a\n\xc3\xa9\xff\x01", 6);
    pk_str(&pk, "n");
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, -3);
    msgpack_pack_double(&pk, 0.5);
    msgpack_pack_nil(&pk);
    msgpack_pack_false(&pk);
    pk_str(&pk, "u");
    msgpack_pack_uint64(&pk, 18446744073709551615ull);
    msgpack_pack_int(&pk, 7); /* a non-str key */
    msgpack_pack_map(&pk, 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    CHECK(msgpack_unpack_next(&u, sb.data, sb.size, NULL) ==
              MSGPACK_UNPACK_SUCCESS,
          "unpack");
    char *j = mtp_to_json(&u.data);
    const char *want = "{\"t\\\"x\": \"a\\n\xc3\xa9\\u00ff\\u0001\", "
                       "\"n\": [-3, 0.5, null, false], "
                       "\"u\": 18446744073709551615, \"7\": {}}";
    CHECK(j && !strcmp(j, want), "json %s", j ? j : "(null)");
    free(j);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    return TEST_PASS;
}

static enum test_return test_addresses(void)
{
    int st;
    struct mtp_error e;
    mtp_client *c = mtp_client_connect("http://x", NULL, &st, &e);
    CHECK(!c && st == MTP_E_ADDRESS && e.status == st, "st %d", st);
    c = mtp_client_connect("tcp:nohostport", NULL, &st, &e);
    CHECK(!c && st == MTP_E_ADDRESS, "st %d", st);
    c = mtp_client_connect("unix:/nonexistent/mtpd.sock", NULL, &st, &e);
    CHECK(!c && st == MTP_E_CONNECT &&
              strstr(e.message, "/nonexistent/mtpd.sock"),
          "st %d %s", st, e.message);
    char buf[256];
    setenv("XDG_RUNTIME_DIR", "/run/user/5", 1);
    mtp_default_address(buf, sizeof buf);
    CHECK(!strcmp(buf, "unix:/run/user/5/mtpd/mtpd.sock"), "%s", buf);
    unsetenv("XDG_RUNTIME_DIR");
    setenv("TMPDIR", "/tt", 1);
    mtp_default_address(buf, sizeof buf);
    char want[64];
    snprintf(want, sizeof want, "unix:/tt/mtpd-%u/mtpd.sock",
             (unsigned)getuid());
    CHECK(!strcmp(buf, want), "%s", buf);
    unsetenv("TMPDIR");
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"tokenize_bytewise", test_tokenize_bytewise},
        {"generate_stream", test_generate_stream},
        {"errors", test_errors},
        {"cancel_from_callback", test_cancel_from_callback},
        {"cancel_from_thread", test_cancel_from_thread},
        {"protocol_error", test_protocol_error},
        {"bad_streams", test_bad_streams},
        {"timeout", test_timeout},
        {"json", test_json},
        {"addresses", test_addresses},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
