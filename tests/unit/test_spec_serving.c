/*
 * test_spec_serving.c - the speculative engine as a long-running server
 * uses it: per-sequence failures (context, pool budget), cancel, restart
 * with prefix reuse, spec_step_ex's row budget, and a randomized run of
 * create / step / restart / cancel / free with the pool's accounting
 * checked after every operation (run under ASan by tools/test.sh).
 *
 *   test_spec_serving CHECKPOINT_DIR...   (committed golden checkpoints)
 *
 * Greedy ids of a sequence are compared with the same sequence run alone
 * (and a restarted sequence with a fresh one over the same tokens).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spec.h"
#include "spec_test.h"
#include "unit_test.h"

static const char *g_dir;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static struct mtpd_model *g_m;
static int g_vocab, g_ctx, g_nmtp;

#define MAXOUT 64

/* Deterministic ids in [2, vocab) (0 and 1 are BOS / EOS). */
static void make_ids(int32_t *ids, int n, int seed)
{
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(2 + ((unsigned)(seed * 7919 + i * 131 + 17) %
                                (unsigned)(g_vocab - 2)));
}

static struct spec_params params(int k, int max_tokens)
{
    struct spec_params p;
    spec_params_default(&p, g_m);
    p.draft_tokens = k;
    p.max_tokens = max_tokens;
    p.eos_id = -1;
    return p;
}

static struct spec_engine *engine(struct mtpd_kv_pool *pool, int max_rows)
{
    struct spec_engine_opts o = {.n_threads = 2, .max_rows = max_rows,
                                 .kv_pool = pool};
    struct spec_engine *e = NULL;
    if (spec_engine_new(g_m, &o, &e) < 0)
        return NULL;
    return e;
}

/* Runs tokens[0..n) alone on e to the end; copies the ids into out
 * (MAXOUT). Returns their count, or -1. */
static int solo(struct spec_engine *e, const struct spec_params *p,
                const int32_t *tokens, int n, int32_t *out)
{
    struct spec_seq *s;
    if (spec_seq_new(e, p, tokens, n, &s) < 0)
        return -1;
    int rc = spec_generate(e, s), m = -1;
    if (rc == 0 && spec_seq_finish(s) != SPEC_FINISH_ERROR) {
        const int32_t *ids = spec_seq_output(s, &m);
        if (m > MAXOUT)
            m = MAXOUT;
        memcpy(out, ids, sizeof(int32_t) * (size_t)m);
    }
    spec_seq_free(s);
    return m;
}

static int same_ids(struct spec_seq *s, const int32_t *want, int n)
{
    int m;
    const int32_t *ids = spec_seq_output(s, &m);
    return m == n && memcmp(ids, want, sizeof(int32_t) * (size_t)n) == 0;
}

static int all_done(struct spec_seq **s, int n)
{
    for (int i = 0; i < n; i++)
        if (spec_seq_finish(s[i]) == SPEC_RUNNING)
            return 0;
    return 1;
}

/* ---- a sequence over the model's context ----------------------------- */

static enum test_return test_context_alone(void)
{
    struct spec_engine *e = engine(NULL, 0);
    CHECK(e, "engine");
    int na = g_ctx - 6;
    int32_t *pa = malloc(sizeof(int32_t) * (size_t)g_ctx);
    int32_t pb[5], pc[9], wb[MAXOUT], wc[MAXOUT];
    CHECK(pa, "alloc");
    make_ids(pa, na, 1);
    make_ids(pb, 5, 2);
    make_ids(pc, 9, 3);
    struct spec_params p2 = params(2, 24), pauto = params(SPEC_K_AUTO, 24);
    int nb = solo(e, &p2, pb, 5, wb), nc = solo(e, &pauto, pc, 9, wc);
    CHECK(nb == 24 && nc == 24, "solo runs %d %d", nb, nc);

    /* asks for more than the model's context: clamped, not an error */
    struct spec_params pa_p = params(2, 50);
    pa_p.kv_capacity = g_ctx + 1000;
    struct spec_seq *s[3];
    CHECK(spec_seq_new(e, &pa_p, pa, na, &s[0]) == 0, "new A");
    CHECK(spec_seq_new(e, &p2, pb, 5, &s[1]) == 0, "new B");
    CHECK(spec_seq_new(e, &pauto, pc, 9, &s[2]) == 0, "new C");
    double t0 = now();
    for (int guard = 0; !all_done(s, 3) && guard < 1000; guard++)
        CHECK(spec_step(e, s, 3) == 0, "step");
    /* each sequence is charged its share of the passes it shared, so the
     * shares add up to no more than the wall time */
    double wall = now() - t0, sum = 0;
    for (int i = 0; i < 3; i++) {
        const struct spec_stats *st = spec_seq_stats(s[i]);
        CHECK(st->prefill_s > 0 && st->decode_s > 0, "no time for %d", i);
        sum += st->prefill_s + st->decode_s;
    }
    CHECK(sum <= wall * 1.001 + 1e-4, "charged %.6f s of %.6f s", sum, wall);
    int n;
    spec_seq_output(s[0], &n);
    CHECK(spec_seq_finish(s[0]) == SPEC_FINISH_CONTEXT, "A: %s",
          spec_finish_str(spec_seq_finish(s[0])));
    CHECK(n == g_ctx + 1 - na, "A emitted %d, wanted %d", n, g_ctx + 1 - na);
    CHECK(spec_seq_finish(s[1]) == SPEC_FINISH_LENGTH && same_ids(s[1], wb, nb),
          "B differs from B alone");
    CHECK(spec_seq_finish(s[2]) == SPEC_FINISH_LENGTH && same_ids(s[2], wc, nc),
          "C differs from C alone");
    /* a prompt over the context is refused up front */
    struct spec_seq *x = NULL;
    for (int i = na; i < g_ctx; i++)
        pa[i] = 5;
    pa_p.kv_capacity = 0;
    CHECK(spec_seq_new(e, &pa_p, pa, g_ctx, &x) == 0, "prompt = context");
    spec_seq_free(x);
    int32_t *big = calloc((size_t)g_ctx + 1, sizeof(int32_t));
    CHECK(big && spec_seq_new(e, &pa_p, big, g_ctx + 1, &x) == MTPD_EFULL,
          "prompt over the context accepted");
    free(big);
    for (int i = 0; i < 3; i++)
        spec_seq_free(s[i]);
    free(pa);
    spec_engine_free(e);
    return TEST_PASS;
}

/* ---- cancel ----------------------------------------------------------- */

static void *cancel_thread(void *arg)
{
    spec_seq_cancel(arg);
    return NULL;
}

static enum test_return test_cancel(void)
{
    struct spec_engine *e = engine(NULL, 0);
    CHECK(e, "engine");
    int32_t pr[4][8], want[4][MAXOUT];
    int nw[4];
    struct spec_params p = params(g_nmtp ? 3 : 0, 30);
    for (int i = 0; i < 4; i++) {
        make_ids(pr[i], 8, 10 + i);
        nw[i] = solo(e, &p, pr[i], 8, want[i]);
        CHECK(nw[i] == 30, "solo %d", i);
    }
    struct spec_seq *s[4];
    for (int i = 0; i < 3; i++)
        CHECK(spec_seq_new(e, &p, pr[i], 8, &s[i]) == 0, "new");
    for (int i = 0; i < 3; i++)
        CHECK(spec_step(e, s, 3) == 0, "step");
    int before;
    spec_seq_output(s[1], &before);
    CHECK(before > 0 && before < 30, "B mid-generation: %d", before);
    pthread_t th; /* from another thread, as a server's I/O thread would */
    CHECK(pthread_create(&th, NULL, cancel_thread, s[1]) == 0, "thread");
    pthread_join(th, NULL);
    CHECK(spec_seq_finish(s[1]) == SPEC_RUNNING, "finished before a step");
    /* a sequence cancelled before its first step takes no row */
    CHECK(spec_seq_new(e, &p, pr[3], 8, &s[3]) == 0, "new D");
    spec_seq_cancel(s[3]);
    CHECK(spec_step(e, s, 4) == 0, "step");
    int after;
    spec_seq_output(s[1], &after);
    CHECK(spec_seq_finish(s[1]) == SPEC_FINISH_CANCELLED, "B: %s",
          spec_finish_str(spec_seq_finish(s[1])));
    CHECK(after == before, "B emitted after its cancel (%d -> %d)", before,
          after);
    CHECK(spec_seq_finish(s[3]) == SPEC_FINISH_CANCELLED &&
          mtpd_kv_len(spec_seq_kv(s[3]), -1) == 0, "D ran");
    CHECK(!strcmp(spec_finish_str(SPEC_FINISH_CANCELLED), "cancelled"), "str");
    for (int guard = 0; !all_done(s, 4) && guard < 1000; guard++)
        CHECK(spec_step(e, s, 4) == 0, "step");
    CHECK(same_ids(s[0], want[0], nw[0]) && same_ids(s[2], want[2], nw[2]),
          "batch-mates of a cancelled sequence changed");
    /* B's history is its prompt and what it emitted; its caches match */
    int nt;
    const int32_t *t = spec_seq_tokens(s[1], &nt);
    CHECK(nt == 8 + after && !memcmp(t, pr[1], sizeof pr[1]) &&
          !memcmp(t + 8, want[1], sizeof(int32_t) * (size_t)after),
          "B's tokens");
    CHECK(mtpd_kv_len(spec_seq_kv(s[1]), -1) == nt - 1, "B's cache");
    for (int i = 0; i < 4; i++)
        spec_seq_free(s[i]);
    spec_engine_free(e);
    return TEST_PASS;
}

/* ---- restart ---------------------------------------------------------- */

/* Restarts s over tokens[0..n) and checks it against a fresh sequence
 * over the same tokens: the rolled-back-and-refilled caches equal a fresh
 * prefill (spec_seq_check_rollback, main and MTP module 0), and the ids
 * and the per-pass (k, accepted) trace are the same. */
static enum test_return restart_equals_fresh(struct spec_engine *e,
                                             struct spec_seq *s,
                                             const struct spec_params *p,
                                             const int32_t *tokens, int n,
                                             int min_reuse)
{
    int32_t want[MAXOUT];
    int nw = solo(e, p, tokens, n, want);
    CHECK(nw == p->max_tokens, "fresh run");
    int r = spec_seq_restart(s, p, tokens, n);
    CHECK(r >= min_reuse && r < n, "reused %d of %d (wanted >= %d)", r, n,
          min_reuse);
    CHECK(spec_seq_finish(s) == SPEC_RUNNING, "not running");
    struct spec_seq *f;
    CHECK(spec_seq_new(e, p, tokens, n, &f) == 0, "fresh");
    CHECK(spec_seq_trace(s, MAXOUT) == 0 && spec_seq_trace(f, MAXOUT) == 0,
          "trace");
    CHECK(spec_step(e, &s, 1) == 0, "step"); /* the new tail in one chunk */
    double dm, dq;
    CHECK(spec_seq_check_rollback(e, s, &dm, &dq) == 0, "check");
    CHECK(dm >= 0 && dm < 1e-3, "main logits differ by %g", dm);
    CHECK(!g_nmtp || !p->draft_tokens || (dq >= 0 && dq < 1e-3),
          "MTP logits differ by %g", dq);
    CHECK(spec_generate(e, s) == 0 && spec_generate(e, f) == 0, "generate");
    CHECK(same_ids(s, want, nw), "restarted ids differ from a fresh run");
    const int32_t *ks, *as, *kf, *af;
    int ns = spec_seq_trace_get(s, &ks, &as), nf = spec_seq_trace_get(f, &kf,
                                                                      &af);
    CHECK(ns == nf && !memcmp(ks, kf, sizeof(int32_t) * (size_t)ns) &&
          !memcmp(as, af, sizeof(int32_t) * (size_t)ns),
          "restarted drafts differ from a fresh run's");
    CHECK(spec_seq_stats(s)->prompt_tokens == n, "stats restarted");
    spec_seq_free(f);
    return TEST_PASS;
}

static enum test_return test_restart(void)
{
    struct spec_engine *e = engine(NULL, 0);
    CHECK(e, "engine");
    int k = g_nmtp ? 2 : 0;
    struct spec_params p = params(k, 12), p2 = params(k, 16);
    int32_t pr[7], tok[128];
    make_ids(pr, 7, 40);
    struct spec_seq *s;
    CHECK(spec_seq_new(e, &p, pr, 7, &s) == 0, "new");
    CHECK(spec_generate(e, s) == 0, "generate");
    int nh;
    const int32_t *h = spec_seq_tokens(s, &nh);
    CHECK(nh == 7 + 12, "history %d", nh);
    /* 1. the next turn: history + new tokens */
    memcpy(tok, h, sizeof(int32_t) * (size_t)nh);
    make_ids(tok + nh, 5, 41);
    int n = nh + 5;
    /* a finished sequence's MTP caches were caught up with its output:
     * everything but the last position is kept (module m keeps R + m
     * rows, R + m <= nh - 1) */
    if (restart_equals_fresh(e, s, &p2, tok, n, k ? nh - g_nmtp : nh - 1) !=
        TEST_PASS)
        return TEST_FAIL;
    /* 2. diverging in the middle of the last output */
    h = spec_seq_tokens(s, &nh);
    memcpy(tok, h, sizeof(int32_t) * (size_t)nh);
    int c = nh - 6;
    make_ids(tok + c, 9, 42);
    if (restart_equals_fresh(e, s, &p2, tok, c + 9, c - 1 - g_nmtp) !=
        TEST_PASS)
        return TEST_FAIL;
    /* 3. a shorter list, all of it shared: only the last token recomputed
     * in the main cache */
    h = spec_seq_tokens(s, &nh);
    memcpy(tok, h, sizeof(int32_t) * 10);
    if (restart_equals_fresh(e, s, &p2, tok, 10, k ? 9 - g_nmtp : 9) !=
        TEST_PASS)
        return TEST_FAIL;
    /* 4. plain decoding before, drafting after: nothing of MTP to reuse */
    if (g_nmtp) {
        struct spec_params p0 = params(0, 12), pa = params(SPEC_K_AUTO, 16);
        struct spec_seq *z;
        CHECK(spec_seq_new(e, &p0, pr, 7, &z) == 0, "new");
        CHECK(spec_generate(e, z) == 0, "generate");
        h = spec_seq_tokens(z, &nh);
        memcpy(tok, h, sizeof(int32_t) * (size_t)nh);
        make_ids(tok + nh, 3, 43);
        int32_t want[MAXOUT];
        CHECK(solo(e, &pa, tok, nh + 3, want) == 16, "fresh");
        CHECK(spec_seq_restart(z, &pa, tok, nh + 3) == 0, "reuse w/o MTP");
        CHECK(spec_generate(e, z) == 0 && same_ids(z, want, 16), "ids");
        spec_seq_free(z);
    }
    /* 5. refused: the sequence is unchanged */
    h = spec_seq_tokens(s, &nh);
    int32_t keep[MAXOUT];
    memcpy(keep, h, sizeof(int32_t) * (size_t)nh);
    tok[3] = g_vocab;
    CHECK(spec_seq_restart(s, &p2, tok, 10) == MTPD_EINVAL, "bad id");
    tok[3] = 2;
    struct spec_params pc = p2;
    pc.kv_capacity = 8;
    CHECK(spec_seq_restart(s, &pc, tok, 10) == MTPD_EFULL, "over capacity");
    int nh2;
    h = spec_seq_tokens(s, &nh2);
    CHECK(nh2 == nh && !memcmp(h, keep, sizeof(int32_t) * (size_t)nh),
          "changed by a refused restart");
    spec_seq_free(s);
    spec_engine_free(e);
    return TEST_PASS;
}

/* ---- a pool budget too small for two --------------------------------- */

static enum test_return test_pool_budget(void)
{
    struct spec_engine *e0 = engine(NULL, 0);
    int32_t pa[20], pb[40], wa[MAXOUT];
    make_ids(pa, 20, 60);
    make_ids(pb, 40, 61);
    struct spec_params p = params(g_nmtp ? 2 : 0, 30);
    CHECK(e0 && solo(e0, &p, pa, 20, wa) == 30, "solo");
    spec_engine_free(e0);

    /* A holds all it will need up front; one page is left over, B's
     * prompt needs three */
    int need_a = 20 + 30 + SPEC_K_MAX;
    struct mtpd_kv_pool_opts po = {.page_positions = 16};
    struct mtpd_kv_pool *pool;
    CHECK(mtpd_kv_pool_new(g_m, &po, &pool) == 0, "pool");
    po.budget_bytes = mtpd_kv_pool_cost(pool, need_a) +
                      mtpd_kv_pool_cost(pool, 1);
    mtpd_kv_pool_free(pool);
    CHECK(mtpd_kv_pool_new(g_m, &po, &pool) == 0, "pool");
    struct spec_engine *e = engine(pool, 0);
    CHECK(e && spec_engine_kv_pool(e) == pool, "engine");
    CHECK(spec_engine_kv_cost(e, need_a) == mtpd_kv_pool_cost(pool, need_a),
          "cost");
    struct spec_seq *s[2];
    CHECK(spec_seq_new(e, &p, pa, 20, &s[0]) == 0, "new A");
    CHECK(spec_seq_new(e, &p, pb, 40, &s[1]) == 0, "new B");
    CHECK(spec_seq_reserve(s[0], need_a) == 0, "reserve A");
    CHECK(spec_seq_reserve(s[1], 40) == MTPD_ENOMEM, "reserve B fits?");
    CHECK(mtpd_kv_bytes(spec_seq_kv(s[1])) == 0, "a refused reserve took");
    for (int guard = 0; !all_done(s, 2) && guard < 1000; guard++) {
        CHECK(spec_step(e, s, 2) == 0, "step");
        struct mtpd_kv_pool_stats st;
        mtpd_kv_pool_get_stats(pool, &st);
        CHECK(st.used_bytes <= po.budget_bytes, "over budget");
    }
    CHECK(spec_seq_finish(s[1]) == SPEC_FINISH_ERROR &&
          spec_seq_error_code(s[1]) == MTPD_ENOMEM &&
          strlen(spec_seq_error(s[1])) > 0, "B: %s (%d) '%s'",
          spec_finish_str(spec_seq_finish(s[1])), spec_seq_error_code(s[1]),
          spec_seq_error(s[1]));
    CHECK(spec_seq_finish(s[0]) == SPEC_FINISH_LENGTH && same_ids(s[0], wa, 30),
          "A changed by B's failure");
    CHECK(spec_seq_error_code(s[0]) == 0 && !*spec_seq_error(s[0]), "A err");
    CHECK(mtpd_kv_bytes(spec_seq_kv(s[1])) == 0, "B kept pages");
    spec_seq_free(s[0]);
    spec_seq_free(s[1]);
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(pool, &st);
    CHECK(st.used_bytes == 0 && st.caches == 0, "pool not empty: %zu, %ld",
          st.used_bytes, st.caches);
    spec_engine_free(e);
    mtpd_kv_pool_free(pool);
    return TEST_PASS;
}

/* ---- spec_step_ex's row budget --------------------------------------- */

static enum test_return test_row_budget(void)
{
    struct spec_engine *e = engine(NULL, 0);
    CHECK(e, "engine");
    int k = g_nmtp ? 2 : 0;
    struct spec_params p = params(k, 20);
    int32_t pr[4][6], want[4][MAXOUT];
    for (int i = 0; i < 4; i++) {
        make_ids(pr[i], 6, 80 + i);
        CHECK(solo(e, &p, pr[i], 6, want[i]) == 20, "solo");
    }
    struct spec_seq *s[4];
    for (int i = 0; i < 3; i++)
        CHECK(spec_seq_new(e, &p, pr[i], 6, &s[i]) == 0, "new");
    unsigned char def[4];
    int nd = -1;
    CHECK(spec_step_ex(e, s, 3, 0, def, &nd) == 0 && nd == 0, "prefill");
    CHECK(spec_seq_new(e, &p, pr[3], 6, &s[3]) == 0, "new");
    int before[4], after[4];
    for (int i = 0; i < 4; i++)
        spec_seq_output(s[i], &before[i]);
    /* k + 1 rows for the first, the one row left for the second (k cut to
     * 0); the third decoding sequence and the prompt wait */
    int budget = k + 2;
    CHECK(spec_step_ex(e, s, 4, budget, def, &nd) == 0, "step");
    for (int i = 0; i < 4; i++)
        spec_seq_output(s[i], &after[i]);
    CHECK(nd == 2 && !def[0] && !def[1] && def[2] && def[3],
          "deferred %d: %d %d %d %d", nd, def[0], def[1], def[2], def[3]);
    CHECK(after[0] > before[0] && after[1] == before[1] + 1 &&
          after[2] == before[2] && after[3] == 0, "rows given");
    CHECK(mtpd_kv_len(spec_seq_kv(s[3]), -1) == 0, "deferred prompt ran");
    for (int guard = 0; !all_done(s, 4) && guard < 2000; guard++) {
        int run = 0, got = 0;
        for (int i = 0; i < 4; i++) {
            run += spec_seq_finish(s[i]) == SPEC_RUNNING;
            spec_seq_output(s[i], &before[i]);
        }
        CHECK(spec_step_ex(e, s, 4, budget, def, &nd) == 0, "step");
        for (int i = 0; i < 4; i++) {
            spec_seq_output(s[i], &after[i]);
            if (def[i])
                CHECK(after[i] == before[i], "a deferred sequence moved");
            got += !def[i] && spec_seq_finish(s[i]) != SPEC_FINISH_CANCELLED;
            nd -= def[i];
        }
        CHECK(nd == 0 && got > 0 && run > 0, "flags and count disagree");
    }
    for (int i = 0; i < 4; i++)
        CHECK(same_ids(s[i], want[i], 20), "sequence %d differs", i);
    for (int i = 0; i < 4; i++)
        spec_seq_free(s[i]);
    spec_engine_free(e);
    return TEST_PASS;
}

/* ---- randomized ------------------------------------------------------- */

static uint64_t g_rs = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    g_rs ^= g_rs << 13;
    g_rs ^= g_rs >> 7;
    g_rs ^= g_rs << 17;
    return (uint32_t)(g_rs % n);
}

#define SLOTS 6

struct slot {
    struct spec_seq *s;
    struct spec_params p;
    int32_t prompt[160];
    int n_prompt;
};

static struct spec_params random_params(void)
{
    static const int ks[] = {0, 1, 2, 3, SPEC_K_AUTO};
    struct spec_params p = params(ks[rnd(5)], 1 + (int)rnd(40));
    if (rnd(3) == 0) {
        p.sampling.temperature = 0.8f;
        p.seed = rnd(1000);
    }
    if (rnd(4) == 0)
        p.kv_capacity = 40 + (int)rnd(100);
    else if (rnd(4) == 0)
        p.kv_capacity = g_ctx + 100;
    return p;
}

/* The pool holds exactly the pages of the live caches; every cache's
 * lengths fit its history. */
static int check_accounting(struct mtpd_kv_pool *pool, struct slot *sl)
{
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(pool, &st);
    if (st.budget_bytes && st.used_bytes > st.budget_bytes) {
        fprintf(stderr, "  pool: %zu bytes used, budget %zu\n",
                st.used_bytes, st.budget_bytes);
        return 0;
    }
    size_t bytes = 0;
    long live = 0;
    for (int i = 0; i < SLOTS; i++) {
        if (!sl[i].s)
            continue;
        struct mtpd_kv *kv = spec_seq_kv(sl[i].s);
        int nt;
        spec_seq_tokens(sl[i].s, &nt);
        if (mtpd_kv_len(kv, -1) > nt - 1 && mtpd_kv_len(kv, -1) > 0) {
            fprintf(stderr, "  slot %d: main len %d, %d tokens\n", i,
                    mtpd_kv_len(kv, -1), nt);
            return 0;
        }
        for (int m = 0; m < g_nmtp; m++)
            if (mtpd_kv_len(kv, m) > nt - 1 + g_nmtp) {
                fprintf(stderr, "  slot %d: MTP %d len %d, %d tokens\n", i,
                        m, mtpd_kv_len(kv, m), nt);
                return 0;
            }
        bytes += mtpd_kv_bytes(kv);
        live++;
    }
    if (bytes != st.used_bytes || live != st.caches) {
        fprintf(stderr, "  pool: %zu bytes / %ld caches, sequences hold "
                "%zu / %ld\n", st.used_bytes, st.caches, bytes, live);
        return 0;
    }
    return 1;
}

/* budget_pos: the pool's budget in positions (0: unlimited); with one,
 * sequences fail with MTPD_ENOMEM, alone. */
static enum test_return random_ops(int budget_pos)
{
    struct mtpd_kv_pool_opts po = {.page_positions = 16};
    struct mtpd_kv_pool *pool;
    CHECK(mtpd_kv_pool_new(g_m, &po, &pool) == 0, "pool");
    if (budget_pos) {
        po.budget_bytes = mtpd_kv_pool_cost(pool, budget_pos);
        mtpd_kv_pool_free(pool);
        CHECK(mtpd_kv_pool_new(g_m, &po, &pool) == 0, "pool");
    }
    struct spec_engine *e = engine(pool, 48), *e1 = engine(NULL, 0);
    CHECK(e && e1, "engine");
    struct slot sl[SLOTS];
    memset(sl, 0, sizeof sl);
    int compared = 0, restarts = 0, errors = 0;
    for (int op = 0; op < 300; op++) {
        int i = (int)rnd(SLOTS), what = (int)rnd(10);
        struct slot *x = &sl[i];
        if (!x->s) { /* create */
            x->p = random_params();
            x->n_prompt = 1 + (int)rnd(60);
            for (int j = 0; j < x->n_prompt; j++)
                x->prompt[j] = (int32_t)rnd((uint32_t)g_vocab);
            int rc = spec_seq_new(e, &x->p, x->prompt, x->n_prompt, &x->s);
            CHECK(rc == 0 || (rc == MTPD_EFULL && x->p.kv_capacity &&
                              x->n_prompt > x->p.kv_capacity), "new: %d", rc);
        } else if (what < 5) { /* step a random subset in random order */
            struct spec_seq *arr[SLOTS];
            int n = 0;
            for (int j = 0; j < SLOTS; j++)
                if (sl[j].s && rnd(4))
                    arr[n++] = sl[j].s;
            for (int j = n - 1; j > 0; j--) {
                int r = (int)rnd((uint32_t)j + 1);
                struct spec_seq *t = arr[j];
                arr[j] = arr[r];
                arr[r] = t;
            }
            unsigned char def[SLOTS];
            int nd, budget = rnd(2) ? 0 : 1 + (int)rnd(40);
            CHECK(spec_step_ex(e, arr, n, budget, def, &nd) == 0, "step");
            for (int j = 0; j < n; j++)
                nd -= def[j];
            CHECK(nd == 0, "deferred count");
        } else if (what < 7) { /* restart: a prefix of the history + more */
            int nt;
            const int32_t *t = spec_seq_tokens(x->s, &nt);
            int keep = 1 + (int)rnd((uint32_t)nt);
            int add = (int)rnd(20);
            if (keep + add > 150)
                keep = 150 - add;
            memmove(x->prompt, t, sizeof(int32_t) * (size_t)keep);
            for (int j = 0; j < add; j++)
                x->prompt[keep + j] = (int32_t)rnd((uint32_t)g_vocab);
            struct spec_params p = random_params();
            int rc = spec_seq_restart(x->s, &p, x->prompt, keep + add);
            if (rc >= 0) {
                CHECK(rc < keep + add && rc <= keep, "reused %d of %d", rc,
                      keep + add);
                x->p = p;
                x->n_prompt = keep + add;
                restarts++;
            } else {
                CHECK(rc == MTPD_EFULL && p.kv_capacity, "restart: %d", rc);
                spec_seq_cancel(x->s);
            }
        } else if (what < 8) {
            spec_seq_cancel(x->s);
        } else { /* free, after comparing a finished greedy one */
            if (rnd(2))
                CHECK(spec_generate(e, x->s) == 0, "generate");
            enum spec_finish f = spec_seq_finish(x->s);
            CHECK(f != SPEC_FINISH_ERROR ||
                      (budget_pos && spec_seq_error_code(x->s) == MTPD_ENOMEM),
                  "error: %s", spec_seq_error(x->s));
            errors += f == SPEC_FINISH_ERROR;
            if ((f == SPEC_FINISH_LENGTH || f == SPEC_FINISH_CONTEXT) &&
                x->p.sampling.temperature == 0.0f) {
                int32_t want[MAXOUT];
                int nw = solo(e1, &x->p, x->prompt, x->n_prompt, want);
                CHECK(nw >= 0 && same_ids(x->s, want, nw),
                      "op %d: ids differ from the same tokens alone", op);
                compared++;
            }
            spec_seq_free(x->s);
            x->s = NULL;
        }
        CHECK(check_accounting(pool, sl), "op %d (%d on slot %d)", op, what,
              i);
    }
    for (int i = 0; i < SLOTS; i++)
        spec_seq_free(sl[i].s);
    struct mtpd_kv_pool_stats st;
    mtpd_kv_pool_get_stats(pool, &st);
    CHECK(st.used_bytes == 0 && st.caches == 0, "pool not empty");
    printf("  (%d compared with a lone run, %d restarts, %d out of budget)\n",
           compared, restarts, errors);
    CHECK(compared >= 5 && restarts >= 10 && (!budget_pos || errors >= 3),
          "too few checks: %d compared, %d restarts, %d errors", compared,
          restarts, errors);
    spec_engine_free(e);
    spec_engine_free(e1);
    mtpd_kv_pool_free(pool);
    return TEST_PASS;
}

static enum test_return test_random_ops(void)
{
    return random_ops(0);
}

/* a pool for about two sequences of the six */
static enum test_return test_random_ops_budget(void)
{
    return random_ops(200);
}

static const struct test_case tests[] = {
    {"context_alone", test_context_alone},
    {"cancel", test_cancel},
    {"restart", test_restart},
    {"pool_budget", test_pool_budget},
    {"row_budget", test_row_budget},
    {"random_ops", test_random_ops},
    {"random_ops_budget", test_random_ops_budget},
};

int main(int argc, char **argv)
{
    /* args: checkpoint directories, then optionally a test name */
    int failed = 0, first_test = argc;
    for (int i = 1; i < argc; i++)
        if (!strchr(argv[i], '/')) {
            first_test = i;
            break;
        }
    for (int i = 1; i < first_test; i++) {
        char err[512];
        g_dir = argv[i];
        if (mtpd_model_load(g_dir, NULL, &g_m, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        const struct mtpd_config *c = mtpd_model_config(g_m);
        g_vocab = c->vocab_size;
        g_ctx = c->max_position_embeddings;
        g_nmtp = mtpd_model_n_mtp(g_m);
        printf("# %s\n", g_dir);
        char *av[2] = {argv[0], first_test < argc ? argv[first_test] : NULL};
        failed |= test_main(tests, (int)(sizeof tests / sizeof tests[0]),
                            first_test < argc ? 2 : 1, av);
        mtpd_model_free(g_m);
    }
    return failed;
}
