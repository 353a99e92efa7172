/* frame.c - incremental, bounded msgpack frame splitter (frame.h). */
#include <stdlib.h>
#include <string.h>

#include "frame.h"

void frame_dec_init(struct frame_dec *d, size_t max_frame)
{
    memset(d, 0, sizeof *d);
    d->max_frame = max_frame ? max_frame : FRAME_DEFAULT_MAX;
}

void frame_dec_free(struct frame_dec *d)
{
    free(d->buf);
    d->buf = NULL;
    d->len = d->cap = d->start = d->scan = 0;
}

int frame_dec_feed(struct frame_dec *d, const void *p, size_t n)
{
    if (d->start) { /* drop frames already handed out */
        memmove(d->buf, d->buf + d->start, d->len - d->start);
        d->len -= d->start;
        d->start = 0;
    }
    if (d->len + n > d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < d->len + n)
            cap *= 2;
        char *b = realloc(d->buf, cap);
        if (!b)
            return FRAME_ERR_NOMEM;
        d->buf = b;
        d->cap = cap;
    }
    memcpy(d->buf + d->len, p, n);
    d->len += n;
    return 0;
}

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/*
 * Reads one object header at p (avail bytes). Sets *hdr (header bytes),
 * *body (payload bytes after it) and *count (elements it opens: array n,
 * map 2n). Returns 1, 0 when the header itself is incomplete, or
 * FRAME_ERR_BAD.
 */
static int read_header(const unsigned char *p, size_t avail, size_t *hdr,
                       uint64_t *body, uint64_t *count)
{
    unsigned c = p[0];
    *body = 0;
    *count = 0;
    *hdr = 1;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 1; /* fixint, nil, bool */
    if ((c & 0xf0) == 0x80) { *count = 2u * (c & 0x0f); return 1; }
    if ((c & 0xf0) == 0x90) { *count = c & 0x0f; return 1; }
    if ((c & 0xe0) == 0xa0) { *body = c & 0x1f; return 1; }
    /* 0xca..0xd8: float32/64, uint8..64, int8..64, fixext1..16 (type
     * byte included) */
    static const unsigned char fixed[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
                                          2, 3, 5, 9, 17};
    if (c >= 0xca && c <= 0xd8) {
        *body = fixed[c - 0xca];
        return 1;
    }
    size_t lenb;
    switch (c) {
    case 0xc4: case 0xd9: lenb = 1; break;           /* bin8, str8 */
    case 0xc5: case 0xda: case 0xdc: case 0xde: lenb = 2; break;
    case 0xc6: case 0xdb: case 0xdd: case 0xdf: lenb = 4; break;
    case 0xc7: lenb = 1; break;                      /* ext8 */
    case 0xc8: lenb = 2; break;
    case 0xc9: lenb = 4; break;
    default: return FRAME_ERR_BAD;                   /* 0xc1 */
    }
    int ext = c >= 0xc7 && c <= 0xc9;
    if (avail < 1 + lenb + (size_t)ext)
        return 0;
    uint64_t v = lenb == 1 ? p[1] : lenb == 2 ? be16(p + 1) : be32(p + 1);
    *hdr = 1 + lenb + (size_t)ext; /* ext: one type byte */
    if (c == 0xdc || c == 0xdd)
        *count = v;
    else if (c == 0xde || c == 0xdf)
        *count = 2 * v;
    else
        *body = v;
    return 1;
}

int frame_dec_next(struct frame_dec *d, const char **frame, size_t *len)
{
    const unsigned char *b = (const unsigned char *)d->buf + d->start;
    size_t have = d->len - d->start;
    while (d->scan < have) {
        const unsigned char *p = b + d->scan;
        if (d->scan == 0) {
            unsigned c = p[0];
            if (!((c & 0xf0) == 0x90 || c == 0xdc || c == 0xdd))
                return FRAME_ERR_BAD;
            d->depth = 0;
            d->items = 0;
        }
        size_t hdr;
        uint64_t body, count;
        int r = read_header(p, have - d->scan, &hdr, &body, &count);
        if (r < 0)
            return r;
        if (r == 0)
            return FRAME_NEED_MORE;
        uint64_t left = d->max_frame - d->scan; /* scan < max_frame here */
        /* every element takes at least one byte */
        if (hdr > left || body > left - hdr || count > left - hdr - body)
            return FRAME_ERR_TOO_BIG;
        d->items += count;
        if (d->items > FRAME_MAX_ITEMS)
            return FRAME_ERR_TOO_BIG;
        if (hdr + body > have - d->scan)
            return FRAME_NEED_MORE; /* wait for the whole payload */
        d->scan += hdr + (size_t)body;
        if (count) {
            if (d->depth == FRAME_MAX_DEPTH)
                return FRAME_ERR_DEPTH;
            d->left[d->depth++] = (uint32_t)count;
            continue;
        }
        /* one object complete: close the containers it completes */
        while (d->depth > 0 && --d->left[d->depth - 1] == 0)
            d->depth--;
        if (d->depth == 0) {
            *frame = (const char *)b;
            *len = d->scan;
            d->start += d->scan;
            d->scan = 0;
            return FRAME_READY;
        }
    }
    return FRAME_NEED_MORE;
}

const char *frame_status_str(int st)
{
    switch (st) {
    case FRAME_ERR_TOO_BIG: return "frame over the size limit";
    case FRAME_ERR_BAD: return "not a msgpack-rpc array";
    case FRAME_ERR_DEPTH: return "frame nested too deeply";
    case FRAME_ERR_NOMEM: return "out of memory";
    default: return "ok";
    }
}
