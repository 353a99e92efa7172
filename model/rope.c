/*
 * rope.c - RoPE inverse frequencies, with YaRN as transformers computes it
 * (_compute_yarn_parameters) and the softmax scale of DeepseekV3Attention.
 *
 * YaRN: frequencies below the beta_slow..beta_fast correction range are
 * interpolated (divided by factor), above it kept, with a linear ramp in
 * between. cos/sin are multiplied by attention_factor =
 * mscale(factor, mscale) / mscale(factor, mscale_all_dim) (1 for DeepSeek's
 * own configs), and the softmax scale by mscale(factor, mscale_all_dim)^2.
 */
#include <math.h>
#include <stdlib.h>

#include "model_int.h"

static double yarn_get_mscale(double scale, double mscale)
{
    if (scale <= 1.0)
        return 1.0;
    return 0.1 * mscale * log(scale) + 1.0;
}

static double correction_dim(double rot, int dim, double base, double maxpos)
{
    return (dim * log(maxpos / (rot * 2.0 * M_PI))) / (2.0 * log(base));
}

int rope_init(struct mtpd_model *m)
{
    const struct mtpd_config *c = &m->cfg;
    int dim = c->qk_rope_head_dim, half = dim / 2;
    double base = c->rope_theta;
    m->inv_freq = malloc(sizeof(float) * (size_t)half);
    if (!m->inv_freq)
        return MTPD_ENOMEM;
    m->rope_mscale = 1.0f;
    double scale = 1.0 / sqrt((double)mtpd_config_qk_head_dim(c));
    for (int i = 0; i < half; i++) {
        /* transformers: base ** (arange(0, dim, 2).float() / dim), fp32 */
        float pos_freq = (float)pow(base, (double)(float)(2.0 * i / dim));
        m->inv_freq[i] = 1.0f / pos_freq;
    }
    if (c->rope_yarn) {
        double f = c->yarn_factor;
        double lo = floor(correction_dim(c->yarn_beta_fast, dim, base,
                                         c->yarn_original_max_pos));
        double hi = ceil(correction_dim(c->yarn_beta_slow, dim, base,
                                        c->yarn_original_max_pos));
        if (lo < 0)
            lo = 0;
        if (hi > dim - 1)
            hi = dim - 1;
        if (lo == hi)
            hi += 0.001;
        for (int i = 0; i < half; i++) {
            float pos_freq = (float)pow(base, (double)(float)(2.0 * i / dim));
            float extra = 1.0f / pos_freq;
            float inter = 1.0f / (float)(f * pos_freq);
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float ef = (float)(1.0 - ramp); /* extrapolation factor */
            m->inv_freq[i] = inter * (1.0f - ef) + extra * ef;
        }
        double ms = c->yarn_mscale, msa = c->yarn_mscale_all_dim;
        if (ms != 0 && msa != 0)
            m->rope_mscale = (float)(yarn_get_mscale(f, ms) /
                                     yarn_get_mscale(f, msa));
        else
            m->rope_mscale = (float)yarn_get_mscale(f, 1.0);
        if (msa != 0) {
            double s = yarn_get_mscale(f, msa);
            scale *= s * s;
        }
    }
    m->softmax_scale = (float)scale;
    return 0;
}
