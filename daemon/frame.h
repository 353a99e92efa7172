/*
 * frame.h - splits a connection's byte stream into msgpack frames (one
 * top-level object each) without trusting anything the peer declares.
 *
 * MessagePack is self-delimiting, so there is no length prefix to check.
 * Instead the decoder walks the object headers as bytes arrive (resuming
 * where it stopped) and refuses a frame as soon as
 *   - a declared str/bin/ext length or array/map count cannot fit in what
 *     is left of --max-frame (a frame "claiming 4 GiB" is refused after
 *     its 5 header bytes, before anything is allocated for it),
 *   - the nesting is deeper than FRAME_MAX_DEPTH, or the frame declares
 *     more than FRAME_MAX_ITEMS elements (msgpack-c allocates one
 *     msgpack_object per element, so this bounds its memory),
 *   - the first byte is not an array header (msgpack-rpc frames are
 *     arrays), or a byte is the reserved 0xc1.
 * Only a complete, checked frame is handed to msgpack_unpack_next.
 * No I/O and no libevent here: the fuzz target drives it directly.
 */
#ifndef MTPD_FRAME_H
#define MTPD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAX_DEPTH 16
#define FRAME_MAX_ITEMS (1u << 20)
#define FRAME_DEFAULT_MAX (16u << 20)

enum frame_status {
    FRAME_NEED_MORE = 0, /* no complete frame buffered yet */
    FRAME_READY = 1,     /* *frame, *len hold one complete frame */
    FRAME_ERR_TOO_BIG = -1, /* over max_frame or FRAME_MAX_ITEMS */
    FRAME_ERR_BAD = -2,     /* not a msgpack array / reserved byte */
    FRAME_ERR_DEPTH = -3,   /* nested deeper than FRAME_MAX_DEPTH */
    FRAME_ERR_NOMEM = -4,
};

struct frame_dec {
    char *buf;
    size_t len, cap;
    size_t start;   /* first byte of the current frame */
    size_t scan;    /* bytes of the current frame checked so far */
    size_t items;   /* elements declared in the current frame */
    int depth;
    uint32_t left[FRAME_MAX_DEPTH]; /* items still due per open container */
    size_t max_frame;
};

void frame_dec_init(struct frame_dec *d, size_t max_frame);
void frame_dec_free(struct frame_dec *d);
/* Appends n bytes (dropping the frames already handed out first).
 * 0 or FRAME_ERR_NOMEM. */
int frame_dec_feed(struct frame_dec *d, const void *p, size_t n);
/* Looks for the next complete frame; see enum frame_status. The frame
 * stays valid until the next feed. After an error the decoder is useless
 * (the connection is closed). */
int frame_dec_next(struct frame_dec *d, const char **frame, size_t *len);
const char *frame_status_str(int st);

#endif
