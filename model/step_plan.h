/*
 * step_plan.h - the host side of one forward call on the GPU: its rows and
 * sequences laid out as the device ops read them (struct kcuda_rows,
 * kernels/kcuda.h), and the CUDA graph bucket that runs it. Plain C, built
 * and tested without CUDA (tests/unit/test_step_plan.c).
 *
 * Decode and verify calls (at most STEP_R_MAX rows in any sequence, at most
 * STEP_S_MAX sequences) run as a CUDA graph captured once per bucket: a
 * shape of R rows per sequence x S sequences, the smallest of a fixed set
 * that holds the call. A graph's shape is fixed, so the call is padded:
 *   rows [0, n)           the real rows, sequence by sequence (numbered as
 *                         the CPU path numbers them)
 *   rows [n, R * S + 1)   padding
 *   sequences [0, ns)     the real sequences (those with rows)
 *   sequences [ns, S)     idle slots: one padding row each
 *   sequence S            the sink: every other padding row
 * Idle slots and the sink read the sink's page table, whose every entry is
 * one scratch page of the context (never a cache page), so padding rows
 * write no cache; their token is 0 and their positions count from 0 (what
 * they compute is thrown away). Every sequence has at least one row:
 * R * S + 1 - n - (S - ns) >= (R - 1) (S - ns) + 1.
 * Everything else (prefill: a sequence of more than STEP_R_MAX rows;
 * more than STEP_S_MAX sequences; a bucket over the context's rows) runs
 * eagerly: exactly the real rows and sequences, no padding.
 */
#ifndef MTPD_STEP_PLAN_H
#define MTPD_STEP_PLAN_H

#include <stddef.h>
#include <stdint.h>

#define STEP_R_MAX 8  /* rows per sequence of the largest bucket */
#define STEP_S_MAX 64 /* sequences of the largest bucket */

/* A graph shape: r rows x s sequences, launched as rows = r * s + 1 rows
 * and seqs = s + 1 sequences (the sink); id in [0, step_n_buckets()). */
struct step_bucket {
    int id;
    int r, s;
    int rows, seqs;
};
int step_n_buckets(void);
/* The bucket of a call whose sequences have at most max_rows rows each
 * (n_seqs of them with rows): 0 and *b, or -1 when it runs eagerly
 * (max_rows > STEP_R_MAX, n_seqs > STEP_S_MAX, or the bucket needs more
 * than rows_cap rows / seqs_cap sequences). */
int step_bucket_find(int max_rows, int n_seqs, int rows_cap, int seqs_cap,
                     struct step_bucket *b);

/* One sequence of the call. */
struct step_seq {
    const int32_t *tokens; /* n_tokens */
    int n_tokens;          /* 0: not in the call */
    int pos0;              /* position of its first row */
    int logits_from;       /* rows from here on want logits */
    void *const *pages;    /* its cache's page table */
};

/* The inputs of a call, as views into one blob (host staging or its
 * device twin: the same offsets, so one copy moves them all). */
struct step_in {
    int rows_cap, seqs_cap, pages_cap;
    void **pages;       /* [pages_cap] all page tables, concatenated */
    int32_t *tokens;    /* [rows_cap] */
    int32_t *row_seq;   /* [rows_cap] */
    int32_t *row_pos;   /* [rows_cap] */
    int32_t *lg_rows;   /* [rows_cap] eager: the rows wanting logits */
    int32_t *seq_row0;  /* [seqs_cap + 1] */
    int32_t *seq_len;   /* [seqs_cap] */
    int32_t *seq_page0; /* [seqs_cap] */
};
/* Bytes of a blob for these capacities (a multiple of 256). */
size_t step_blob_bytes(int rows_cap, int seqs_cap, int pages_cap);
void step_in_bind(struct step_in *in, void *blob, int rows_cap,
                  int seqs_cap, int pages_cap);

/* What a call needs: rows and sequences with rows, the most rows of one
 * sequence, and the page-table entries step_fill writes (bucket b, or
 * NULL for eager). */
struct step_shape {
    int rows, seqs, max_rows;
};
void step_shape_of(const struct step_seq *ss, int n, struct step_shape *sh);
int step_pages_needed(const struct step_seq *ss, int n, int page_pos,
                      const struct step_bucket *b);

/* The call as launched. */
struct step_out {
    int n_rows, n_seqs;       /* launched: padded to the bucket, or real */
    int real_rows, real_seqs;
    int n_pages;              /* page-table entries written */
    int n_logits;             /* eager: entries of lg_rows */
};
/* Fills in (the host blob) for sequences ss[0..n) (those with rows),
 * padded to bucket b when not NULL; sink_page is the page padding rows
 * write to (only read when b). MTPD_EFULL (model.h) when a capacity is
 * short (nothing useful written), else 0. */
int step_fill(struct step_in *in, const struct step_seq *ss, int n,
              int page_pos, const struct step_bucket *b, void *sink_page,
              struct step_out *out);

#endif
