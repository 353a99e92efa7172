/*
 * http_int.h - what the HTTP files share (loop thread only):
 *   http.c         evhttp server, routing, auth, limits, client drops,
 *                  /health, /v1/models, errors
 *   http_openai.c  /v1/chat/completions and /v1/completions: JSON
 *                  requests -> jobs, jobs -> JSON replies and SSE chunks,
 *                  recent conversations kept as sessions
 *   http_metrics.c /metrics (Prometheus text format)
 *   http_page.c    GET / (daemon/page/index.html, embedded at build time)
 *   http_json.c    a small JSON writer
 */
#ifndef MTPD_HTTP_INT_H
#define MTPD_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

#include "http.h"
#include "json.h"

/* ---- JSON writer (http_json.c): commas and escaping handled; a failed
 * allocation sets oom and the rest is dropped. */
#define JW_MAX_DEPTH 32
struct jw {
    char *p;
    size_t n, cap;
    int oom;
    int depth;
    int after_key;
    unsigned char first[JW_MAX_DEPTH];
    char close[JW_MAX_DEPTH];
};
void jw_init(struct jw *w);
void jw_free(struct jw *w);
void jw_raw(struct jw *w, const char *s, size_t n);
void jw_obj(struct jw *w);
void jw_arr(struct jw *w);
void jw_end(struct jw *w);             /* closes the innermost { or [ */
void jw_key(struct jw *w, const char *k);
void jw_str(struct jw *w, const char *s, size_t n);
void jw_cstr(struct jw *w, const char *s); /* NULL: null */
void jw_int(struct jw *w, long long v);
void jw_num(struct jw *w, double v);   /* NaN/inf: null */
void jw_bool(struct jw *w, int v);
void jw_null(struct jw *w);
void jw_json(struct jw *w, const char *json); /* a value already in JSON */

/* ---- the server ---- */

enum http_path {
    HP_CHAT = 0, HP_COMPLETIONS, HP_MODELS, HP_HEALTH, HP_METRICS, HP_PAGE,
    HP_OTHER, HP_COUNT
};
#define HTTP_N_CODES 10 /* the statuses counted by /metrics */
extern const int http_codes[HTTP_N_CODES];

#define HTTP_MAX_CONVS 64

/* A Prometheus histogram of seconds (http_metrics.c). */
#define HTTP_N_BUCKETS 12
extern const double http_buckets[HTTP_N_BUCKETS];
struct http_hist {
    long long n[HTTP_N_BUCKETS + 1]; /* per bucket, the last is +Inf */
    long long count;
    double sum;
};
void http_hist_observe(struct http_hist *hh, double v);

struct http_req;

struct http_srv {
    struct srv *srv;
    struct evhttp *eh;
    struct evhttp_bound_socket *sock;
    int need_auth;          /* not loopback: Authorization: Bearer */
    int stopping;
    char model_name[128];
    struct http_req *reqs;  /* generations in flight */
    struct event *ev_poll;  /* looks for clients that left */
    uint64_t next_id;
    /* recent conversations (sessions owned by HTTP), most recent first */
    char convs[HTTP_MAX_CONVS][SRV_SESSION_ID_LEN + 1];
    int n_convs;
    /* counters for /metrics */
    long long responses[HP_COUNT][HTTP_N_CODES];
    long long clients_gone;
    long long conv_reused;  /* requests that reused a conversation */
    int flushing;           /* shutdown: final replies not yet written */
    struct http_hist ttft;  /* request received -> first token */
    struct http_hist e2e;   /* request received -> last token */
};

enum http_kind { HTTP_CHAT, HTTP_COMPLETION };

/* One generation request in flight. */
struct http_req {
    struct http_srv *h;
    struct evhttp_request *req;   /* NULL once the client is gone */
    struct evhttp_connection *evcon;
    struct job *job;
    struct http_req *prev, *next;
    enum http_kind kind;
    enum http_path path;
    int stream, include_usage, provenance;
    int started;                  /* status line sent (streaming) */
    double t0;                    /* when the request was submitted */
    int got_first;                /* its first token came */
    char id[48];
    long long created;
    char session[SRV_SESSION_ID_LEN + 1]; /* "" for a temporary one */
};

/* http.c */
/* Sends a complete reply (body NUL-free not required) and counts it. */
void http_reply(struct http_srv *h, struct evhttp_request *req,
                enum http_path path, int status, const char *ctype,
                const char *body, size_t len);
/* An error in OpenAI's shape: {"error": {message, type, param, code}}.
 * type is derived from the status; param and code may be NULL. */
void http_error(struct http_srv *h, struct evhttp_request *req,
                enum http_path path, int status, const char *param,
                const char *code, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
void http_count(struct http_srv *h, enum http_path path, int status);
/* During a shutdown: the loop waits for req's reply to be written. */
void http_track_flush(struct http_srv *h, struct evhttp_request *req);
/* Links/unlinks a request of the in-flight list. */
void http_req_link(struct http_srv *h, struct http_req *r);
void http_req_free(struct http_req *r);

/* http_openai.c */
void http_openai_generate(struct http_srv *h, struct evhttp_request *req,
                          enum http_path path);
void http_openai_models(struct http_srv *h, struct evhttp_request *req);

/* http_metrics.c */
void http_metrics(struct http_srv *h, struct evhttp_request *req);

/* http_page.c */
void http_page(struct http_srv *h, struct evhttp_request *req);

#endif
