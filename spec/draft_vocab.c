/*
 * draft_vocab.c - the draft-vocabulary file reader (draft_vocab.h).
 */
#include "draft_vocab.h"

#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int spec_draft_vocab_read(const char *path, int max, int32_t **out)
{
    *out = NULL;
    if (!path || max < 1)
        return MTPD_EINVAL;
    FILE *f = fopen(path, "r");
    if (!f)
        return MTPD_EIO;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max);
    if (!ids) {
        fclose(f);
        return MTPD_ENOMEM;
    }
    int n = 0, c, bad = 0;
    long v = -1; /* the number being read, -1: none */
    while (n < max && (c = fgetc(f)) != EOF) {
        if (c == '#')
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
        if (c >= '0' && c <= '9') {
            v = (v < 0 ? 0 : v * 10) + (c - '0');
            if (v > INT32_MAX) {
                bad = 1;
                break;
            }
        } else if (v >= 0) {
            ids[n++] = (int32_t)v;
            v = -1;
        }
    }
    if (!bad && v >= 0 && n < max)
        ids[n++] = (int32_t)v;
    int err = ferror(f);
    fclose(f);
    if (bad || err || n == 0) {
        free(ids);
        return err ? MTPD_EIO : MTPD_EFORMAT;
    }
    *out = ids;
    return n;
}
