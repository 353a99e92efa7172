/* proto.c - request validation: a decoded msgpack-rpc frame into a
 * struct srv_req (proto.h). Pure: no I/O, no engine. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "stats.h" /* SPEC_K_MAX */
#include "spec.h"  /* SPEC_K_AUTO */

static const char *const err_codes[SRV_E_COUNT] = {
    [SRV_OK] = "ok",
    [SRV_E_UNKNOWN_METHOD] = "unknown_method",
    [SRV_E_BAD_PARAMS] = "bad_params",
    [SRV_E_UNKNOWN_SESSION] = "unknown_session",
    [SRV_E_OVER_LIMIT] = "over_limit",
    [SRV_E_KV_BUDGET] = "kv_budget",
    [SRV_E_OVERLOADED] = "overloaded",
    [SRV_E_BUSY] = "busy",
    [SRV_E_CANCELLED] = "cancelled",
    [SRV_E_SHUTTING_DOWN] = "shutting_down",
    [SRV_E_UNAUTHORIZED] = "unauthorized",
    [SRV_E_PROTOCOL] = "protocol",
    [SRV_E_INTERNAL] = "internal",
};

const char *srv_err_code(enum srv_err e)
{
    return e >= 0 && e < SRV_E_COUNT ? err_codes[e] : "internal";
}

static const char *const method_names[SRV_M_COUNT] = {
    "hello", "session.open", "session.close", "session.info", "generate",
    "fim", "cancel", "tokenize", "detokenize", "stats",
};

const char *srv_method_name(enum srv_method m)
{
    return m >= 0 && m < SRV_M_COUNT ? method_names[m] : "?";
}

void srv_error_set(struct srv_error *e, enum srv_err code, const char *fmt,
                   ...)
{
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

static int bad_field(struct srv_error *e, const char *field,
                     const char *expected)
{
    srv_error_set(e, SRV_E_BAD_PARAMS, "%s: expected %s", field, expected);
    snprintf(e->field, sizeof e->field, "%s", field);
    return -1;
}

static int over_limit(struct srv_error *e, const char *limit,
                      const char *fmt, long v)
{
    srv_error_set(e, SRV_E_OVER_LIMIT, fmt, v);
    snprintf(e->limit, sizeof e->limit, "%s", limit);
    return -1;
}

static int is_str(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           !memcmp(o->via.str.ptr, s, n);
}

/* The value of key in map m; NULL when absent or nil. */
static const msgpack_object *field(const msgpack_object *m, const char *key)
{
    if (!m)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++)
        if (is_str(&m->via.map.ptr[i].key, key))
            return m->via.map.ptr[i].val.type == MSGPACK_OBJECT_NIL
                       ? NULL
                       : &m->via.map.ptr[i].val;
    return NULL;
}

static char *dup_str(const msgpack_object *o, size_t *len)
{
    char *s = malloc(o->via.str.size + 1);
    if (!s)
        return NULL;
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    if (len)
        *len = o->via.str.size;
    return s;
}

/* Optional str field into a new NUL-terminated copy. 0 absent, 1 set,
 * -1 error. */
static int get_str(const msgpack_object *m, const char *key, char **out,
                   size_t *len, struct srv_error *e)
{
    const msgpack_object *v = field(m, key);
    if (!v)
        return 0;
    if (v->type != MSGPACK_OBJECT_STR)
        return bad_field(e, key, "str");
    if (!(*out = dup_str(v, len))) {
        srv_error_set(e, SRV_E_INTERNAL, "out of memory");
        return -1;
    }
    return 1;
}

/* Optional integer in [lo, hi]. */
static int get_int(const msgpack_object *m, const char *key, int64_t lo,
                   int64_t hi, const char *expect, int64_t *out,
                   struct srv_error *e)
{
    const msgpack_object *v = field(m, key);
    if (!v)
        return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 > (uint64_t)hi)
            return bad_field(e, key, expect);
        *out = (int64_t)v->via.u64;
    } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = v->via.i64;
    } else {
        return bad_field(e, key, expect);
    }
    if (*out < lo || *out > hi)
        return bad_field(e, key, expect);
    return 1;
}

static int get_float(const msgpack_object *m, const char *key, double *out,
                     struct srv_error *e, const char *expect)
{
    const msgpack_object *v = field(m, key);
    if (!v)
        return 0;
    switch (v->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = v->via.f64; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)v->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)v->via.i64; break;
    default: return bad_field(e, key, expect);
    }
    if (*out != *out) /* NaN */
        return bad_field(e, key, expect);
    return 1;
}

static int get_bool(const msgpack_object *m, const char *key, int *out,
                    struct srv_error *e)
{
    const msgpack_object *v = field(m, key);
    if (!v)
        return 0;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return bad_field(e, key, "bool");
    *out = v->via.boolean;
    return 1;
}

static int get_ids(const msgpack_object *m, const char *key,
                   const struct proto_limits *lim, struct srv_req *r,
                   struct srv_error *e)
{
    const msgpack_object *v = field(m, key);
    if (!v)
        return 0;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return bad_field(e, key, "array of token ids");
    uint32_t n = v->via.array.size;
    if (lim->max_ids > 0 && n > (uint32_t)lim->max_ids)
        return over_limit(e, "prompt_tokens",
                          "ids: more than the context (%ld tokens)",
                          lim->max_ids);
    r->ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!r->ids) {
        srv_error_set(e, SRV_E_INTERNAL, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *x = &v->via.array.ptr[i];
        if (x->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            x->via.u64 >= (uint64_t)lim->vocab_size) {
            char what[64];
            snprintf(what, sizeof what, "token ids in [0, %d)",
                     lim->vocab_size);
            return bad_field(e, key, what);
        }
        r->ids[i] = (int32_t)x->via.u64;
    }
    r->n_ids = (int)n;
    return 1;
}

static int get_messages(const msgpack_object *m, struct srv_req *r,
                        struct srv_error *e)
{
    const msgpack_object *v = field(m, "messages");
    const char *expect = "array of {role: str, content: str}";
    if (!v)
        return 0;
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0)
        return bad_field(e, "messages", expect);
    uint32_t n = v->via.array.size;
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) {
        srv_error_set(e, SRV_E_INTERNAL, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *x = &v->via.array.ptr[i];
        if (x->type != MSGPACK_OBJECT_MAP)
            return bad_field(e, "messages", expect);
        const msgpack_object *role = field(x, "role");
        const msgpack_object *content = field(x, "content");
        if (!role || role->type != MSGPACK_OBJECT_STR || !content ||
            content->type != MSGPACK_OBJECT_STR)
            return bad_field(e, "messages", expect);
        r->n_msgs = (int)i + 1; /* owned from here on */
        r->msgs[i].role = dup_str(role, NULL);
        r->msgs[i].content = dup_str(content, &r->msgs[i].content_len);
        if (!r->msgs[i].role || !r->msgs[i].content) {
            srv_error_set(e, SRV_E_INTERNAL, "out of memory");
            return -1;
        }
    }
    return 1;
}

static int get_stops(const msgpack_object *m, struct srv_req *r,
                     struct srv_error *e)
{
    const msgpack_object *v = field(m, "stop");
    if (!v)
        return 0;
    if (v->type == MSGPACK_OBJECT_STR) { /* one string: allowed */
        if (v->via.str.size > SRV_MAX_STOP_LEN)
            return over_limit(e, "stop_strings",
                              "stop: a stop string over %ld bytes",
                              SRV_MAX_STOP_LEN);
        if (!(r->stops[0] = dup_str(v, NULL)))
            goto nomem;
        r->n_stops = 1;
        return 1;
    }
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return bad_field(e, "stop", "array of str");
    if (v->via.array.size > SRV_MAX_STOPS)
        return over_limit(e, "stop_strings", "stop: more than %ld strings",
                          SRV_MAX_STOPS);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *x = &v->via.array.ptr[i];
        if (x->type != MSGPACK_OBJECT_STR)
            return bad_field(e, "stop", "array of str");
        if (x->via.str.size > SRV_MAX_STOP_LEN)
            return over_limit(e, "stop_strings",
                              "stop: a stop string over %ld bytes",
                              SRV_MAX_STOP_LEN);
        if (!(r->stops[r->n_stops] = dup_str(x, NULL)))
            goto nomem;
        r->n_stops++;
    }
    return 1;
nomem:
    srv_error_set(e, SRV_E_INTERNAL, "out of memory");
    return -1;
}

/* session: a str; an id that is not 32 lowercase hex digits cannot name
 * a session (unknown_session). */
static int get_session(const msgpack_object *m, int required,
                       struct srv_req *r, struct srv_error *e)
{
    const msgpack_object *v = field(m, "session");
    if (!v) {
        if (required)
            return bad_field(e, "session", "str (required)");
        return 0;
    }
    if (v->type != MSGPACK_OBJECT_STR)
        return bad_field(e, "session", "str");
    int ok = v->via.str.size == SRV_SESSION_ID_LEN;
    for (uint32_t i = 0; ok && i < v->via.str.size; i++) {
        char c = v->via.str.ptr[i];
        ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    }
    if (!ok) {
        srv_error_set(e, SRV_E_UNKNOWN_SESSION, "no such session");
        return -1;
    }
    memcpy(r->session, v->via.str.ptr, SRV_SESSION_ID_LEN);
    r->session[SRV_SESSION_ID_LEN] = 0;
    return 1;
}

/* The sampling and length options shared by generate and fim. */
static int parse_gen_opts(const msgpack_object *m,
                          const struct proto_limits *lim, struct srv_req *r,
                          struct srv_error *e)
{
    int64_t v;
    int rc;
    if ((rc = get_int(m, "max_tokens", 1, INT32_MAX, "int >= 1", &v, e)) < 0)
        return -1;
    if (rc) {
        if (lim->max_ids > 0 && v > lim->max_ids)
            return over_limit(e, "max_tokens",
                              "max_tokens: more than the context (%ld)",
                              lim->max_ids);
        r->max_tokens = (int)v;
    }
    if (get_stops(m, r, e) < 0)
        return -1;
    if (get_float(m, "temperature", &r->temperature, e, "float >= 0") < 0)
        return -1;
    if (r->temperature < 0 || r->temperature > 1e6)
        return bad_field(e, "temperature", "float >= 0");
    if (get_float(m, "top_p", &r->top_p, e, "float in (0, 1]") < 0)
        return -1;
    if (!(r->top_p > 0 && r->top_p <= 1))
        return bad_field(e, "top_p", "float in (0, 1]");
    if ((rc = get_int(m, "top_k", 0, INT32_MAX, "int >= 0", &v, e)) < 0)
        return -1;
    if (rc)
        r->top_k = (int)v;
    const msgpack_object *s = field(m, "seed");
    if (s) {
        if (s->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return bad_field(e, "seed", "int >= 0");
        r->seed = s->via.u64;
    }
    const msgpack_object *d = field(m, "draft_tokens");
    if (d) {
        if (is_str(d, "auto"))
            r->draft_tokens = SPEC_K_AUTO;
        else if (d->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                 d->via.u64 <= SPEC_K_MAX)
            r->draft_tokens = (int)d->via.u64;
        else
            return bad_field(e, "draft_tokens", "int 0..16 or \"auto\"");
    }
    if (get_bool(m, "stream", &r->stream, e) < 0 ||
        get_bool(m, "ignore_eos", &r->ignore_eos, e) < 0)
        return -1;
    return get_session(m, 0, r, e) < 0 ? -1 : 0;
}

static int parse_generate(const msgpack_object *m,
                          const struct proto_limits *lim, struct srv_req *r,
                          struct srv_error *e)
{
    int n = 0, rc;
    if ((rc = get_str(m, "prompt", &r->text, &r->text_len, e)) < 0)
        return -1;
    if (rc) {
        r->prompt = SRV_PROMPT_TEXT;
        n++;
    }
    if ((rc = get_ids(m, "ids", lim, r, e)) < 0)
        return -1;
    if (rc) {
        if (r->n_ids == 0)
            return bad_field(e, "ids", "a non-empty array of token ids");
        r->prompt = SRV_PROMPT_IDS;
        n++;
    }
    if ((rc = get_messages(m, r, e)) < 0)
        return -1;
    if (rc) {
        r->prompt = SRV_PROMPT_MESSAGES;
        n++;
    }
    if (n != 1)
        return bad_field(e, "prompt",
                         "exactly one of prompt (str), ids ([int]), "
                         "messages ([{role, content}])");
    return parse_gen_opts(m, lim, r, e);
}

static int parse_fim(const msgpack_object *m, const struct proto_limits *lim,
                     struct srv_req *r, struct srv_error *e)
{
    int rc = get_str(m, "prefix", &r->text, &r->text_len, e);
    if (rc <= 0)
        return rc < 0 ? -1 : bad_field(e, "prefix", "str (required)");
    rc = get_str(m, "suffix", &r->suffix, &r->suffix_len, e);
    if (rc <= 0)
        return rc < 0 ? -1 : bad_field(e, "suffix", "str (required)");
    r->prompt = SRV_PROMPT_FIM;
    return parse_gen_opts(m, lim, r, e);
}

static int parse_params(const msgpack_object *m,
                        const struct proto_limits *lim, struct srv_req *r,
                        struct srv_error *e)
{
    int64_t v;
    int rc;
    switch (r->method) {
    case SRV_M_HELLO:
        return get_str(m, "token", &r->token, &r->token_len, e) < 0 ? -1 : 0;
    case SRV_M_SESSION_OPEN:
    case SRV_M_STATS:
        return 0;
    case SRV_M_SESSION_CLOSE:
    case SRV_M_SESSION_INFO:
        return get_session(m, 1, r, e) < 0 ? -1 : 0;
    case SRV_M_GENERATE:
        return parse_generate(m, lim, r, e);
    case SRV_M_FIM:
        return parse_fim(m, lim, r, e);
    case SRV_M_CANCEL:
        rc = get_int(m, "msgid", 0, UINT32_MAX, "uint32", &v, e);
        if (rc <= 0)
            return rc < 0 ? -1 : bad_field(e, "msgid", "uint32 (required)");
        r->cancel_msgid = (uint32_t)v;
        return 0;
    case SRV_M_TOKENIZE:
        rc = get_str(m, "text", &r->text, &r->text_len, e);
        if (rc <= 0)
            return rc < 0 ? -1 : bad_field(e, "text", "str (required)");
        return get_bool(m, "add_special", &r->add_special, e) < 0 ? -1 : 0;
    case SRV_M_DETOKENIZE:
        rc = get_ids(m, "ids", lim, r, e);
        if (rc <= 0)
            return rc < 0 ? -1
                          : bad_field(e, "ids", "array of token ids "
                                      "(required)");
        return 0;
    default:
        return 0;
    }
}

int proto_parse(const msgpack_object *o, const struct proto_limits *lim,
                struct srv_req *r, struct srv_error *e)
{
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->top_p = 1.0;
    r->draft_tokens = SRV_DRAFT_UNSET;
    r->add_special = 1;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3) {
        srv_error_set(e, SRV_E_PROTOCOL, "a frame must be a msgpack-rpc "
                      "request [0, msgid, method, params] or notification "
                      "[2, method, params]");
        return -2;
    }
    const msgpack_object *a = o->via.array.ptr;
    const msgpack_object *method, *params;
    if (o->via.array.size == 4 && a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER
        && a[0].via.u64 == 0) {
        if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            a[1].via.u64 > UINT32_MAX) {
            srv_error_set(e, SRV_E_PROTOCOL, "msgid: expected uint32");
            return -2;
        }
        r->msgid = (uint32_t)a[1].via.u64;
        method = &a[2];
        params = &a[3];
    } else if (o->via.array.size == 3 &&
               a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
               a[0].via.u64 == 2) {
        r->is_notification = 1;
        method = &a[1];
        params = &a[2];
    } else {
        srv_error_set(e, SRV_E_PROTOCOL, "a frame must be a msgpack-rpc "
                      "request [0, msgid, method, params] or notification "
                      "[2, method, params]");
        return -2;
    }
    if (method->type != MSGPACK_OBJECT_STR) {
        srv_error_set(e, SRV_E_PROTOCOL, "method: expected str");
        return -2;
    }
    r->method = SRV_M_COUNT;
    for (int i = 0; i < SRV_M_COUNT; i++)
        if (is_str(method, method_names[i]))
            r->method = (enum srv_method)i;
    if (r->method == SRV_M_COUNT) {
        int n = method->via.str.size > 64 ? 64 : (int)method->via.str.size;
        srv_error_set(e, SRV_E_UNKNOWN_METHOD, "unknown method '%.*s'", n,
                      method->via.str.ptr);
        return -1;
    }
    /* params: [] or [map] (an empty array in the map's place means {}) */
    const msgpack_object *m = NULL;
    if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size > 1)
        return bad_field(e, "params", "an array holding one map");
    if (params->via.array.size == 1) {
        m = &params->via.array.ptr[0];
        if (m->type == MSGPACK_OBJECT_ARRAY && m->via.array.size == 0)
            m = NULL;
        else if (m->type != MSGPACK_OBJECT_MAP)
            return bad_field(e, "params", "an array holding one map");
    }
    if (m)
        for (uint32_t i = 0; i < m->via.map.size; i++)
            if (m->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
                return bad_field(e, "params", "a map with str keys");
    return parse_params(m, lim, r, e);
}

void srv_req_free(struct srv_req *r)
{
    free(r->token);
    free(r->text);
    free(r->suffix);
    free(r->ids);
    for (int i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    memset(r, 0, sizeof *r);
}
