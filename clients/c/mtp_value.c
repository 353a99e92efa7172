/*
 * mtp_value.c - status names, reading msgpack objects, JSON text, STATS.
 */
#include "mtp_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    int status;
    const char *name;
} status_names[] = {
    {MTP_OK, "ok"},
    {MTP_E_UNKNOWN_METHOD, "unknown_method"},
    {MTP_E_BAD_PARAMS, "bad_params"},
    {MTP_E_UNKNOWN_SESSION, "unknown_session"},
    {MTP_E_OVER_LIMIT, "over_limit"},
    {MTP_E_KV_BUDGET, "kv_budget"},
    {MTP_E_OVERLOADED, "overloaded"},
    {MTP_E_BUSY, "busy"},
    {MTP_E_CANCELLED, "cancelled"},
    {MTP_E_SHUTTING_DOWN, "shutting_down"},
    {MTP_E_UNAUTHORIZED, "unauthorized"},
    {MTP_E_PROTOCOL, "protocol"},
    {MTP_E_INTERNAL, "internal"},
    {MTP_E_SERVER_OTHER, "server_error"},
    {MTP_E_ADDRESS, "address"},
    {MTP_E_CONNECT, "connect"},
    {MTP_E_IO, "io"},
    {MTP_E_TIMEOUT, "timeout"},
    {MTP_E_BAD_REPLY, "bad_reply"},
    {MTP_E_NOMEM, "nomem"},
    {MTP_E_ARG, "arg"},
};
#define N_STATUS (sizeof status_names / sizeof status_names[0])

const char *mtp_status_str(int status)
{
    for (size_t i = 0; i < N_STATUS; i++)
        if (status_names[i].status == status)
            return status_names[i].name;
    return "unknown_status";
}

int mtp_status_from_code(const char *code, size_t len)
{
    /* only the protocol's codes (those up to MTP_E_INTERNAL) */
    for (size_t i = 1; i < N_STATUS; i++) {
        if (status_names[i].status < MTP_E_INTERNAL)
            break;
        if (strlen(status_names[i].name) == len &&
            !memcmp(status_names[i].name, code, len))
            return status_names[i].status;
    }
    return MTP_E_SERVER_OTHER;
}

void mtp_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

const msgpack_object *mtp_map_get(const msgpack_object *o, const char *key)
{
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            !memcmp(k->via.str.ptr, key, kl))
            return &o->via.map.ptr[i].val;
    }
    return NULL;
}

bool mtp_obj_strcpy(const msgpack_object *o, char *buf, size_t len)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || !len)
        return false;
    size_t n = o->via.str.size < len - 1 ? o->via.str.size : len - 1;
    memcpy(buf, o->via.str.ptr, n);
    buf[n] = 0;
    return true;
}

bool mtp_obj_int(const msgpack_object *o, int64_t *v)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (int64_t)o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = o->via.i64;
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = (int64_t)o->via.f64;
        return true;
    default:
        return false;
    }
}

bool mtp_obj_double(const msgpack_object *o, double *v)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (double)o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = (double)o->via.i64;
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = o->via.f64;
        return true;
    default:
        return false;
    }
}

/* ---- JSON ---------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of the valid UTF-8 sequence at s (0 if invalid). */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    size_t n;
    if (s[0] < 0x80)
        return 1;
    else if ((s[0] & 0xe0) == 0xc0 && s[0] >= 0xc2)
        n = 2;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3;
    else if ((s[0] & 0xf8) == 0xf0 && s[0] <= 0xf4)
        n = 4;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

static void json_str(struct sbuf *b, const char *p, size_t n, bool raw)
{
    const unsigned char *s = (const unsigned char *)p;
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char ch = s[i];
        size_t l = raw ? 0 : utf8_len(s + i, n - i);
        if (l > 1 || (l == 1 && ch >= 0x20 && ch != '"' && ch != '\\')) {
            sb_put(b, p + i, l);
            i += l;
            continue;
        }
        switch (ch) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        default: sb_printf(b, "\\u%04x", ch); break;
        }
        i++;
    }
    sb_put(b, "\"", 1);
}

static void json_obj(struct sbuf *b, const msgpack_object *o, int depth)
{
    if (depth > 64) { /* the daemon's replies are shallow */
        sb_put(b, "null", 4);
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        sb_put(b, "null", 4);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        if (o->via.boolean)
            sb_put(b, "true", 4);
        else
            sb_put(b, "false", 5);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        sb_printf(b, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        sb_printf(b, "%lld", (long long)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(o->via.f64))
            sb_printf(b, "%.17g", o->via.f64);
        else
            sb_put(b, "null", 4);
        break;
    case MSGPACK_OBJECT_STR:
        json_str(b, o->via.str.ptr, o->via.str.size, false);
        break;
    case MSGPACK_OBJECT_BIN:
        json_str(b, o->via.bin.ptr, o->via.bin.size, true);
        break;
    case MSGPACK_OBJECT_ARRAY:
        sb_put(b, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                sb_put(b, ", ", 2);
            json_obj(b, &o->via.array.ptr[i], depth + 1);
        }
        sb_put(b, "]", 1);
        break;
    case MSGPACK_OBJECT_MAP:
        sb_put(b, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i)
                sb_put(b, ", ", 2);
            if (k->type == MSGPACK_OBJECT_STR) {
                json_str(b, k->via.str.ptr, k->via.str.size, false);
            } else { /* JSON keys are strings: quote the JSON of the key */
                struct sbuf kb = {0};
                json_obj(&kb, k, depth + 1);
                json_str(b, kb.p ? kb.p : "", kb.n, false);
                b->oom |= kb.oom;
                free(kb.p);
            }
            sb_put(b, ": ", 2);
            json_obj(b, &o->via.map.ptr[i].val, depth + 1);
        }
        sb_put(b, "}", 1);
        break;
    default:
        sb_put(b, "null", 4);
        break;
    }
}

char *mtp_to_json(const msgpack_object *o)
{
    struct sbuf b = {0};
    if (o)
        json_obj(&b, o, 0);
    else
        sb_put(&b, "null", 4);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- STATS ---------------------------------------------------------------- */

static void get_i(const msgpack_object *o, const char *k, int64_t *v)
{
    mtp_obj_int(mtp_map_get(o, k), v);
}

static void get_f(const msgpack_object *o, const char *k, double *v)
{
    mtp_obj_double(mtp_map_get(o, k), v);
}

static int get_fa(const msgpack_object *o, const char *k, double *v, int max)
{
    const msgpack_object *a = mtp_map_get(o, k);
    if (!a || a->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    int n = a->via.array.size < (uint32_t)max ? (int)a->via.array.size : max;
    for (int i = 0; i < n; i++)
        mtp_obj_double(&a->via.array.ptr[i], &v[i]);
    return n;
}

/* An integer array of at most MTP_K_MAX; false when absent. */
static bool get_ia(const msgpack_object *o, const char *k, int64_t *v)
{
    const msgpack_object *a = mtp_map_get(o, k);
    if (!a || a->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < a->via.array.size && i < MTP_K_MAX; i++)
        if (!mtp_obj_int(&a->via.array.ptr[i], &v[i]))
            return false;
    return true;
}

int mtp_stats_parse(const msgpack_object *o, struct mtp_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return MTP_E_BAD_REPLY;
    get_i(o, "prompt_tokens", &st->prompt_tokens);
    get_i(o, "generated_tokens", &st->generated_tokens);
    get_i(o, "verify_passes", &st->verify_passes);
    get_i(o, "drafts", &st->drafts);
    get_i(o, "drafted_tokens", &st->drafted_tokens);
    get_i(o, "accepted_tokens", &st->accepted_tokens);
    get_i(o, "auto_pauses", &st->auto_pauses);
    get_i(o, "prompt_tokens_reused", &st->prompt_tokens_reused);
    get_f(o, "acceptance_rate", &st->acceptance_rate);
    get_f(o, "mean_accepted_length", &st->mean_accepted_length);
    get_f(o, "tokens_per_pass", &st->tokens_per_pass);
    int n1 = get_fa(o, "acceptance_by_position", st->acceptance_by_position,
                    MTP_K_MAX);
    int n2 = get_fa(o, "acceptance_by_position_conditional",
                    st->acceptance_by_position_conditional, MTP_K_MAX);
    st->n_positions = n1 > n2 ? n1 : n2;
    const msgpack_object *h = mtp_map_get(o, "k_histogram");
    if (h && h->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = h->via.array.size;
        st->n_k_histogram = n < MTP_K_MAX + 1 ? (int)n : MTP_K_MAX + 1;
        for (int i = 0; i < st->n_k_histogram; i++)
            mtp_obj_int(&h->via.array.ptr[i], &st->k_histogram[i]);
    }
    get_f(o, "prefill_seconds", &st->prefill_seconds);
    get_f(o, "decode_seconds", &st->decode_seconds);
    get_f(o, "draft_seconds", &st->draft_seconds);
    get_f(o, "verify_seconds", &st->verify_seconds);
    get_f(o, "refill_seconds", &st->refill_seconds);
    get_f(o, "prefill_tokens_per_s", &st->prefill_tokens_per_s);
    get_f(o, "decode_tokens_per_s", &st->decode_tokens_per_s);
    get_f(o, "queue_seconds", &st->queue_seconds);
    st->has_counts = get_ia(o, "drafted_by_position", st->drafted_by_position) &&
                     get_ia(o, "reached_by_position", st->reached_by_position) &&
                     get_ia(o, "accepted_by_position",
                            st->accepted_by_position);
    return MTP_OK;
}
