/*
 * mtp_internal.h - the client struct and helpers shared by the library's
 * files (not installed).
 */
#ifndef MTP_INTERNAL_H
#define MTP_INTERNAL_H

#include <pthread.h>

#include "mtp_client.h"

/* nothing below is exported from the shared library */
#pragma GCC visibility push(hidden)

struct mtp_client {
    int fd;
    int timeout_ms;   /* 0: wait forever */
    size_t max_frame; /* bytes of one frame from the daemon */
    bool broken;      /* after an I/O or protocol failure */
    msgpack_unpacker up;
    msgpack_unpacked frame; /* the last frame; results point into it */
    const msgpack_object *last_result; /* in frame, or NULL */
    struct mtp_error err;

    /* guarded by lock: writes to fd and the in-flight request, so that
     * mtp_client_cancel() can run on another thread */
    pthread_mutex_t lock;
    uint32_t next_msgid;
    uint32_t inflight;
    bool has_inflight;
    bool cancel_sent;
};

/* Fills c->err; returns status. fmt may be NULL (then the status name). */
int mtp_fail(mtp_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fills c->err from a protocol error object {code, message, ...}. */
int mtp_fail_remote(mtp_client *c, const msgpack_object *e);

/* Packs a str. */
void mtp_pack_str(msgpack_packer *pk, const char *s);
/* Copies a str object into a NUL-terminated buffer (truncating); returns
 * false when o is not a str. */
bool mtp_obj_strcpy(const msgpack_object *o, char *buf, size_t len);
/* Integer / float value of o; false when o is not a number. */
bool mtp_obj_int(const msgpack_object *o, int64_t *v);
bool mtp_obj_double(const msgpack_object *o, double *v);

#pragma GCC visibility pop

#endif
