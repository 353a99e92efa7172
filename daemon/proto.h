/*
 * proto.h - msgpack-rpc requests as structs, and the error codes of the
 * wire protocol (docs/protocol.md).
 *
 * proto_parse() turns one decoded frame into a struct srv_req: method,
 * msgid and every field checked for type and range, strings copied (the
 * request owns them and outlives the frame). It never touches a socket
 * or the engine, so it is unit-tested and fuzzed on its own
 * (tests/fuzz/fuzz_proto.c).
 */
#ifndef MTPD_PROTO_H
#define MTPD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* Stable error codes; srv_err_code() gives the wire string. */
enum srv_err {
    SRV_OK = 0,
    SRV_E_UNKNOWN_METHOD,
    SRV_E_BAD_PARAMS,
    SRV_E_UNKNOWN_SESSION,
    SRV_E_OVER_LIMIT,
    SRV_E_KV_BUDGET,
    SRV_E_OVERLOADED,
    SRV_E_BUSY,
    SRV_E_CANCELLED,
    SRV_E_SHUTTING_DOWN,
    SRV_E_UNAUTHORIZED,
    SRV_E_PROTOCOL,
    SRV_E_INTERNAL,
    SRV_E_COUNT
};
const char *srv_err_code(enum srv_err e);

/* An error reply: code, message, and the field (bad_params) or the limit
 * (over_limit) it names. */
struct srv_error {
    enum srv_err code;
    char field[32];
    char limit[32];
    char msg[224];
};
void srv_error_set(struct srv_error *e, enum srv_err code, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

enum srv_method {
    SRV_M_HELLO = 0,
    SRV_M_SESSION_OPEN,
    SRV_M_SESSION_CLOSE,
    SRV_M_SESSION_INFO,
    SRV_M_GENERATE,
    SRV_M_FIM,
    SRV_M_CANCEL,
    SRV_M_TOKENIZE,
    SRV_M_DETOKENIZE,
    SRV_M_STATS,
    SRV_M_COUNT
};
const char *srv_method_name(enum srv_method m);

enum srv_prompt {
    SRV_PROMPT_NONE = 0,
    SRV_PROMPT_TEXT,     /* prompt: str */
    SRV_PROMPT_IDS,      /* ids: [int] */
    SRV_PROMPT_MESSAGES, /* messages: [{role, content}] */
    SRV_PROMPT_FIM,      /* fim: prefix + suffix */
};

#define SRV_MAX_STOPS 16
#define SRV_MAX_STOP_LEN 256
#define SRV_SESSION_ID_LEN 32
#define SRV_DRAFT_UNSET (-100)

struct srv_msg {
    char *role;
    char *content;
    size_t content_len;
};

/* What proto_parse needs to know about the model. */
struct proto_limits {
    int vocab_size;  /* ids must be below */
    int max_ids;     /* most ids in one request (the context) */
};

struct srv_req {
    int is_notification;
    uint32_t msgid;
    enum srv_method method;
    char session[SRV_SESSION_ID_LEN + 1]; /* "" when absent */
    char *token;     /* hello */
    size_t token_len;
    enum srv_prompt prompt;
    char *text;      /* prompt / tokenize text / fim prefix (NUL-ended) */
    size_t text_len;
    char *suffix;    /* fim */
    size_t suffix_len;
    int32_t *ids;    /* generate ids / detokenize ids */
    int n_ids;
    struct srv_msg *msgs;
    int n_msgs;
    char *stops[SRV_MAX_STOPS]; /* NUL-ended copies */
    int n_stops;
    int max_tokens;  /* 0: unset */
    double temperature, top_p;
    int top_k;
    uint64_t seed;
    int draft_tokens; /* SRV_DRAFT_UNSET, SPEC_K_AUTO or 0..SPEC_K_MAX */
    int stream, ignore_eos, add_special;
    uint32_t cancel_msgid;
};

/*
 * Parses one frame. Returns
 *   0  r is a valid request (free it with srv_req_free),
 *   -1 a request-level error: r->msgid and r->is_notification are valid,
 *      e says what to reply (the connection keeps working),
 *   -2 the frame is not msgpack-rpc at all (protocol error: the caller
 *      sends an error notification and closes the connection).
 * r is always left freeable.
 */
int proto_parse(const msgpack_object *o, const struct proto_limits *lim,
                struct srv_req *r, struct srv_error *e);
void srv_req_free(struct srv_req *r);

#endif
