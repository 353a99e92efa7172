/* reply.c - msgpack-rpc responses and notifications (docs/protocol.md):
 * errors, results, and the STATS map of include/mtpd/stats.h. */
#include <string.h>

#include "srv.h"
#include "srv_log.h"

void pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void pack_str(msgpack_packer *pk, const char *s)
{
    pack_strn(pk, s, strlen(s));
}

void pack_ids(msgpack_packer *pk, const int32_t *ids, int n)
{
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++)
        msgpack_pack_int32(pk, ids[i]);
}

static void pack_error_map(msgpack_packer *pk, const struct srv_error *e)
{
    int extra = (e->code == SRV_E_BAD_PARAMS && e->field[0]) ||
                (e->code == SRV_E_OVER_LIMIT && e->limit[0]);
    msgpack_pack_map(pk, 2 + (size_t)extra);
    pack_str(pk, "code");
    pack_str(pk, srv_err_code(e->code));
    pack_str(pk, "message");
    pack_str(pk, e->msg);
    if (e->code == SRV_E_BAD_PARAMS && e->field[0]) {
        pack_str(pk, "field");
        pack_str(pk, e->field);
    } else if (e->code == SRV_E_OVER_LIMIT && e->limit[0]) {
        pack_str(pk, "limit");
        pack_str(pk, e->limit);
    }
}

void reply_error(struct conn *c, uint32_t msgid, const struct srv_error *e)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_uint32(&pk, msgid);
    pack_error_map(&pk, e);
    msgpack_pack_nil(&pk);
    if (c->srv && e->code < SRV_E_COUNT)
        c->srv->errors[e->code]++;
    conn_send(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

void reply_protocol_error(struct conn *c, const char *msg)
{
    struct srv_error e = {.code = SRV_E_PROTOCOL};
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    notify_begin(&sb, &pk, "error");
    pack_error_map(&pk, &e);
    c->srv->errors[SRV_E_PROTOCOL]++;
    conn_send(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

void notify_begin(msgpack_sbuffer *sb, msgpack_packer *pk, const char *name)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 2);
    pack_str(pk, name);
    msgpack_pack_array(pk, 1);
}

void reply_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t msgid)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 1);
    msgpack_pack_uint32(pk, msgid);
    msgpack_pack_nil(pk);
}

void reply_finish(struct conn *c, msgpack_sbuffer *sb)
{
    conn_send(c, sb->data, sb->size);
    msgpack_sbuffer_destroy(sb);
}

static void kv_f(msgpack_packer *pk, const char *k, double v)
{
    pack_str(pk, k);
    msgpack_pack_double(pk, v);
}

static void kv_i(msgpack_packer *pk, const char *k, long long v)
{
    pack_str(pk, k);
    msgpack_pack_int64(pk, v);
}

void pack_stats(msgpack_packer *pk, const struct spec_stats *st,
                long long reused, double queue_s)
{
    int kmax = spec_stats_max_k(st);
    int hist_n = 1; /* as spec_stats_json: at least k = 0 */
    for (int i = 0; i <= SPEC_K_MAX; i++)
        if (st->k_hist[i])
            hist_n = i + 1;
    msgpack_pack_map(pk, 25);
    kv_i(pk, "prompt_tokens", st->prompt_tokens);
    kv_i(pk, "generated_tokens", st->generated_tokens);
    kv_i(pk, "verify_passes", st->passes);
    kv_i(pk, "drafts", st->drafts);
    kv_i(pk, "drafted_tokens", st->drafted_tokens);
    kv_i(pk, "accepted_tokens", st->accepted_tokens);
    kv_f(pk, "acceptance_rate", spec_stats_accept_rate(st));
    pack_str(pk, "acceptance_by_position");
    msgpack_pack_array(pk, (size_t)kmax);
    for (int i = 1; i <= kmax; i++)
        msgpack_pack_double(pk, spec_stats_accept_uncond(st, i));
    pack_str(pk, "acceptance_by_position_conditional");
    msgpack_pack_array(pk, (size_t)kmax);
    for (int i = 1; i <= kmax; i++)
        msgpack_pack_double(pk, spec_stats_accept_cond(st, i));
    /* the counts behind the ratios (include/mtpd/stats.h), so that clients can
     * sum requests exactly (mtpc bench) */
    static const char *const cnt_name[3] = {"drafted_by_position",
                                            "reached_by_position",
                                            "accepted_by_position"};
    const int64_t *cnt[3] = {st->drafted_at, st->reached_at, st->accepted_at};
    for (int c = 0; c < 3; c++) {
        pack_str(pk, cnt_name[c]);
        msgpack_pack_array(pk, (size_t)kmax);
        for (int i = 0; i < kmax; i++)
            msgpack_pack_int64(pk, cnt[c][i]);
    }
    kv_f(pk, "mean_accepted_length", spec_stats_mean_accepted_len(st));
    kv_f(pk, "tokens_per_pass", spec_stats_tokens_per_pass(st));
    pack_str(pk, "k_histogram");
    msgpack_pack_array(pk, (size_t)hist_n);
    for (int i = 0; i < hist_n; i++)
        msgpack_pack_int64(pk, st->k_hist[i]);
    kv_i(pk, "auto_pauses", st->pauses);
    kv_f(pk, "prefill_seconds", st->prefill_s);
    kv_f(pk, "decode_seconds", st->decode_s);
    kv_f(pk, "draft_seconds", st->draft_s);
    kv_f(pk, "verify_seconds", st->verify_s);
    kv_f(pk, "refill_seconds", st->refill_s);
    kv_f(pk, "prefill_tokens_per_s", spec_stats_prefill_tps(st));
    kv_f(pk, "decode_tokens_per_s", spec_stats_decode_tps(st));
    kv_i(pk, "prompt_tokens_reused", reused);
    kv_f(pk, "queue_seconds", queue_s);
}
