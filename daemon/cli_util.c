/* cli_util.c - option parsing helpers (see cli_util.h). */
#include "cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_ids(const char *s, int32_t **out)
{
    *out = NULL;
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    int32_t *ids = malloc(n * sizeof(*ids));
    if (!ids)
        return -1;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9') {
            free(ids);
            return -1;
        }
        long v = strtol(p, &end, 10);
        if (errno || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            return -1;
        }
        ids[k++] = (int32_t)v;
        p = end;
        if (*p == ',') {
            p++;
            if (!*p) {
                free(ids);
                return -1;
            }
        }
    }
    if (k == 0) {
        free(ids);
        return 0;
    }
    *out = ids;
    return (int)k;
}

int cli_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_float(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int cli_opt(int argc, char **argv, int *i, const char *name,
            const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "mtpd: error: %s needs a value\n", name);
        return -1;
    }
    (*i)++;
    *val = argv[*i];
    return 1;
}

static int parse_f32_bf16(const char *opt, const char *s, int *bf16)
{
    if (s && (!strcmp(s, "f32") || !strcmp(s, "bf16"))) {
        *bf16 = s[0] == 'b';
        return 0;
    }
    fprintf(stderr, "mtpd: error: %s is f32 or bf16\n", opt);
    return -1;
}

int cli_parse_kv_dtype(const char *s, int *bf16)
{
    return parse_f32_bf16("--kv-dtype", s, bf16);
}

int cli_parse_act_dtype(const char *s, int *bf16)
{
    return parse_f32_bf16("--act-dtype", s, bf16);
}
