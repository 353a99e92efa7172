/*
 * mtp_client.h - a small blocking C client for `mtpd serve`
 * (MessagePack-RPC, docs/protocol.md).
 *
 * One mtp_client is one connection. Calls block until their response
 * arrives; a streamed generate calls a callback per chunk on the calling
 * thread. A client is used by one thread at a time, except
 * mtp_client_cancel(), which may be called from any thread (or from the
 * chunk callback) while a call is running. Use one client per thread for
 * concurrency (connections are cheap; sessions outlive them).
 *
 * Errors: every call returns 0 on success or a negative enum mtp_status;
 * mtp_client_error() then describes the failure (the daemon's error code
 * and message, or what went wrong on this side). After MTP_E_IO,
 * MTP_E_BAD_REPLY or MTP_E_PROTOCOL the connection is unusable: free the
 * client and connect again.
 *
 * Memory: the caller owns what out-parameters return through `char **` /
 * `int32_t **` (release with free()) and struct mtp_result (release with
 * mtp_result_free()). Raw msgpack objects returned by mtp_client_call()
 * belong to the client and stay valid until its next call.
 */
#ifndef MTP_CLIENT_H
#define MTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MTP_CLIENT_VERSION "0.1.0"
#define MTP_PROTOCOL_VERSION 1
#define MTP_K_MAX 16 /* most draft tokens in one pass (protocol: 0..16) */
#define MTP_SESSION_ID_LEN 32

/* Status codes. The first block mirrors the protocol's error codes
 * (docs/protocol.md "Errors"); the second is this side's failures. */
enum mtp_status {
    MTP_OK = 0,
    MTP_E_UNKNOWN_METHOD = -1,
    MTP_E_BAD_PARAMS = -2,
    MTP_E_UNKNOWN_SESSION = -3,
    MTP_E_OVER_LIMIT = -4,
    MTP_E_KV_BUDGET = -5,
    MTP_E_OVERLOADED = -6,
    MTP_E_BUSY = -7,
    MTP_E_CANCELLED = -8,
    MTP_E_SHUTTING_DOWN = -9,
    MTP_E_UNAUTHORIZED = -10,
    MTP_E_PROTOCOL = -11,
    MTP_E_INTERNAL = -12,
    MTP_E_SERVER_OTHER = -13, /* a code this client does not know */
    /* client side */
    MTP_E_ADDRESS = -20,   /* the address string is not unix:PATH / tcp:H:P */
    MTP_E_CONNECT = -21,   /* could not connect */
    MTP_E_IO = -22,        /* read/write failed or the daemon hung up */
    MTP_E_TIMEOUT = -23,   /* no reply within the client's timeout */
    MTP_E_BAD_REPLY = -24, /* the daemon sent something not per protocol */
    MTP_E_NOMEM = -25,
    MTP_E_ARG = -26, /* a bad argument to a client call */
};

/* Protocol code string ("unknown_session", ...) or this side's name
 * ("io", ...) of a status; "ok" for 0. Never NULL. */
const char *mtp_status_str(int status);
/* The status of a protocol code string; MTP_E_SERVER_OTHER if unknown. */
int mtp_status_from_code(const char *code, size_t len);

struct mtp_error {
    int status;         /* enum mtp_status */
    char code[32];      /* protocol code, or this side's name */
    char message[256];  /* human text */
    char field[64];     /* bad_params: the field; else "" */
    char limit[64];     /* over_limit: the limit; else "" */
};

typedef struct mtp_client mtp_client;

/* Writes the daemon's default address (docs/protocol.md "Transport")
 * into buf. Returns the length (snprintf semantics). */
int mtp_default_address(char *buf, size_t len);

/* Connects to `address` ("unix:PATH", "tcp:HOST:PORT", or a bare path;
 * NULL: mtp_default_address()). With a token, sends `hello` with it first.
 * Returns the client, or NULL with *status set (and err filled when not
 * NULL). */
mtp_client *mtp_client_connect(const char *address, const char *token,
                               int *status, struct mtp_error *err);
/* Wraps a connected stream socket (tests; the client then owns fd). */
mtp_client *mtp_client_from_fd(int fd);
/* Closes the connection and frees the client (NULL is fine). */
void mtp_client_free(mtp_client *c);

/* The last failure of this client (status MTP_OK after a success). */
const struct mtp_error *mtp_client_error(const mtp_client *c);
/* Gives up on a reply after ms milliseconds without any byte (0: wait
 * forever, the default). A timeout leaves the connection unusable. */
void mtp_client_set_timeout(mtp_client *c, int ms);
/* Largest frame accepted from the daemon (default 64 MiB). */
void mtp_client_set_max_frame(mtp_client *c, size_t bytes);

/* Asks the daemon to cancel this client's running call (a streamed
 * generate/fim ends with finish_reason "cancelled"; a queued one fails
 * with MTP_E_CANCELLED). Safe from any thread and from the chunk
 * callback; a no-op when nothing runs. Returns 0 or MTP_E_IO. */
int mtp_client_cancel(mtp_client *c);

/* Called once per streamed chunk, on the thread running the call. text is
 * not NUL-terminated; a chunk may carry ids and no text. Return nonzero to
 * cancel the request (the call then still returns its final result). */
typedef int (*mtp_chunk_fn)(void *ud, const char *text, size_t text_len,
                            const int32_t *ids, size_t n_ids);

/* --- generic call ---------------------------------------------------- */

/* Sends `method` with params (a msgpack-encoded map, or NULL/0 for {})
 * and waits for its response. Chunks (generate.chunk for this msgid) go to
 * cb when given. On success *result (if not NULL) points at the result
 * object, owned by the client until its next call. */
int mtp_client_call(mtp_client *c, const char *method, const void *params,
                    size_t params_len, mtp_chunk_fn cb, void *ud,
                    const msgpack_object **result);

/* The result object of this client's last successful call (NULL after a
 * failure), valid until its next call: lets a typed call's caller print
 * the whole reply, e.g. with mtp_to_json(). */
const msgpack_object *mtp_client_last_result(const mtp_client *c);

/* --- hello ------------------------------------------------------------- */

struct mtp_server_info {
    char server[32];
    char version[32];
    int protocol;
    char model[128];
    int64_t vocab_size, context_length, mtp_modules, kv_bytes_per_token;
    int64_t max_frame, max_sessions, max_tokens, kv_budget_bytes;
};

/* Sends `hello` (token may be NULL) and fills info (may be NULL). */
int mtp_hello(mtp_client *c, const char *token, struct mtp_server_info *info);

/* --- generation -------------------------------------------------------- */

#define MTP_DRAFT_DEFAULT (-2) /* the daemon's --draft-tokens */
#define MTP_DRAFT_AUTO (-1)    /* "auto" */

struct mtp_message {
    const char *role;
    const char *content;
};

/* Request fields. Initialise with mtp_gen_params_init(): every field then
 * means "the daemon's default" and is not sent. Exactly one of prompt,
 * ids, messages (or prefix+suffix for fim) is set. */
struct mtp_gen_params {
    const char *session; /* NULL: a temporary session */
    const char *prompt;
    const int32_t *ids;
    size_t n_ids;
    const struct mtp_message *messages;
    size_t n_messages;
    const char *prefix, *suffix; /* fim only */
    int max_tokens;              /* 0: default */
    const char *const *stop;
    size_t n_stop;
    double temperature; /* < 0: default */
    double top_p;       /* <= 0: default */
    int top_k;          /* < 0: default */
    int64_t seed;
    bool has_seed;
    int draft_tokens; /* 0..16, MTP_DRAFT_AUTO or MTP_DRAFT_DEFAULT */
    bool ignore_eos;
};

void mtp_gen_params_init(struct mtp_gen_params *p);

/* STATS of one request (or summed), as docs/protocol.md lists them.
 * Arrays hold n_positions / n_k_histogram entries. */
struct mtp_stats {
    int64_t prompt_tokens, generated_tokens, verify_passes, drafts;
    int64_t drafted_tokens, accepted_tokens, auto_pauses;
    int64_t prompt_tokens_reused;
    double acceptance_rate, mean_accepted_length, tokens_per_pass;
    int n_positions;
    double acceptance_by_position[MTP_K_MAX];
    double acceptance_by_position_conditional[MTP_K_MAX];
    int n_k_histogram;
    int64_t k_histogram[MTP_K_MAX + 1];
    double prefill_seconds, decode_seconds, draft_seconds, verify_seconds;
    double refill_seconds, prefill_tokens_per_s, decode_tokens_per_s;
    double queue_seconds;
    /* The counts behind the per-position ratios, when the daemon sends
     * them (optional integer arrays drafted_by_position,
     * reached_by_position, accepted_by_position; has_counts then). */
    bool has_counts;
    int64_t drafted_by_position[MTP_K_MAX];
    int64_t reached_by_position[MTP_K_MAX];
    int64_t accepted_by_position[MTP_K_MAX];
};

struct mtp_result {
    char *text; /* NUL-terminated, owned */
    size_t text_len;
    int32_t *ids; /* owned */
    size_t n_ids;
    char finish_reason[16];
    char error[256]; /* finish_reason "error": why it could not go on */
    struct mtp_stats stats;
};

/* Runs `generate` (streaming when cb is given) and fills res. On failure
 * res is left empty (safe to mtp_result_free). */
int mtp_generate(mtp_client *c, const struct mtp_gen_params *p,
                 mtp_chunk_fn cb, void *ud, struct mtp_result *res);
/* Runs `fim` with p->prefix and p->suffix (other fields as generate). */
int mtp_fim(mtp_client *c, const struct mtp_gen_params *p, mtp_chunk_fn cb,
            void *ud, struct mtp_result *res);
void mtp_result_free(struct mtp_result *res);

/* Parses a STATS map (zeroes st first). Missing fields stay 0. */
int mtp_stats_parse(const msgpack_object *o, struct mtp_stats *st);

/* --- sessions ---------------------------------------------------------- */

struct mtp_session_info {
    char session[MTP_SESSION_ID_LEN + 1];
    int64_t tokens, kv_bytes, requests;
    double last_use;
    bool busy;
    struct mtp_stats stats;
};

/* Opens a session; id receives its 32-hex-character id. */
int mtp_session_open(mtp_client *c, char id[MTP_SESSION_ID_LEN + 1]);
int mtp_session_close(mtp_client *c, const char *id);
int mtp_session_info(mtp_client *c, const char *id,
                     struct mtp_session_info *info);

/* --- tokenizer --------------------------------------------------------- */

/* add_special: 1 / 0, or -1 for the daemon's default. */
int mtp_tokenize(mtp_client *c, const char *text, int add_special,
                 int32_t **ids, size_t *n_ids);
int mtp_detokenize(mtp_client *c, const int32_t *ids, size_t n_ids,
                   char **text);

/* --- server stats ------------------------------------------------------ */

struct mtp_server_stats {
    double uptime_seconds, tokens_per_s;
    int64_t requests, requests_active, queue_depth, tokens_generated;
    int64_t prompt_tokens, prompt_tokens_reused, sessions;
    int64_t kv_bytes_in_use, kv_budget_bytes;
    struct mtp_stats spec; /* summed over finished requests */
};

/* Runs `stats`. st (may be NULL) gets the main numbers; json (may be
 * NULL) the whole reply as JSON text (free() it). */
int mtp_server_stats(mtp_client *c, struct mtp_server_stats *st,
                     char **json);

/* --- msgpack helpers ----------------------------------------------------- */

/* The value of key in map o, or NULL (also when o is not a map). */
const msgpack_object *mtp_map_get(const msgpack_object *o, const char *key);
/* o as JSON text (malloc'd, NUL-terminated; NULL on NOMEM). Non-UTF-8
 * bytes and bin become \u escapes of their bytes; ext becomes null. */
char *mtp_to_json(const msgpack_object *o);

#ifdef __cplusplus
}
#endif
#endif
