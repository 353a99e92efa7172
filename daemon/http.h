/*
 * http.h - the daemon's HTTP front (docs/http.md): OpenAI-compatible
 * endpoints, Prometheus metrics and a live page, served by libevent's
 * evhttp on the loop thread of `mtpd serve`, over the same sessions,
 * scheduler and counters as MessagePack-RPC.
 *
 * serve_main.c calls these; everything else is in http*.c (http_int.h).
 */
#ifndef MTPD_HTTP_H
#define MTPD_HTTP_H

#include <stddef.h>

#include "srv.h"

/* Binds --http HOST:PORT (a non-loopback host needs the auth token).
 * 0, or -1 (logged). */
int http_start(struct srv *s);
/* Shutdown began: new generations get 503 (health says "stopping"). */
void http_begin_shutdown(struct srv *s);
/* Ends every running HTTP generation at the next pass (cancel = 1
 * cancelled, 2 shutdown). */
void http_cancel_all(struct srv *s, int why);
/* Final replies of a shutdown still being written (the loop runs on
 * until they are out). */
int http_flushing(const struct srv *s);
/* Closes the listener and every connection. */
void http_free(struct srv *s);

/* Loop thread (sched.c, before methods_on_job_output): output of an HTTP
 * job. src holds two ints per id (provenance, text bytes released). On
 * done the job is freed right after. */
void http_job_output(struct srv *s, struct job *j,
                     const struct mtpd_tok_ids *ids,
                     const struct mtpd_tok_ids *src, const char *text,
                     size_t len, int done);

#endif
