/*
 * tok_load.c - reads tokenizer.json into struct mtpd_tok.
 *
 * Accepted (anything else is MTPD_TOK_EUNSUPPORTED naming the key):
 *   model          BPE (vocab; merges as "a b" strings or [a, b] pairs;
 *                  unk_token, fuse_unk, byte_fallback, ignore_merges;
 *                  dropout null/0; no subword prefix/suffix)
 *   added_tokens   content, id, special, lstrip, rstrip, single_word,
 *                  normalized
 *   normalizer     null or (nested) Sequence of nothing
 *   pre_tokenizer  null, Sequence, Split (Regex | String, all five
 *                  behaviours, invert), ByteLevel (last), Digits,
 *                  Punctuation, Whitespace, WhitespaceSplit
 *   decoder        null or ByteLevel
 *   post_processor null, ByteLevel, TemplateProcessing (single), Sequence
 *   truncation, padding: null
 * Malformed input is MTPD_TOK_EFORMAT with the JSON path of the key.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define E_FMT MTPD_TOK_EFORMAT
#define E_UNS MTPD_TOK_EUNSUPPORTED
#define E_MEM MTPD_TOK_ENOMEM

static int oom(char *err, size_t errlen)
{
    return tok_err(err, errlen, E_MEM, "out of memory");
}

/* Optional boolean member: absent or null -> def. */
static int opt_bool(const struct json *o, const char *key, int def,
                    const char *path, int *out, char *err, size_t errlen)
{
    const struct json *v = json_get(o, key);
    if (!v || v->type == JSON_NULL) {
        *out = def;
        return 0;
    }
    if (json_bool(v, out) < 0)
        return tok_err(err, errlen, E_FMT, "%s.%s: expected a boolean, got %s",
                       path, key, json_type_str(v->type));
    return 0;
}

/* Required string member. */
static const struct json *req_str(const struct json *o, const char *key,
                                  const char *path, char *err, size_t errlen)
{
    const struct json *v = json_get(o, key);
    if (!v) {
        tok_err(err, errlen, E_FMT, "%s: missing key '%s'", path, key);
        return NULL;
    }
    if (v->type != JSON_STRING) {
        tok_err(err, errlen, E_FMT, "%s.%s: expected a string, got %s", path,
                key, json_type_str(v->type));
        return NULL;
    }
    return v;
}

static int is_null(const struct json *v) { return !v || v->type == JSON_NULL; }

/* ---------------- model ---------------- */

/* Looks up a vocab token of a merge; error names the merge. */
static int merge_lookup(struct mtpd_tok *tok, const char *s, size_t n,
                        size_t i, int32_t *id, char *err, size_t errlen)
{
    *id = tok_strmap_get(&tok->vocab, &tok->strs, s, n);
    char q[JSON_ESC_CAP];
    if (*id < 0)
        return tok_err(err, errlen, E_FMT,
                       "model.merges[%zu]: token '%s' is not in model.vocab",
                       i, json_esc(q, sizeof q, s, n));
    return 0;
}

static int load_merges(struct mtpd_tok *tok, const struct json *merges,
                       char *err, size_t errlen)
{
    if (is_null(merges))
        return tok_u64map_init(&tok->merges, 1) < 0 ? oom(err, errlen) : 0;
    if (merges->type != JSON_ARRAY)
        return tok_err(err, errlen, E_FMT,
                       "model.merges: expected an array, got %s",
                       json_type_str(merges->type));
    if (tok_u64map_init(&tok->merges, merges->len) < 0)
        return oom(err, errlen);
    char *cat = NULL;
    size_t catcap = 0;
    uint32_t rank = 0;
    int rc = 0;
    for (size_t i = 0; i < merges->len; i++) {
        const struct json *m = merges->u.items[i];
        const char *a, *b;
        size_t na, nb;
        if (m->type == JSON_STRING) {
            if (m->len >= 8 && memcmp(m->u.str, "#version", 8) == 0)
                continue; /* legacy merges.txt header line */
            const char *sp = memchr(m->u.str, ' ', m->len);
            if (!sp || memchr(sp + 1, ' ', m->len - (size_t)(sp + 1 - m->u.str))) {
                char q[JSON_ESC_CAP];
                rc = tok_err(err, errlen, E_FMT,
                             "model.merges[%zu]: expected \"left right\" "
                             "(exactly one space), got \"%s\"",
                             i, json_esc(q, sizeof q, m->u.str, m->len));
                goto out;
            }
            a = m->u.str;
            na = (size_t)(sp - a);
            b = sp + 1;
            nb = m->len - na - 1;
        } else if (m->type == JSON_ARRAY && m->len == 2 &&
                   m->u.items[0]->type == JSON_STRING &&
                   m->u.items[1]->type == JSON_STRING) {
            a = m->u.items[0]->u.str;
            na = m->u.items[0]->len;
            b = m->u.items[1]->u.str;
            nb = m->u.items[1]->len;
        } else {
            rc = tok_err(err, errlen, E_FMT,
                         "model.merges[%zu]: expected \"left right\" or "
                         "[\"left\", \"right\"]",
                         i);
            goto out;
        }
        int32_t ia, ib, inew;
        if ((rc = merge_lookup(tok, a, na, i, &ia, err, errlen)) < 0 ||
            (rc = merge_lookup(tok, b, nb, i, &ib, err, errlen)) < 0)
            goto out;
        if (na + nb > catcap) {
            catcap = (na + nb) * 2 + 16;
            char *p = realloc(cat, catcap);
            if (!p) {
                rc = oom(err, errlen);
                goto out;
            }
            cat = p;
        }
        memcpy(cat, a, na);
        memcpy(cat + na, b, nb);
        if ((rc = merge_lookup(tok, cat, na + nb, i, &inew, err, errlen)) < 0)
            goto out;
        /* later duplicates win, as collecting into a HashMap does */
        if (tok_u64map_put(&tok->merges,
                           ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib,
                           ((uint64_t)rank << 32) | (uint32_t)inew) < 0) {
            rc = oom(err, errlen);
            goto out;
        }
        rank++;
    }
out:
    free(cat);
    return rc;
}

static int load_model(struct mtpd_tok *tok, const struct json *model,
                      int32_t *max_id, char *err, size_t errlen)
{
    int rc;
    if (!model)
        return tok_err(err, errlen, E_FMT, "missing key 'model'");
    if (model->type != JSON_OBJECT)
        return tok_err(err, errlen, E_FMT, "model: expected an object, got %s",
                       json_type_str(model->type));
    const struct json *type = json_get(model, "type");
    if (type) {
        if (type->type != JSON_STRING)
            return tok_err(err, errlen, E_FMT, "model.type: expected a string");
        char q[JSON_ESC_CAP];
        if (strcmp(type->u.str, "BPE") != 0)
            return tok_err(err, errlen, E_UNS,
                           "model.type: '%s' is not supported (only BPE)",
                           json_esc(q, sizeof q, type->u.str, type->len));
    } else if (!json_get(model, "merges")) {
        return tok_err(err, errlen, E_UNS,
                       "model: no 'type' and no 'merges': only BPE models "
                       "are supported");
    }
    const struct json *v = json_get(model, "dropout");
    double d;
    if (!is_null(v) && (json_double(v, &d) < 0 || d != 0.0))
        return tok_err(err, errlen, E_UNS,
                       "model.dropout: BPE dropout is not supported");
    static const char *const affix[] = {"continuing_subword_prefix",
                                        "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_get(model, affix[i]);
        if (!is_null(v) && !(v->type == JSON_STRING && v->len == 0))
            return tok_err(err, errlen, E_UNS, "model.%s: not supported",
                           affix[i]);
    }
    if ((rc = opt_bool(model, "fuse_unk", 0, "model", &tok->fuse_unk, err,
                       errlen)) < 0 ||
        (rc = opt_bool(model, "byte_fallback", 0, "model",
                       &tok->byte_fallback, err, errlen)) < 0 ||
        (rc = opt_bool(model, "ignore_merges", 0, "model",
                       &tok->ignore_merges, err, errlen)) < 0)
        return rc;

    const struct json *vocab = json_get(model, "vocab");
    if (!vocab)
        return tok_err(err, errlen, E_FMT, "model: missing key 'vocab'");
    if (vocab->type != JSON_OBJECT)
        return tok_err(err, errlen, E_FMT, "model.vocab: expected an object");
    if (tok_strmap_init(&tok->vocab, vocab->len) < 0)
        return oom(err, errlen);
    for (size_t i = 0; i < vocab->len; i++) {
        const struct json_member *m = &vocab->u.members[i];
        int64_t id;
        char q[JSON_ESC_CAP];
        if (json_int(m->val, &id) < 0 || id < 0 || id >= INT32_MAX - 1)
            return tok_err(err, errlen, E_FMT,
                           "model.vocab['%s']: expected an id in "
                           "[0, 2^31-2]",
                           json_esc(q, sizeof q, m->key, m->key_len));
        if (tok_utf8_check(m->key, m->key_len, NULL) < 0)
            return tok_err(err, errlen, E_FMT,
                           "model.vocab: key %zu is not valid UTF-8", i);
        int64_t off = tok_bytes_add(&tok->strs, m->key, m->key_len);
        if (off < 0 || tok_strmap_put(&tok->vocab, &tok->strs, (uint32_t)off,
                                      (uint32_t)m->key_len,
                                      (int32_t)id) < 0)
            return oom(err, errlen);
        if (id > *max_id)
            *max_id = (int32_t)id;
    }

    tok->unk_id = -1;
    v = json_get(model, "unk_token");
    if (!is_null(v)) {
        if (v->type != JSON_STRING)
            return tok_err(err, errlen, E_FMT,
                           "model.unk_token: expected a string or null");
        tok->unk_id = tok_strmap_get(&tok->vocab, &tok->strs, v->u.str, v->len);
        char q[JSON_ESC_CAP];
        if (tok->unk_id < 0)
            return tok_err(err, errlen, E_FMT,
                           "model.unk_token: '%s' is not in model.vocab",
                           json_esc(q, sizeof q, v->u.str, v->len));
    }
    return load_merges(tok, json_get(model, "merges"), err, errlen);
}

/* ---------------- added tokens ---------------- */

static int load_added(struct mtpd_tok *tok, const struct json *arr,
                      int32_t *max_id, char *err, size_t errlen)
{
    int rc;
    if (is_null(arr))
        return 0;
    if (arr->type != JSON_ARRAY)
        return tok_err(err, errlen, E_FMT,
                       "added_tokens: expected an array, got %s",
                       json_type_str(arr->type));
    tok->added = calloc(arr->len ? arr->len : 1, sizeof(*tok->added));
    if (!tok->added || tok_strmap_init(&tok->added_map, arr->len) < 0)
        return oom(err, errlen);
    for (size_t i = 0; i < arr->len; i++) {
        const struct json *t = arr->u.items[i];
        char path[48];
        snprintf(path, sizeof(path), "added_tokens[%zu]", i);
        if (t->type != JSON_OBJECT)
            return tok_err(err, errlen, E_FMT, "%s: expected an object", path);
        const struct json *content = req_str(t, "content", path, err, errlen);
        if (!content)
            return E_FMT;
        int64_t id;
        const struct json *jid = json_get(t, "id");
        if (!jid)
            return tok_err(err, errlen, E_FMT, "%s: missing key 'id'", path);
        if (json_int(jid, &id) < 0 || id < 0 || id >= INT32_MAX - 1)
            return tok_err(err, errlen, E_FMT,
                           "%s.id: expected an id in [0, 2^31-2]", path);
        if (tok_utf8_check(content->u.str, content->len, NULL) < 0)
            return tok_err(err, errlen, E_FMT,
                           "%s.content: not valid UTF-8", path);
        int special, lstrip, rstrip, single_word, normalized;
        if ((rc = opt_bool(t, "special", 0, path, &special, err, errlen)) < 0 ||
            (rc = opt_bool(t, "lstrip", 0, path, &lstrip, err, errlen)) < 0 ||
            (rc = opt_bool(t, "rstrip", 0, path, &rstrip, err, errlen)) < 0 ||
            (rc = opt_bool(t, "single_word", 0, path, &single_word, err,
                           errlen)) < 0 ||
            (rc = opt_bool(t, "normalized", !special, path, &normalized, err,
                           errlen)) < 0)
            return rc;
        if (content->len == 0)
            continue; /* HF ignores empty tokens */
        /* a content already in the model vocabulary keeps that id (HF
         * warns when the file says otherwise) */
        int32_t vid = tok_strmap_get(&tok->vocab, &tok->strs, content->u.str,
                                     content->len);
        int64_t off = tok_bytes_add(&tok->strs, content->u.str, content->len);
        if (off < 0)
            return oom(err, errlen);
        struct tok_added *a = &tok->added[tok->n_added++];
        *a = (struct tok_added){
            .id = vid >= 0 ? vid : (int32_t)id,
            .off = (uint32_t)off,
            .len = (uint32_t)content->len,
            .special = (unsigned char)special,
            .lstrip = (unsigned char)lstrip,
            .rstrip = (unsigned char)rstrip,
            .single_word = (unsigned char)single_word,
            .normalized = (unsigned char)normalized,
        };
        if (tok_strmap_put(&tok->added_map, &tok->strs, a->off, a->len,
                           a->id) < 0)
            return oom(err, errlen);
        if (a->id > *max_id)
            *max_id = a->id;
    }
    return 0;
}

/* ---------------- normalizer ---------------- */

static int load_normalizer(const struct json *n, const char *path, char *err,
                           size_t errlen)
{
    if (is_null(n))
        return 0;
    const struct json *type = req_str(n, "type", path, err, errlen);
    if (!type)
        return E_FMT;
    char q[JSON_ESC_CAP];
    if (strcmp(type->u.str, "Sequence") != 0)
        return tok_err(err, errlen, E_UNS,
                       "%s.type: unsupported normalizer '%s' (only an empty "
                       "normalizer is supported)",
                       path, json_esc(q, sizeof q, type->u.str, type->len));
    const struct json *list = json_get(n, "normalizers");
    if (!list || list->type != JSON_ARRAY)
        return tok_err(err, errlen, E_FMT,
                       "%s: missing array 'normalizers'", path);
    for (size_t i = 0; i < list->len; i++) {
        char sub[160];
        snprintf(sub, sizeof(sub), "%s.normalizers[%zu]", path, i);
        int rc = load_normalizer(list->u.items[i], sub, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---------------- pre-tokenizer ---------------- */

static int parse_behavior(const struct json *o, const char *path,
                          enum tok_behavior def, enum tok_behavior *out,
                          char *err, size_t errlen)
{
    const struct json *b = json_get(o, "behavior");
    if (is_null(b)) {
        *out = def;
        return 0;
    }
    static const struct {
        const char *name;
        enum tok_behavior b;
    } names[] = {{"Removed", TOK_REMOVED},
                 {"Isolated", TOK_ISOLATED},
                 {"MergedWithPrevious", TOK_MERGED_PREV},
                 {"MergedWithNext", TOK_MERGED_NEXT},
                 {"Contiguous", TOK_CONTIGUOUS}};
    if (b->type == JSON_STRING)
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strcmp(b->u.str, names[i].name) == 0) {
                *out = names[i].b;
                return 0;
            }
    return tok_err(err, errlen, E_FMT,
                   "%s.behavior: expected one of Removed, Isolated, "
                   "MergedWithPrevious, MergedWithNext, Contiguous",
                   path);
}

static struct tok_stage *new_stage(struct mtpd_tok *tok, const char *path,
                                   char *err, size_t errlen)
{
    if (tok->n_stages == TOK_MAX_STAGES) {
        tok_err(err, errlen, E_UNS, "%s: more than %d pre-tokenizer stages",
                path, TOK_MAX_STAGES);
        return NULL;
    }
    if (tok->n_stages &&
        tok->stages[tok->n_stages - 1].type == TOK_ST_BYTELEVEL) {
        tok_err(err, errlen, E_UNS,
                "%s: a pre-tokenizer after ByteLevel is not supported", path);
        return NULL;
    }
    struct tok_stage *st = &tok->stages[tok->n_stages++];
    memset(st, 0, sizeof(*st));
    return st;
}

/* Adds a Split stage with a built-in pattern. */
static int builtin_split(struct mtpd_tok *tok, const char *path,
                         const char *re, enum tok_behavior b, int invert,
                         char *err, size_t errlen)
{
    struct tok_stage *st = new_stage(tok, path, err, errlen);
    if (!st)
        return E_UNS;
    st->type = TOK_ST_SPLIT;
    st->behavior = b;
    st->invert = invert;
    char msg[200];
    st->re = tok_regex_compile(re, strlen(re), 0, msg, sizeof(msg));
    if (!st->re)
        return tok_err(err, errlen, MTPD_TOK_EINVAL, "%s: %s", path, msg);
    return 0;
}

static const char GPT2_RE[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| "
                              "?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Rust char::is_whitespace (Unicode White_Space) */
static const char WS_CLASS[] =
    "[\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}"
    "\\x{2029}\\x{202F}\\x{205F}\\x{3000}]";

static int load_pretok(struct mtpd_tok *tok, const struct json *p,
                       const char *path, char *err, size_t errlen)
{
    int rc;
    if (is_null(p))
        return 0;
    if (p->type != JSON_OBJECT)
        return tok_err(err, errlen, E_FMT, "%s: expected an object", path);
    const struct json *type = req_str(p, "type", path, err, errlen);
    if (!type)
        return E_FMT;
    const char *t = type->u.str;
    if (strcmp(t, "Sequence") == 0) {
        const struct json *list = json_get(p, "pretokenizers");
        if (!list || list->type != JSON_ARRAY)
            return tok_err(err, errlen, E_FMT,
                           "%s: missing array 'pretokenizers'", path);
        for (size_t i = 0; i < list->len; i++) {
            char sub[160];
            snprintf(sub, sizeof(sub), "%s.pretokenizers[%zu]", path, i);
            if ((rc = load_pretok(tok, list->u.items[i], sub, err, errlen)) < 0)
                return rc;
        }
        return 0;
    }
    if (strcmp(t, "Split") == 0) {
        const struct json *pat = json_get(p, "pattern");
        if (!pat || pat->type != JSON_OBJECT || pat->len != 1 ||
            pat->u.members[0].val->type != JSON_STRING)
            return tok_err(err, errlen, E_FMT,
                           "%s.pattern: expected {\"Regex\": ...} or "
                           "{\"String\": ...}",
                           path);
        const struct json_member *m = &pat->u.members[0];
        char q[JSON_ESC_CAP];
        int literal;
        if (strcmp(m->key, "Regex") == 0)
            literal = 0;
        else if (strcmp(m->key, "String") == 0)
            literal = 1;
        else
            return tok_err(err, errlen, E_FMT,
                           "%s.pattern: unknown kind '%s' (Regex or String)",
                           path, json_esc(q, sizeof q, m->key, m->key_len));
        struct tok_stage *st = new_stage(tok, path, err, errlen);
        if (!st)
            return E_UNS;
        st->type = TOK_ST_SPLIT;
        if ((rc = parse_behavior(p, path, TOK_ISOLATED, &st->behavior, err,
                                 errlen)) < 0 ||
            (rc = opt_bool(p, "invert", 0, path, &st->invert, err, errlen)) < 0)
            return rc;
        if (!json_get(p, "behavior"))
            return tok_err(err, errlen, E_FMT, "%s: missing key 'behavior'",
                           path);
        char msg[200];
        st->re = tok_regex_compile(m->val->u.str, m->val->len, literal, msg,
                                   sizeof(msg));
        if (!st->re)
            return tok_err(err, errlen, E_UNS, "%s.pattern.%s: %s", path,
                           m->key, json_escz(q, sizeof q, msg));
        return 0;
    }
    if (strcmp(t, "ByteLevel") == 0) {
        int aps, ure;
        if ((rc = opt_bool(p, "add_prefix_space", 1, path, &aps, err,
                           errlen)) < 0 ||
            (rc = opt_bool(p, "use_regex", 1, path, &ure, err, errlen)) < 0)
            return rc;
        struct tok_stage *st = new_stage(tok, path, err, errlen);
        if (!st)
            return E_UNS;
        st->type = TOK_ST_BYTELEVEL;
        st->add_prefix_space = aps;
        tok->byte_level = 1;
        if (ure) {
            char msg[200];
            st->re = tok_regex_compile(GPT2_RE, sizeof(GPT2_RE) - 1, 0, msg,
                                       sizeof(msg));
            if (!st->re)
                return tok_err(err, errlen, MTPD_TOK_EINVAL, "%s: %s", path,
                               msg);
        }
        return 0;
    }
    if (strcmp(t, "Digits") == 0) {
        int individual;
        if ((rc = opt_bool(p, "individual_digits", 0, path, &individual, err,
                           errlen)) < 0)
            return rc;
        /* char::is_numeric per character */
        return builtin_split(tok, path, "\\p{N}",
                             individual ? TOK_ISOLATED : TOK_CONTIGUOUS, 0,
                             err, errlen);
    }
    if (strcmp(t, "Punctuation") == 0) {
        enum tok_behavior b = TOK_ISOLATED;
        if ((rc = parse_behavior(p, path, TOK_ISOLATED, &b, err, errlen)) < 0)
            return rc;
        /* is_ascii_punctuation || Unicode P*, per character */
        return builtin_split(tok, path, "[!-/:-@\\[-`{-~\\p{P}]", b, 0, err,
                             errlen);
    }
    if (strcmp(t, "WhitespaceSplit") == 0)
        return builtin_split(tok, path, WS_CLASS, TOK_REMOVED, 0, err, errlen);
    if (strcmp(t, "Whitespace") == 0) {
        /* Rust regex \w+|[^\w\s]+, inverted, Removed */
        const char *w = tok_rust_word_class;
        size_t n = 2 * strlen(w) + sizeof(WS_CLASS) + 16;
        char *re = malloc(n);
        if (!re)
            return oom(err, errlen);
        /* WS_CLASS without its brackets follows \w in the negated class */
        snprintf(re, n, "[%s]+|[^%s%.*s]+", w, w,
                 (int)(sizeof(WS_CLASS) - 3), WS_CLASS + 1);
        rc = builtin_split(tok, path, re, TOK_REMOVED, 1, err, errlen);
        free(re);
        return rc;
    }
    char q[JSON_ESC_CAP];
    return tok_err(err, errlen, E_UNS,
                   "%s.type: unsupported pre-tokenizer '%s'", path,
                   json_escz(q, sizeof q, t));
}

/* ---------------- decoder / post-processor ---------------- */

static int load_decoder(struct mtpd_tok *tok, const struct json *d, char *err,
                        size_t errlen)
{
    tok->decoder = TOK_DEC_NONE;
    if (is_null(d))
        return 0;
    const struct json *type = req_str(d, "type", "decoder", err, errlen);
    if (!type)
        return E_FMT;
    if (strcmp(type->u.str, "ByteLevel") == 0) {
        tok->decoder = TOK_DEC_BYTELEVEL;
        return 0;
    }
    char q[JSON_ESC_CAP];
    return tok_err(err, errlen, E_UNS,
                   "decoder.type: unsupported decoder '%s' (only ByteLevel)",
                   json_esc(q, sizeof q, type->u.str, type->len));
}

/* Resolves a TemplateProcessing special-token name to ids, appending. */
static int template_special(struct mtpd_tok *tok, const struct json *specials,
                            const char *name, const char *path, int32_t **v,
                            size_t *n, char *err, size_t errlen)
{
    const struct json *s = json_get(specials, name);
    const struct json *ids = s ? json_get(s, "ids") : NULL;
    char q[JSON_ESC_CAP];
    if (!ids || ids->type != JSON_ARRAY)
        return tok_err(err, errlen, E_FMT,
                       "%s: special token '%s' not in special_tokens", path,
                       json_escz(q, sizeof q, name));
    int32_t *nv = realloc(*v, (*n + ids->len + 1) * sizeof(**v));
    if (!nv)
        return oom(err, errlen);
    *v = nv;
    for (size_t i = 0; i < ids->len; i++) {
        int64_t id;
        if (json_int(ids->u.items[i], &id) < 0 || id < 0 || id >= INT32_MAX)
            return tok_err(err, errlen, E_FMT,
                           "%s: special_tokens['%s'].ids: bad id", path,
                           json_escz(q, sizeof q, name));
        nv[(*n)++] = (int32_t)id;
    }
    (void)tok;
    return 0;
}

static int load_post(struct mtpd_tok *tok, const struct json *p,
                     const char *path, char *err, size_t errlen)
{
    int rc;
    if (is_null(p))
        return 0;
    const struct json *type = req_str(p, "type", path, err, errlen);
    if (!type)
        return E_FMT;
    if (strcmp(type->u.str, "ByteLevel") == 0)
        return 0; /* only trims offsets: ids unchanged */
    if (strcmp(type->u.str, "Sequence") == 0) {
        const struct json *list = json_get(p, "processors");
        if (!list || list->type != JSON_ARRAY)
            return tok_err(err, errlen, E_FMT,
                           "%s: missing array 'processors'", path);
        for (size_t i = 0; i < list->len; i++) {
            char sub[160];
            snprintf(sub, sizeof(sub), "%s.processors[%zu]", path, i);
            if ((rc = load_post(tok, list->u.items[i], sub, err, errlen)) < 0)
                return rc;
        }
        return 0;
    }
    if (strcmp(type->u.str, "TemplateProcessing") == 0) {
        const struct json *single = json_get(p, "single");
        const struct json *specials = json_get(p, "special_tokens");
        if (!single || single->type != JSON_ARRAY)
            return tok_err(err, errlen, E_FMT, "%s: missing array 'single'",
                           path);
        int seen_seq = 0;
        for (size_t i = 0; i < single->len; i++) {
            const struct json *piece = single->u.items[i];
            const struct json *st = json_get(piece, "SpecialToken");
            const struct json *sq = json_get(piece, "Sequence");
            if (sq) {
                seen_seq = 1;
                continue;
            }
            const struct json *id = st ? json_get(st, "id") : NULL;
            if (!id || id->type != JSON_STRING)
                return tok_err(err, errlen, E_FMT,
                               "%s.single[%zu]: expected SpecialToken or "
                               "Sequence",
                               path, i);
            if (seen_seq)
                rc = template_special(tok, specials, id->u.str, path,
                                      &tok->post_post, &tok->n_post_post,
                                      err, errlen);
            else
                rc = template_special(tok, specials, id->u.str, path,
                                      &tok->post_pre, &tok->n_post_pre, err,
                                      errlen);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    char q[JSON_ESC_CAP];
    return tok_err(err, errlen, E_UNS,
                   "%s.type: unsupported post-processor '%s'", path,
                   json_esc(q, sizeof q, type->u.str, type->len));
}

/* ---------------- derived tables ---------------- */

static int build_tables(struct mtpd_tok *tok, int32_t max_id, char *err,
                        size_t errlen)
{
    size_t n = (size_t)max_id + 1;
    tok->n_ids = (int32_t)n;
    tok->tok_off = malloc(n * sizeof(uint32_t));
    tok->tok_len = malloc(n * sizeof(uint32_t));
    tok->dec_off = malloc(n * sizeof(uint32_t));
    tok->dec_len = malloc(n * sizeof(uint32_t));
    tok->special = calloc(n, 1);
    if (!tok->tok_off || !tok->tok_len || !tok->dec_off || !tok->dec_len ||
        !tok->special)
        return oom(err, errlen);
    for (size_t i = 0; i < n; i++)
        tok->tok_len[i] = TOK_NOLEN;
    for (size_t i = 0; i < tok->vocab.cap; i++) {
        const struct tok_strslot *s = &tok->vocab.slots[i];
        if (s->hash) {
            tok->tok_off[s->val] = s->off;
            tok->tok_len[s->val] = s->len;
        }
    }
    struct tok_strmap specials = {0};
    if (tok_strmap_init(&specials, tok->n_added) < 0)
        return oom(err, errlen);
    for (size_t i = 0; i < tok->n_added; i++) { /* added tokens win */
        const struct tok_added *a = &tok->added[i];
        tok->tok_off[a->id] = a->off;
        tok->tok_len[a->id] = a->len;
        if (a->special &&
            tok_strmap_put(&specials, &tok->strs, a->off, a->len, 1) < 0) {
            tok_strmap_free(&specials);
            return oom(err, errlen);
        }
    }
    /* per id: special (by content, as HF's skip_special_tokens) and the
     * decoder's bytes */
    char *tmp = malloc(1024);
    size_t tmpcap = 1024;
    int rc = tmp ? 0 : oom(err, errlen);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (tok->tok_len[i] == TOK_NOLEN) {
            tok->dec_off[i] = 0;
            tok->dec_len[i] = 0;
            continue;
        }
        const char *s = tok->strs.p + tok->tok_off[i];
        size_t len = tok->tok_len[i];
        tok->special[i] = tok_strmap_get(&specials, &tok->strs, s, len) >= 0;
        const char *d = s;
        long dl = (long)len;
        if (tok->decoder == TOK_DEC_BYTELEVEL) {
            if (len > tmpcap) {
                char *p = realloc(tmp, len);
                if (!p) {
                    rc = oom(err, errlen);
                    break;
                }
                tmp = p;
                tmpcap = len;
            }
            long k = tok_bl_unmap(s, len, tmp);
            if (k >= 0) { /* else: not byte-level (an added token), as is */
                d = tmp;
                dl = k;
            }
        }
        int64_t off = tok_bytes_add(&tok->decb, d, (size_t)dl);
        if (off < 0)
            rc = oom(err, errlen);
        tok->dec_off[i] = (uint32_t)off;
        tok->dec_len[i] = (uint32_t)dl;
    }
    free(tmp);
    tok_strmap_free(&specials);
    if (rc < 0)
        return rc;

    /* byte-level initial symbols, byte fallback, ignore_merges map */
    for (int b = 0; b < 256; b++) {
        char u[4];
        int ul = json_utf8_put(u, tok_bl_byte_to_cp((unsigned)b));
        tok->byte_id[b] = tok_strmap_get(&tok->vocab, &tok->strs, u, (size_t)ul);
        char fb[8];
        snprintf(fb, sizeof(fb), "<0x%02X>", b);
        tok->fallback_id[b] =
            tok_strmap_get(&tok->vocab, &tok->strs, fb, strlen(fb));
    }
    if (tok->byte_level && tok->ignore_merges) {
        if (tok_strmap_init(&tok->rawvocab, tok->vocab.n) < 0)
            return oom(err, errlen);
        for (size_t i = 0; i < tok->vocab.cap; i++) {
            const struct tok_strslot *s = &tok->vocab.slots[i];
            if (!s->hash)
                continue;
            char *raw = malloc(s->len + 1);
            if (!raw)
                return oom(err, errlen);
            long k = tok_bl_unmap(tok->strs.p + s->off, s->len, raw);
            int64_t off = k >= 0 ? tok_bytes_add(&tok->rawstrs, raw, (size_t)k)
                                 : 0;
            free(raw);
            if (k < 0)
                continue;
            if (off < 0 || tok_strmap_put(&tok->rawvocab, &tok->rawstrs,
                                          (uint32_t)off, (uint32_t)k,
                                          s->val) < 0)
                return oom(err, errlen);
        }
    }
    for (size_t i = 0; i < tok->n_post_pre; i++)
        if (tok->post_pre[i] >= tok->n_ids)
            return tok_err(err, errlen, E_FMT,
                           "post_processor: special id %d out of range",
                           tok->post_pre[i]);
    for (size_t i = 0; i < tok->n_post_post; i++)
        if (tok->post_post[i] >= tok->n_ids)
            return tok_err(err, errlen, E_FMT,
                           "post_processor: special id %d out of range",
                           tok->post_post[i]);
    return 0;
}

int tok_load_json(struct mtpd_tok *tok, const char *path, char *err,
                  size_t errlen)
{
    char jerr[200];
    struct json_doc *doc = json_parse_file(path, jerr, sizeof(jerr));
    if (!doc) {
        int code = strncmp(jerr, "cannot ", 7) == 0 ? MTPD_TOK_EIO : E_FMT;
        char q[JSON_ESC_CAP];
        return tok_err(err, errlen, code, "%s: %s",
                       json_escz(q, sizeof q, path), jerr);
    }
    const struct json *root = json_root(doc);
    int rc = 0;
    int32_t max_id = -1;
    if (root->type != JSON_OBJECT) {
        rc = tok_err(err, errlen, E_FMT, "top level: expected an object");
        goto out;
    }
    static const char *const nulls[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++)
        if (!is_null(json_get(root, nulls[i]))) {
            rc = tok_err(err, errlen, E_UNS,
                         "%s: only null is supported (ids would change)",
                         nulls[i]);
            goto out;
        }
    if ((rc = load_model(tok, json_get(root, "model"), &max_id, err,
                         errlen)) < 0 ||
        (rc = load_added(tok, json_get(root, "added_tokens"), &max_id, err,
                         errlen)) < 0 ||
        (rc = load_normalizer(json_get(root, "normalizer"), "normalizer", err,
                              errlen)) < 0 ||
        (rc = load_pretok(tok, json_get(root, "pre_tokenizer"),
                          "pre_tokenizer", err, errlen)) < 0 ||
        (rc = load_decoder(tok, json_get(root, "decoder"), err, errlen)) < 0 ||
        (rc = load_post(tok, json_get(root, "post_processor"),
                        "post_processor", err, errlen)) < 0)
        goto out;
    if (max_id < 0) {
        rc = tok_err(err, errlen, E_FMT, "model.vocab: empty vocabulary");
        goto out;
    }
    if ((rc = build_tables(tok, max_id, err, errlen)) < 0 ||
        (rc = tok_added_build(tok, err, errlen)) < 0)
        goto out;
out:
    json_doc_free(doc);
    return rc;
}
