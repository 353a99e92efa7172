/*
 * conn.c - one client connection (loop thread): bytes in -> frames
 * (frame.c, bounded) -> requests (proto.c) -> methods.c; replies out
 * through a bufferevent whose unsent bytes are capped (--max-outbuf: a
 * reader that never reads is dropped instead of growing the daemon).
 *
 * A protocol error (not msgpack, not msgpack-rpc, over --max-frame) gets
 * one "error" notification, then the connection is closed once it is
 * flushed. A disconnect cancels the connection's generations; their
 * sessions stay.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "http.h"
#include "srv.h"
#include "srv_log.h"

#define CONN_READ_CHUNK 65536
#define CONN_FRAMES_PER_EVENT 64 /* then yield to other connections */

/* Closes the socket and takes c out of the server's list; the struct
 * itself is freed at once, or (drop = 1, when a caller up the stack may
 * still hold c) by the reaper event on the next loop iteration. */
static void conn_release(struct conn *c, int drop)
{
    struct srv *s = c->srv;
    methods_conn_gone(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->n_conns--;
    bufferevent_free(c->bev);
    c->bev = NULL;
    frame_dec_free(&c->dec);
    SRV_LOG(SLOG_DEBUG, "conn=%llu closed", (unsigned long long)c->id);
    if (drop) {
        c->next = s->dead_conns;
        s->dead_conns = c;
        event_active(s->ev_reap, EV_TIMEOUT, 0);
    } else {
        free(c);
    }
    if (s->shutting_down == 2 && !s->conns && !http_flushing(s))
        event_base_loopbreak(s->base);
}

static void conn_free(struct conn *c)
{
    conn_release(c, 0);
}

void conn_reap(struct srv *s)
{
    while (s->dead_conns) {
        struct conn *c = s->dead_conns;
        s->dead_conns = c->next;
        free(c);
    }
}

void conn_close(struct conn *c, int flush)
{
    if (flush && evbuffer_get_length(bufferevent_get_output(c->bev))) {
        c->closing = 1; /* freed by the write callback once flushed */
        bufferevent_disable(c->bev, EV_READ);
        methods_conn_gone(c);
        return;
    }
    conn_free(c);
}

void conn_send(struct conn *c, const char *p, size_t n)
{
    if (c->closing == 2)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) + n > c->srv->cfg.max_outbuf) {
        /* the client does not read: drop it (freed from the event loop,
         * the caller may still be using c) */
        SRV_LOG(SLOG_WARN, "conn=%llu: over --max-outbuf (%zu bytes "
                "unsent): closing it", (unsigned long long)c->id,
                evbuffer_get_length(out));
        c->closing = 2;
        conn_release(c, 1);
        return;
    }
    evbuffer_add(out, p, n);
}

/* One frame: decode, validate, dispatch. 0, or -1 when the connection
 * must close. */
static int conn_frame(struct conn *c, const char *p, size_t n)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int ur = msgpack_unpack_next(&u, p, n, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != n) {
        msgpack_unpacked_destroy(&u);
        reply_protocol_error(c, "not a msgpack object");
        return -1;
    }
    struct srv_req r;
    struct srv_error e;
    struct proto_limits lim = {
        .vocab_size = mtpd_model_config(c->srv->model)->vocab_size,
        .max_ids = mtpd_model_config(c->srv->model)->max_position_embeddings,
    };
    int rc = proto_parse(&u.data, &lim, &r, &e);
    msgpack_unpacked_destroy(&u);
    if (rc == -2) {
        srv_req_free(&r);
        reply_protocol_error(c, e.msg);
        return -1;
    }
    if (r.is_notification) { /* no client notifications are defined */
        SRV_LOG(SLOG_DEBUG, "conn=%llu: notification ignored",
                (unsigned long long)c->id);
        srv_req_free(&r);
        return 0;
    }
    if (c->need_auth && (rc < 0 || r.method != SRV_M_HELLO)) {
        struct srv_error ue = {.code = SRV_E_UNAUTHORIZED};
        snprintf(ue.msg, sizeof ue.msg, "send hello with the token first");
        reply_error(c, r.msgid, &ue);
        srv_req_free(&r);
        return -1;
    }
    if (rc < 0) {
        reply_error(c, r.msgid, &e);
        srv_req_free(&r);
        return 0;
    }
    c->srv->requests++;
    methods_dispatch(c, &r); /* may set c->closing */
    srv_req_free(&r);
    return c->closing ? -1 : 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char chunk[CONN_READ_CHUNK];
    int frames = 0;
    while (!c->closing) {
        const char *f;
        size_t n;
        int st = frame_dec_next(&c->dec, &f, &n);
        if (st == FRAME_READY) {
            if (conn_frame(c, f, n) < 0) {
                if (c->closing != 2)
                    conn_close(c, 1);
                return;
            }
            if (++frames == CONN_FRAMES_PER_EVENT) {
                /* come back after the other connections had a turn */
                bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS |
                                    BEV_TRIG_DEFER_CALLBACKS);
                return;
            }
            continue;
        }
        if (st < 0) {
            SRV_LOG(SLOG_WARN, "conn=%llu: protocol error: %s",
                    (unsigned long long)c->id, frame_status_str(st));
            reply_protocol_error(c, frame_status_str(st));
            if (c->closing != 2)
                conn_close(c, 1);
            return;
        }
        int got = evbuffer_remove(in, chunk, sizeof chunk);
        if (got <= 0)
            return;
        if (frame_dec_feed(&c->dec, chunk, (size_t)got) < 0) {
            reply_protocol_error(c, "out of memory");
            conn_close(c, 1);
            return;
        }
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->closing && !evbuffer_get_length(bufferevent_get_output(bev)))
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(c);
}

void conn_new(struct srv *s, int fd, int need_auth)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->id = ++s->next_conn_id;
    c->need_auth = need_auth;
    frame_dec_init(&c->dec, s->cfg.max_frame);
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    SRV_LOG(SLOG_DEBUG, "conn=%llu open", (unsigned long long)c->id);
}
