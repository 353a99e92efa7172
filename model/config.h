/* config.h - parsing and derived values of struct mtpd_config (model.h). */
#ifndef MTPD_CONFIG_H
#define MTPD_CONFIG_H

#include <stddef.h>

#include "model.h"

struct json;

/* Fills c from a parsed config.json. Returns 0, or -1 with
 * "PATH: KEY: problem" in err. */
int mtpd_config_parse(const struct json *root, const char *path,
                      struct mtpd_config *c, char *err, size_t errlen);

/* 1 when decoder layer `layer` (MTP layers included) uses MoE. */
int mtpd_config_layer_is_moe(const struct mtpd_config *c, int layer);
int mtpd_config_qk_head_dim(const struct mtpd_config *c);

#endif
