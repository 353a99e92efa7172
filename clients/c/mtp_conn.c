/*
 * mtp_conn.c - connecting, the request/response loop and cancel.
 *
 * The stream is msgpack objects back to back (docs/protocol.md). A call
 * writes one request and reads frames until the response with its msgid:
 * generate.chunk notifications for it go to the callback, responses to
 * other msgids (our own cancel requests) are dropped, an `error`
 * notification means the daemon is closing the connection.
 */
#include "mtp_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK 65536

int mtp_fail(mtp_client *c, int status, const char *fmt, ...)
{
    struct mtp_error *e = &c->err;
    memset(e, 0, sizeof *e);
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", mtp_status_str(status));
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
    } else {
        snprintf(e->message, sizeof e->message, "%s", e->code);
    }
    if (status == MTP_E_IO || status == MTP_E_BAD_REPLY ||
        status == MTP_E_PROTOCOL || status == MTP_E_TIMEOUT)
        c->broken = true;
    return status;
}

int mtp_fail_remote(mtp_client *c, const msgpack_object *o)
{
    struct mtp_error *e = &c->err;
    memset(e, 0, sizeof *e);
    const msgpack_object *code = mtp_map_get(o, "code");
    if (!code || code->type != MSGPACK_OBJECT_STR) {
        /* not the documented shape: keep whatever text there is */
        char *j = mtp_to_json(o);
        mtp_fail(c, MTP_E_SERVER_OTHER, "daemon error: %s", j ? j : "?");
        free(j);
        return c->err.status;
    }
    e->status = mtp_status_from_code(code->via.str.ptr, code->via.str.size);
    mtp_obj_strcpy(code, e->code, sizeof e->code);
    if (!mtp_obj_strcpy(mtp_map_get(o, "message"), e->message,
                        sizeof e->message))
        snprintf(e->message, sizeof e->message, "%s", e->code);
    mtp_obj_strcpy(mtp_map_get(o, "field"), e->field, sizeof e->field);
    mtp_obj_strcpy(mtp_map_get(o, "limit"), e->limit, sizeof e->limit);
    if (e->status == MTP_E_PROTOCOL || e->status == MTP_E_UNAUTHORIZED)
        c->broken = true; /* the daemon closes the connection */
    return e->status;
}

const struct mtp_error *mtp_client_error(const mtp_client *c)
{
    return &c->err;
}

const msgpack_object *mtp_client_last_result(const mtp_client *c)
{
    return c->last_result;
}

void mtp_client_set_timeout(mtp_client *c, int ms)
{
    c->timeout_ms = ms > 0 ? ms : 0;
}

void mtp_client_set_max_frame(mtp_client *c, size_t bytes)
{
    c->max_frame = bytes;
}

int mtp_default_address(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
        return snprintf(buf, len, "unix:%s/mtpd/mtpd.sock", xdg);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    return snprintf(buf, len, "unix:%s/mtpd-%u/mtpd.sock", tmp,
                    (unsigned)getuid());
}

mtp_client *mtp_client_from_fd(int fd)
{
    mtp_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (!msgpack_unpacker_init(&c->up, READ_CHUNK)) {
        free(c);
        return NULL;
    }
    msgpack_unpacked_init(&c->frame);
    pthread_mutex_init(&c->lock, NULL);
    c->fd = fd;
    c->max_frame = 64u << 20;
    c->next_msgid = 1;
    return c;
}

void mtp_client_free(mtp_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    msgpack_unpacked_destroy(&c->frame);
    msgpack_unpacker_destroy(&c->up);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Connects to a unix socket path; returns the fd or -1 (errno set). */
static int connect_unix(const char *path, int *status)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof sa.sun_path) {
        *status = MTP_E_ADDRESS;
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        *status = MTP_E_CONNECT;
        return -1;
    }
    return fd;
}

/* "HOST:PORT" or "[V6]:PORT". */
static int connect_tcp(const char *hp, int *status, char *why, size_t wlen)
{
    char host[256];
    const char *colon = strrchr(hp, ':');
    const char *h = hp;
    size_t hl = colon ? (size_t)(colon - hp) : 0;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (!colon || !colon[1] || hl == 0 || hl >= sizeof host) {
        *status = MTP_E_ADDRESS;
        snprintf(why, wlen, "expected tcp:HOST:PORT");
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc) {
        *status = MTP_E_CONNECT;
        snprintf(why, wlen, "%s", gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = ECONNREFUSED;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                    a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        *status = MTP_E_CONNECT;
        snprintf(why, wlen, "%s", strerror(err));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

mtp_client *mtp_client_connect(const char *address, const char *token,
                               int *status, struct mtp_error *err)
{
    char defbuf[512], why[256] = "";
    int st = MTP_OK, fd = -1;
    bool err_set = false;
    if (!address || !*address) {
        mtp_default_address(defbuf, sizeof defbuf);
        address = defbuf;
    }
    if (!strncmp(address, "unix:", 5) || address[0] == '/' ||
        address[0] == '.') {
        const char *path = address[0] == 'u' ? address + 5 : address;
        fd = connect_unix(path, &st);
        if (fd < 0)
            snprintf(why, sizeof why, "%s", strerror(errno));
    } else if (!strncmp(address, "tcp:", 4)) {
        fd = connect_tcp(address + 4, &st, why, sizeof why);
    } else {
        st = MTP_E_ADDRESS;
        snprintf(why, sizeof why, "expected unix:PATH or tcp:HOST:PORT");
    }
    mtp_client *c = NULL;
    if (fd >= 0) {
        c = mtp_client_from_fd(fd);
        if (!c) {
            close(fd);
            st = MTP_E_NOMEM;
            snprintf(why, sizeof why, "out of memory");
        }
    }
    if (c && token) {
        st = mtp_hello(c, token, NULL);
        if (st < 0) {
            if (err)
                *err = c->err;
            err_set = true;
            mtp_client_free(c);
            c = NULL;
        }
    }
    if (!c && err && !err_set) {
        memset(err, 0, sizeof *err);
        err->status = st;
        snprintf(err->code, sizeof err->code, "%s", mtp_status_str(st));
        snprintf(err->message, sizeof err->message, "%.150s: %.100s", address,
                 why);
    }
    if (status)
        *status = c ? MTP_OK : st;
    return c;
}

/* Writes all of buf; caller holds c->lock. Returns 0 or an errno value
 * (EPIPE when the daemon closed); touches nothing else, so that cancel can
 * use it from another thread. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ENOTSOCK)
            n = write(fd, buf, len);
        if (n < 0)
            return errno;
        if (n == 0)
            return EPIPE;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Packs [0, msgid, method, [params]] into sb. */
static void pack_request(msgpack_sbuffer *sb, uint32_t msgid,
                         const char *method, const void *params,
                         size_t params_len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_uint32(&pk, msgid);
    mtp_pack_str(&pk, method);
    msgpack_pack_array(&pk, 1);
    if (params && params_len)
        msgpack_sbuffer_write(sb, params, params_len);
    else
        msgpack_pack_map(&pk, 0);
}

int mtp_client_cancel(mtp_client *c)
{
    int rc = MTP_OK;
    pthread_mutex_lock(&c->lock);
    if (c->has_inflight && !c->cancel_sent) {
        msgpack_sbuffer sb, ps;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_sbuffer_init(&ps);
        msgpack_packer_init(&pk, &ps, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        mtp_pack_str(&pk, "msgid");
        msgpack_pack_uint32(&pk, c->inflight);
        pack_request(&sb, c->next_msgid++, "cancel", ps.data, ps.size);
        c->cancel_sent = true;
        /* a failure here also shows up on the reading side */
        if (write_all(c->fd, sb.data, sb.size))
            rc = MTP_E_IO;
        msgpack_sbuffer_destroy(&sb);
        msgpack_sbuffer_destroy(&ps);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* Reads until one whole frame sits in c->frame. */
static int next_frame(mtp_client *c)
{
    for (;;) {
        /* bytes of the frame = parsed before + consumed by this call */
        size_t before = c->up.parsed, off = c->up.off;
        msgpack_unpack_return r = msgpack_unpacker_next(&c->up, &c->frame);
        if (r == MSGPACK_UNPACK_SUCCESS) {
            if (before + (c->up.off - off) > c->max_frame)
                return mtp_fail(c, MTP_E_BAD_REPLY, "frame over %zu bytes",
                                c->max_frame);
            return MTP_OK;
        }
        if (r == MSGPACK_UNPACK_PARSE_ERROR)
            return mtp_fail(c, MTP_E_BAD_REPLY, "the daemon sent bytes "
                            "that are not msgpack");
        if (r == MSGPACK_UNPACK_NOMEM_ERROR)
            return mtp_fail(c, MTP_E_NOMEM, "out of memory unpacking");
        if (msgpack_unpacker_message_size(&c->up) > c->max_frame)
            return mtp_fail(c, MTP_E_BAD_REPLY, "frame over %zu bytes",
                            c->max_frame);
        if (c->timeout_ms) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            int n;
            do
                n = poll(&pfd, 1, c->timeout_ms);
            while (n < 0 && errno == EINTR);
            if (n == 0)
                return mtp_fail(c, MTP_E_TIMEOUT, "no reply within %d ms",
                                c->timeout_ms);
        }
        if (!msgpack_unpacker_reserve_buffer(&c->up, READ_CHUNK))
            return mtp_fail(c, MTP_E_NOMEM, "out of memory reading");
        ssize_t n;
        do
            n = read(c->fd, msgpack_unpacker_buffer(&c->up), READ_CHUNK);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return mtp_fail(c, MTP_E_IO, "read: %s", strerror(errno));
        if (n == 0)
            return mtp_fail(c, MTP_E_IO, "the daemon closed the connection");
        msgpack_unpacker_buffer_consumed(&c->up, (size_t)n);
    }
}

/* Delivers one generate.chunk to cb (ids converted to int32). */
static int deliver_chunk(mtp_client *c, const msgpack_object *m,
                         mtp_chunk_fn cb, void *ud)
{
    const msgpack_object *text = mtp_map_get(m, "text");
    const msgpack_object *ids = mtp_map_get(m, "ids");
    const char *tp = "";
    size_t tl = 0;
    if (text && text->type == MSGPACK_OBJECT_STR) {
        tp = text->via.str.ptr;
        tl = text->via.str.size;
    }
    int32_t small[64], *iv = small;
    size_t n = 0;
    if (ids && ids->type == MSGPACK_OBJECT_ARRAY) {
        n = ids->via.array.size;
        if (n > 64 && !(iv = malloc(n * sizeof *iv)))
            return mtp_fail(c, MTP_E_NOMEM, NULL);
        for (size_t i = 0; i < n; i++) {
            int64_t v = 0;
            mtp_obj_int(&ids->via.array.ptr[i], &v);
            iv[i] = (int32_t)v;
        }
    }
    if (cb(ud, tp, tl, iv, n))
        mtp_client_cancel(c);
    if (iv != small)
        free(iv);
    return MTP_OK;
}

/* Handles a notification frame [2, method, params]. */
static int on_notification(mtp_client *c, const msgpack_object *f,
                           uint32_t msgid, mtp_chunk_fn cb, void *ud)
{
    const msgpack_object *method = &f->via.array.ptr[1];
    const msgpack_object *params = &f->via.array.ptr[2];
    const msgpack_object *arg = NULL;
    if (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size > 0)
        arg = &params->via.array.ptr[0];
    if (method->type != MSGPACK_OBJECT_STR)
        return mtp_fail(c, MTP_E_BAD_REPLY, "notification without method");
    const char *m = method->via.str.ptr;
    size_t ml = method->via.str.size;
    if (ml == 5 && !memcmp(m, "error", 5)) {
        if (arg && arg->type == MSGPACK_OBJECT_MAP) {
            mtp_fail_remote(c, arg);
            c->broken = true;
            return c->err.status < 0 ? c->err.status : MTP_E_PROTOCOL;
        }
        return mtp_fail(c, MTP_E_PROTOCOL, "the daemon closed the "
                        "connection with an error");
    }
    if (ml == 14 && !memcmp(m, "generate.chunk", 14) && arg) {
        int64_t id = -1;
        if (!mtp_obj_int(mtp_map_get(arg, "msgid"), &id))
            return mtp_fail(c, MTP_E_BAD_REPLY, "chunk without msgid");
        if (id == (int64_t)msgid && cb)
            return deliver_chunk(c, arg, cb, ud);
    }
    return MTP_OK; /* other notifications: not for us, ignored */
}

int mtp_client_call(mtp_client *c, const char *method, const void *params,
                    size_t params_len, mtp_chunk_fn cb, void *ud,
                    const msgpack_object **result)
{
    if (result)
        *result = NULL;
    if (!method)
        return mtp_fail(c, MTP_E_ARG, "no method");
    if (c->broken)
        return mtp_fail(c, MTP_E_IO, "the connection is closed after an "
                        "earlier failure");
    c->last_result = NULL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pthread_mutex_lock(&c->lock);
    uint32_t msgid = c->next_msgid++;
    pack_request(&sb, msgid, method, params, params_len);
    int werr = write_all(c->fd, sb.data, sb.size);
    int rc = werr ? MTP_E_IO : MTP_OK;
    if (rc == MTP_OK) {
        c->inflight = msgid;
        c->has_inflight = true;
        c->cancel_sent = false;
    }
    pthread_mutex_unlock(&c->lock);
    msgpack_sbuffer_destroy(&sb);
    if (werr)
        mtp_fail(c, MTP_E_IO, "write: %s", strerror(werr));

    while (rc == MTP_OK) {
        rc = next_frame(c);
        if (rc < 0)
            break;
        const msgpack_object *f = &c->frame.data;
        if (f->type != MSGPACK_OBJECT_ARRAY || f->via.array.size < 3) {
            rc = mtp_fail(c, MTP_E_BAD_REPLY, "a frame that is not an rpc "
                          "array");
            break;
        }
        const msgpack_object *a = f->via.array.ptr;
        int64_t kind = -1, id = -1;
        mtp_obj_int(&a[0], &kind);
        if (kind == 2 && f->via.array.size == 3) {
            rc = on_notification(c, f, msgid, cb, ud);
            continue;
        }
        if (kind != 1 || f->via.array.size != 4 || !mtp_obj_int(&a[1], &id)) {
            rc = mtp_fail(c, MTP_E_BAD_REPLY, "a frame that is neither a "
                          "response nor a notification");
            break;
        }
        if (id != (int64_t)msgid)
            continue; /* the reply to a cancel we sent */
        if (a[2].type != MSGPACK_OBJECT_NIL) {
            rc = mtp_fail_remote(c, &a[2]);
            break;
        }
        memset(&c->err, 0, sizeof c->err);
        c->last_result = &a[3];
        if (result)
            *result = &a[3];
        break;
    }
    pthread_mutex_lock(&c->lock);
    c->has_inflight = false;
    pthread_mutex_unlock(&c->lock);
    return rc;
}
