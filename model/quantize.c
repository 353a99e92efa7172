/*
 * quantize.c - mtpd_quantize(): a quantized copy of a checkpoint
 * (formats and what is kept: quantize.h).
 *
 * Plan, then stream: every output tensor (name, dtype, shape, how it is
 * made) is listed first, so the safetensors header with all offsets can
 * be written before any data; then each tensor is produced row by row from
 * the memory-mapped input and written. Tensors are ordered by element
 * size (4, 2, then 1 byte) so each lands aligned for its type without
 * holes (strict safetensors readers refuse holes).
 */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "model.h"
#include "quantize.h"
#include "safetensors.h"

#define FP8_BLK 128
#define FP8_MAX 448.0f

/* How an output tensor is made from its source. */
enum qkind {
    QK_COPY,   /* bytes as they are */
    QK_Q8,     /* Q8_0 codes */
    QK_Q8_D,   /* their scales */
    QK_Q4,     /* Q4_1 codes */
    QK_Q4_D,
    QK_Q4_M,
    QK_Q4S,    /* Q4_S codes */
    QK_Q4S_SC, /* its scale bytes */
    QK_Q4S_MN, /* its min bytes */
    QK_Q4S_EX, /* its exponent pairs */
    QK_F8,     /* F8_E4M3 codes */
    QK_F8_S,   /* their scale_inv */
};

struct qout {
    char name[256];
    const char *dtype; /* safetensors name */
    int esize;         /* element bytes, for the ordering */
    int64_t shape[2];
    int ndim;
    size_t nbytes, off;
    enum qkind kind;
    const struct st_tensor *src;
};

struct plan {
    struct qout *v;
    size_t n, cap;
};

int mtpd_qfmt_parse(const char *s, enum mtpd_qfmt *out)
{
    if (!strcmp(s, "q8") || !strcmp(s, "q8_0"))
        *out = MTPD_QFMT_Q8_0;
    else if (!strcmp(s, "q4") || !strcmp(s, "q4_s"))
        *out = MTPD_QFMT_Q4_S;
    else if (!strcmp(s, "q4_1"))
        *out = MTPD_QFMT_Q4_1;
    else if (!strcmp(s, "fp8"))
        *out = MTPD_QFMT_FP8;
    else
        return -1;
    return 0;
}

static struct qout *plan_add(struct plan *p, const char *name,
                             const char *suffix, const char *dtype, int esize,
                             int64_t r, int64_t c, int ndim, enum qkind kind,
                             const struct st_tensor *src)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        struct qout *v = realloc(p->v, cap * sizeof *v);
        if (!v)
            return NULL;
        p->v = v;
        p->cap = cap;
    }
    struct qout *q = &p->v[p->n++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s%s", name, suffix);
    q->dtype = dtype;
    q->esize = esize;
    q->shape[0] = r;
    q->shape[1] = c;
    q->ndim = ndim;
    q->kind = kind;
    q->src = src;
    if (kind == QK_COPY)
        q->nbytes = src->nbytes;
    else
        q->nbytes = (size_t)(r * c) * (size_t)esize;
    return q;
}

/* Bytes per element of a tensor copied as it is (8 when unknown: such
 * tensors go first, aligned for anything). */
static int elem_size(const struct st_tensor *t)
{
    size_t n = 1;
    for (int k = 0; k < t->ndim; k++)
        n *= (size_t)t->shape[k];
    if (n == 0 || t->nbytes % n)
        return 8;
    size_t e = t->nbytes / n;
    return e == 1 || e == 2 || e == 4 || e == 8 ? (int)e : 8;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int is_head(const char *name)
{
    return !strcmp(name, "lm_head.weight") ||
           ends_with(name, ".shared_head.head.weight");
}

/* Should src (a float matrix) be quantized under o? */
static int wanted(const struct st_tensor *t, const struct mtpd_quant_opts *o)
{
    if (t->ndim != 2 || !ends_with(t->name, ".weight"))
        return 0;
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
        return 0;
    if (ends_with(t->name, "mlp.gate.weight")) /* the router */
        return 0;
    /* MLA reads kv_b only through its absorbed per-head form: kmatmul_pv
     * reads Q8_0 rows (plan_matrix writes kv_b at Q8_0 in the integer
     * formats); an F8 one of other shapes than DeepSeek-V3's would be
     * widened to an f32 copy at load (absorb.c), so fp8 keeps it */
    if (ends_with(t->name, "kv_b_proj.weight") &&
        o->format == MTPD_QFMT_FP8)
        return 0;
    if (ends_with(t->name, "embed_tokens.weight") && !o->quantize_embed)
        return 0;
    for (int i = 0; i < o->n_keep; i++)
        if (fnmatch(o->keep[i], t->name, 0) == 0)
            return 0;
    if (o->format != MTPD_QFMT_FP8 && t->shape[1] % KQ_BLK != 0)
        return 0;
    return 1;
}

/* The tensors for one quantized matrix named name from src. */
static int plan_matrix(struct plan *p, const char *name,
                       const struct st_tensor *src,
                       const struct mtpd_quant_opts *o)
{
    enum mtpd_qfmt f = o->format;
    int64_t r = src->shape[0], c = src->shape[1], nb = c / KQ_BLK;
    int64_t ne = kq4s_ex_bytes((int)c);
    /* heads at Q8_0 (unless asked), and kv_b (kmatmul_pv reads Q8_0) */
    int as_q8 = (is_head(name) && !o->head_q4) ||
                ends_with(name, "kv_b_proj.weight");
    if (f == MTPD_QFMT_Q4_S && !as_q8)
        return plan_add(p, name, "", "U8", 1, r, c / 2, 2, QK_Q4S, src) &&
                       plan_add(p, name, "_qscale", "U8", 1, r, nb, 2,
                                QK_Q4S_SC, src) &&
                       plan_add(p, name, "_qmin", "I8", 1, r, nb, 2,
                                QK_Q4S_MN, src) &&
                       plan_add(p, name, "_qexp", "I8", 1, r, ne, 2,
                                QK_Q4S_EX, src)
                   ? 0 : -1;
    if (f == MTPD_QFMT_Q8_0 ||
        ((f == MTPD_QFMT_Q4_1 || f == MTPD_QFMT_Q4_S) && as_q8))
        return plan_add(p, name, "", "I8", 1, r, c, 2, QK_Q8, src) &&
                       plan_add(p, name, "_qscale", "F16", 2, r, nb, 2,
                                QK_Q8_D, src)
                   ? 0 : -1;
    if (f == MTPD_QFMT_Q4_1)
        return plan_add(p, name, "", "U8", 1, r, c / 2, 2, QK_Q4, src) &&
                       plan_add(p, name, "_qscale", "F16", 2, r, nb, 2,
                                QK_Q4_D, src) &&
                       plan_add(p, name, "_qmin", "F16", 2, r, nb, 2,
                                QK_Q4_M, src)
                   ? 0 : -1;
    int64_t sr = (r + FP8_BLK - 1) / FP8_BLK, sc = (c + FP8_BLK - 1) / FP8_BLK;
    return plan_add(p, name, "", "F8_E4M3", 1, r, c, 2, QK_F8, src) &&
                   plan_add(p, name, "_scale_inv", "F32", 4, sr, sc, 2,
                            QK_F8_S, src)
               ? 0 : -1;
}

static int by_esize(const void *a, const void *b)
{
    const struct qout *x = a, *y = b;
    if (x->esize != y->esize)
        return y->esize - x->esize;
    return strcmp(x->name, y->name);
}

/* Source row r as fp32. */
static void src_row(const struct st_tensor *t, int64_t r, float *out)
{
    struct kmat m = {.dtype = (enum kdtype)st_kdtype(t->dtype),
                     .rows = (int)t->shape[0], .cols = (int)t->shape[1],
                     .data = t->data};
    kmat_row_f32(&m, (int)r, out);
}

/* Q8_0 of one row: codes q[c], scales d[c / 32] (fp16 bits). */
static void q8_row(const float *w, int c, int8_t *q, uint16_t *d)
{
    for (int j = 0; j < c / KQ_BLK; j++) {
        const float *b = w + (size_t)j * KQ_BLK;
        float amax = 0;
        for (int i = 0; i < KQ_BLK; i++)
            amax = fmaxf(amax, fabsf(b[i]));
        d[j] = kf32_to_f16(amax / 127.0f);
        float dh = kf16_to_f32(d[j]);
        for (int i = 0; i < KQ_BLK; i++) {
            long v = dh > 0 ? lrintf(b[i] / dh) : 0;
            q[j * KQ_BLK + i] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
        }
    }
}

/* Q4_1 of one row: packed codes q[c / 2], scales d and mins m. The min
 * is rounded to fp16 first and the scale taken from it, so the block's
 * largest weight stays reachable. */
static void q4_row(const float *w, int c, uint8_t *q, uint16_t *d,
                   uint16_t *m)
{
    for (int j = 0; j < c / KQ_BLK; j++) {
        const float *b = w + (size_t)j * KQ_BLK;
        float lo = b[0], hi = b[0];
        for (int i = 1; i < KQ_BLK; i++) {
            lo = fminf(lo, b[i]);
            hi = fmaxf(hi, b[i]);
        }
        m[j] = kf32_to_f16(lo);
        float mh = kf16_to_f32(m[j]);
        d[j] = kf32_to_f16((hi - mh) / 15.0f);
        float dh = kf16_to_f32(d[j]);
        uint8_t code[KQ_BLK];
        for (int i = 0; i < KQ_BLK; i++) {
            long v = dh > 0 ? lrintf((b[i] - mh) / dh) : 0;
            code[i] = (uint8_t)(v > 15 ? 15 : v < 0 ? 0 : v);
        }
        for (int i = 0; i < KQ_BLK / 2; i++)
            q[j * (KQ_BLK / 2) + i] =
                (uint8_t)(code[i] | code[i + KQ_BLK / 2] << 4);
    }
}

/* Smallest e in [KQ4S_EMIN, KQ4S_EMAX] with v <= lim * 2^e. */
static int q4s_exp(float v, float lim)
{
    int e = KQ4S_EMIN;
    while (e < KQ4S_EMAX && v > lim * ldexpf(1.0f, e))
        e++;
    return e;
}

/* Squared error of block b (32 weights) at scale d and min m, the codes
 * rounded to nearest (clamped to 0..15) into code when given. */
static float q4_err(const float *b, float d, float m, uint8_t *code)
{
    float e = 0;
    for (int i = 0; i < KQ_BLK; i++) {
        long v = d > 0 ? lrintf((b[i] - m) / d) : 0;
        v = v > 15 ? 15 : v < 0 ? 0 : v;
        float r = fmaf((float)v, d, m) - b[i];
        e += r * r;
        if (code)
            code[i] = (uint8_t)v;
    }
    return e;
}

/* Q4_S of one row: codes q[c / 2], scale bytes sc and min bytes mn
 * [c / 32], exponent pairs ex [2 * groups]. Per group of KQ4S_GRP blocks
 * the exponents are the smallest that hold the largest scale in 255 and
 * the largest |min| in 127 steps; per block the min byte is its minimum
 * rounded down or to nearest and the scale byte the range over 15 rounded
 * up, to nearest, or one either side, whichever pair fits the block's
 * weights best (least squares over its rounded codes). */
static void q4s_row(const float *w, int c, uint8_t *q, uint8_t *sc,
                    int8_t *mn, int8_t *ex)
{
    int nb = c / KQ_BLK;
    for (int g = 0; g * KQ4S_GRP < nb; g++) {
        int j0 = g * KQ4S_GRP, j1 = j0 + KQ4S_GRP < nb ? j0 + KQ4S_GRP : nb;
        float lo[KQ4S_GRP], hi[KQ4S_GRP], dmax = 0, mmax = 0;
        for (int j = j0; j < j1; j++) {
            const float *b = w + (size_t)j * KQ_BLK;
            float l = b[0], h = b[0];
            for (int i = 1; i < KQ_BLK; i++) {
                l = fminf(l, b[i]);
                h = fmaxf(h, b[i]);
            }
            lo[j - j0] = l, hi[j - j0] = h;
            dmax = fmaxf(dmax, (h - l) / 15.0f);
            mmax = fmaxf(mmax, fabsf(l));
        }
        int e = q4s_exp(dmax, 255.0f), f = q4s_exp(mmax, 127.0f);
        ex[2 * g] = (int8_t)e, ex[2 * g + 1] = (int8_t)f;
        float pe = ldexpf(1.0f, e), pf = ldexpf(1.0f, f);
        for (int j = j0; j < j1; j++) {
            const float *b = w + (size_t)j * KQ_BLK;
            float l = lo[j - j0], h = hi[j - j0], best = INFINITY;
            long mc[2] = {lrintf(floorf(l / pf)), lrintf(l / pf)};
            int bs = 0, bm = 0;
            for (int a = 0; a < 2; a++) {
                long m = mc[a] < -128 ? -128 : mc[a] > 127 ? 127 : mc[a];
                float mq = (float)m * pf, dr = (h - mq) / 15.0f / pe;
                long cand[4] = {lrintf(ceilf(dr)), lrintf(dr) - 1,
                                lrintf(dr), lrintf(dr) + 1};
                for (int k = 0; k < 4; k++) {
                    long s = cand[k] < 0 ? 0 : cand[k] > 255 ? 255 : cand[k];
                    float err = q4_err(b, (float)s * pe, mq, NULL);
                    if (err < best)
                        best = err, bs = (int)s, bm = (int)m;
                }
            }
            sc[j] = (uint8_t)bs, mn[j] = (int8_t)bm;
            uint8_t code[KQ_BLK];
            q4_err(b, (float)bs * pe, (float)bm * pf, code);
            for (int i = 0; i < KQ_BLK / 2; i++)
                q[j * (KQ_BLK / 2) + i] =
                    (uint8_t)(code[i] | code[i + KQ_BLK / 2] << 4);
        }
    }
}

/* Nearest e4m3fn code of v (|v| <= 448), ties to the even code. */
static uint8_t to_e4m3(float v)
{
    uint8_t sign = signbit(v) ? 0x80 : 0;
    float a = fabsf(v);
    int lo = 0, hi = 126; /* positive codes ascend; 126 = 448 */
    if (a >= kf8e4m3_to_f32(126))
        return sign | 126;
    while (hi - lo > 1) { /* value(lo) <= a < value(hi) */
        int mid = (lo + hi) / 2;
        if (kf8e4m3_to_f32((uint8_t)mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    float dl = a - kf8e4m3_to_f32((uint8_t)lo);
    float dh = kf8e4m3_to_f32((uint8_t)hi) - a;
    int c = dl < dh || (dl == dh && !(lo & 1)) ? lo : hi;
    return sign | (uint8_t)c;
}

/* Q4_S scales of the matrix whose codes were written last: its scale,
 * min and exponent tensors come right after them (by_esize's order) and
 * are copied from here instead of quantizing every row again (the block
 * search is most of `mtpd quantize`'s time). */
struct q4s_cache {
    const struct st_tensor *src; /* NULL: empty */
    uint8_t *b;                  /* rows x (2 nb + ne): sc, mn, ex */
    size_t cap;
};

/* Writes tensor q's data to f. buf holds >= 2 source rows of fp32. */
static int write_tensor(FILE *f, const struct qout *q, float *buf,
                        void *tmp, struct q4s_cache *qc)
{
    const struct st_tensor *s = q->src;
    if (q->kind == QK_COPY)
        return fwrite(s->data, 1, s->nbytes, f) == s->nbytes ? 0 : -1;
    int64_t R = s->shape[0];
    int C = (int)s->shape[1], nb = C / KQ_BLK;
    if (q->kind == QK_F8 || q->kind == QK_F8_S) {
        int sc = (C + FP8_BLK - 1) / FP8_BLK;
        float *scale = tmp; /* one block row of scales */
        uint8_t *codes = (uint8_t *)tmp + sizeof(float) * (size_t)sc;
        for (int64_t r0 = 0; r0 < R; r0 += FP8_BLK) {
            int64_t r1 = R - r0 < FP8_BLK ? R : r0 + FP8_BLK;
            for (int j = 0; j < sc; j++)
                scale[j] = 0;
            for (int64_t r = r0; r < r1; r++) { /* block amax */
                src_row(s, r, buf);
                for (int c = 0; c < C; c++)
                    scale[c / FP8_BLK] =
                        fmaxf(scale[c / FP8_BLK], fabsf(buf[c]));
            }
            for (int j = 0; j < sc; j++)
                scale[j] = scale[j] > 0 ? scale[j] / FP8_MAX : 1.0f;
            if (q->kind == QK_F8_S) {
                if (fwrite(scale, sizeof(float), (size_t)sc, f) != (size_t)sc)
                    return -1;
                continue;
            }
            for (int64_t r = r0; r < r1; r++) {
                src_row(s, r, buf);
                for (int c = 0; c < C; c++)
                    codes[c] = to_e4m3(buf[c] / scale[c / FP8_BLK]);
                if (fwrite(codes, 1, (size_t)C, f) != (size_t)C)
                    return -1;
            }
        }
        return 0;
    }
    uint8_t *codes = tmp;
    uint16_t *d = (uint16_t *)((uint8_t *)tmp + C);
    uint16_t *m = d + nb;
    /* Q4_S: a row's scale bytes, min bytes and exponents, rs bytes */
    const size_t ne = (size_t)kq4s_ex_bytes(C), rs = 2 * (size_t)nb + ne;
    if (q->kind == QK_Q4S) { /* fill the cache (or go without it) */
        size_t need = (size_t)R * rs;
        qc->src = NULL;
        if (qc->cap < need) {
            free(qc->b);
            qc->b = malloc(need);
            qc->cap = qc->b ? need : 0;
        }
    }
    int cached = (q->kind == QK_Q4S_SC || q->kind == QK_Q4S_MN ||
                  q->kind == QK_Q4S_EX) && qc->src == s;
    for (int64_t r = 0; r < R; r++) {
        if (!cached)
            src_row(s, r, buf);
        const void *out;
        size_t n;
        switch (q->kind) {
        case QK_Q8:
        case QK_Q8_D:
            q8_row(buf, C, (int8_t *)codes, d);
            out = q->kind == QK_Q8 ? (const void *)codes : d;
            n = q->kind == QK_Q8 ? (size_t)C : 2 * (size_t)nb;
            break;
        case QK_Q4S:
        case QK_Q4S_SC:
        case QK_Q4S_MN:
        case QK_Q4S_EX: { /* codes, scale bytes, min bytes, exponents */
            uint8_t *sc = codes + C / 2, *mn = sc + nb, *ex = mn + nb;
            uint8_t *cr = qc->b ? qc->b + (size_t)r * rs : NULL;
            if (cached)
                sc = cr, mn = cr + nb, ex = cr + 2 * nb;
            else
                q4s_row(buf, C, codes, sc, (int8_t *)mn, (int8_t *)ex);
            if (q->kind == QK_Q4S && cr)
                memcpy(cr, sc, rs);
            out = q->kind == QK_Q4S ? codes : q->kind == QK_Q4S_SC ? sc
                  : q->kind == QK_Q4S_MN ? mn : ex;
            n = q->kind == QK_Q4S ? (size_t)C / 2
                : q->kind == QK_Q4S_EX ? ne : (size_t)nb;
            break;
        }
        default:
            q4_row(buf, C, codes, d, m);
            out = q->kind == QK_Q4 ? (const void *)codes
                  : q->kind == QK_Q4_D ? (const void *)d : m;
            n = q->kind == QK_Q4 ? (size_t)C / 2 : 2 * (size_t)nb;
        }
        if (fwrite(out, 1, n, f) != n)
            return -1;
    }
    if (q->kind == QK_Q4S && qc->b != NULL)
        qc->src = s; /* every row's scales are in the cache */
    return 0;
}

/* Header JSON: {"__metadata__": ..., name: {...}, ...} padded with
 * spaces to a multiple of 8. Returns a malloc'd string, its length in
 * *len. */
static char *header_json(const struct plan *p, size_t *len)
{
    size_t cap = 256 + p->n * 384;
    char *h = malloc(cap);
    if (!h)
        return NULL;
    size_t n = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\","
                                "\"quantized_by\":\"mtpd\"}");
    for (size_t i = 0; i < p->n; i++) {
        const struct qout *q = &p->v[i];
        char shape[96];
        if (q->kind != QK_COPY)
            snprintf(shape, sizeof shape, "%lld,%lld", (long long)q->shape[0],
                     (long long)q->shape[1]);
        else { /* as the source has it */
            shape[0] = 0;
            for (int k = 0; k < q->src->ndim; k++)
                snprintf(shape + strlen(shape), sizeof shape - strlen(shape),
                         "%s%lld", k ? "," : "", (long long)q->src->shape[k]);
        }
        char qn[JSON_ESC_CAP];
        n += (size_t)snprintf(h + n, cap - n,
                              ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],"
                              "\"data_offsets\":[%zu,%zu]}",
                              json_escz(qn, sizeof qn, q->name), q->dtype,
                              shape, q->off, q->off + q->nbytes);
    }
    n += (size_t)snprintf(h + n, cap - n, "}");
    while (n % 8 && n + 1 < cap)
        h[n++] = ' ';
    h[n] = 0;
    *len = n;
    return h;
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in)
        return errno == ENOENT ? 1 : -1;
    FILE *out = fopen(dst, "wb");
    int rc = out ? 0 : -1;
    char buf[65536];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (ferror(in))
        rc = -1;
    fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}

/* config.json with quantization_config added (the input has none). */
static int write_config(const char *in_dir, const char *out_dir,
                        enum mtpd_qfmt f, char *err, size_t errlen)
{
    char path[4096], jerr[256];
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    struct json_doc *doc = json_parse_file(path, jerr, sizeof jerr);
    if (!doc) {
        snprintf(err, errlen, "%s", jerr);
        return MTPD_EFORMAT;
    }
    const struct json *q = json_get(json_root(doc), "quantization_config");
    int quantized = q && q->type != JSON_NULL;
    json_doc_free(doc);
    if (quantized) {
        snprintf(err, errlen, "%s: the checkpoint is already quantized "
                 "(quantization_config)", path);
        return MTPD_EINVAL;
    }
    FILE *in = fopen(path, "rb");
    if (!in) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return MTPD_EIO;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char buf[8192];
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (len + n + 1 > cap) {
            cap = 2 * (len + n + 1);
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(in);
                return MTPD_ENOMEM;
            }
            text = t;
        }
        memcpy(text + len, buf, n);
        len += n;
    }
    fclose(in);
    while (len > 0 && text[len - 1] != '}') /* the root object's end */
        len--;
    if (len == 0) {
        free(text);
        snprintf(err, errlen, "%s: no JSON object", path);
        return MTPD_EFORMAT;
    }
    len--;
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n' ||
                       text[len - 1] == '\r' || text[len - 1] == '\t'))
        len--;
    int empty = len > 0 && text[len - 1] == '{';
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    FILE *out = fopen(path, "wb");
    int rc = 0;
    if (!out) {
        rc = -1;
    } else {
        fwrite(text, 1, len, out);
        if (f == MTPD_QFMT_FP8)
            fprintf(out, "%s\n  \"quantization_config\": {\"quant_method\": "
                    "\"fp8\", \"fmt\": \"e4m3\", \"activation_scheme\": "
                    "\"dynamic\", \"weight_block_size\": [%d, %d]}\n}\n",
                    empty ? "" : ",", FP8_BLK, FP8_BLK);
        else
            fprintf(out, "%s\n  \"quantization_config\": {\"quant_method\": "
                    "\"mtpd\", \"format\": \"%s\", \"group_size\": %d}\n}\n",
                    empty ? "" : ",",
                    f == MTPD_QFMT_Q8_0 ? "q8_0"
                    : f == MTPD_QFMT_Q4_S ? "q4_s" : "q4_1", KQ_BLK);
        if (ferror(out))
            rc = -1;
        if (fclose(out) != 0)
            rc = -1;
    }
    free(text);
    if (rc) {
        snprintf(err, errlen, "%s: cannot write", path);
        return MTPD_EIO;
    }
    return 0;
}

static const char *const side_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "draft_vocab.txt",
};

int mtpd_quantize(const char *model_dir, const char *out_dir,
                  const struct mtpd_quant_opts *o, struct mtpd_quant_stats *st,
                  char *err, size_t errlen)
{
    struct mtpd_quant_stats dummy;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    if (!model_dir || !out_dir || !o || (int)o->format < 0 ||
        o->format > MTPD_QFMT_Q4_S) {
        snprintf(err, errlen, "bad arguments");
        return MTPD_EINVAL;
    }
    char path[4096];
    struct stat sb;
    const char *exist[] = {"model.safetensors", "model.safetensors.index.json",
                           "config.json"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", out_dir, exist[i]);
        if (stat(path, &sb) == 0) {
            snprintf(err, errlen, "%s: exists; the output directory must not "
                     "hold a checkpoint", path);
            return MTPD_EINVAL;
        }
    }
    struct st_set *in;
    if (st_open_dir(model_dir, &in, err, errlen) != 0)
        return MTPD_EFORMAT;

    int rc = 0;
    struct plan p = {0};
    FILE *f = NULL;
    float *buf = NULL;
    void *tmp = NULL;
    char *hdr = NULL;
    int tied_head = 0; /* write a quantized lm_head.weight for tied models */
    const struct st_tensor *emb = st_find(in, "model.embed_tokens.weight");
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    struct json_doc *cfg = json_parse_file(path, err, errlen);
    if (!cfg) {
        rc = MTPD_EFORMAT;
        goto out;
    }
    int tie = 0;
    const struct json *tj = json_get(json_root(cfg), "tie_word_embeddings");
    if (tj && json_bool(tj, &tie) != 0)
        tie = 0;
    json_doc_free(cfg);
    if (tie && emb && !st_find(in, "lm_head.weight") && !o->quantize_embed) {
        struct st_tensor head = *emb;
        head.name = "lm_head.weight";
        tied_head = wanted(&head, o);
    }

    int64_t max_cols = 0;
    for (size_t i = 0; i < st_count(in) && rc == 0; i++) {
        const struct st_tensor *t = st_at(in, i);
        if (t->ndim == 2 && t->shape[1] > max_cols)
            max_cols = t->shape[1];
        st->bytes_in += t->nbytes;
        if (wanted(t, o)) {
            rc = plan_matrix(&p, t->name, t, o);
            st->n_quantized++;
        } else {
            rc = plan_add(&p, t->name, "", t->dtype_name, elem_size(t), 0, 0,
                          t->ndim, QK_COPY, t) ? 0 : -1;
            st->n_kept++;
        }
    }
    if (rc == 0 && tied_head) {
        rc = plan_matrix(&p, "lm_head.weight", emb, o);
        st->n_quantized++;
    }
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
        rc = MTPD_ENOMEM;
        goto out;
    }
    qsort(p.v, p.n, sizeof *p.v, by_esize);
    size_t off = 0;
    for (size_t i = 0; i < p.n; i++) {
        p.v[i].off = off;
        off += p.v[i].nbytes;
    }
    st->bytes_out = off;
    size_t hlen;
    hdr = header_json(&p, &hlen);
    buf = malloc(sizeof(float) * (size_t)(max_cols + 1));
    tmp = malloc((size_t)max_cols * 8 + 64);
    if (!hdr || !buf || !tmp) {
        snprintf(err, errlen, "out of memory");
        rc = MTPD_ENOMEM;
        goto out;
    }
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", out_dir, strerror(errno));
        rc = MTPD_EIO;
        goto out;
    }
    rc = write_config(model_dir, out_dir, o->format, err, errlen);
    if (rc)
        goto out;
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = MTPD_EIO;
        goto out;
    }
    uint8_t le[8];
    for (int k = 0; k < 8; k++)
        le[k] = (uint8_t)((uint64_t)hlen >> (8 * k));
    if (fwrite(le, 1, 8, f) != 8 || fwrite(hdr, 1, hlen, f) != hlen)
        rc = -1;
    struct q4s_cache qc = {0};
    struct mtpd_load_progress pr = {.bytes_total = off,
                                    .tensors_total = (long)p.n};
    for (size_t i = 0; i < p.n && rc == 0; i++) {
        rc = write_tensor(f, &p.v[i], buf, tmp, &qc);
        pr.bytes_done += p.v[i].nbytes;
        pr.tensors_done++;
        if (rc == 0 && o->progress)
            o->progress(o->progress_ud, &pr);
    }
    free(qc.b);
    if (fclose(f) != 0)
        rc = -1;
    f = NULL;
    if (rc) {
        snprintf(err, errlen, "%s: write failed", path);
        rc = MTPD_EIO;
        goto out;
    }
    for (size_t i = 0; i < sizeof side_files / sizeof *side_files; i++) {
        char src[4096];
        snprintf(src, sizeof src, "%s/%s", model_dir, side_files[i]);
        snprintf(path, sizeof path, "%s/%s", out_dir, side_files[i]);
        if (copy_file(src, path) < 0) {
            snprintf(err, errlen, "%s: cannot copy to %s", src, path);
            rc = MTPD_EIO;
            goto out;
        }
    }
out:
    if (f)
        fclose(f);
    free(hdr);
    free(buf);
    free(tmp);
    free(p.v);
    st_close(in);
    return rc;
}
