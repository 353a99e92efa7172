/*
 * tok_pretok.c - pre-tokenizer: regex translation and compilation, and
 * the split pipeline run on each piece of text between added tokens.
 *
 * Hugging Face compiles Split/ByteLevel patterns with Oniguruma; we use
 * PCRE2 (UTF + UCP, JIT when available). The few places where the two
 * engines define a shorthand differently are rewritten to Oniguruma's
 * definition before compiling (tok_regex_compile):
 *   \s  -> [\t-\r\x{85}\p{Z}]            (Onig: 9-D, 85, Zs/Zl/Zp; PCRE2
 *                                          would add U+180E)
 *   \w  -> [\p{L}\p{M}\p{Nd}\p{Pc}]       (Onig: Letter|Mark|Nd|Pc)
 *   \h  -> [0-9a-fA-F]                    (Onig: hex digit)
 *   \uHHHH -> \x{HHHH}
 * and ^/$ are line anchors as in Oniguruma's Ruby syntax (MULTILINE).
 *
 * Matching follows the onig crate's find_iter (an empty match right after
 * the previous match is skipped by advancing one character) and the split
 * behaviours follow tokenizers' NormalizedString::split exactly.
 *
 * The pipeline is depth first: stage i splits its piece into
 * enc->spans[i], then runs stage i+1 on each resulting piece; after the
 * last stage the piece is a word for BPE. Nothing is copied except when a
 * ByteLevel stage must prepend a space.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/*
 * Rust's regex crate \w (Alphabetic | M | Nd | Pc | Join_Control, Unicode
 * 16) as the body of a PCRE2 class: PCRE2 10.42's properties (Unicode 14)
 * plus the code points they miss (newer characters and the So letters
 * with Other_Alphabetic such as U+24B6 CIRCLED LATIN CAPITAL LETTER A).
 * The extra ranges were computed against tokenizers' Whitespace
 * pre-tokenizer over every code point; none had to be removed. Used by
 * the Whitespace pre-tokenizer and single_word added tokens, which HF
 * runs with the regex crate (Split patterns run with Oniguruma, whose
 * Unicode tables agree with PCRE2's for every code point: see the
 * sweeps in tests/tokenizer/test_parity.py).
 */
const char tok_rust_word_class[] =
    "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"
    "\\x{897}\\x{CF3}\\x{ECE}\\x{1C89}-\\x{1C8A}\\x{24B6}-\\x{24E9}"
    "\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D40}-\\x{10D65}\\x{10D69}-\\x{10D6D}\\x{10D6F}-\\x{10D85}"
    "\\x{10EC2}-\\x{10EC4}\\x{10EFC}-\\x{10EFF}\\x{1123F}-\\x{11241}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}"
    "\\x{113B7}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}"
    "\\x{113CC}-\\x{113D3}\\x{113E1}-\\x{113E2}\\x{116D0}-\\x{116E3}"
    "\\x{11BC0}-\\x{11BE0}\\x{11BF0}-\\x{11BF9}\\x{11F00}-\\x{11F10}"
    "\\x{11F12}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{11F50}-\\x{11F5A}"
    "\\x{1342F}\\x{13440}-\\x{13455}\\x{13460}-\\x{143FA}"
    "\\x{16100}-\\x{16139}\\x{16D40}-\\x{16D6C}\\x{16D70}-\\x{16D79}"
    "\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1CCF0}-\\x{1CCF9}"
    "\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E08F}"
    "\\x{1E4D0}-\\x{1E4F9}\\x{1E5D0}-\\x{1E5FA}\\x{1F130}-\\x{1F149}"
    "\\x{1F150}-\\x{1F169}\\x{1F170}-\\x{1F189}\\x{2B739}"
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";

struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
#define SB_LIT(b, lit) sb_put((b), (lit), sizeof(lit) - 1)

/* Rewrites an Oniguruma pattern into PCRE2 syntax (see file comment).
 * Returns 0, or -1 with a message for constructs PCRE2 lacks. */
static int onig_to_pcre2(const char *p, size_t n, struct sbuf *out,
                         char *err, size_t errlen)
{
    int in_class = 0;
    size_t i = 0;
    while (i < n) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 'Q') { /* quoted run: copy through \E verbatim */
                size_t j = i + 2;
                while (j + 1 < n && !(p[j] == '\\' && p[j + 1] == 'E'))
                    j++;
                j = j + 1 < n ? j + 2 : n;
                sb_put(out, p + i, j - i);
                i = j;
                continue;
            }
            if (d == 's') {
                if (in_class)
                    SB_LIT(out, "\\t-\\r\\x{85}\\p{Z}");
                else
                    SB_LIT(out, "[\\t-\\r\\x{85}\\p{Z}]");
            } else if (d == 'S' && !in_class) {
                SB_LIT(out, "[^\\t-\\r\\x{85}\\p{Z}]");
            } else if (d == 'w') {
                if (in_class)
                    SB_LIT(out, "\\p{L}\\p{M}\\p{Nd}\\p{Pc}");
                else
                    SB_LIT(out, "[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]");
            } else if (d == 'W' && !in_class) {
                SB_LIT(out, "[^\\p{L}\\p{M}\\p{Nd}\\p{Pc}]");
            } else if (d == 'h') {
                if (in_class)
                    SB_LIT(out, "0-9a-fA-F");
                else
                    SB_LIT(out, "[0-9a-fA-F]");
            } else if (d == 'H' && !in_class) {
                SB_LIT(out, "[^0-9a-fA-F]");
            } else if (d == 'u' && i + 5 < n && json_hexval(p[i + 2]) >= 0 &&
                       json_hexval(p[i + 3]) >= 0 &&
                       json_hexval(p[i + 4]) >= 0 &&
                       json_hexval(p[i + 5]) >= 0) {
                SB_LIT(out, "\\x{");
                sb_put(out, p + i + 2, 4);
                SB_LIT(out, "}");
                i += 6;
                continue;
            } else {
                sb_put(out, p + i, 2);
            }
            i += 2;
            continue;
        }
        if (c == '[') {
            if (in_class) {
                if (i + 1 < n && p[i + 1] == ':') { /* POSIX [:alpha:] */
                    const char *end = NULL;
                    for (size_t j = i + 2; j + 1 < n; j++)
                        if (p[j] == ':' && p[j + 1] == ']') {
                            end = p + j + 2;
                            break;
                        }
                    if (end) {
                        sb_put(out, p + i, (size_t)(end - (p + i)));
                        i = (size_t)(end - p);
                        continue;
                    }
                }
                return tok_err(err, errlen, -1,
                               "nested character class at offset %zu "
                               "(Oniguruma set syntax) is not supported",
                               i);
            }
            in_class = 1;
            sb_put(out, "[", 1);
            i++;
            if (i < n && p[i] == '^') {
                sb_put(out, "^", 1);
                i++;
            }
            if (i < n && p[i] == ']') { /* leading ']' is literal */
                SB_LIT(out, "\\]");
                i++;
            }
            continue;
        }
        if (c == ']' && in_class)
            in_class = 0;
        if (c == '&' && in_class && i + 1 < n && p[i + 1] == '&')
            return tok_err(err, errlen, -1,
                           "class intersection '&&' at offset %zu is not "
                           "supported",
                           i);
        sb_put(out, &c, 1);
        i++;
    }
    return 0;
}

pcre2_code *tok_regex_compile(const char *pattern, size_t len, int literal,
                              char *err, size_t errlen)
{
    struct sbuf sb = {0};
    const char *src = pattern;
    size_t srclen = len;
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK;
    if (literal) {
        opts |= PCRE2_LITERAL;
    } else {
        opts |= PCRE2_UCP | PCRE2_MULTILINE;
        if (onig_to_pcre2(pattern, len, &sb, err, errlen) < 0) {
            free(sb.p);
            return NULL;
        }
        if (sb.oom) {
            free(sb.p);
            tok_err(err, errlen, -1, "out of memory");
            return NULL;
        }
        src = sb.p ? sb.p : "";
        srclen = sb.n;
    }
    if (tok_utf8_check(pattern, len, NULL) < 0) {
        free(sb.p);
        tok_err(err, errlen, -1, "pattern is not valid UTF-8");
        return NULL;
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)src, srclen, opts, &ec, &eo, NULL);
    free(sb.p);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        tok_err(err, errlen, -1, "regex does not compile: %s (offset %zu)",
                (const char *)msg, (size_t)eo);
        return NULL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter if not */
    return re;
}

void tok_stages_free(struct mtpd_tok *tok)
{
    for (int i = 0; i < tok->n_stages; i++)
        pcre2_code_free(tok->stages[i].re);
    tok->n_stages = 0;
}

/*
 * One search from start. Returns 1 and sets *ms, *me on a match, 0 when
 * none, or a negative code (message in enc->err) on a matcher error such
 * as a resource limit.
 */
static int re_search(struct mtpd_tok_enc *enc, const pcre2_code *re,
                     const char *s, size_t n, size_t start, size_t *ms,
                     size_t *me)
{
    int rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, start, 0, enc->md,
                             enc->mctx);
    if (rc == PCRE2_ERROR_JIT_BADOPTION || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK,
                         enc->md, enc->mctx);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        snprintf(enc->err, sizeof(enc->err), "regex match failed: %s",
                 (const char *)msg);
        return MTPD_TOK_EINVAL;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(enc->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static int utf8_len(unsigned char b)
{
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

static int oom(struct mtpd_tok_enc *enc)
{
    snprintf(enc->err, sizeof(enc->err), "out of memory");
    return MTPD_TOK_ENOMEM;
}

/* Splits s[0..n) into sv as (offsets, is_match) like tokenizers'
 * Pattern::find_matches for a regex, then applies invert. */
static int find_matches(struct mtpd_tok_enc *enc, const pcre2_code *re,
                        int invert, const char *s, size_t n,
                        struct tok_spanvec *sv)
{
    size_t pos = 0, prev = 0;
    int have_last = 0;
    size_t last_end = 0;
    uint32_t mt = invert ? 0 : 1, gap = invert ? 1 : 0;
    sv->n = 0;
    while (pos <= n) {
        size_t ms, me;
        int rc = re_search(enc, re, s, n, pos, &ms, &me);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
        if (ms == me && have_last && last_end == me) {
            if (pos >= n)
                break;
            pos += (size_t)utf8_len((unsigned char)s[pos]);
            continue;
        }
        have_last = 1;
        last_end = me;
        pos = me;
        if (prev != ms && tok_spans_push(sv, (uint32_t)prev, (uint32_t)ms,
                                         gap) < 0)
            return oom(enc);
        if (tok_spans_push(sv, (uint32_t)ms, (uint32_t)me, mt) < 0)
            return oom(enc);
        prev = me;
    }
    if (prev != n &&
        tok_spans_push(sv, (uint32_t)prev, (uint32_t)n, gap) < 0)
        return oom(enc);
    return 0;
}

/* Applies a split behaviour in place; afterwards m == 1 means "drop". */
static void apply_behavior(struct tok_spanvec *sv, enum tok_behavior b)
{
    size_t k = 0;
    int prev = 0;
    switch (b) {
    case TOK_ISOLATED:
        for (size_t i = 0; i < sv->n; i++)
            sv->v[i].m = 0;
        return;
    case TOK_REMOVED:
        return;
    case TOK_CONTIGUOUS:
        for (size_t i = 0; i < sv->n; i++) {
            int m = (int)sv->v[i].m;
            if (k && m == prev)
                sv->v[k - 1].e = sv->v[i].e;
            else
                sv->v[k++] = (struct tok_span){sv->v[i].s, sv->v[i].e, 0};
            prev = m;
        }
        break;
    case TOK_MERGED_PREV:
        for (size_t i = 0; i < sv->n; i++) {
            int m = (int)sv->v[i].m;
            if (k && m && !prev)
                sv->v[k - 1].e = sv->v[i].e;
            else
                sv->v[k++] = (struct tok_span){sv->v[i].s, sv->v[i].e, 0};
            prev = m;
        }
        break;
    case TOK_MERGED_NEXT: {
        /* right to left, writing from the end, then shift down */
        size_t w = sv->n;
        for (size_t i = sv->n; i-- > 0;) {
            int m = (int)sv->v[i].m;
            if (w < sv->n && m && !prev)
                sv->v[w].s = sv->v[i].s;
            else
                sv->v[--w] = (struct tok_span){sv->v[i].s, sv->v[i].e, 0};
            prev = m;
        }
        k = sv->n - w;
        memmove(sv->v, sv->v + w, k * sizeof(*sv->v));
        break;
    }
    }
    sv->n = k;
}

static int run_next(struct mtpd_tok_enc *enc, int stage, const char *p,
                    size_t n, struct mtpd_tok_ids *out)
{
    if (stage == enc->tok->n_stages)
        return tok_bpe_word(enc, p, n, out);
    return tok_pretok_run(enc, stage, p, n, out);
}

int tok_pretok_run(struct mtpd_tok_enc *enc, int stage, const char *p,
                   size_t n, struct mtpd_tok_ids *out)
{
    const struct tok_stage *st = &enc->tok->stages[stage];
    if (n == 0)
        return 0;
    if (st->type == TOK_ST_BYTELEVEL && st->add_prefix_space && p[0] != ' ') {
        struct tok_bytes *b = &enc->pfx[stage];
        b->n = 0;
        if (tok_bytes_add(b, " ", 1) < 0 || tok_bytes_add(b, p, n) < 0)
            return oom(enc);
        p = b->p;
        n = b->n;
    }
    if (!st->re) /* ByteLevel without use_regex */
        return run_next(enc, stage + 1, p, n, out);
    struct tok_spanvec *sv = &enc->spans[stage];
    int rc = find_matches(enc, st->re, st->invert, p, n, sv);
    if (rc < 0)
        return rc;
    apply_behavior(sv, st->type == TOK_ST_BYTELEVEL ? TOK_ISOLATED
                                                     : st->behavior);
    for (size_t i = 0; i < sv->n; i++) {
        const struct tok_span sp = sv->v[i];
        if (sp.m || sp.e == sp.s)
            continue;
        rc = run_next(enc, stage + 1, p + sp.s, sp.e - sp.s, out);
        if (rc < 0)
            return rc;
    }
    return 0;
}
