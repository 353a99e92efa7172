/*
 * test_spec_draft_head.c - spec/draft_head.c: the fixed part and a
 * sequence's context ids give exactly the full head's logits (of the BF16
 * rows) at their ids and -inf elsewhere; context ids skip the fixed part
 * and repeats and stop at the cap; bad ids are refused.
 * Run: build/spec/test_spec_draft_head [name].
 */
#include <math.h>
#include <stdlib.h>

#include "draft_head.h"
#include "unit_test.h"

enum { V = 50, H = 40 }; /* H not a multiple of 16 or 32: column tails */

static float w[V * H], hid[3 * H];

static void fill(void)
{
    unsigned s = 12345;
    for (int i = 0; i < V * H; i++) {
        s = s * 1103515245u + 12345u;
        w[i] = (float)((s >> 8) % 2001) / 1000.0f - 1.0f;
    }
    for (int i = 0; i < 3 * H; i++)
        hid[i] = (float)((i * 37) % 23) / 11.0f - 1.0f;
}

/* head row id . hidden row r with the row rounded to BF16, in double */
static double want(int id, int r)
{
    double acc = 0;
    for (int c = 0; c < H; c++)
        acc += (double)kbf16_to_f32(kf32_to_bf16(w[id * H + c])) *
               hid[r * H + c];
    return acc;
}

static enum test_return test_fixed_and_context(void)
{
    fill();
    struct kmat head = {.dtype = KDT_F32, .rows = V, .cols = H, .data = w};
    int32_t ids[] = {7, 3, 41, 0, 19};
    struct spec_draft_head h[2];
    CHECK(spec_draft_head_init(&h[0], &head, ids, 5) == 0, "init");
    CHECK(spec_draft_head_init(&h[1], &head, ids, 5) == 0, "init 2");
    struct spec_draft_ctx c;
    CHECK(spec_draft_ctx_init(&c, h, 2, 4) == 0, "ctx init");
    CHECK(spec_draft_ctx_add(&c, h, 3) == 0, "fixed id added as context");
    CHECK(spec_draft_ctx_add(&c, h, 22) == 1, "new id not added");
    CHECK(spec_draft_ctx_add(&c, h, 22) == 0, "repeat added");
    CHECK(spec_draft_ctx_add(&c, h, V) == -1, "out-of-range id accepted");
    CHECK(spec_draft_ctx_add(&c, h, -1) == -1, "negative id accepted");
    CHECK(spec_draft_ctx_add(&c, h, 49) == 1 && spec_draft_ctx_add(&c, h, 1) == 1 &&
              spec_draft_ctx_add(&c, h, 30) == 1,
          "adds below the cap");
    CHECK(spec_draft_ctx_add(&c, h, 31) == 0 && c.n == 4, "cap exceeded");

    float sub[3 * 5], csub[4], full[V];
    CHECK(spec_draft_head_logits(&h[0], NULL, hid, H, 3, sub) == 0, "logits");
    for (int r = 0; r < 3; r++) {
        CHECK(spec_draft_ctx_logits(&c, 1, H, NULL, hid + r * H, csub) == 0,
              "ctx logits");
        spec_draft_head_scatter(&h[0], sub + r * 5, &c, csub, full, V);
        int n_fin = 0;
        for (int id = 0; id < V; id++) {
            int in = h[0].in[id] || c.in[id];
            if (!in) {
                CHECK(isinf(full[id]) && full[id] < 0, "id %d not -inf", id);
                continue;
            }
            n_fin++;
            CHECK(fabs(full[id] - want(id, r)) < 1e-4, "row %d id %d: %g vs %g",
                  r, id, full[id], want(id, r));
        }
        CHECK(n_fin == 9, "%d ids with logits, want 9", n_fin);
    }
    /* no context part: only the fixed ids */
    spec_draft_head_scatter(&h[0], sub, NULL, NULL, full, V);
    CHECK(isinf(full[22]) && !isinf(full[41]), "scatter without context");
    spec_draft_ctx_free(&c);
    spec_draft_head_free(&h[0]);
    spec_draft_head_free(&h[1]);
    return TEST_PASS;
}

static enum test_return test_bad_fixed_lists(void)
{
    fill();
    struct kmat head = {.dtype = KDT_F32, .rows = V, .cols = H, .data = w};
    struct spec_draft_head h;
    int32_t dup[] = {4, 5, 4}, big[] = {1, V}, neg[] = {-3};
    CHECK(spec_draft_head_init(&h, &head, dup, 3) == -1, "duplicate id");
    CHECK(spec_draft_head_init(&h, &head, big, 2) == -1, "id past vocab");
    CHECK(spec_draft_head_init(&h, &head, neg, 1) == -1, "negative id");
    CHECK(spec_draft_head_init(&h, &head, dup, 0) == -1, "empty list");
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"fixed_and_context", test_fixed_and_context},
        {"bad_fixed_lists", test_bad_fixed_lists},
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
