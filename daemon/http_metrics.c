/*
 * http_metrics.c - GET /metrics in the Prometheus text format (0.0.4):
 * the daemon's counters (both protocols), the KV budget and the
 * speculative numbers engines are compared by. Names follow the
 * Prometheus conventions: an mtpd_ prefix, _total on counters, the unit
 * last (_bytes, _seconds, _ratio). docs/http.md lists them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "http_int.h"

struct out {
    char *p;
    size_t n, cap;
    int oom;
};

static void put(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->n : NULL, o->p ? o->cap - o->n : 0,
                          fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if (o->p && o->n + (size_t)n < o->cap) {
            o->n += (size_t)n;
            return;
        }
        size_t cap = o->cap ? o->cap * 2 : 8192;
        while (cap < o->n + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

static void meta(struct out *o, const char *name, const char *type,
                 const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(struct out *o, const char *name, const char *type,
                const char *help, double v)
{
    meta(o, name, type, help);
    put(o, "%s %.17g\n", name, v);
}

/* A family with one sample per draft position 1..kmax: v(st, position). */
static void per_position(struct out *o, const char *name, const char *type,
                         const char *help, const struct spec_stats *st,
                         int kmax,
                         double (*v)(const struct spec_stats *, int))
{
    meta(o, name, type, help);
    for (int i = 1; i <= kmax; i++)
        put(o, "%s{position=\"%d\"} %.17g\n", name, i, v(st, i));
}

static double drafted_at(const struct spec_stats *st, int i)
{
    return (double)st->drafted_at[i - 1];
}

static double accepted_at(const struct spec_stats *st, int i)
{
    return (double)st->accepted_at[i - 1];
}

/* Generated tokens per second over the last 10 s (methods.c's buckets,
 * read without advancing them). */
static double tokens_per_s(const struct srv *s)
{
    long now = (long)srv_now();
    long gap = now - s->tok_bucket_sec;
    if (gap >= 10)
        return 0;
    long long sum = 0;
    for (long i = 0; i < 10; i++) {
        /* buckets of seconds after the last update hold stale counts */
        long sec_of = s->tok_bucket_sec - ((s->tok_bucket_sec - i) % 10 + 10)
                      % 10;
        if (now - sec_of < 10)
            sum += s->tok_bucket[i];
    }
    return (double)sum / 10.0;
}

const double http_buckets[HTTP_N_BUCKETS] = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

void http_hist_observe(struct http_hist *hh, double v)
{
    int i = 0;
    while (i < HTTP_N_BUCKETS && v > http_buckets[i])
        i++;
    hh->n[i]++;
    hh->count++;
    hh->sum += v;
}

static void hist(struct out *o, const char *name, const char *help,
                 const struct http_hist *hh)
{
    meta(o, name, "histogram", help);
    long long cum = 0;
    for (int i = 0; i < HTTP_N_BUCKETS; i++) {
        cum += hh->n[i];
        put(o, "%s_bucket{le=\"%g\"} %lld\n", name, http_buckets[i], cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %lld\n", name, hh->count);
    put(o, "%s_sum %.17g\n%s_count %lld\n", name, hh->sum, name,
        hh->count);
}

static const char *const path_names[HP_COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
    "/metrics", "/", "other"};

void http_metrics(struct http_srv *h, struct evhttp_request *req)
{
    struct srv *s = h->srv;
    const struct spec_stats *st = &s->spec_total;
    struct out o = {0};
    one(&o, "mtpd_uptime_seconds", "gauge", "Seconds since the daemon "
        "started.", srv_now() - s->start_time);
    meta(&o, "mtpd_device_info", "gauge", "Where the model runs (label "
         "device: cpu or cuda:N); always 1.");
    put(&o, "mtpd_device_info{device=\"%s\"} 1\n", s->device);
    meta(&o, "mtpd_act_dtype_info", "gauge", "How BF16 weight matrices "
         "multiply activations (label act_dtype: f32 exact, bf16 rounded, "
         "--act-dtype); always 1.");
    put(&o, "mtpd_act_dtype_info{act_dtype=\"%s\"} 1\n", s->act_dtype);
    one(&o, "mtpd_rpc_requests_total", "counter", "MessagePack-RPC "
        "requests received.", (double)s->requests);
    meta(&o, "mtpd_rpc_errors_total", "counter",
         "MessagePack-RPC error replies by code (docs/protocol.md).");
    for (int i = 1; i < SRV_E_COUNT; i++)
        put(&o, "mtpd_rpc_errors_total{code=\"%s\"} %ld\n",
            srv_err_code((enum srv_err)i), s->errors[i]);
    meta(&o, "mtpd_http_requests_total", "counter",
         "HTTP requests answered, by endpoint and status (413 is answered "
         "by libevent and not counted).");
    for (int p = 0; p < HP_COUNT; p++)
        for (int c = 0; c < HTTP_N_CODES; c++)
            if (h->responses[p][c] || (c == 0 && p <= HP_COMPLETIONS))
                put(&o, "mtpd_http_requests_total{path=\"%s\",code=\"%d\"} "
                    "%lld\n", path_names[p], http_codes[c],
                    h->responses[p][c]);
    hist(&o, "mtpd_http_time_to_first_token_seconds", "HTTP generations: "
         "seconds from the request to its first token (queue and prefill "
         "included).", &h->ttft);
    hist(&o, "mtpd_http_request_duration_seconds", "HTTP generations that "
         "ran: seconds from the request to its last token.", &h->e2e);
    one(&o, "mtpd_http_clients_gone_total", "counter", "HTTP clients that "
        "left while their generation ran (it was cancelled).",
        (double)h->clients_gone);
    one(&o, "mtpd_http_conversation_reuses_total", "counter", "HTTP "
        "requests without a session that continued a recent conversation's "
        "cached prefix.", (double)h->conv_reused);
    one(&o, "mtpd_requests_running", "gauge", "Generations admitted and "
        "not finished (queued or in the batch).", s->jobs_inflight);
    one(&o, "mtpd_queue_depth", "gauge", "Generations waiting to join the "
        "batch.", sched_queue_depth(&s->sched));
    one(&o, "mtpd_connections", "gauge", "Open MessagePack-RPC "
        "connections.", s->n_conns);
    one(&o, "mtpd_sessions", "gauge", "Open sessions (not counting "
        "one-request ones).", s->sessions.n);
    one(&o, "mtpd_kv_cache_used_bytes", "gauge", "KV cache bytes charged "
        "to sessions.", (double)s->sessions.kv_used);
    one(&o, "mtpd_kv_cache_budget_bytes", "gauge", "The KV budget "
        "(--kv-budget).", (double)s->cfg.kv_budget);
    one(&o, "mtpd_prompt_tokens_total", "counter", "Prompt tokens of "
        "finished generations.", (double)s->prompt_tokens);
    one(&o, "mtpd_prompt_tokens_reused_total", "counter", "Prompt tokens "
        "served from a session's cached prefix.", (double)s->prompt_reused);
    one(&o, "mtpd_generated_tokens_total", "counter", "Tokens generated by "
        "finished generations.", (double)s->tokens_generated);
    one(&o, "mtpd_generated_tokens_per_second", "gauge", "Generated tokens "
        "per second over the last 10 s.", tokens_per_s(s));
    one(&o, "mtpd_spec_verify_passes_total", "counter", "Main-model decode "
        "passes (with or without drafts).", (double)st->passes);
    one(&o, "mtpd_spec_drafts_total", "counter", "Passes that verified at "
        "least one MTP draft token.", (double)st->drafts);
    one(&o, "mtpd_spec_draft_tokens_total", "counter", "MTP draft tokens "
        "proposed.", (double)st->drafted_tokens);
    one(&o, "mtpd_spec_accepted_tokens_total", "counter", "MTP draft tokens "
        "accepted.", (double)st->accepted_tokens);
    one(&o, "mtpd_spec_acceptance_ratio", "gauge", "Accepted / drafted "
        "tokens since start.", spec_stats_accept_rate(st));
    one(&o, "mtpd_spec_mean_accepted_length_tokens", "gauge", "Tokens per "
        "drafting pass: 1 + accepted / drafts (vLLM's mean acceptance "
        "length).", spec_stats_mean_accepted_len(st));
    int kmax = spec_stats_max_k(st);
    per_position(&o, "mtpd_spec_position_drafts_total", "counter",
                 "Drafting passes that drafted this position (1-based).",
                 st, kmax, drafted_at);
    per_position(&o, "mtpd_spec_position_accepted_total", "counter",
                 "Drafting passes that accepted positions 1..position.",
                 st, kmax, accepted_at);
    per_position(&o, "mtpd_spec_acceptance_by_position_ratio", "gauge",
                 "Acceptance at a draft position since start: passes that "
                 "accepted it / passes that drafted it (unconditional, "
                 "vLLM's per-position acceptance rate).",
                 st, kmax, spec_stats_accept_uncond);
    per_position(&o, "mtpd_spec_conditional_acceptance_by_position_ratio",
                 "gauge", "Acceptance at a draft position given positions "
                 "before it were accepted.", st, kmax,
                 spec_stats_accept_cond);
    uint64_t allocated, resident;
    int mem = srv_mem_stats(&allocated, &resident);
    if (mem & SRV_MEM_ALLOCATED)
        one(&o, "mtpd_memory_allocated_bytes", "gauge", "Bytes the daemon "
            "allocated (jemalloc).", (double)allocated);
    if (mem & SRV_MEM_RESIDENT)
        one(&o, "mtpd_memory_resident_bytes", "gauge", "Resident bytes of "
            "the allocator (jemalloc).", (double)resident);
    if (o.oom)
        http_reply(h, req, HP_METRICS, 500, "text/plain", "out of memory\n",
                   14);
    else
        http_reply(h, req, HP_METRICS, 200,
                   "text/plain; version=0.0.4; charset=utf-8", o.p, o.n);
    free(o.p);
}
