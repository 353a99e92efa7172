/*
 * tok_internal.h - data structures shared by the tokenizer's .c files.
 * Not a public header: only model/tokenizer/ and its unit tests include it.
 *
 * Strings (token texts, decoder bytes) live in byte arrays owned by
 * struct mtpd_tok and are referenced by 32-bit offsets, so the arrays can
 * grow while loading. Ids are int32_t; a "hole" id (no token) has
 * tok_len == TOK_NOLEN.
 */
#ifndef MTPD_TOK_INTERNAL_H
#define MTPD_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_NOLEN UINT32_MAX
#define TOK_MAX_STAGES 16 /* flattened pre-tokenizer stages */

/* ---- growable byte store (tok_map.c) ---- */
struct tok_bytes {
    char *p;
    size_t n, cap;
};
/* Appends len bytes; returns the offset or -1 on out of memory / >4 GiB. */
int64_t tok_bytes_add(struct tok_bytes *b, const void *s, size_t len);

/* ---- string -> int32 open-addressing map (tok_map.c) ---- */
struct tok_strslot {
    uint64_t hash; /* 0 = empty (real hashes are forced non-zero) */
    uint32_t off;  /* key offset into the owner's tok_bytes */
    uint32_t len;
    int32_t val;
};
struct tok_strmap {
    struct tok_strslot *slots;
    size_t cap, n; /* cap: power of two, n <= cap / 2 */
};
uint64_t tok_hash(const void *s, size_t len);
int tok_strmap_init(struct tok_strmap *m, size_t expect);
void tok_strmap_free(struct tok_strmap *m);
/* Inserts or overwrites key (stored at off in store). 0 or -1 (no memory). */
int tok_strmap_put(struct tok_strmap *m, const struct tok_bytes *store,
                   uint32_t off, uint32_t len, int32_t val);
/* Value for key, or -1. */
int32_t tok_strmap_get(const struct tok_strmap *m,
                       const struct tok_bytes *store, const char *key,
                       size_t len);

/* ---- uint64 -> uint64 map for merges (tok_map.c) ---- */
struct tok_u64slot {
    uint64_t key; /* UINT64_MAX = empty */
    uint64_t val;
};
struct tok_u64map {
    struct tok_u64slot *slots;
    size_t cap, n;
    unsigned shift; /* 64 - log2(cap) */
};
int tok_u64map_init(struct tok_u64map *m, size_t expect);
void tok_u64map_free(struct tok_u64map *m);
int tok_u64map_put(struct tok_u64map *m, uint64_t key, uint64_t val);
static inline const struct tok_u64slot *
tok_u64map_find(const struct tok_u64map *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> m->shift);
    for (;;) {
        const struct tok_u64slot *s = &m->slots[i];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
        i = (i + 1) & mask;
    }
}

/* ---- bounded word cache: word bytes -> ids (tok_map.c) ---- */
struct tok_cslot {
    uint64_t hash; /* 0 = empty */
    uint32_t off;  /* key bytes at arena+off, then ids (4-aligned) */
    uint16_t klen;
    uint16_t nids;
};
struct tok_cache {
    struct tok_cslot *slots;
    size_t cap, n;
    char *arena;
    size_t used, acap;
};
#define TOK_CACHE_MAX_WORD 255 /* longer words are not cached */
int tok_cache_init(struct tok_cache *c, size_t slots, size_t arena_bytes);
void tok_cache_free(struct tok_cache *c);
/* Ids of word or NULL; *n gets their count. */
const int32_t *tok_cache_get(const struct tok_cache *c, const char *w,
                             size_t len, uint64_t h, size_t *n);
/* Stores (drops everything first when full). Silently skips on failure. */
void tok_cache_put(struct tok_cache *c, const char *w, size_t len, uint64_t h,
                   const int32_t *ids, size_t n);

/* ---- UTF-8 (tok_utf8.c) ---- */
/* 0 when valid; else -1 and *bad = offset of the first invalid byte. */
int tok_utf8_check(const char *s, size_t n, size_t *bad);
/* Decodes one code point of valid UTF-8 at s; returns its byte length. */
int tok_utf8_next(const unsigned char *s, uint32_t *cp);
/*
 * Lossy UTF-8 decoding state machine (Rust String::from_utf8_lossy
 * semantics: each maximal invalid subpart becomes one U+FFFD). Feed bytes;
 * complete characters are appended to out; an incomplete valid prefix
 * stays in pend. Returns 0 or -1 (out of memory).
 */
int tok_utf8_lossy_feed(unsigned char *pend, int *npend, const char *s,
                        size_t n, struct mtpd_tok_buf *out);
int tok_utf8_lossy_flush(unsigned char *pend, int *npend,
                         struct mtpd_tok_buf *out);

/* ---- byte-level alphabet (tok_bytelevel.c) ---- */
/* GPT-2 byte -> code point (0..323). */
uint32_t tok_bl_byte_to_cp(unsigned b);
/* Code point -> byte, or -1 when cp is not in the byte-level alphabet. */
int tok_bl_cp_to_byte(uint32_t cp);
/* Maps s (UTF-8 of byte-level chars) to raw bytes into out (capacity >=
 * len). Returns the byte count, or -1 when a char is not in the alphabet. */
long tok_bl_unmap(const char *s, size_t len, char *out);

/* ---- output buffers (tok_map.c) ---- */
int tok_ids_push(struct mtpd_tok_ids *a, const int32_t *v, size_t n);
int tok_buf_put(struct mtpd_tok_buf *b, const void *s, size_t n);

/* ---- errors ---- */
int tok_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- pre-tokenizer ---- */
enum tok_behavior {
    TOK_REMOVED,
    TOK_ISOLATED,
    TOK_MERGED_PREV,
    TOK_MERGED_NEXT,
    TOK_CONTIGUOUS,
};
enum tok_stage_type {
    TOK_ST_SPLIT,     /* regex split (also Digits, Punctuation, ...) */
    TOK_ST_BYTELEVEL, /* optional prefix space + GPT-2 regex; last stage */
};
struct tok_stage {
    enum tok_stage_type type;
    pcre2_code *re; /* SPLIT: the pattern; BYTELEVEL: GPT-2 or NULL */
    enum tok_behavior behavior;
    int invert;
    int add_prefix_space; /* BYTELEVEL */
};

/* ---- added tokens ---- */
struct tok_added {
    int32_t id;
    uint32_t off, len; /* content in tok->strs */
    unsigned char special, lstrip, rstrip, single_word, normalized;
};
struct tok_trie_node {
    int32_t child;   /* first child or -1 */
    int32_t sibling; /* next sibling or -1 */
    int32_t added;   /* index into tok->added ending here, or -1 */
    unsigned char byte;
};
struct tok_trie {
    struct tok_trie_node *nodes; /* nodes[0] is the root */
    size_t n, cap;
    int32_t root[256]; /* root's child per first byte, or -1 */
    int empty;         /* no tokens */
};

enum tok_decoder { TOK_DEC_NONE, TOK_DEC_BYTELEVEL };
enum tok_chat { TOK_CHAT_NONE, TOK_CHAT_UNKNOWN, TOK_CHAT_DSV3,
                TOK_CHAT_DSV3_PLAIN };

struct mtpd_tok {
    /* id space: [0, n_ids) */
    int32_t n_ids;
    uint32_t *tok_off, *tok_len; /* token text (tokenizer.json form) */
    uint32_t *dec_off, *dec_len; /* bytes the decoder emits */
    unsigned char *special;      /* per id: content is a special token */
    struct tok_bytes strs;       /* token texts */
    struct tok_bytes decb;       /* decoder bytes */

    /* BPE model */
    struct tok_strmap vocab;   /* model vocab: token text -> id */
    struct tok_strmap added_map; /* added token content -> id */
    struct tok_u64map merges;  /* (a << 32 | b) -> (rank << 32 | new id) */
    int byte_level;            /* words are raw bytes mapped by byte_id */
    int32_t byte_id[256];      /* id of the byte-level char of each byte */
    int32_t unk_id;            /* -1: none */
    int fuse_unk, byte_fallback, ignore_merges;
    struct tok_strmap rawvocab; /* byte_level && ignore_merges: raw -> id */
    struct tok_bytes rawstrs;
    int32_t fallback_id[256];  /* byte_fallback: id of <0xXX> or -1 */

    /* added tokens */
    struct tok_added *added;
    size_t n_added;
    struct tok_trie trie_raw;  /* normalized == false: matched first */
    struct tok_trie trie_norm; /* normalized == true: in the gaps */
    int has_special;           /* some added token is special */
    pcre2_code *word_re;       /* \w of Rust's regex, for single_word */

    /* pre-tokenizer */
    struct tok_stage stages[TOK_MAX_STAGES];
    int n_stages;

    enum tok_decoder decoder;

    /* post-processor (single sequence template) */
    int32_t *post_pre, *post_post;
    size_t n_post_pre, n_post_post;

    /* tokenizer_config.json */
    int32_t bos_id, eos_id;
    char *bos_str, *eos_str;
    int add_bos, add_eos;
    enum tok_chat chat;
};

/* tok_load.c */
int tok_load_json(struct mtpd_tok *tok, const char *path, char *err,
                  size_t errlen);
/* tok_config.c */
int tok_load_config(struct mtpd_tok *tok, const char *path, char *err,
                    size_t errlen);
/* tok_format.c: template fingerprint -> kind */
enum tok_chat tok_chat_recognise(const char *tmpl, size_t len);
/* tok_pretok.c */
extern const char tok_rust_word_class[]; /* class body of Rust regex \w */
int tok_pretok_compile(struct tok_stage *st, const char *pattern, size_t len,
                       int literal, const char *where, char *err,
                       size_t errlen);
pcre2_code *tok_regex_compile(const char *pattern, size_t len, int literal,
                              char *err, size_t errlen);
void tok_stages_free(struct mtpd_tok *tok);
/* tok_added.c */
int tok_trie_add(struct tok_trie *t, const char *s, size_t len,
                 int32_t added_index);
void tok_trie_free(struct tok_trie *t);
int tok_added_build(struct mtpd_tok *tok, char *err, size_t errlen);

/* ---- encoder state ---- */
struct tok_span {
    uint32_t s, e;
    uint32_t m; /* regex match (after invert); 1 = drop with Removed */
};
struct tok_spanvec {
    struct tok_span *v;
    size_t n, cap;
};
int tok_spans_push(struct tok_spanvec *sv, uint32_t s, uint32_t e,
                   uint32_t m);
/* A piece of the input: an added token (id >= 0) or text (id == -1). */
struct tok_seg {
    uint32_t s, e;
    int32_t id;
};
struct tok_segvec {
    struct tok_seg *v;
    size_t n, cap;
};
int tok_segs_push(struct tok_segvec *sv, uint32_t s, uint32_t e, int32_t id);

struct tok_heap_ent {
    uint64_t key; /* rank << 32 | pos: min-heap order of HF's Merge */
    int32_t new_id;
};

struct mtpd_tok_enc {
    const struct mtpd_tok *tok;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    struct tok_spanvec spans[TOK_MAX_STAGES + 1];
    struct tok_segvec seg1, seg2; /* added-token pass 1 / final result */
    struct tok_bytes pfx[TOK_MAX_STAGES]; /* ByteLevel prefix-space copies */
    /* BPE scratch */
    int32_t *sym_id, *sym_prev, *sym_next;
    uint32_t *sym_len;
    size_t sym_cap;
    struct tok_heap_ent *heap;
    size_t heap_cap;
    struct tok_cache cache;
    struct mtpd_tok_buf render; /* chat / FIM text */
    int err_code;               /* first error inside a callback chain */
    char err[256];
};

/* tok_pretok.c: runs stages from stage on one piece; calls tok_bpe_word
 * for every final word. 0 or negative code (message in enc->err). */
int tok_pretok_run(struct mtpd_tok_enc *enc, int stage, const char *p,
                   size_t n, struct mtpd_tok_ids *out);
/* tok_added.c: splits text by added tokens into enc->seg2 (covering the
 * whole text in order). 0 or negative code. */
int tok_added_split(struct mtpd_tok_enc *enc, const char *text, size_t len,
                    int parse_special);
/* tok_bpe.c: appends the ids of one pre-tokenized word. */
int tok_bpe_word(struct mtpd_tok_enc *enc, const char *w, size_t n,
                 struct mtpd_tok_ids *out);

#endif
