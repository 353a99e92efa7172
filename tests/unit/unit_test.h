/*
 * unit_test.h - the tiny table-driven harness of the C unit tests
 * (TEST_PASS/FAIL/SKIP, memcached testapp.c style).
 */
#ifndef MTPD_UNIT_TEST_H
#define MTPD_UNIT_TEST_H

#include <stdio.h>
#include <string.h>

enum test_return { TEST_SKIP, TEST_PASS, TEST_FAIL };

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__,        \
                    __LINE__, #cond);                                       \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            return TEST_FAIL;                                               \
        }                                                                   \
    } while (0)

struct test_case {
    const char *name;
    enum test_return (*fn)(void);
};

/* Runs every test (or only argv[1]); exit status 0 when none failed. */
static inline int test_main(const struct test_case *t, int n, int argc,
                            char **argv)
{
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], t[i].name) != 0)
            continue;
        enum test_return r = t[i].fn();
        printf("%-40s %s\n", t[i].name,
               r == TEST_PASS ? "ok" : r == TEST_SKIP ? "skip" : "FAIL");
        failed += r == TEST_FAIL;
    }
    return failed ? 1 : 0;
}

/* Pearson chi-square of counts against probabilities (cells with expected
 * count < 5 pooled into one). Returns the statistic, *dof the degrees of
 * freedom. */
static inline double chi_square(const long *cnt, const double *p, int n,
                                long total, int *dof)
{
    double chi = 0.0, pool_e = 0.0, pool_o = 0.0;
    int cells = 0;
    *dof = 1;
    for (int i = 0; i < n; i++) {
        double e = p[i] * (double)total;
        if (e < 5.0) {
            pool_e += e;
            pool_o += (double)cnt[i];
            if (p[i] == 0.0 && cnt[i] > 0)
                return 1e30; /* impossible outcome observed */
            continue;
        }
        chi += ((double)cnt[i] - e) * ((double)cnt[i] - e) / e;
        cells++;
    }
    if (pool_e >= 5.0) {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        cells++;
    } else if (pool_o > 3.0 * pool_e + 10.0) {
        return 1e30;
    }
    *dof = cells > 1 ? cells - 1 : 1;
    return chi;
}

/* Conservative critical value: chi2 quantile ~ dof + z*sqrt(2 dof) + z^2,
 * with z = 4.3 (p ~ 1e-5 upper tail; Wilson-Hilferty would be tighter). */
static inline double chi_crit(int dof)
{
    double z = 4.3;
    return dof + z * __builtin_sqrt(2.0 * dof) + z * z;
}

#endif
