/*
 * srv.h - the objects of `mtpd serve` and who owns them.
 *
 * Threads
 * - The loop thread (libevent) owns every socket, every struct conn, the
 *   sessions table and every struct job outside the compute thread's
 *   hands. It never runs the model.
 * - The compute thread (sched.c) owns the engine, the KV pool and every
 *   spec_seq while a job runs: it starts sequences, runs one batched
 *   spec_step over all running jobs, and frees sequences the loop thread
 *   hands it. Jobs cross between the threads only through the queues of
 *   struct sched, under its lock (memcached's CQ_ITEM + notify).
 *
 * Files: serve_main.c (options, startup, signals, shutdown), listen.c
 * (sockets), conn.c (per-connection bytes and frames), proto.c
 * (validation), methods.c (one handler per method), reply.c (msgpack
 * replies), session.c (sessions table, LRU, state dir), sched.c
 * (compute thread), admit.c (a request becomes a job), srv_engine.c (spec
 * calls), srv_log.c (log lines).
 * Text chunks come from include/mtpd/textout.h. HTTP (--http): http.h, on the
 * loop thread; its jobs have job.http set and no conn.
 */
#ifndef MTPD_SRV_H
#define MTPD_SRV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <msgpack.h>

#include "frame.h"
#include "proto.h"
#include "spec.h"
#include "textout.h"
#include "tokenizer.h"

#define SRV_MAX_LISTEN 8

struct srv_config {
    const char *model_dir;
    const char *listen[SRV_MAX_LISTEN];
    int n_listen;
    int threads;
    size_t kv_budget;       /* bytes */
    int max_sessions;
    double session_idle;    /* seconds; 0: never */
    const char *state_dir;  /* NULL: sessions end with the process */
    const char *auth_token_file;
    int draft_tokens;       /* SPEC_K_AUTO or 0..SPEC_K_MAX */
    size_t max_frame;
    int max_queue;          /* generations in flight, all connections */
    int max_inflight;       /* requests in flight per connection */
    size_t max_outbuf;      /* unsent bytes per connection */
    int max_conns;          /* open connections; more are refused */
    double shutdown_grace;  /* seconds */
    int step_rows;          /* row budget of one step */
    int no_batching;        /* benchmarks: one step per sequence */
    int no_prefix_reuse;    /* benchmarks: every request from scratch */
    const char *device;     /* --device; NULL = auto */
    int act_bf16;           /* --act-dtype bf16 (mtpd_load_opts) */
    /* HTTP (http.c): off unless http_addr is set */
    const char *http_addr;  /* HOST:PORT */
    size_t http_max_body;   /* bytes */
    int http_timeout;       /* seconds to read a request / idle keep-alive */
    int http_conversations; /* recent HTTP conversations kept as sessions */
};

/* ---- sessions (session.c; loop thread) ---- */

struct session {
    char id[SRV_SESSION_ID_LEN + 1];
    struct spec_seq *seq;  /* NULL until first use / after a restart */
    int32_t *hist;         /* the tokens the session holds */
    int n_hist, cap_hist;
    size_t kv_bytes;       /* KV budget charged to it */
    double last_use;       /* monotonic seconds */
    double last_use_wall;  /* unix seconds */
    int busy;              /* a job runs in it */
    int temporary;         /* made for one request without a session */
    long requests;
    struct spec_stats stats;  /* summed over its requests */
    long long prompt_reused;  /* prompt tokens its requests reused */
    struct session *prev, *next; /* LRU list: head = most recent */
};

struct session_table {
    struct session *head, *tail;
    int n;                 /* not counting temporary ones */
    int n_temp;
    size_t kv_used;        /* sum of kv_bytes */
};

/* ---- jobs (one generate/fim request) ---- */

struct conn;

struct job {
    /* loop thread */
    struct conn *conn;     /* NULL once the client is gone */
    struct job *cprev, *cnext; /* the connection's jobs */
    struct http_req *http; /* an HTTP request's job (conn is NULL) */
    struct session *sess;
    uint32_t msgid;
    int stream;
    double t_submit;
    /* set before submit, then the compute thread's until done */
    struct spec_params params;
    int32_t *prompt;
    int n_prompt;
    int reserve;           /* positions to hold up front */
    struct spec_seq *seq;  /* the session's sequence */
    struct spec_textout *text;
    int started, lib_cancel, reused;
    int64_t src_passes;    /* compute thread: provenance bookkeeping */
    int src_idx;
    double queue_s;
    /* under sched.lock */
    struct mtpd_tok_ids p_ids; /* emitted, not yet sent */
    struct mtpd_tok_buf p_text;
    struct mtpd_tok_ids p_src; /* per id: provenance (sched.c), bytes of
                                * p_text it released */
    int notify_queued;
    struct job *notify_next;
    int done;
    /* results, written by the compute thread before done is set */
    enum spec_finish finish;
    int finish_override;   /* 0, or 1 cancelled / 2 shutdown */
    enum srv_err err;      /* the request failed before generating */
    char errmsg[160];
    struct mtpd_tok_ids out_ids;
    char *out_text;
    size_t out_len;
    struct spec_stats stats;
    size_t kv_bytes;       /* pool bytes the sequence holds at the end */
    /* any thread */
    atomic_int cancel;     /* 1 cancel, 2 shutdown */
    struct job *qnext;     /* sched queues */
    struct sched *sched;
};

/* ---- connections (conn.c; loop thread) ---- */

struct conn {
    struct srv *srv;
    uint64_t id;
    struct bufferevent *bev;
    struct frame_dec dec;
    int need_auth;         /* TCP on a non-loopback address */
    int closing;           /* flush, then free */
    int n_inflight;
    struct job *jobs;      /* running generations */
    struct conn *prev, *next;
};

/* ---- scheduler (sched.c) ---- */

struct seq_free_item {
    struct spec_seq *seq;
    struct seq_free_item *next;
};

struct sched {
    struct srv *srv;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *submit_head, *submit_tail; /* waiting to start */
    int n_submitted;
    struct seq_free_item *frees;           /* sequences to free */
    struct job *notify_head, *notify_tail; /* output for the loop */
    int quit, running;
    int n_active;          /* compute thread: jobs in the batch */
    struct event *notify_ev;
    /* compute thread only */
    struct job **active;
    struct spec_seq **seqs;
    int cap_active;
    unsigned char *deferred;
};

/* ---- the server ---- */

struct srv {
    struct srv_config cfg;
    struct event_base *base;
    struct mtpd_model *model;
    const char *device;    /* where it runs: "cpu" or "cuda:N" */
    const char *act_dtype; /* "bf16" or "f32" (mtpd_model_act_dtype) */
    struct mtpd_tok *tok;
    struct mtpd_tok_enc *enc;      /* loop thread's encoder */
    struct spec_engine *engine;
    struct mtpd_kv_pool *pool;
    char *auth_token;
    size_t auth_len;
    struct session_table sessions;
    struct sched sched;
    struct http_srv *http; /* NULL without --http */
    struct conn *conns;
    struct conn *dead_conns;   /* dropped, freed by ev_reap */
    struct event *ev_reap;
    uint64_t next_conn_id;
    int n_conns;
    struct evconnlistener *listeners[SRV_MAX_LISTEN];
    char *unix_paths[SRV_MAX_LISTEN];
    void *listen_ctx[SRV_MAX_LISTEN];
    int n_listeners;
    struct event *ev_term, *ev_int, *ev_hup, *ev_tick, *ev_grace;
    int shutting_down;
    int jobs_inflight;
    /* counters (loop thread) */
    double start_time;
    long requests;
    long long tokens_generated, prompt_tokens, prompt_reused;
    long errors[SRV_E_COUNT];
    struct spec_stats spec_total;
    long long tok_bucket[10]; /* tokens per second, last 10 s */
    long tok_bucket_sec;
};

double srv_now(void);       /* monotonic seconds */
double srv_wall(void);      /* unix seconds */
/* 1 when a == b, in time that does not depend on where they differ
 * (auth tokens). */
int srv_token_equal(const char *a, size_t an, const char *b, size_t bn);
/* 1 for a 127/8 or ::1 (or v4-mapped 127/8) peer: no auth needed (listen.c). */
struct sockaddr;
int srv_is_loopback(const struct sockaddr *sa);
/* jemalloc's allocated and resident bytes, refreshed: the SRV_MEM_* bits
 * of the values it read (0 without jemalloc). */
enum { SRV_MEM_ALLOCATED = 1, SRV_MEM_RESIDENT = 2 };
int srv_mem_stats(uint64_t *allocated, uint64_t *resident);

/* serve_main.c: called when the last job of a shutdown has ended */
void srv_shutdown_check(struct srv *s);

/* listen.c */
int srv_listen_all(struct srv *s);
void srv_listen_close(struct srv *s);

/* session.c */
struct session *session_new(struct srv *s, int temporary);
struct session *session_find(struct srv *s, const char *id);
void session_touch(struct srv *s, struct session *se);
/* Ends a session that is not busy; its sequence goes to the compute
 * thread to be freed. */
void session_close(struct srv *s, struct session *se);
/* Makes room for `need` more bytes of KV (keeping `keep`): evicts least
 * recently used idle sessions. 0, or -1 when it cannot. */
int session_make_room(struct srv *s, size_t need, struct session *keep);
void session_set_kv(struct srv *s, struct session *se, size_t bytes);
void session_expire_idle(struct srv *s);
int session_set_history(struct session *se, const int32_t *t, int n);
/* state dir */
int session_save_all(struct srv *s);
int session_load_all(struct srv *s);

/* sched.c */
int sched_start(struct srv *s);
void sched_stop(struct sched *q);
void sched_submit(struct sched *q, struct job *j);
void sched_free_seq(struct sched *q, struct spec_seq *seq);
int sched_queue_depth(struct sched *q);
void job_free(struct job *j);

/* admit.c: a validated generate request, as both protocols admit it */
struct job_admit_req {
    const char *session;        /* a named session, or NULL */
    struct session *sess;       /* session NULL: the one to run in (HTTP's
                                 * conversation); NULL: a temporary one */
    struct mtpd_tok_ids *toks;  /* the prompt; the job takes it */
    int max_tokens;             /* the protocol's default applied */
    double temperature, top_p;
    int top_k;
    uint64_t seed;
    int draft_tokens;           /* SRV_DRAFT_UNSET: --draft-tokens */
    int ignore_eos, stream;
    const char *const *stops;
    int n_stops;
};

struct job_admit_err {
    enum srv_err code;  /* UNKNOWN_SESSION, BUSY, KV_BUDGET or INTERNAL */
    const char *msg;    /* the message; NULL for KV_BUDGET: */
    size_t need, held;  /* KV_BUDGET: bytes the request needs, bytes held
                         * by the other sessions (the caller words it) */
};

/* Admits a generation: finds its session (or makes a temporary one),
 * charges the KV reservation (evicting idle sessions), fills the job's
 * parameters, marks the session busy and counts the job in flight. The
 * caller links it to its connection and calls sched_submit(). NULL with
 * *err set when it cannot (a temporary session is closed again). */
struct job *job_admit(struct srv *s, struct job_admit_req *q,
                      struct job_admit_err *err);

/* conn.c */
void conn_new(struct srv *s, int fd, int need_auth);
void conn_send(struct conn *c, const char *p, size_t n);
void conn_close(struct conn *c, int flush);
/* Frees the connections dropped since the last call. */
void conn_reap(struct srv *s);

/* methods.c */
void methods_dispatch(struct conn *c, struct srv_req *r);
/* The loop thread's end of the scheduler: chunks and final replies. */
void methods_on_job_output(struct srv *s, struct job *j,
                           const struct mtpd_tok_ids *ids, const char *text,
                           size_t len, int done);
void methods_conn_gone(struct conn *c);

/* Provenance of an emitted token (job.p_src): the draft position (1..k)
 * of an accepted MTP draft, or the main model's own token: */
enum {
    SRV_SRC_PLAIN = 0,       /* a pass without drafts (or the prefill's) */
    SRV_SRC_CORRECTION = -1, /* where a draft was rejected */
    SRV_SRC_BONUS = -2,      /* after every draft was accepted */
};

/* reply.c */
void reply_error(struct conn *c, uint32_t msgid, const struct srv_error *e);
void reply_protocol_error(struct conn *c, const char *msg);
void pack_str(msgpack_packer *pk, const char *s);
void pack_strn(msgpack_packer *pk, const char *s, size_t n);
void pack_ids(msgpack_packer *pk, const int32_t *ids, int n);
void pack_stats(msgpack_packer *pk, const struct spec_stats *st,
                long long reused, double queue_s);
/* Starts [1, msgid, nil, <result>] in sb/pk; the caller packs the result
 * and sends sb. */
void reply_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t msgid);
void reply_finish(struct conn *c, msgpack_sbuffer *sb);
/* Starts the notification [2, name, [<param>]] in sb/pk; the caller packs
 * the one param and sends sb (reply_finish). */
void notify_begin(msgpack_sbuffer *sb, msgpack_packer *pk, const char *name);

#endif
