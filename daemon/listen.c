/*
 * listen.c - the listening sockets: "unix:PATH" (directory 0700, socket
 * 0600; a stale socket file is replaced) and "tcp:HOST:PORT" or
 * "tcp:PORT" (loopback; a non-loopback host requires the auth token:
 * connections must say hello with it first).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/listener.h>

#include "srv.h"
#include "srv_log.h"

struct listen_ctx {
    struct srv *srv;
    int need_auth;
};

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg)
{
    (void)l;
    (void)sa;
    (void)socklen;
    struct listen_ctx *lc = arg;
    if (lc->srv->shutting_down) {
        evutil_closesocket(fd);
        return;
    }
    if (lc->srv->n_conns >= lc->srv->cfg.max_conns) {
        SRV_LOG(SLOG_WARN, "refusing a connection: %d open (--max-conns)",
                lc->srv->n_conns);
        evutil_closesocket(fd);
        return;
    }
    conn_new(lc->srv, fd, lc->need_auth);
}

int srv_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >>
                24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) ||
               (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* mkdir -p with mode 0700 for the directories we create. */
static int make_dirs(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

static struct evconnlistener *listen_unix(struct srv *s, const char *path,
                                          struct listen_ctx *lc)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        SRV_LOG(SLOG_ERROR, "listen: unix socket path too long: %s", path);
        return NULL;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        struct stat st;
        if (stat(dir, &st) < 0) {
            if (make_dirs(dir) < 0) {
                SRV_LOG(SLOG_ERROR, "listen: cannot create %s: %s", dir,
                        strerror(errno));
                return NULL;
            }
        }
    }
    strcpy(sun.sun_path, path);
    /* a socket file left by a daemon that died: replace it, but never
     * another kind of file, and never a live daemon's socket */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            SRV_LOG(SLOG_ERROR, "listen: %s exists and is not a socket", path);
            return NULL;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sun,
                                  sizeof sun) == 0) {
            close(probe);
            SRV_LOG(SLOG_ERROR, "listen: %s: another daemon is listening",
                    path);
            return NULL;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    mode_t old = umask(0177); /* the socket file is born 0600 */
    struct evconnlistener *l = evconnlistener_new_bind(
        s->base, on_accept, lc, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        128, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (!l)
        SRV_LOG(SLOG_ERROR, "listen: cannot bind %s: %s", path,
                strerror(errno));
    else
        chmod(path, 0600);
    return l;
}

static struct evconnlistener *listen_tcp(struct srv *s, const char *spec,
                                         struct listen_ctx *lc)
{
    /* "HOST:PORT", or "PORT" / ":PORT" for the loopback address */
    char host[256] = "127.0.0.1";
    const char *colon = strrchr(spec, ':');
    const char *port = colon ? colon + 1 : spec;
    if (colon && colon > spec) {
        if ((size_t)(colon - spec) >= sizeof host) {
            SRV_LOG(SLOG_ERROR, "listen: tcp:%s: host name too long", spec);
            return NULL;
        }
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
    }
    if (!*port) {
        SRV_LOG(SLOG_ERROR, "listen: expected tcp:HOST:PORT or tcp:PORT, "
                "got tcp:%s", spec);
        return NULL;
    }
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) {
        SRV_LOG(SLOG_ERROR, "listen: tcp:%s: %s", spec, gai_strerror(rc));
        return NULL;
    }
    lc->need_auth = !srv_is_loopback(ai->ai_addr);
    if (lc->need_auth && !s->auth_token) {
        SRV_LOG(SLOG_ERROR, "listen: tcp:%s is not a loopback address: "
                "--auth-token-file is required", spec);
        freeaddrinfo(ai);
        return NULL;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        s->base, on_accept, lc,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
        128, ai->ai_addr, (int)ai->ai_addrlen);
    if (!l)
        SRV_LOG(SLOG_ERROR, "listen: cannot bind tcp:%s: %s", spec,
                strerror(errno));
    freeaddrinfo(ai);
    return l;
}

/* accept() failed (out of descriptors, ...): log it; libevent keeps
 * listening. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    SRV_LOG(SLOG_WARN, "accept: %s", evutil_socket_error_to_string(err));
}

/* Opens every --listen address. 0, or -1 (logged). */
int srv_listen_all(struct srv *s)
{
    for (int i = 0; i < s->cfg.n_listen; i++) {
        const char *a = s->cfg.listen[i];
        struct listen_ctx *lc = calloc(1, sizeof *lc);
        if (!lc)
            return -1;
        lc->srv = s;
        struct evconnlistener *l = NULL;
        if (!strncmp(a, "unix:", 5)) {
            l = listen_unix(s, a + 5, lc);
            if (l)
                s->unix_paths[s->n_listeners] = strdup(a + 5);
        } else if (!strncmp(a, "tcp:", 4)) {
            l = listen_tcp(s, a + 4, lc);
        } else {
            SRV_LOG(SLOG_ERROR, "listen: '%s': expected unix:PATH or "
                    "tcp:HOST:PORT", a);
        }
        if (!l) {
            free(lc);
            return -1;
        }
        evconnlistener_set_error_cb(l, on_accept_error);
        s->listen_ctx[s->n_listeners] = lc;
        s->listeners[s->n_listeners++] = l;
    }
    return 0;
}

void srv_listen_close(struct srv *s)
{
    for (int i = 0; i < s->n_listeners; i++) {
        evconnlistener_free(s->listeners[i]);
        free(s->listen_ctx[i]);
        s->listen_ctx[i] = NULL;
        if (s->unix_paths[i]) {
            unlink(s->unix_paths[i]);
            free(s->unix_paths[i]);
            s->unix_paths[i] = NULL;
        }
    }
    s->n_listeners = 0;
}
