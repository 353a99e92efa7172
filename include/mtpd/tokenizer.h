/*
 * tokenizer.h - Hugging Face tokenizer.json (byte-level BPE) in C.
 *
 * Produces exactly the ids of the `tokenizers` Python/Rust package for the
 * subset of tokenizer.json that DeepSeek-V3-style models use (see
 * docs/tokenizer.md for the supported keys and the few documented
 * differences), decodes ids back to text (also incrementally, one id at a
 * time, never cutting a UTF-8 character), and renders the DeepSeek-V3 chat
 * format and the DeepSeek-Coder fill-in-the-middle format.
 *
 * Objects and owners
 * - struct mtpd_tok: vocabulary, merges, added tokens, compiled
 *   pre-tokenizer regexes, tokenizer_config.json settings. Immutable after
 *   mtpd_tok_load*(); may be shared by any number of threads.
 * - struct mtpd_tok_enc: per-thread encoding state (scratch buffers, PCRE2
 *   match data, a bounded word cache). Not thread-safe: one per thread.
 * - struct mtpd_tok_ids / struct mtpd_tok_buf: growable output arrays owned
 *   by the caller; functions append to them.
 * - struct mtpd_tok_stream: incremental decoder, a plain struct the caller
 *   owns (no heap memory inside).
 *
 * Errors: every function that can fail returns 0 or a negative
 * MTPD_TOK_E* code and, when err is not NULL, writes a NUL-terminated
 * message of at most errlen bytes. Nothing aborts. On error the output
 * arrays keep their previous length.
 */
#ifndef MTPD_TOKENIZER_H
#define MTPD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mtpd_tok_err {
    MTPD_TOK_OK = 0,
    MTPD_TOK_EINVAL = -1,       /* bad argument */
    MTPD_TOK_ENOMEM = -2,       /* allocation failed */
    MTPD_TOK_EIO = -3,          /* file could not be read */
    MTPD_TOK_EFORMAT = -4,      /* tokenizer.json malformed / inconsistent */
    MTPD_TOK_EUNSUPPORTED = -7, /* valid HF feature this code does not do */
    MTPD_TOK_EUTF8 = -8,        /* input text is not valid UTF-8 */
    MTPD_TOK_ERANGE = -9,       /* id outside the vocabulary */
    MTPD_TOK_ETEMPLATE = -10,   /* no / unknown chat template, bad message */
};
const char *mtpd_tok_err_str(int err);

/* Encode flags. */
#define MTPD_TOK_ADD_SPECIAL 0x1u   /* apply the post_processor (HF        \
                                       add_special_tokens=True)           */
#define MTPD_TOK_NO_PARSE_SPECIAL 0x2u /* special added tokens written in \
                                          the text are plain text (HF     \
                                          encode_special_tokens=True)     */
#define MTPD_TOK_ADD_BOS 0x4u /* prepend bos / append eos as              \
                                 tokenizer_config.json's add_bos_token /   \
                                 add_eos_token say (transformers 4.x       \
                                 LlamaTokenizerFast behaviour)            */
/* Decode flags. */
#define MTPD_TOK_SKIP_SPECIAL 0x1u /* drop special tokens (HF            \
                                      skip_special_tokens=True)           */

struct mtpd_tok;
struct mtpd_tok_enc;

struct mtpd_tok_ids {
    int32_t *v;
    size_t n, cap;
};

struct mtpd_tok_buf {
    char *p; /* NUL-terminated when non-NULL */
    size_t n, cap;
};

void mtpd_tok_ids_free(struct mtpd_tok_ids *a);
void mtpd_tok_buf_free(struct mtpd_tok_buf *b);
/* Append helpers: 0 or MTPD_TOK_ENOMEM. The buffer stays NUL-terminated. */
int mtpd_tok_ids_append(struct mtpd_tok_ids *a, const int32_t *v, size_t n);
int mtpd_tok_buf_append(struct mtpd_tok_buf *b, const void *s, size_t n);
/* 1 when s[0..n) is valid UTF-8 (no surrogates, no overlongs), else 0. */
int mtpd_tok_utf8_valid(const char *s, size_t n);

/*
 * Loads tokenizer_json (required) and config_json (tokenizer_config.json;
 * NULL to skip). Returns 0 and stores a new tokenizer in *out, or a
 * negative code with a message naming the offending key
 * ("pre_tokenizer.pretokenizers[2].type: unknown type 'Foo'").
 */
int mtpd_tok_load(struct mtpd_tok **out, const char *tokenizer_json,
                  const char *config_json, char *err, size_t errlen);
/* dir/tokenizer.json plus dir/tokenizer_config.json when that file exists. */
int mtpd_tok_load_dir(struct mtpd_tok **out, const char *dir, char *err,
                      size_t errlen);
void mtpd_tok_free(struct mtpd_tok *tok);

/* Number of ids: 1 + the largest id of the vocabulary or added tokens. */
int32_t mtpd_tok_n_ids(const struct mtpd_tok *tok);
/* Id of an exact token string (added tokens first, then the model
 * vocabulary), or -1. */
int32_t mtpd_tok_token_id(const struct mtpd_tok *tok, const char *s,
                          size_t len);
/* Token string of an id (as in tokenizer.json), or NULL when out of range. */
const char *mtpd_tok_token_str(const struct mtpd_tok *tok, int32_t id,
                               size_t *len);
int mtpd_tok_is_special(const struct mtpd_tok *tok, int32_t id);
/* From tokenizer_config.json; -1 when not configured. */
int32_t mtpd_tok_bos_id(const struct mtpd_tok *tok);
int32_t mtpd_tok_eos_id(const struct mtpd_tok *tok);
/* Name of the recognised chat template ("deepseek-v3", ...) or NULL. */
const char *mtpd_tok_chat_template_name(const struct mtpd_tok *tok);

/* Per-thread encoder; NULL on out of memory. */
struct mtpd_tok_enc *mtpd_tok_enc_new(const struct mtpd_tok *tok);
void mtpd_tok_enc_free(struct mtpd_tok_enc *enc);

/*
 * Appends the ids of text (len bytes, must be valid UTF-8: anything else,
 * including encoded surrogates, is MTPD_TOK_EUTF8 naming the byte offset)
 * to out. flags: MTPD_TOK_ADD_SPECIAL | MTPD_TOK_NO_PARSE_SPECIAL |
 * MTPD_TOK_ADD_BOS. With MTPD_TOK_ADD_SPECIAL alone this equals
 * tokenizers.Tokenizer.encode(text).ids.
 */
int mtpd_tok_encode(struct mtpd_tok_enc *enc, const char *text, size_t len,
                    unsigned flags, struct mtpd_tok_ids *out, char *err,
                    size_t errlen);

/*
 * Appends the text of ids to out (NUL-terminated). Equals
 * Tokenizer.decode(ids, skip_special_tokens=flags & MTPD_TOK_SKIP_SPECIAL)
 * except that an id outside the vocabulary is MTPD_TOK_ERANGE (HF drops
 * it silently). Invalid UTF-8 produced by the byte-level tokens becomes
 * U+FFFD exactly as Rust's String::from_utf8_lossy does.
 */
int mtpd_tok_decode(const struct mtpd_tok *tok, const int32_t *ids, size_t n,
                    unsigned flags, struct mtpd_tok_buf *out, char *err,
                    size_t errlen);

/*
 * Incremental decoder: push ids one at a time; each push appends only
 * complete UTF-8 characters (a partial character is held back until the
 * next id completes it or proves it invalid); finish flushes what is held.
 * The concatenation of everything appended equals mtpd_tok_decode() of all
 * the ids with the same flags.
 */
struct mtpd_tok_stream {
    const struct mtpd_tok *tok;
    unsigned flags;
    int n_tokens;          /* tokens emitted so far (for joiners) */
    unsigned char pend[4]; /* held-back bytes of an incomplete character */
    int npend;
};
void mtpd_tok_stream_init(struct mtpd_tok_stream *s,
                          const struct mtpd_tok *tok, unsigned flags);
int mtpd_tok_stream_push(struct mtpd_tok_stream *s, int32_t id,
                         struct mtpd_tok_buf *out, char *err, size_t errlen);
int mtpd_tok_stream_finish(struct mtpd_tok_stream *s,
                           struct mtpd_tok_buf *out);

/* Prompt formats. */
struct mtpd_tok_msg {
    const char *role;    /* "system", "user", "assistant", "tool" */
    const char *content; /* content_len bytes */
    size_t content_len;
};

/*
 * Renders messages with the chat template recognised in
 * tokenizer_config.json (same text as transformers' apply_chat_template
 * for plain-text messages; no Jinja), appending to out. Unknown or missing
 * template, or a role the template does not know: MTPD_TOK_ETEMPLATE.
 */
int mtpd_tok_chat_render(const struct mtpd_tok *tok,
                         const struct mtpd_tok_msg *msgs, size_t n,
                         int add_generation_prompt, struct mtpd_tok_buf *out,
                         char *err, size_t errlen);
/* Render + encode without post-processing (as apply_chat_template does). */
int mtpd_tok_chat_encode(struct mtpd_tok_enc *enc,
                         const struct mtpd_tok_msg *msgs, size_t n,
                         int add_generation_prompt, struct mtpd_tok_ids *out,
                         char *err, size_t errlen);

/*
 * Fill-in-the-middle prompt: [bos when add_bos_token] <｜fim▁begin｜>prefix
 * <｜fim▁hole｜>suffix<｜fim▁end｜>, the order DeepSeek-Coder documents
 * (the model generates the middle). MTPD_TOK_ETEMPLATE when the tokenizer
 * lacks the three FIM tokens.
 */
int mtpd_tok_fim_render(const struct mtpd_tok *tok, const char *prefix,
                        size_t prefix_len, const char *suffix,
                        size_t suffix_len, struct mtpd_tok_buf *out,
                        char *err, size_t errlen);
int mtpd_tok_fim_encode(struct mtpd_tok_enc *enc, const char *prefix,
                        size_t prefix_len, const char *suffix,
                        size_t suffix_len, struct mtpd_tok_ids *out,
                        char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
