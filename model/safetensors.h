/*
 * safetensors.h - memory-mapped safetensors checkpoints (single file or
 * sharded with model.safetensors.index.json).
 *
 * Tensor data stays in the mapping; nothing is copied except tensors whose
 * offset is misaligned for their element type (then one aligned copy is
 * owned by the set). Every header is validated before use: offsets in
 * range, sizes matching dtype x shape, no overlaps.
 */
#ifndef MTPD_SAFETENSORS_H
#define MTPD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#define ST_MAX_DIMS 4

enum st_dtype {
    ST_F32 = 0,
    ST_BF16,
    ST_F16,
    ST_F8_E4M3,
    ST_I8, /* Q8_0 codes (weights.c) */
    ST_U8, /* Q4_1 codes, two per byte (weights.c) */
    ST_OTHER, /* a type we can map but not compute with (I64, U8, ...) */
};

struct st_tensor {
    const char *name;
    const char *file;     /* shard path, for error messages */
    enum st_dtype dtype;
    char dtype_name[16];  /* as written in the header ("BF16") */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
};

struct st_set;

/*
 * Opens DIR/model.safetensors.index.json if present (every shard it names),
 * else DIR/model.safetensors. Returns 0 or -1 with one line
 * "FILE: [TENSOR: ]problem" in err.
 */
int st_open_dir(const char *dir, struct st_set **out, char *err,
                size_t errlen);
void st_close(struct st_set *s);

const struct st_tensor *st_find(const struct st_set *s, const char *name);
size_t st_count(const struct st_set *s);
const struct st_tensor *st_at(const struct st_set *s, size_t i);
/* Total bytes of tensor data over all shards. */
size_t st_total_bytes(const struct st_set *s);

/* What to name in errors about the set as a whole (a missing tensor). */
const char *st_source(const struct st_set *s);

/* kdtype for a computable dtype; -1 for ST_OTHER, ST_I8 and ST_U8 (the
 * codes of quantized weights, bound with their scales by weights.c). */
int st_kdtype(enum st_dtype t);

#endif
