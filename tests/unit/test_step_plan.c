/*
 * test_step_plan.c - the host side of a GPU forward call (model/
 * step_plan.c): which graph bucket a call shape gets, when none does
 * (prefill, too many sequences, a bucket over the context's rows), and the
 * padded layout: real rows where the CPU numbers them, every row's cache
 * slot resolved through the page tables as the device does (kcuda_kv_write)
 * lands in its own sequence's page for real rows and in the sink page for
 * every padding row, never in a cache page.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "step_plan.h"
#include "unit_test.h"

static enum test_return test_bucket(void)
{
    struct step_bucket b;
    static const struct {
        int rows, seqs, r, s;
    } v[] = {
        {1, 1, 1, 1}, {2, 1, 2, 1}, {5, 1, 5, 1}, {8, 1, 8, 1},
        {1, 5, 1, 6}, {5, 8, 5, 8}, {3, 9, 3, 12}, {1, 64, 1, 64},
        {4, 33, 4, 48}, {7, 17, 7, 24},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int rc = step_bucket_find(v[i].rows, v[i].seqs, 1000, 1000, &b);
        CHECK(rc == 0, "(%d, %d): no bucket", v[i].rows, v[i].seqs);
        CHECK(b.r == v[i].r && b.s == v[i].s, "(%d, %d) -> (%d, %d), want "
              "(%d, %d)", v[i].rows, v[i].seqs, b.r, b.s, v[i].r, v[i].s);
        CHECK(b.rows == b.r * b.s + 1 && b.seqs == b.s + 1, "launch shape");
        CHECK(b.id >= 0 && b.id < step_n_buckets(), "id %d", b.id);
    }
    /* prefill, too many sequences, nothing: eager */
    CHECK(step_bucket_find(9, 1, 1000, 1000, &b) < 0, "9 rows: prefill");
    CHECK(step_bucket_find(100, 1, 1000, 1000, &b) < 0, "prefill");
    CHECK(step_bucket_find(1, 65, 1000, 1000, &b) < 0, "65 sequences");
    CHECK(step_bucket_find(0, 1, 1000, 1000, &b) < 0, "no rows");
    CHECK(step_bucket_find(1, 0, 1000, 1000, &b) < 0, "no sequences");
    /* the bucket must fit the context's rows (sink row included) */
    CHECK(step_bucket_find(4, 8, 33, 1000, &b) == 0 && b.rows == 33, "fits");
    CHECK(step_bucket_find(4, 8, 32, 1000, &b) < 0, "33 rows > 32");
    CHECK(step_bucket_find(3, 5, 100, 6, &b) < 0, "7 seqs > 6");
    /* every bucket id once, and buckets grow with the shape */
    int *seen = calloc((size_t)step_n_buckets(), sizeof(int));
    CHECK(seen, "oom");
    for (int r = 1; r <= STEP_R_MAX; r++)
        for (int s = 1; s <= STEP_S_MAX; s++) {
            CHECK(step_bucket_find(r, s, 1 << 20, 1 << 20, &b) == 0, "(%d, %d)",
                  r, s);
            CHECK(b.r >= r && b.s >= s && b.r == r, "(%d, %d) -> (%d, %d)", r,
                  s, b.r, b.s);
            CHECK(b.s < 2 * s, "(%d, %d): %d sequences wasted", r, s, b.s);
            seen[b.id] = 1;
        }
    int n_seen = 0;
    for (int i = 0; i < step_n_buckets(); i++)
        n_seen += seen[i];
    free(seen);
    CHECK(n_seen == step_n_buckets(), "%d of %d ids", n_seen,
          step_n_buckets());
    return TEST_PASS;
}

/* Fake pages: distinct addresses, one array per sequence. */
#define MAXS 70
#define MAXP 64
static char g_page_mem[MAXS][MAXP];
static char g_sink;

/* The page a row writes (kcuda_kv_write's lookup) and its offset. */
static void *slot_page(const struct step_in *in, int row, int page_pos)
{
    int s = in->row_seq[row], p = in->row_pos[row];
    return in->pages[in->seq_page0[s] + p / page_pos];
}

/* Checks one filled call against its sequences. */
static enum test_return check_layout(const struct step_in *in,
                                     const struct step_seq *ss, int n,
                                     int page_pos,
                                     const struct step_bucket *b,
                                     const struct step_out *o)
{
    int r = 0, q = 0, nl = 0;
    for (int i = 0; i < n; i++) {
        if (ss[i].n_tokens == 0)
            continue;
        CHECK(in->seq_row0[q] == r, "seq %d starts at %d, want %d", q,
              in->seq_row0[q], r);
        CHECK(in->seq_len[q] == ss[i].pos0 + ss[i].n_tokens, "seq_len");
        for (int j = 0; j < ss[i].n_tokens; j++, r++) {
            CHECK(in->tokens[r] == ss[i].tokens[j], "token of row %d", r);
            CHECK(in->row_seq[r] == q && in->row_pos[r] == ss[i].pos0 + j,
                  "row %d", r);
            void *want = ss[i].pages[(ss[i].pos0 + j) / page_pos];
            CHECK(slot_page(in, r, page_pos) == want, "row %d writes the "
                  "wrong page", r);
            if (j >= ss[i].logits_from) {
                CHECK(nl < o->n_logits && in->lg_rows[nl] == r, "lg row");
                nl++;
            }
        }
        q++;
    }
    CHECK(o->real_rows == r && o->real_seqs == q, "real %d/%d", o->real_rows,
          o->real_seqs);
    CHECK(o->n_logits == nl, "%d logit rows, want %d", o->n_logits, nl);
    if (!b) {
        CHECK(o->n_rows == r && o->n_seqs == q, "eager is unpadded");
        CHECK(in->seq_row0[q] == r, "end");
        return TEST_PASS;
    }
    CHECK(o->n_rows == b->rows && o->n_seqs == b->seqs, "padded to %dx%d",
          o->n_rows, o->n_seqs);
    for (int s = 0; s < o->n_seqs; s++) {
        int n_s = in->seq_row0[s + 1] - in->seq_row0[s];
        CHECK(n_s >= 1, "seq %d has %d rows", s, n_s);
        if (s >= q) { /* idle slot or sink: rows at 0.. of the sink */
            CHECK(in->seq_len[s] == n_s, "pad seq %d len", s);
            for (int t = in->seq_row0[s]; t < in->seq_row0[s + 1]; t++)
                CHECK(in->row_pos[t] == t - in->seq_row0[s], "pad pos");
        }
    }
    CHECK(in->seq_row0[o->n_seqs] == b->rows, "rows end");
    for (int t = r; t < b->rows; t++) {
        CHECK(in->row_seq[t] >= q, "padding row %d in a real sequence", t);
        CHECK(in->tokens[t] == 0, "padding token");
        CHECK(slot_page(in, t, page_pos) == &g_sink, "padding row %d "
              "writes a cache page", t);
        /* and the whole table it attends over is the sink's */
        int s = in->row_seq[t];
        for (int p = 0; p <= in->row_pos[t]; p += page_pos)
            CHECK(in->pages[in->seq_page0[s] + p / page_pos] == &g_sink,
                  "padding attends a cache page");
    }
    CHECK(o->n_pages <= in->pages_cap, "pages");
    return TEST_PASS;
}

static enum test_return test_layout_random(void)
{
    srand(1234);
    int32_t toks[64];
    for (int i = 0; i < 64; i++)
        toks[i] = 100 + i;
    void *tables[MAXS][MAXP];
    for (int s = 0; s < MAXS; s++)
        for (int p = 0; p < MAXP; p++)
            tables[s][p] = &g_page_mem[s][p];
    size_t bytes = step_blob_bytes(600, 600, 5000);
    CHECK(bytes % 256 == 0, "blob size %zu", bytes);
    void *blob = aligned_alloc(256, bytes);
    CHECK(blob, "oom");
    struct step_in in;
    step_in_bind(&in, blob, 600, 600, 5000);
    CHECK((char *)in.seq_page0 + 4 * 600 <= (char *)blob + bytes,
          "arrays fit the blob");
    for (int it = 0; it < 3000; it++) {
        int page_pos = 1 << (rand() % 5);
        int n = 1 + rand() % MAXS, prefill = rand() % 10 == 0;
        struct step_seq ss[MAXS];
        for (int i = 0; i < n; i++) {
            int nt = rand() % 4 == 0 ? 0 : 1 + rand() % (prefill ? 40 : 8);
            ss[i] = (struct step_seq){
                .tokens = toks, .n_tokens = nt,
                .pos0 = rand() % (MAXP * page_pos - 40),
                .logits_from = rand() % 3 == 0 ? 0 : nt - 1,
                .pages = tables[i]};
        }
        struct step_shape sh;
        step_shape_of(ss, n, &sh);
        if (sh.rows == 0 || sh.rows > 590)
            continue;
        struct step_bucket bk, *b = NULL;
        if (step_bucket_find(sh.max_rows, sh.seqs, 600, 600, &bk) == 0)
            b = &bk;
        CHECK(!b == (sh.max_rows > STEP_R_MAX || sh.seqs > STEP_S_MAX),
              "bucket for rows %d seqs %d", sh.max_rows, sh.seqs);
        memset(blob, 0xab, bytes);
        struct step_out o;
        int rc = step_fill(&in, ss, n, page_pos, b, &g_sink, &o);
        CHECK(rc == 0, "fill: %d", rc);
        CHECK(o.n_pages == step_pages_needed(ss, n, page_pos, b), "pages "
              "%d", o.n_pages);
        if (check_layout(&in, ss, n, page_pos, b, &o) != TEST_PASS) {
            fprintf(stderr, "  iteration %d: %d seqs, page_pos %d, %s\n", it,
                    n, page_pos, b ? "graph" : "eager");
            free(blob);
            return TEST_FAIL;
        }
    }
    free(blob);
    return TEST_PASS;
}

static enum test_return test_capacity(void)
{
    int32_t toks[4] = {1, 2, 3, 4};
    void *tab[8] = {&g_page_mem[0][0], &g_page_mem[0][1], &g_page_mem[0][2]};
    struct step_seq ss = {.tokens = toks, .n_tokens = 4, .pos0 = 6,
                          .pages = tab};
    struct step_bucket b;
    CHECK(step_bucket_find(4, 1, 8, 8, &b) == 0, "bucket");
    /* positions [0, 10) with 4 per page: 3 entries, the sink's 5 rows 2 */
    CHECK(step_pages_needed(&ss, 1, 4, NULL) == 3, "eager pages");
    CHECK(step_pages_needed(&ss, 1, 4, &b) == 5, "graph pages");
    char blob[4096] __attribute__((aligned(256)));
    struct step_in in;
    CHECK(step_blob_bytes(8, 8, 4) <= sizeof blob, "blob");
    step_in_bind(&in, blob, 8, 8, 4);
    struct step_out o;
    CHECK(step_fill(&in, &ss, 1, 4, &b, &g_sink, &o) == MTPD_EFULL,
          "4 page entries for 5");
    CHECK(step_fill(&in, &ss, 1, 4, NULL, &g_sink, &o) == 0, "eager fits");
    step_in_bind(&in, blob, 4, 8, 8);
    CHECK(step_fill(&in, &ss, 1, 4, &b, &g_sink, &o) == MTPD_EFULL,
          "5 rows in 4");
    /* a call over its bucket's shape is refused */
    struct step_bucket small;
    CHECK(step_bucket_find(2, 1, 8, 8, &small) == 0, "bucket");
    step_in_bind(&in, blob, 8, 8, 8);
    CHECK(step_fill(&in, &ss, 1, 4, &small, &g_sink, &o) == MTPD_EINVAL,
          "4 rows in a 2-row bucket");
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"bucket", test_bucket},
        {"layout_random", test_layout_random},
        {"capacity", test_capacity},
    };
    return test_main(tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
                     argv);
}
