/*
 * test_model_device.c - mtpd_load_opts.device: "cpu" loads and runs,
 * "auto" picks the CPU where no CUDA device is usable (and says why in an
 * info line), "cuda" / "cuda:N" fail with MTPD_ENODEV and one clear line
 * when the build or the machine has no GPU, and malformed names are
 * MTPD_EINVAL. On a machine with a GPU the same checks expect cuda:0.
 *
 *   test_model_device CHECKPOINT_DIR   (a committed golden preset)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "unit_test.h"

static const char *g_dir;

struct log_rec {
    int n, n_err;
    char last[512];
};

static void on_log(void *ud, int level, const char *msg)
{
    struct log_rec *r = ud;
    r->n++;
    r->n_err += level <= MTPD_LOG_WARN;
    if (strstr(msg, "device"))
        snprintf(r->last, sizeof r->last, "%s", msg);
}

static int load(const char *dev, struct mtpd_model **m, char *err,
                size_t errlen)
{
    struct mtpd_load_opts o = {.device = dev};
    err[0] = '\0';
    return mtpd_model_load(g_dir, &o, m, err, errlen);
}

/* One decode step of token 1 at position 0: finite logits. */
static int runs(struct mtpd_model *m)
{
    struct mtpd_ctx *c = mtpd_ctx_new(m, 4, 1);
    struct mtpd_kv *kv = mtpd_kv_new(m, 16);
    int32_t tok = 1;
    struct mtpd_seq s = {.kv = kv, .tokens = &tok, .n_tokens = 1};
    int ok = c && kv && mtpd_forward(c, &s, 1) == 0;
    const float *lg = ok ? mtpd_ctx_logits(c, 0) : NULL;
    ok = lg && lg[0] == lg[0] && mtpd_kv_len(kv, -1) == 1;
    mtpd_kv_free(kv);
    mtpd_ctx_free(c);
    return ok;
}

static enum test_return test_cpu(void)
{
    char err[512];
    struct mtpd_model *m;
    int rc = load("cpu", &m, err, sizeof err);
    CHECK(rc == 0, "cpu: rc %d: %s", rc, err);
    CHECK(strcmp(mtpd_model_device(m), "cpu") == 0, "device %s",
          mtpd_model_device(m));
    CHECK(runs(m), "a forward on the cpu");
    mtpd_model_free(m);
    return TEST_PASS;
}

static enum test_return test_auto(void)
{
    static const char *const names[] = {NULL, "", "auto"};
    int gpus = mtpd_cuda_devices();
    CHECK(gpus >= 0, "%d devices", gpus);
    if (!dev_built())
        CHECK(gpus == 0, "no CUDA in the build, yet %d devices", gpus);
    for (int i = 0; i < 3; i++) {
        struct log_rec lr = {0};
        mtpd_set_log(on_log, &lr);
        char err[512];
        struct mtpd_model *m;
        int rc = load(names[i], &m, err, sizeof err);
        mtpd_set_log(NULL, NULL);
        CHECK(rc == 0, "%s: rc %d: %s", names[i] ? names[i] : "NULL", rc,
              err);
        const char *want = gpus ? "cuda:0" : "cpu";
        CHECK(strcmp(mtpd_model_device(m), want) == 0, "auto gave %s, want "
              "%s", mtpd_model_device(m), want);
        CHECK(lr.n_err == 0, "%d error lines", lr.n_err);
        /* the choice is logged, with the reason when it is the cpu */
        CHECK(strstr(lr.last, "device auto: ") != NULL, "last device line: "
              "'%s'", lr.last);
        if (!gpus)
            CHECK(strstr(lr.last, "cpu (") != NULL, "no reason: '%s'",
                  lr.last);
        if (i == 2)
            CHECK(runs(m), "a forward on the chosen device");
        mtpd_model_free(m);
    }
    return TEST_PASS;
}

static enum test_return test_cuda(void)
{
    int gpus = mtpd_cuda_devices();
    CHECK(strcmp(mtpd_err_str(MTPD_ENODEV), "unknown error") != 0,
          "MTPD_ENODEV has a text");
    char err[512], name[32];
    struct mtpd_model *m = (struct mtpd_model *)&m;
    if (gpus == 0) {
        static const char *const names[] = {"cuda", "cuda:0", "cuda:3"};
        for (int i = 0; i < 3; i++) {
            int rc = load(names[i], &m, err, sizeof err);
            CHECK(rc == MTPD_ENODEV, "%s: rc %d (%s)", names[i], rc, err);
            CHECK(m == NULL, "%s: *out set on failure", names[i]);
            snprintf(name, sizeof name, "--device %s: ", names[i]);
            CHECK(strncmp(err, name, strlen(name)) == 0, "err '%s'", err);
            const char *why = dev_built()
                ? "no CUDA device: "
                : "this build has no CUDA (nvcc was not found at build time)";
            CHECK(strstr(err, why) != NULL, "err '%s' lacks '%s'", err, why);
            CHECK(!strchr(err, '\n'), "one line");
            /* the reason is said, not left empty */
            CHECK(err[strlen(err) - 1] != ' ', "err '%s' ends blank", err);
        }
        return TEST_PASS;
    }
    int rc = load("cuda", &m, err, sizeof err);
    CHECK(rc == 0, "cuda with %d device(s): %s", gpus, err);
    CHECK(strcmp(mtpd_model_device(m), "cuda:0") == 0, "%s",
          mtpd_model_device(m));
    mtpd_model_free(m);
    snprintf(name, sizeof name, "cuda:%d", gpus);
    rc = load(name, &m, err, sizeof err);
    CHECK(rc == MTPD_ENODEV && !m, "%s of %d: rc %d", name, gpus, rc);
    CHECK(strstr(err, "no CUDA device") != NULL, "err '%s'", err);
    return TEST_PASS;
}

static enum test_return test_bad_names(void)
{
    static const char *const bad[] = {
        "gpu", "CPU", "cpu ", " cpu", "cuda:", "cuda0", "cuda:x", "cuda:-1",
        "cuda:1x", "cuda:99999999999", "cuda:1024", "cuda::0", "autox",
        "cuda\n", "\x1b[31mcuda"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512];
        struct mtpd_model *m = (struct mtpd_model *)&m;
        int rc = load(bad[i], &m, err, sizeof err);
        CHECK(rc == MTPD_EINVAL, "'%s': rc %d (%s)", bad[i], rc, err);
        CHECK(m == NULL, "'%s': *out set", bad[i]);
        CHECK(strstr(err, "unknown device") != NULL, "'%s': err '%s'",
              bad[i], err);
        for (const char *p = err; *p; p++) /* input quoted, not raw */
            CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "'%s': raw "
                  "control byte in err", bad[i]);
    }
    return TEST_PASS;
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        {"cpu", test_cpu},
        {"auto", test_auto},
        {"cuda", test_cuda},
        {"bad_names", test_bad_names},
    };
    if (argc < 2) {
        fprintf(stderr, "usage: test_model_device CHECKPOINT_DIR [TEST]\n");
        return 2;
    }
    g_dir = argv[1];
    return test_main(tests, (int)(sizeof(tests) / sizeof(tests[0])),
                     argc - 1, argv + 1);
}
