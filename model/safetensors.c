/*
 * safetensors.c - mmap + validate safetensors files (see safetensors.h).
 *
 * File layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {...}}, then the data section; offsets are relative to
 * the start of the data section.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

#define ST_MAX_HEADER (256u << 20) /* 256 MiB of JSON is surely broken */

struct st_file {
    char *path;
    void *map;
    size_t size;
    struct json_doc *hdr;
};

struct st_set {
    struct st_file *files;
    int n_files;
    struct st_tensor *tensors;
    size_t n_tensors, cap_tensors;
    size_t *slots; /* open-addressing hash: index+1 into tensors, 0 empty */
    size_t n_slots;
    void **copies; /* aligned copies of misaligned tensors */
    size_t n_copies;
    size_t total_bytes;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static const struct {
    const char *name;
    enum st_dtype t;
    size_t size;
} st_types[] = {
    {"F32", ST_F32, 4},      {"BF16", ST_BF16, 2},   {"F16", ST_F16, 2},
    {"F8_E4M3", ST_F8_E4M3, 1}, {"F64", ST_OTHER, 8}, {"I64", ST_OTHER, 8},
    {"I32", ST_OTHER, 4},    {"I16", ST_OTHER, 2},   {"I8", ST_OTHER, 1},
    {"U8", ST_OTHER, 1},     {"BOOL", ST_OTHER, 1},  {"F8_E5M2", ST_OTHER, 1},
    {"U16", ST_OTHER, 2},    {"U32", ST_OTHER, 4},   {"U64", ST_OTHER, 8},
};

int st_kdtype(enum st_dtype t)
{
    switch (t) {
    case ST_F32: return KDT_F32;
    case ST_BF16: return KDT_BF16;
    case ST_F16: return KDT_F16;
    case ST_F8_E4M3: return KDT_F8_E4M3;
    default: return -1;
    }
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int add_tensor(struct st_set *s, struct st_tensor *t)
{
    if (s->n_tensors == s->cap_tensors) {
        size_t nc = s->cap_tensors ? s->cap_tensors * 2 : 256;
        struct st_tensor *nt = realloc(s->tensors, nc * sizeof(*nt));
        if (!nt)
            return -1;
        s->tensors = nt;
        s->cap_tensors = nc;
    }
    s->tensors[s->n_tensors++] = *t;
    return 0;
}

struct span {
    uint64_t b, e;
    const char *name;
};

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b ? 1 : 0;
}

/* Maps one file and appends its tensors. */
static int load_file(struct st_set *s, const char *path, char *err,
                     size_t errlen)
{
    char qbn[JSON_ESC_CAP], q[JSON_ESC_CAP], q2[JSON_ESC_CAP];
    /* names from the index and the header are quoted escaped (json_esc) */
    const char *bn = json_escz(qbn, sizeof qbn, base_name(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", bn, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", bn);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        snprintf(err, errlen, "%s: truncated: %zu bytes, no header length",
                 bn, size);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap failed: %s", bn, strerror(errno));
        return -1;
    }
    struct st_file *f = &s->files[s->n_files++];
    f->path = strdup(path);
    f->map = map;
    f->size = size;
    if (!f->path) {
        snprintf(err, errlen, "%s: out of memory", bn);
        return -1;
    }
    uint64_t hlen = 0;
    const unsigned char *b = map;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | b[i];
    if (hlen > size - 8 || hlen > ST_MAX_HEADER) {
        snprintf(err, errlen,
                 "%s: truncated or corrupt: header length %llu but file has "
                 "%zu bytes", bn, (unsigned long long)hlen, size);
        return -1;
    }
    char jerr[160];
    f->hdr = json_parse((const char *)b + 8, hlen, jerr, sizeof(jerr));
    if (!f->hdr) {
        snprintf(err, errlen, "%s: bad JSON header: %s", bn, jerr);
        return -1;
    }
    const struct json *root = json_root(f->hdr);
    if (root->type != JSON_OBJECT) {
        snprintf(err, errlen, "%s: header is not a JSON object", bn);
        return -1;
    }
    const unsigned char *data = b + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    struct span *spans = calloc(root->len ? root->len : 1, sizeof(*spans));
    if (!spans) {
        snprintf(err, errlen, "%s: out of memory", bn);
        return -1;
    }
    size_t n_spans = 0;
    int rc = -1;
    for (size_t i = 0; i < root->len; i++) {
        const struct json_member *m = &root->u.members[i];
        if (strcmp(m->key, "__metadata__") == 0)
            continue;
#define QKEY json_esc(q, sizeof q, m->key, m->key_len)
        const struct json *v = m->val;
        const struct json *dtv = json_get(v, "dtype");
        const char *dt = json_str(dtv);
        const struct json *shape = json_get(v, "shape");
        const struct json *offs = json_get(v, "data_offsets");
        if (!dt || !shape || shape->type != JSON_ARRAY || !offs ||
            offs->type != JSON_ARRAY || offs->len != 2) {
            snprintf(err, errlen,
                     "%s: %s: header entry needs dtype, shape, data_offsets",
                     bn, QKEY);
            goto out;
        }
        struct st_tensor t = {.name = m->key, .file = f->path};
        size_t esize = 0;
        for (size_t k = 0; k < sizeof(st_types) / sizeof(st_types[0]); k++) {
            if (strcmp(dt, st_types[k].name) == 0) {
                t.dtype = st_types[k].t;
                esize = st_types[k].size;
            }
        }
        if (!esize) {
            snprintf(err, errlen, "%s: %s: unknown dtype \"%s\"", bn, QKEY,
                     json_esc(q2, sizeof q2, dt, dtv->len));
            goto out;
        }
        snprintf(t.dtype_name, sizeof(t.dtype_name), "%s", dt);
        if (shape->len > ST_MAX_DIMS) {
            snprintf(err, errlen, "%s: %s: %zu dimensions (max %d)", bn,
                     QKEY, shape->len, ST_MAX_DIMS);
            goto out;
        }
        t.ndim = (int)shape->len;
        uint64_t count = 1;
        for (int d = 0; d < t.ndim; d++) {
            int64_t x;
            if (json_int(json_at(shape, d), &x) < 0 || x < 0 ||
                x > (1ll << 40)) {
                snprintf(err, errlen, "%s: %s: bad shape", bn, QKEY);
                goto out;
            }
            t.shape[d] = x;
            count *= (uint64_t)x;
            if (count > (1ull << 48)) {
                snprintf(err, errlen, "%s: %s: shape too large", bn, QKEY);
                goto out;
            }
        }
        int64_t ob, oe;
        if (json_int(json_at(offs, 0), &ob) < 0 ||
            json_int(json_at(offs, 1), &oe) < 0 || ob < 0 || oe < ob ||
            (uint64_t)oe > data_size) {
            snprintf(err, errlen,
                     "%s: %s: data_offsets out of range (data section is "
                     "%llu bytes; file truncated?)",
                     bn, QKEY, (unsigned long long)data_size);
            goto out;
        }
        if ((uint64_t)(oe - ob) != count * esize) {
            snprintf(err, errlen,
                     "%s: %s: data_offsets span %lld bytes but %s x shape "
                     "needs %llu",
                     bn, QKEY, (long long)(oe - ob), t.dtype_name,
                     (unsigned long long)(count * esize));
            goto out;
        }
        t.nbytes = (size_t)(oe - ob);
        t.data = data + ob;
        if (((uintptr_t)t.data % esize) != 0) {
            void *copy = aligned_alloc(64, (t.nbytes + 63) & ~(size_t)63);
            void **nc = realloc(s->copies, (s->n_copies + 1) * sizeof(*nc));
            if (!copy || !nc) {
                free(copy);
                if (nc)
                    s->copies = nc;
                snprintf(err, errlen, "%s: %s: out of memory", bn, QKEY);
                goto out;
            }
            s->copies = nc;
            memcpy(copy, t.data, t.nbytes);
            s->copies[s->n_copies++] = copy;
            t.data = copy;
        }
        spans[n_spans++] = (struct span){(uint64_t)ob, (uint64_t)oe, m->key};
        s->total_bytes += t.nbytes;
        if (add_tensor(s, &t) < 0) {
            snprintf(err, errlen, "%s: out of memory", bn);
            goto out;
        }
    }
#undef QKEY
    qsort(spans, n_spans, sizeof(*spans), cmp_span);
    for (size_t i = 1; i < n_spans; i++) {
        if (spans[i].b < spans[i - 1].e) {
            snprintf(err, errlen, "%s: %s: data overlaps tensor %s", bn,
                     json_escz(q, sizeof q, spans[i].name),
                     json_escz(q2, sizeof q2, spans[i - 1].name));
            goto out;
        }
    }
    rc = 0;
out:
    free(spans);
    return rc;
}

static int build_index(struct st_set *s, char *err, size_t errlen)
{
    s->n_slots = 16;
    while (s->n_slots < s->n_tensors * 2)
        s->n_slots *= 2;
    s->slots = calloc(s->n_slots, sizeof(*s->slots));
    if (!s->slots) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < s->n_tensors; i++) {
        size_t h = hash_str(s->tensors[i].name) & (s->n_slots - 1);
        while (s->slots[h]) {
            if (strcmp(s->tensors[s->slots[h] - 1].name,
                       s->tensors[i].name) == 0) {
                char q1[JSON_ESC_CAP], q2[JSON_ESC_CAP], q3[JSON_ESC_CAP];
                snprintf(err, errlen, "%s: %s: tensor defined twice (also in %s)",
                         json_escz(q1, sizeof q1, base_name(s->tensors[i].file)),
                         json_escz(q2, sizeof q2, s->tensors[i].name),
                         json_escz(q3, sizeof q3,
                                   base_name(s->tensors[s->slots[h] - 1].file)));
                return -1;
            }
            h = (h + 1) & (s->n_slots - 1);
        }
        s->slots[h] = i + 1;
    }
    return 0;
}

const struct st_tensor *st_find(const struct st_set *s, const char *name)
{
    if (!s->n_slots)
        return NULL;
    size_t h = hash_str(name) & (s->n_slots - 1);
    while (s->slots[h]) {
        const struct st_tensor *t = &s->tensors[s->slots[h] - 1];
        if (strcmp(t->name, name) == 0)
            return t;
        h = (h + 1) & (s->n_slots - 1);
    }
    return NULL;
}

static int path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Reads the shard list from the index; checks every weight_map entry is
 * found in its named shard after loading. */
static int open_sharded(struct st_set *s, const char *dir, const char *ipath,
                        char *err, size_t errlen)
{
    char jerr[160];
    struct json_doc *d = json_parse_file(ipath, jerr, sizeof(jerr));
    if (!d) {
        snprintf(err, errlen, "model.safetensors.index.json: %s", jerr);
        return -1;
    }
    int rc = -1;
    const struct json *wm = json_get(json_root(d), "weight_map");
    if (!wm || wm->type != JSON_OBJECT) {
        snprintf(err, errlen,
                 "model.safetensors.index.json: weight_map: missing or not "
                 "an object");
        goto out;
    }
    /* distinct shard names, in first-seen order */
    const char **names = calloc(wm->len ? wm->len : 1, sizeof(*names));
    int n = 0;
    if (!names)
        goto out;
    for (size_t i = 0; i < wm->len; i++) {
        const char *f = json_str(wm->u.members[i].val);
        if (!f || strchr(f, '/')) {
            char q[JSON_ESC_CAP];
            snprintf(err, errlen,
                     "model.safetensors.index.json: %s: shard must be a file "
                     "name", json_esc(q, sizeof q, wm->u.members[i].key,
                                      wm->u.members[i].key_len));
            free(names);
            goto out;
        }
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = strcmp(names[k], f) == 0;
        if (!seen)
            names[n++] = f;
    }
    s->files = calloc(n ? n : 1, sizeof(*s->files));
    if (!s->files) {
        free(names);
        goto out;
    }
    for (int k = 0; k < n; k++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, names[k]);
        if (load_file(s, p, err, errlen) < 0) {
            free(names);
            goto out;
        }
    }
    free(names);
    if (build_index(s, err, errlen) < 0)
        goto out;
    for (size_t i = 0; i < wm->len; i++) {
        const char *key = wm->u.members[i].key;
        const char *f = json_str(wm->u.members[i].val);
        const struct st_tensor *t = st_find(s, key);
        if (!t || strcmp(base_name(t->file), f) != 0) {
            char q1[JSON_ESC_CAP], q2[JSON_ESC_CAP];
            snprintf(err, errlen, "%s: %s: listed in the index but not in "
                     "that shard", json_escz(q1, sizeof q1, f),
                     json_esc(q2, sizeof q2, key, wm->u.members[i].key_len));
            goto out;
        }
    }
    rc = 0;
out:
    json_doc_free(d);
    return rc;
}

int st_open_dir(const char *dir, struct st_set **out, char *err,
                size_t errlen)
{
    *out = NULL;
    struct st_set *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char p[4096];
    snprintf(p, sizeof(p), "%s/model.safetensors.index.json", dir);
    int rc;
    if (path_exists(p)) {
        rc = open_sharded(s, dir, p, err, errlen);
    } else {
        snprintf(p, sizeof(p), "%s/model.safetensors", dir);
        s->files = calloc(1, sizeof(*s->files));
        rc = s->files ? load_file(s, p, err, errlen) : -1;
        if (rc == 0)
            rc = build_index(s, err, errlen);
    }
    if (rc < 0) {
        st_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void st_close(struct st_set *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].map)
            munmap(s->files[i].map, s->files[i].size);
        json_doc_free(s->files[i].hdr);
        free(s->files[i].path);
    }
    for (size_t i = 0; i < s->n_copies; i++)
        free(s->copies[i]);
    free(s->copies);
    free(s->files);
    free(s->tensors);
    free(s->slots);
    free(s);
}

size_t st_count(const struct st_set *s) { return s->n_tensors; }

const struct st_tensor *st_at(const struct st_set *s, size_t i)
{
    return i < s->n_tensors ? &s->tensors[i] : NULL;
}

size_t st_total_bytes(const struct st_set *s) { return s->total_bytes; }

const char *st_source(const struct st_set *s)
{
    if (s->n_files == 1)
        return base_name(s->files[0].path);
    return "model.safetensors.index.json";
}
