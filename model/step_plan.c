/*
 * step_plan.c - the rows of a GPU forward call and its graph bucket (see
 * step_plan.h for the padded layout).
 */
#include "step_plan.h"

#include "model.h"

/* The bucket shapes: every row count up to STEP_R_MAX (k + 1 for k <= 7),
 * sequence counts growing by about 1.5x, so padding wastes at most a
 * third of a shared pass. */
static const int bucket_r[] = {1, 2, 3, 4, 5, 6, 7, 8};
static const int bucket_s[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};
#define N_R ((int)(sizeof(bucket_r) / sizeof(bucket_r[0])))
#define N_S ((int)(sizeof(bucket_s) / sizeof(bucket_s[0])))

_Static_assert(STEP_R_MAX == 8 && STEP_S_MAX == 64,
               "bucket tables end at STEP_R_MAX and STEP_S_MAX");

int step_n_buckets(void) { return N_R * N_S; }

int step_bucket_find(int max_rows, int n_seqs, int rows_cap, int seqs_cap,
                     struct step_bucket *b)
{
    if (max_rows < 1 || n_seqs < 1 || max_rows > STEP_R_MAX ||
        n_seqs > STEP_S_MAX)
        return -1;
    int ri = 0, si = 0;
    while (bucket_r[ri] < max_rows)
        ri++;
    while (bucket_s[si] < n_seqs)
        si++;
    int r = bucket_r[ri], s = bucket_s[si];
    if (r * s + 1 > rows_cap || s + 1 > seqs_cap)
        return -1;
    *b = (struct step_bucket){.id = ri * N_S + si, .r = r, .s = s,
                              .rows = r * s + 1, .seqs = s + 1};
    return 0;
}

static size_t up256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Offsets of the arrays in a blob: pages first (8-byte entries), then the
 * int32 arrays, each starting 256-byte aligned. */
static size_t blob_layout(int rc, int sc, int pc, size_t off[8])
{
    size_t o = 0, n[8] = {
        sizeof(void *) * (size_t)pc, 4 * (size_t)rc, 4 * (size_t)rc,
        4 * (size_t)rc, 4 * (size_t)rc, 4 * ((size_t)sc + 1),
        4 * (size_t)sc, 4 * (size_t)sc};
    for (int i = 0; i < 8; i++) {
        off[i] = o;
        o += up256(n[i] ? n[i] : 1);
    }
    return o;
}

size_t step_blob_bytes(int rows_cap, int seqs_cap, int pages_cap)
{
    size_t off[8];
    return blob_layout(rows_cap, seqs_cap, pages_cap, off);
}

void step_in_bind(struct step_in *in, void *blob, int rows_cap,
                  int seqs_cap, int pages_cap)
{
    size_t off[8];
    char *b = blob;
    blob_layout(rows_cap, seqs_cap, pages_cap, off);
    in->rows_cap = rows_cap;
    in->seqs_cap = seqs_cap;
    in->pages_cap = pages_cap;
    in->pages = (void **)(b + off[0]);
    in->tokens = (int32_t *)(b + off[1]);
    in->row_seq = (int32_t *)(b + off[2]);
    in->row_pos = (int32_t *)(b + off[3]);
    in->lg_rows = (int32_t *)(b + off[4]);
    in->seq_row0 = (int32_t *)(b + off[5]);
    in->seq_len = (int32_t *)(b + off[6]);
    in->seq_page0 = (int32_t *)(b + off[7]);
}

void step_shape_of(const struct step_seq *ss, int n, struct step_shape *sh)
{
    *sh = (struct step_shape){0};
    for (int i = 0; i < n; i++) {
        if (ss[i].n_tokens <= 0)
            continue;
        sh->rows += ss[i].n_tokens;
        sh->seqs++;
        if (ss[i].n_tokens > sh->max_rows)
            sh->max_rows = ss[i].n_tokens;
    }
}

/* Page-table entries covering positions [0, n_pos). */
static int table_len(int n_pos, int page_pos)
{
    return (n_pos + page_pos - 1) / page_pos;
}

int step_pages_needed(const struct step_seq *ss, int n, int page_pos,
                      const struct step_bucket *b)
{
    int np = 0;
    for (int i = 0; i < n; i++)
        if (ss[i].n_tokens > 0)
            np += table_len(ss[i].pos0 + ss[i].n_tokens, page_pos);
    if (b) /* the sink's: positions below b->rows */
        np += table_len(b->rows, page_pos);
    return np;
}

int step_fill(struct step_in *in, const struct step_seq *ss, int n,
              int page_pos, const struct step_bucket *b, void *sink_page,
              struct step_out *out)
{
    struct step_shape sh;
    step_shape_of(ss, n, &sh);
    *out = (struct step_out){.real_rows = sh.rows, .real_seqs = sh.seqs};
    if (b && (sh.max_rows > b->r || sh.seqs > b->s))
        return MTPD_EINVAL; /* not this bucket's call */
    int rows = b ? b->rows : sh.rows, seqs = b ? b->seqs : sh.seqs;
    if (rows > in->rows_cap || seqs > in->seqs_cap ||
        step_pages_needed(ss, n, page_pos, b) > in->pages_cap)
        return MTPD_EFULL;
    int r = 0, q = 0, pg = 0, nl = 0;
    for (int i = 0; i < n; i++) {
        const struct step_seq *s = &ss[i];
        if (s->n_tokens <= 0)
            continue;
        in->seq_row0[q] = r;
        in->seq_len[q] = s->pos0 + s->n_tokens;
        in->seq_page0[q] = pg;
        int nt = table_len(s->pos0 + s->n_tokens, page_pos);
        for (int t = 0; t < nt; t++)
            in->pages[pg++] = s->pages[t];
        for (int j = 0; j < s->n_tokens; j++, r++) {
            in->tokens[r] = s->tokens[j];
            in->row_seq[r] = q;
            in->row_pos[r] = s->pos0 + j;
            if (j >= s->logits_from)
                in->lg_rows[nl++] = r;
        }
        q++;
    }
    out->n_logits = nl;
    if (b) {
        /* the sink's table, shared by the idle slots */
        int sink0 = pg;
        for (int t = table_len(b->rows, page_pos); t > 0; t--)
            in->pages[pg++] = sink_page;
        for (; q < b->s; q++) { /* idle slots: one row at position 0 */
            in->seq_row0[q] = r;
            in->seq_len[q] = 1;
            in->seq_page0[q] = sink0;
            in->tokens[r] = 0;
            in->row_seq[r] = q;
            in->row_pos[r++] = 0;
        }
        in->seq_row0[q] = r; /* the sink: the rest, positions from 0 */
        in->seq_page0[q] = sink0;
        for (int p = 0; r < b->rows; r++, p++) {
            in->tokens[r] = 0;
            in->row_seq[r] = q;
            in->row_pos[r] = p;
        }
        in->seq_len[q] = b->rows - in->seq_row0[q];
        q++;
    }
    in->seq_row0[q] = r;
    out->n_rows = r;
    out->n_seqs = q;
    out->n_pages = pg;
    return 0;
}
