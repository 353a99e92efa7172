/*
 * test_kv_pool.c - the paged KV pool (model/kv.c): caches of very
 * different lengths sharing one pool's pages give exactly the logits of
 * caches of their own; the byte budget holds to the byte and a refused
 * call changes nothing; and a long random run of creates, forwards,
 * truncates, reserves and frees keeps the pool's accounting exact.
 *
 *   test_kv_pool CHECKPOINT_DIR...   (the committed golden presets)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "unit_test.h"

static const char *g_dir;

static int32_t tok(int seq, int i, int V)
{
    return (int32_t)(((long)seq * 7919 + (long)i * 104729 + 17) % V);
}

/*
 * Four sequences of very different lengths (3 to 300 positions) grow in
 * steps of 1-40 rows, one sequence per call but interleaved, so their
 * pages alternate in the pool, and two of them roll back and regrow over
 * pages another sequence held in between. Every row's logits must equal,
 * bit for bit, those of the same calls on caches made by mtpd_kv_new
 * (own pool each, same page size).
 */
#define NS 4
static enum test_return test_pool_equals_own_caches(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, NULL, &m, err, sizeof(err)) == 0, "%s", err);
    int V = mtpd_model_config(m)->vocab_size;
    int maxpos = mtpd_model_config(m)->max_position_embeddings;
    int target[NS] = {3, 300, 45, 130}, cap = 320;
    CHECK(maxpos >= cap, "golden model too short (%d)", maxpos);
    struct mtpd_kv_pool *pool;
    CHECK(mtpd_kv_pool_new(m, NULL, &pool) == 0, "pool");
    struct mtpd_ctx *cx = mtpd_ctx_new(m, 64, 2);
    struct mtpd_kv *pk[NS], *own[NS];
    float *ref = malloc(sizeof(float) * 40 * V);
    CHECK(cx && ref, "allocation");
    for (int s = 0; s < NS; s++) {
        CHECK(mtpd_kv_new_in(pool, cap, &pk[s]) == 0, "kv in pool");
        CHECK((own[s] = mtpd_kv_new(m, cap)) != NULL, "own kv");
    }
    int32_t t[NS][400];
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < 400; i++)
            t[s][i] = tok(s, i, V);
    int steps = 0, rolled[NS] = {0};
    for (int round = 0; round < 40; round++) {
        int progress = 0;
        for (int s = 0; s < NS; s++) {
            int len = mtpd_kv_len(pk[s], -1);
            CHECK(len == mtpd_kv_len(own[s], -1), "lengths");
            if (len >= target[s])
                continue;
            progress = 1;
            int n = 1 + (round * 7 + s * 13) % 40;
            if (n > target[s] - len)
                n = target[s] - len;
            struct mtpd_seq a = {own[s], t[s] + len, n, 0};
            CHECK(mtpd_forward(cx, &a, 1) == 0, "own forward");
            memcpy(ref, mtpd_ctx_logits(cx, 0), sizeof(float) * n * V);
            struct mtpd_seq b = {pk[s], t[s] + len, n, 0};
            CHECK(mtpd_forward(cx, &b, 1) == 0, "pool forward");
            for (int r = 0; r < n; r++)
                CHECK(memcmp(mtpd_ctx_logits(cx, r), ref + (size_t)r * V,
                             sizeof(float) * V) == 0,
                      "seq %d position %d: pooled logits differ", s,
                      len + r);
            steps++;
            /* roll back once, far enough to give pages back, and let the
             * others take them before this one regrows */
            if ((s == 1 || s == 3) && !rolled[s] && len + n > 100) {
                rolled[s] = 1;
                int keep = (len + n) / 3;
                CHECK(mtpd_kv_truncate(pk[s], -1, keep) == 0 &&
                          mtpd_kv_truncate(own[s], -1, keep) == 0,
                      "truncate");
                for (int q = 0; q < s; q++) /* change the tokens after it */
                    t[s][keep + q] = tok(s + 11, q, V);
            }
        }
        if (!progress)
            break;
    }
    for (int s = 0; s < NS; s++)
        CHECK(mtpd_kv_len(pk[s], -1) == target[s], "seq %d did not finish",
              s);
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(pool, &st);
    size_t sum = 0;
    for (int s = 0; s < NS; s++)
        sum += mtpd_kv_bytes(pk[s]);
    CHECK(st.used_bytes == sum && st.caches == NS, "accounting");
    for (int s = 0; s < NS; s++) {
        mtpd_kv_free(pk[s]);
        mtpd_kv_free(own[s]);
    }
    mtpd_kv_pool_get_stats(pool, &st);
    CHECK(st.used_bytes == 0 && st.pages_used == 0 && st.caches == 0 &&
          st.cached_bytes == (size_t)st.peak_bytes, "all pages back");
    mtpd_kv_pool_free(pool);
    free(ref);
    mtpd_ctx_free(cx);
    mtpd_model_free(m);
    return TEST_PASS;
}

/* Everything a refused call must leave alone. */
struct snap {
    struct mtpd_kv_pool_stats st;
    int len[2][1 + 4];
    size_t bytes[2];
};

static void take_snap(struct mtpd_kv_pool *p, struct mtpd_kv *const *kv,
                      int n_mtp, struct snap *s)
{
    memset(s, 0, sizeof(*s));
    mtpd_kv_pool_get_stats(p, &s->st);
    for (int k = 0; k < 2; k++) {
        s->bytes[k] = mtpd_kv_bytes(kv[k]);
        for (int i = -1; i < n_mtp; i++)
            s->len[k][i + 1] = mtpd_kv_len(kv[k], i);
    }
}

static int same_snap(const struct snap *a, const struct snap *b)
{
    return a->st.used_bytes == b->st.used_bytes &&
           a->st.pages_used == b->st.pages_used &&
           a->st.caches == b->st.caches &&
           a->st.peak_bytes == b->st.peak_bytes &&
           memcmp(a->len, b->len, sizeof(a->len)) == 0 &&
           memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

/*
 * A budget of exactly 5 pages (then 5 pages less one byte: 4): reserving
 * or growing into one page more is MTPD_ENOMEM and changes nothing - a
 * call of two sequences where only the second does not fit included -
 * and after freeing a cache the same call succeeds.
 */
static enum test_return budget_case(struct mtpd_model *m, size_t slack)
{
    int V = mtpd_model_config(m)->vocab_size, n_mtp = mtpd_model_n_mtp(m);
    enum { PP = 16 };
    struct mtpd_kv_pool_opts po = {.page_positions = PP};
    struct mtpd_kv_pool *probe, *p;
    CHECK(mtpd_kv_pool_new(m, &po, &probe) == 0, "probe pool");
    size_t page = mtpd_kv_pool_cost(probe, 1);
    CHECK(page == (size_t)PP * mtpd_kv_bytes_per_token(m) &&
              mtpd_kv_pool_cost(probe, PP) == page &&
              mtpd_kv_pool_cost(probe, PP + 1) == 2 * page &&
              mtpd_kv_pool_cost(probe, 0) == 0,
          "cost of a page: %zu", page);
    mtpd_kv_pool_free(probe);
    po.budget_bytes = 5 * page - slack;
    int pages = slack ? 4 : 5;
    CHECK(mtpd_kv_pool_new(m, &po, &p) == 0, "pool");
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(p, &st);
    CHECK(st.page_bytes == page && st.page_positions == PP &&
              st.budget_bytes == po.budget_bytes, "stats");
    struct mtpd_kv *kv[2];
    CHECK(mtpd_kv_new_in(p, 200, &kv[0]) == 0 &&
          mtpd_kv_new_in(p, 200, &kv[1]) == 0, "caches");
    CHECK(mtpd_kv_bytes(kv[0]) == 0, "a new cache holds nothing");
    struct mtpd_ctx *cx = mtpd_ctx_new(m, 64, 2);
    CHECK(cx, "ctx");
    int32_t t[200];
    for (int i = 0; i < 200; i++)
        t[i] = tok(1, i, V);
    struct snap a, b;

    /* reserve: all the budget, then one position more */
    CHECK(mtpd_kv_reserve(kv[0], pages * PP) == 0, "reserve to the budget");
    CHECK(mtpd_kv_bytes(kv[0]) == (size_t)pages * page, "bytes reserved");
    take_snap(p, kv, n_mtp, &a);
    CHECK(mtpd_kv_reserve(kv[0], pages * PP + 1) == MTPD_ENOMEM,
          "reserve past the budget");
    CHECK(mtpd_kv_reserve(kv[1], 1) == MTPD_ENOMEM, "other cache reserved");
    take_snap(p, kv, n_mtp, &b);
    CHECK(same_snap(&a, &b), "refused reserve changed something");
    CHECK(mtpd_kv_reserve(kv[0], 201) == MTPD_EFULL, "past capacity");
    CHECK(mtpd_kv_reserve(kv[0], 0) == 0 && mtpd_kv_bytes(kv[0]) == 0,
          "reserve 0 gives everything back");

    /* forward: kv[0] fills pages - 2 pages, kv[1] one: one page left */
    int n0 = (pages - 2) * PP;
    while (mtpd_kv_len(kv[0], -1) < n0) {
        int len = mtpd_kv_len(kv[0], -1), n = n0 - len > 64 ? 64 : n0 - len;
        struct mtpd_seq f = {kv[0], t + len, n, 0};
        CHECK(mtpd_forward(cx, &f, 1) == 0, "fill");
    }
    struct mtpd_seq f1 = {kv[1], t, PP, 0};
    CHECK(mtpd_forward(cx, &f1, 1) == 0, "second cache, one page");
    /* a call needing two pages: the first sequence's page is given back */
    take_snap(p, kv, n_mtp, &a);
    struct mtpd_seq g[2] = {{kv[0], t + n0, PP, 0}, {kv[1], t + PP, 1, 0}};
    CHECK(mtpd_forward(cx, g, 2) == MTPD_ENOMEM, "two-sequence call");
    take_snap(p, kv, n_mtp, &b);
    CHECK(same_snap(&a, &b), "refused two-sequence call changed something");
    CHECK(mtpd_forward(cx, g, 1) == 0, "the first alone fits");
    mtpd_kv_pool_get_stats(p, &st);
    CHECK(st.used_bytes == (size_t)pages * page, "pool full: %zu",
          st.used_bytes);
    /* one row more on either needs a page: refused, nothing changes */
    take_snap(p, kv, n_mtp, &a);
    g[0] = (struct mtpd_seq){kv[0], t + n0 + PP, 1, 0};
    CHECK(mtpd_forward(cx, &g[1], 1) == MTPD_ENOMEM, "forward past budget");
    CHECK(mtpd_forward(cx, g, 2) == MTPD_ENOMEM, "both past budget");
    if (n_mtp > 0) { /* the MTP module's rows take pages too */
        static float h[64 * 8192];
        struct mtpd_mtp_seq q = {kv[1], t + 1, h, PP + 1, 0};
        CHECK(mtpd_mtp_forward(cx, 0, &q, 1) == MTPD_ENOMEM, "MTP call");
    }
    take_snap(p, kv, n_mtp, &b);
    CHECK(same_snap(&a, &b), "refused forward changed something");
    CHECK(mtpd_ctx_logits(cx, 0) == NULL, "refused call left outputs");
    /* a truncate inside a page gives nothing back; a whole page does */
    CHECK(mtpd_kv_truncate(kv[1], -1, PP - 1) == 0 &&
          mtpd_kv_bytes(kv[1]) == page, "truncate within a page");
    CHECK(mtpd_kv_truncate(kv[1], -1, PP) == MTPD_EINVAL, "grew by truncate");
    /* freeing kv[1] makes room for kv[0]'s next page */
    mtpd_kv_free(kv[1]);
    CHECK(mtpd_forward(cx, &g[0], 1) == 0, "after a free");
    mtpd_kv_pool_get_stats(p, &st);
    CHECK(st.used_bytes == (size_t)pages * page && st.caches == 1 &&
              st.peak_bytes == (size_t)pages * page && st.cached_bytes == 0,
          "stats after");
    CHECK(st.used_bytes + st.cached_bytes <= po.budget_bytes, "over budget");
    mtpd_kv_free(kv[0]);
    mtpd_kv_pool_get_stats(p, &st);
    CHECK(st.used_bytes == 0 && st.cached_bytes == (size_t)pages * page,
          "pages kept for reuse");
    mtpd_kv_pool_free(p);
    mtpd_ctx_free(cx);
    return TEST_PASS;
}

static enum test_return test_budget_to_the_byte(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, NULL, &m, err, sizeof(err)) == 0, "%s", err);
    enum test_return r = budget_case(m, 0);
    if (r == TEST_PASS)
        r = budget_case(m, 1);
    /* bad arguments */
    struct mtpd_kv_pool *p;
    struct mtpd_kv *kv;
    struct mtpd_kv_pool_opts bad = {.page_positions = 24};
    if (r == TEST_PASS && mtpd_kv_pool_new(m, &bad, &p) != MTPD_EINVAL)
        r = TEST_FAIL;
    if (r == TEST_PASS && mtpd_kv_pool_new(m, NULL, &p) == 0) {
        int maxpos = mtpd_model_config(m)->max_position_embeddings;
        if (mtpd_kv_new_in(p, maxpos + 1, &kv) != MTPD_EINVAL ||
            mtpd_kv_new_in(p, 0, &kv) != MTPD_EINVAL ||
            strcmp(mtpd_kv_pool_dtype(p), mtpd_model_kv_dtype(m)) != 0)
            r = TEST_FAIL;
        mtpd_kv_pool_free(p);
    }
    struct mtpd_kv_pool_opts bf = {.dtype = MTPD_KV_BF16};
    if (r == TEST_PASS && (mtpd_kv_pool_new(m, &bf, &p) != 0 ||
                           strcmp(mtpd_kv_pool_dtype(p), "bf16") != 0))
        r = TEST_FAIL;
    else if (r == TEST_PASS)
        mtpd_kv_pool_free(p);
    mtpd_model_free(m);
    return r;
}

/* ---- random operations ------------------------------------------------ */

#define MAXC 12

struct rcache {
    struct mtpd_kv *kv;
    int cap, reserved;
    int32_t *toks; /* the main part's tokens so far */
};

static unsigned long g_rng;
static int rnd(int n)
{
    g_rng = g_rng * 6364136223846793005UL + 1442695040888963407UL;
    return (int)((g_rng >> 33) % (unsigned long)n);
}

/* The pool's accounting against what the caches say they hold, and what
 * each should hold (whole pages for its longest part or reservation). */
static enum test_return check_books(struct mtpd_kv_pool *p,
                                    const struct rcache *c, int n_mtp,
                                    int op)
{
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(p, &st);
    size_t sum = 0;
    long live = 0;
    for (int i = 0; i < MAXC; i++) {
        if (!c[i].kv)
            continue;
        live++;
        int need = c[i].reserved;
        for (int k = -1; k < n_mtp; k++)
            need = mtpd_kv_len(c[i].kv, k) > need ? mtpd_kv_len(c[i].kv, k)
                                                  : need;
        CHECK(mtpd_kv_bytes(c[i].kv) == mtpd_kv_pool_cost(p, need),
              "op %d: cache %d holds %zu bytes, needs %zu", op, i,
              mtpd_kv_bytes(c[i].kv), mtpd_kv_pool_cost(p, need));
        sum += mtpd_kv_bytes(c[i].kv);
    }
    CHECK(st.used_bytes == sum && st.caches == live &&
              st.used_bytes == (size_t)st.pages_used * st.page_bytes,
          "op %d: pool says %zu bytes in %ld pages, %ld caches; caches hold "
          "%zu in %ld", op, st.used_bytes, st.pages_used, st.caches, sum,
          live);
    CHECK(st.peak_bytes >= st.used_bytes &&
              (st.budget_bytes == 0 ||
               st.used_bytes + st.cached_bytes <= st.budget_bytes),
          "op %d: over budget", op);
    return TEST_PASS;
}

static enum test_return test_random_ops(void)
{
    char err[512];
    struct mtpd_model *m;
    CHECK(mtpd_model_load(g_dir, NULL, &m, err, sizeof(err)) == 0, "%s", err);
    const struct mtpd_config *cfg = mtpd_model_config(m);
    int V = cfg->vocab_size, H = cfg->hidden_size, n_mtp = mtpd_model_n_mtp(m);
    int maxpos = cfg->max_position_embeddings < 300
                     ? cfg->max_position_embeddings : 300;
    enum { PP = 8, OPS = 600 };
    struct mtpd_kv_pool_opts po = {.page_positions = PP};
    struct mtpd_kv_pool *p;
    CHECK(mtpd_kv_pool_new(m, &po, &p) == 0, "probe");
    po.budget_bytes = 60 * mtpd_kv_pool_cost(p, PP) + 123;
    mtpd_kv_pool_free(p);
    CHECK(mtpd_kv_pool_new(m, &po, &p) == 0, "pool");
    struct mtpd_ctx *cx = mtpd_ctx_new(m, 32, 2);
    float *hid = calloc((size_t)32 * H, sizeof(float));
    float *lg = malloc(sizeof(float) * V);
    CHECK(cx && hid && lg, "allocation");
    struct rcache c[MAXC] = {{0}};
    int enomem = 0, forwards = 0, checks = 0;
    g_rng = 12345;
    for (int op = 0; op < OPS; op++) {
        int i = rnd(MAXC), what = rnd(10);
        struct rcache *rc = &c[i];
        if (!rc->kv) { /* create */
            rc->cap = 1 + rnd(maxpos);
            CHECK(mtpd_kv_new_in(p, rc->cap, &rc->kv) == 0, "new_in");
            rc->reserved = 0;
            rc->toks = malloc(sizeof(int32_t) * (size_t)rc->cap);
            CHECK(rc->toks, "allocation");
        } else if (what < 5) { /* forward 1-3 caches, main or MTP */
            struct mtpd_seq s[3];
            struct mtpd_mtp_seq ms[3];
            int idx[3], n = 0, module = n_mtp && rnd(3) == 0 ? 0 : -1;
            for (int k = 0; k < 1 + rnd(3); k++) {
                int j = k ? rnd(MAXC) : i, dup = 0;
                for (int q = 0; q < n; q++)
                    dup |= idx[q] == j;
                if (!c[j].kv || dup)
                    continue;
                int len = mtpd_kv_len(c[j].kv, module);
                int room = c[j].cap - len, nt = 1 + rnd(10);
                if (module >= 0 && mtpd_kv_len(c[j].kv, -1) - len < nt)
                    nt = mtpd_kv_len(c[j].kv, -1) - len; /* hidden rows */
                nt = nt > room ? room : nt;
                if (nt <= 0)
                    continue;
                for (int r = 0; module < 0 && r < nt; r++)
                    c[j].toks[len + r] = (int32_t)rnd(V);
                idx[n] = j;
                s[n] = (struct mtpd_seq){c[j].kv, c[j].toks + len, nt, nt - 1};
                ms[n] = (struct mtpd_mtp_seq){c[j].kv, c[j].toks + len, hid,
                                              nt, nt - 1};
                n++;
            }
            if (n == 0)
                continue;
            int lens[3];
            for (int q = 0; q < n; q++)
                lens[q] = mtpd_kv_len(c[idx[q]].kv, module);
            int r = module < 0 ? mtpd_forward(cx, s, n)
                               : mtpd_mtp_forward(cx, module, ms, n);
            CHECK(r == 0 || r == MTPD_ENOMEM, "op %d: forward %d", op, r);
            for (int q = 0; q < n; q++)
                CHECK(mtpd_kv_len(c[idx[q]].kv, module) ==
                          lens[q] + (r == 0 ? s[q].n_tokens : 0),
                      "op %d: length after forward (rc %d)", op, r);
            enomem += r == MTPD_ENOMEM;
            forwards += r == 0;
            /* now and then: the last row's logits against a fresh
             * contiguous cache fed the same tokens (page mix-ups show) */
            if (r == 0 && module < 0 && rnd(8) == 0) {
                int L = mtpd_kv_len(c[idx[0]].kv, -1);
                memcpy(lg, mtpd_ctx_logits(cx, s[0].n_tokens - 1),
                       sizeof(float) * V);
                struct mtpd_kv *fresh = mtpd_kv_new(m, L);
                CHECK(fresh, "fresh kv");
                for (int at = 0; at < L; at += 32) {
                    int nt = L - at < 32 ? L - at : 32;
                    struct mtpd_seq f = {fresh, c[idx[0]].toks + at, nt,
                                         nt - 1};
                    CHECK(mtpd_forward(cx, &f, 1) == 0, "fresh forward");
                }
                const float *b = mtpd_ctx_logits(cx, (L - 1) % 32);
                double d = 0, mx = 0;
                for (int v = 0; v < V; v++) {
                    d = fabs(lg[v] - b[v]) > d ? fabs(lg[v] - b[v]) : d;
                    mx = fabs(b[v]) > mx ? fabs(b[v]) : mx;
                }
                CHECK(d <= 1e-4 * mx, "op %d: cache %d logits differ from a "
                      "fresh prefill by %g (of %g)", op, idx[0], d, mx);
                mtpd_kv_free(fresh);
                checks++;
            }
        } else if (what < 7) { /* truncate a part */
            int module = n_mtp ? rnd(n_mtp + 1) - 1 : -1;
            int len = mtpd_kv_len(rc->kv, module);
            int n = rnd(len + 1);
            CHECK(mtpd_kv_truncate(rc->kv, module, n) == 0, "truncate");
            if (module < 0) /* MTP parts never run past the main one */
                for (int k = 0; k < n_mtp; k++)
                    if (mtpd_kv_len(rc->kv, k) > n)
                        CHECK(mtpd_kv_truncate(rc->kv, k, n) == 0, "mtp");
        } else if (what < 9) { /* reserve */
            int n = rnd(rc->cap + 2);
            size_t before = mtpd_kv_bytes(rc->kv);
            int r = mtpd_kv_reserve(rc->kv, n);
            if (n > rc->cap) {
                CHECK(r == MTPD_EFULL, "op %d: reserve past cap: %d", op, r);
            } else if (r == 0) {
                rc->reserved = n;
            } else {
                CHECK(r == MTPD_ENOMEM && mtpd_kv_bytes(rc->kv) == before,
                      "op %d: refused reserve: %d", op, r);
                enomem++;
            }
        } else { /* free */
            mtpd_kv_free(rc->kv);
            free(rc->toks);
            memset(rc, 0, sizeof(*rc));
        }
        enum test_return b = check_books(p, c, n_mtp, op);
        if (b != TEST_PASS)
            return b;
    }
    fprintf(stderr, "  %d forwards, %d refused for memory, %d logit checks\n",
            forwards, enomem, checks);
    CHECK(forwards > 100 && enomem > 0 && checks > 3,
          "the run did not reach the budget or ran too little");
    for (int i = 0; i < MAXC; i++) {
        mtpd_kv_free(c[i].kv);
        free(c[i].toks);
    }
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(p, &st);
    CHECK(st.used_bytes == 0 && st.caches == 0, "pages left");
    mtpd_kv_pool_free(p);
    free(hid);
    free(lg);
    mtpd_ctx_free(cx);
    mtpd_model_free(m);
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"pool_equals_own_caches", test_pool_equals_own_caches},
        {"budget_to_the_byte", test_budget_to_the_byte},
        {"random_ops", test_random_ops},
    };
    if (argc < 2) {
        fprintf(stderr, "usage: test_kv_pool CHECKPOINT_DIR...\n");
        return 2;
    }
    int failed = 0;
    for (int a = 1; a < argc; a++) {
        g_dir = argv[a];
        fprintf(stderr, "checkpoint %s\n", g_dir);
        char *none[] = {argv[0]};
        failed |= test_main(tests, (int)(sizeof(tests) / sizeof(tests[0])),
                            1, none);
    }
    return failed ? 1 : 0;
}
