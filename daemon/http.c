/*
 * http.c - `mtpd serve --http HOST:PORT`: libevent's evhttp on the loop
 * thread, next to the msgpack-rpc listeners (docs/http.md).
 *
 * Routing, the bearer token (required off loopback, the same token file
 * as TCP), the request limits (body size and read timeout: evhttp's own,
 * so a slowloris client is dropped after --http-timeout), /health,
 * errors in OpenAI's shape, and noticing clients that left while their
 * generation runs (evhttp reads nothing once a request is in, so a
 * 200 ms timer peeks at those sockets; a gone client cancels its job).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http_int.h"
#include "srv_log.h"

const int http_codes[HTTP_N_CODES] = {200, 400, 401, 404, 405, 409, 413,
                                      429, 500, 503};

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

void http_count(struct http_srv *h, enum http_path path, int status)
{
    int i = 0;
    while (i < HTTP_N_CODES - 1 && http_codes[i] != status)
        i++;
    if (http_codes[i] != status)
        i = 8; /* counted as 500 */
    h->responses[path][i]++;
}

void http_reply(struct http_srv *h, struct evhttp_request *req,
                enum http_path path, int status, const char *ctype,
                const char *body, size_t len)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Content-Type", ctype);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* the length of the body a GET gets, and no body */
        char cl[32];
        snprintf(cl, sizeof cl, "%zu", len);
        evhttp_add_header(oh, "Content-Length", cl);
        evhttp_send_reply(req, status, reason(status), NULL);
        http_count(h, path, status);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (b)
        evbuffer_add(b, body, len);
    evhttp_send_reply(req, status, reason(status), b);
    if (b)
        evbuffer_free(b);
    http_count(h, path, status);
}

static const char *error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 500: return "server_error";
    case 503: return "unavailable_error";
    default: return "invalid_request_error";
    }
}

void http_error(struct http_srv *h, struct evhttp_request *req,
                enum http_path path, int status, const char *param,
                const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "error");
    jw_obj(&w);
    jw_key(&w, "message");
    jw_cstr(&w, msg);
    jw_key(&w, "type");
    jw_cstr(&w, error_type(status));
    jw_key(&w, "param");
    jw_cstr(&w, param);
    jw_key(&w, "code");
    jw_cstr(&w, code);
    jw_end(&w);
    jw_end(&w);
    if (w.oom)
        http_reply(h, req, path, 500, "text/plain", "out of memory\n", 14);
    else
        http_reply(h, req, path, status, "application/json", w.p, w.n);
    jw_free(&w);
}

/* ---- requests in flight and clients that leave ---- */

void http_req_free(struct http_req *r)
{
    struct http_srv *h = r->h;
    if (r->evcon)
        evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    if (r->prev)
        r->prev->next = r->next;
    else if (h->reqs == r)
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r);
}

/* A request that needs no further reply: the client is gone. */
static void client_gone(struct http_req *r)
{
    r->h->clients_gone++;
    r->req = NULL;
    r->evcon = NULL;
    if (r->job)
        atomic_store(&r->job->cancel, 1);
}

/* evhttp closes a connection of ours (a failed write, or evhttp_free). A
 * request that was still being answered is detached from it by evhttp
 * and then ours to free; one still attached is freed by evhttp. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct http_req *r = arg;
    if (r->req && !evhttp_request_get_connection(r->req))
        evhttp_request_free(r->req);
    SRV_LOG(SLOG_DEBUG, "http %s: the client left", r->id);
    client_gone(r);
}

void http_req_link(struct http_srv *h, struct http_req *r)
{
    r->h = h;
    r->prev = NULL;
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    if (r->evcon)
        evhttp_connection_set_closecb(r->evcon, on_conn_close, r);
}

/* Does the peer of a request whose reply has not started still exist?
 * (recv of 0 bytes: it closed its end.) */
static int peer_closed(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return 1;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return 1;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_srv *h = arg;
    for (struct http_req *r = h->reqs, *nx; r; r = nx) {
        nx = r->next;
        if (r->req && r->evcon && peer_closed(r->evcon)) {
            /* frees the connection and its request; on_conn_close runs */
            evhttp_connection_free(r->evcon);
        }
    }
}

/* Replies written during a shutdown: the loop ends once they are out
 * (or after finish_shutdown's cap). */
static void on_flushed(struct evhttp_request *req, void *arg)
{
    (void)req;
    struct http_srv *h = arg;
    if (h->flushing > 0)
        h->flushing--;
    struct srv *s = h->srv;
    if (!h->flushing && s->shutting_down == 2 && !s->conns)
        event_base_loopbreak(s->base);
}

void http_track_flush(struct http_srv *h, struct evhttp_request *req)
{
    if (!h->srv->shutting_down)
        return;
    h->flushing++;
    evhttp_request_set_on_complete_cb(req, on_flushed, h);
}

int http_flushing(const struct srv *s)
{
    return s->http ? s->http->flushing : 0;
}

void http_cancel_all(struct srv *s, int why)
{
    if (!s->http)
        return;
    for (struct http_req *r = s->http->reqs; r; r = r->next)
        if (r->job)
            atomic_store(&r->job->cancel, why);
}

/* ---- routing ---- */

static int authorized(struct http_srv *h, struct evhttp_request *req)
{
    struct srv *s = h->srv;
    if (!h->need_auth)
        return 1;
    const char *a = evhttp_find_header(evhttp_request_get_input_headers(req),
                                       "Authorization");
    if (!a || strncasecmp(a, "Bearer ", 7))
        return 0;
    a += 7;
    while (*a == ' ')
        a++;
    return srv_token_equal(a, strlen(a), s->auth_token, s->auth_len);
}

static void health(struct http_srv *h, struct evhttp_request *req)
{
    if (h->stopping || h->srv->shutting_down) {
        static const char b[] = "{\"status\":\"stopping\"}";
        http_reply(h, req, HP_HEALTH, 503, "application/json", b,
                   sizeof b - 1);
        return;
    }
    /* the model is loaded before the port is bound: never "loading" */
    static const char b[] = "{\"status\":\"ok\"}";
    http_reply(h, req, HP_HEALTH, 200, "application/json", b, sizeof b - 1);
}

struct route {
    const char *path;
    enum evhttp_cmd_type method;
    enum http_path id;
};

static const struct route routes[] = {
    {"/v1/chat/completions", EVHTTP_REQ_POST, HP_CHAT},
    {"/v1/completions", EVHTTP_REQ_POST, HP_COMPLETIONS},
    {"/v1/models", EVHTTP_REQ_GET, HP_MODELS},
    {"/health", EVHTTP_REQ_GET, HP_HEALTH},
    {"/metrics", EVHTTP_REQ_GET, HP_METRICS},
    {"/", EVHTTP_REQ_GET, HP_PAGE},
};

/* Small SSE chunks must leave at once, not wait for the client's delayed
 * ACK (Nagle): evhttp does not set TCP_NODELAY on what it accepts. */
static void no_delay(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev =
        evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct http_srv *h = arg;
    no_delay(req);
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    if (!path || !*path)
        path = "/";
    const struct route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(path, routes[i].path))
            rt = &routes[i];
    if (!rt) {
        http_error(h, req, HP_OTHER, 404, NULL, "not_found",
                   "no such endpoint: %.200s", path);
        return;
    }
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != rt->method && !(m == EVHTTP_REQ_HEAD &&
                             rt->method == EVHTTP_REQ_GET)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          rt->method == EVHTTP_REQ_GET ? "GET, HEAD"
                                                       : "POST");
        http_error(h, req, rt->id, 405, NULL, "method_not_allowed",
                   "%s takes %s", rt->path,
                   rt->method == EVHTTP_REQ_GET ? "GET" : "POST");
        return;
    }
    /* /health and the page itself are open; the page sends the token
     * the user types in for everything else */
    if (rt->id != HP_HEALTH && rt->id != HP_PAGE && !authorized(h, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "WWW-Authenticate", "Bearer");
        http_error(h, req, rt->id, 401, NULL, "unauthorized",
                   "missing or wrong Authorization: Bearer token");
        return;
    }
    switch (rt->id) {
    case HP_CHAT:
    case HP_COMPLETIONS: http_openai_generate(h, req, rt->id); break;
    case HP_MODELS: http_openai_models(h, req); break;
    case HP_HEALTH: health(h, req); break;
    case HP_METRICS: http_metrics(h, req); break;
    case HP_PAGE: http_page(h, req); break;
    default: break;
    }
}

/* ---- lifetime ---- */

/* HOST:PORT, [V6]:PORT, :PORT or PORT (the last two on 127.0.0.1) -> a
 * bound, listening socket. */
static evutil_socket_t bind_addr(struct http_srv *h, const char *spec)
{
    char host[256] = "127.0.0.1";
    const char *colon = strrchr(spec, ':');
    const char *port = colon ? colon + 1 : spec;
    if (colon && colon != spec) {
        if ((size_t)(colon - spec) >= sizeof host) {
            SRV_LOG(SLOG_ERROR, "--http: host too long: %s", spec);
            return -1;
        }
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
    }
    if (!*port || strspn(port, "0123456789") != strlen(port)) {
        SRV_LOG(SLOG_ERROR, "--http: expected [HOST:]PORT, got %s", spec);
        return -1;
    }
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) {
        SRV_LOG(SLOG_ERROR, "--http %s: %s", spec, gai_strerror(rc));
        return -1;
    }
    h->need_auth = !srv_is_loopback(ai->ai_addr);
    if (h->need_auth && !h->srv->auth_token) {
        SRV_LOG(SLOG_ERROR, "--http %s is not a loopback address: "
                "--auth-token-file is required", spec);
        freeaddrinfo(ai);
        return -1;
    }
    evutil_socket_t fd = socket(ai->ai_family,
                                SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                                0);
    int one = 1;
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0) {
        SRV_LOG(SLOG_ERROR, "--http: cannot bind %s: %s", spec,
                strerror(errno));
        if (fd >= 0)
            evutil_closesocket(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int http_start(struct srv *s)
{
    struct http_srv *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    s->http = h;
    h->srv = s;
    /* the model's name: the last component of --model */
    char dir[sizeof h->model_name];
    snprintf(dir, sizeof dir, "%s", s->cfg.model_dir);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dir[--dl] = 0;
    const char *base = strrchr(dir, '/');
    snprintf(h->model_name, sizeof h->model_name, "%s",
             base && base[1] ? base + 1 : dir);
    h->eh = evhttp_new(s->base);
    if (!h->eh)
        return -1;
    evutil_socket_t fd = bind_addr(h, s->cfg.http_addr);
    if (fd < 0)
        return -1;
    h->sock = evhttp_accept_socket_with_handle(h->eh, fd);
    if (!h->sock) {
        evutil_closesocket(fd);
        return -1;
    }
    evhttp_set_max_body_size(h->eh, (ev_ssize_t)s->cfg.http_max_body);
    evhttp_set_max_headers_size(h->eh, 64 << 10);
    evhttp_set_timeout(h->eh, s->cfg.http_timeout);
    evhttp_set_allowed_methods(h->eh, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
                                      EVHTTP_REQ_HEAD);
    /* read the rest of an over-long body before closing, so the client
     * gets the 413 instead of a reset */
    evhttp_set_flags(h->eh, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_gencb(h->eh, on_request, h);
    h->ev_poll = event_new(s->base, -1, EV_PERSIST, on_poll, h);
    struct timeval tv = {0, 200000};
    if (!h->ev_poll || event_add(h->ev_poll, &tv) < 0)
        return -1;
    return 0;
}

void http_begin_shutdown(struct srv *s)
{
    struct http_srv *h = s->http;
    if (!h)
        return;
    h->stopping = 1;
    if (h->sock) { /* no new connections; open ones get 503 */
        evhttp_del_accept_socket(h->eh, h->sock);
        h->sock = NULL;
    }
}

void http_free(struct srv *s)
{
    struct http_srv *h = s->http;
    if (!h)
        return;
    if (h->eh)
        evhttp_free(h->eh); /* closes the connections: on_conn_close */
    while (h->reqs) {
        struct http_req *r = h->reqs;
        if (r->job)
            r->job->http = NULL;
        r->evcon = NULL;
        http_req_free(r);
    }
    if (h->ev_poll)
        event_free(h->ev_poll);
    free(h);
    s->http = NULL;
}
