/*
 * session.c - the sessions table (loop thread): ids, an LRU list, the KV
 * budget charged to each session, eviction, idle expiry, and the state
 * directory (token histories written at shutdown, read at start).
 *
 * A session's sequence is freed by the compute thread (sched_free_seq):
 * the KV pool belongs to it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "srv.h"
#include "srv_log.h"

static void lru_unlink(struct session_table *t, struct session *se)
{
    if (se->prev)
        se->prev->next = se->next;
    else
        t->head = se->next;
    if (se->next)
        se->next->prev = se->prev;
    else
        t->tail = se->prev;
    se->prev = se->next = NULL;
}

static void lru_push_front(struct session_table *t, struct session *se)
{
    se->prev = NULL;
    se->next = t->head;
    if (t->head)
        t->head->prev = se;
    t->head = se;
    if (!t->tail)
        t->tail = se;
}

static int random_id(char out[SRV_SESSION_ID_LEN + 1])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        got += (size_t)r;
    }
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    return 0;
}

struct session *session_new(struct srv *s, int temporary)
{
    struct session *se = calloc(1, sizeof *se);
    if (!se)
        return NULL;
    if (random_id(se->id) < 0) {
        free(se);
        return NULL;
    }
    se->temporary = temporary;
    se->last_use = srv_now();
    se->last_use_wall = srv_wall();
    lru_push_front(&s->sessions, se);
    if (temporary)
        s->sessions.n_temp++;
    else
        s->sessions.n++;
    return se;
}

struct session *session_find(struct srv *s, const char *id)
{
    for (struct session *se = s->sessions.head; se; se = se->next)
        if (!se->temporary && !strcmp(se->id, id))
            return se;
    return NULL;
}

void session_touch(struct srv *s, struct session *se)
{
    se->last_use = srv_now();
    se->last_use_wall = srv_wall();
    lru_unlink(&s->sessions, se);
    lru_push_front(&s->sessions, se);
}

void session_set_kv(struct srv *s, struct session *se, size_t bytes)
{
    s->sessions.kv_used -= se->kv_bytes;
    se->kv_bytes = bytes;
    s->sessions.kv_used += bytes;
}

void session_close(struct srv *s, struct session *se)
{
    if (se->busy)
        return;
    session_set_kv(s, se, 0);
    if (se->seq)
        sched_free_seq(&s->sched, se->seq);
    lru_unlink(&s->sessions, se);
    if (se->temporary)
        s->sessions.n_temp--;
    else
        s->sessions.n--;
    free(se->hist);
    free(se);
}

int session_make_room(struct srv *s, size_t need, struct session *keep)
{
    size_t budget = s->cfg.kv_budget;
    size_t mine = keep ? keep->kv_bytes : 0;
    if (need > budget)
        return -1;
    while (s->sessions.kv_used - mine + need > budget) {
        struct session *v = s->sessions.tail;
        while (v && (v == keep || v->busy || v->kv_bytes == 0))
            v = v->prev;
        if (!v)
            return -1;
        SRV_LOG(SLOG_INFO, "session %.8s evicted (least recently used, %zu "
                "KV bytes) to fit the KV budget", v->id, v->kv_bytes);
        session_close(s, v);
    }
    return 0;
}

void session_expire_idle(struct srv *s)
{
    if (s->cfg.session_idle <= 0)
        return;
    double now = srv_now();
    struct session *se = s->sessions.tail, *prev;
    for (; se; se = prev) {
        prev = se->prev;
        if (!se->busy && !se->temporary &&
            now - se->last_use > s->cfg.session_idle) {
            SRV_LOG(SLOG_INFO, "session %.8s expired (idle %.0f s)", se->id,
                    now - se->last_use);
            session_close(s, se);
        }
    }
}

int session_set_history(struct session *se, const int32_t *t, int n)
{
    if (n > se->cap_hist) {
        int32_t *h = realloc(se->hist, sizeof(int32_t) * (size_t)n);
        if (!h)
            return -1;
        se->hist = h;
        se->cap_hist = n;
    }
    if (n)
        memcpy(se->hist, t, sizeof(int32_t) * (size_t)n);
    se->n_hist = n;
    return 0;
}

/* ---- state directory ----
 * One file per session, "<id>.session":
 *   "MTPDSES1", u32 version 1, u32 vocab_size, hidden_size,
 *   num_hidden_layers (a file of another model is skipped), u32 n,
 *   i32 tokens[n], u32 FNV-1a of everything before.
 * Written to a temporary name, fsync'd, renamed, and the directory
 * fsync'd, so a crash leaves the old file or the new one. */

#define STATE_MAGIC "MTPDSES1"

static uint32_t fnv1a(const void *p, size_t n, uint32_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static void model_tag(const struct srv *s, uint32_t tag[3])
{
    const struct mtpd_config *c = mtpd_model_config(s->model);
    tag[0] = (uint32_t)c->vocab_size;
    tag[1] = (uint32_t)c->hidden_size;
    tag[2] = (uint32_t)c->num_hidden_layers;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int save_one(const struct srv *s, const struct session *se)
{
    char tmp[4096], path[4096];
    snprintf(path, sizeof path, "%s/%s.session", s->cfg.state_dir, se->id);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", s->cfg.state_dir, se->id);
    uint32_t head[6];
    memcpy(head, STATE_MAGIC, 8);
    head[2] = 1;
    model_tag(s, head + 3);
    uint32_t n = (uint32_t)se->n_hist;
    uint32_t h = fnv1a(head, sizeof head, 2166136261u);
    h = fnv1a(&n, sizeof n, h);
    h = fnv1a(se->hist, sizeof(int32_t) * n, h);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int bad = write_all(fd, head, sizeof head) ||
              write_all(fd, &n, sizeof n) ||
              write_all(fd, se->hist, sizeof(int32_t) * n) ||
              write_all(fd, &h, sizeof h) || fsync(fd);
    bad |= close(fd);
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int is_state_name(const char *name, char id[SRV_SESSION_ID_LEN + 1])
{
    size_t n = strlen(name);
    if (n != SRV_SESSION_ID_LEN + 8 || strcmp(name + SRV_SESSION_ID_LEN,
                                              ".session"))
        return 0;
    for (int i = 0; i < SRV_SESSION_ID_LEN; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    memcpy(id, name, SRV_SESSION_ID_LEN);
    id[SRV_SESSION_ID_LEN] = 0;
    return 1;
}

int session_save_all(struct srv *s)
{
    if (!s->cfg.state_dir)
        return 0;
    int saved = 0, failed = 0;
    for (struct session *se = s->sessions.head; se; se = se->next) {
        if (se->temporary)
            continue;
        if (save_one(s, se) < 0) {
            SRV_LOG(SLOG_ERROR, "state: cannot write session %.8s to %s: %s",
                    se->id, s->cfg.state_dir, strerror(errno));
            failed++;
        } else {
            saved++;
        }
    }
    /* files of sessions that ended since the last start */
    DIR *d = opendir(s->cfg.state_dir);
    if (d) {
        struct dirent *de;
        char id[SRV_SESSION_ID_LEN + 1];
        while ((de = readdir(d)))
            if (is_state_name(de->d_name, id) && !session_find(s, id)) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", s->cfg.state_dir,
                         de->d_name);
                unlink(path);
            }
        int dfd = dirfd(d);
        fsync(dfd);
        closedir(d);
    }
    SRV_LOG(SLOG_INFO, "state: %d sessions written to %s%s", saved,
            s->cfg.state_dir, failed ? " (some failed)" : "");
    return failed ? -1 : 0;
}

/* Reads one state file into a new session; -1 (with a log line) when it
 * is corrupt or of another model. */
static int load_one(struct srv *s, const char *path, const char *id)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint32_t head[6], n = 0, h, tag[3];
    int32_t *toks = NULL;
    const char *why = NULL;
    const struct mtpd_config *c = mtpd_model_config(s->model);
    if (fread(head, sizeof head, 1, f) != 1 || memcmp(head, STATE_MAGIC, 8) ||
        head[2] != 1) {
        why = "not an mtpd session file";
        goto bad;
    }
    model_tag(s, tag);
    if (memcmp(head + 3, tag, sizeof tag)) {
        why = "written for another model";
        goto bad;
    }
    if (fread(&n, sizeof n, 1, f) != 1 ||
        n > (uint32_t)c->max_position_embeddings) {
        why = "bad token count";
        goto bad;
    }
    toks = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!toks || fread(toks, sizeof(int32_t), n, f) != n ||
        fread(&h, sizeof h, 1, f) != 1) {
        why = "truncated";
        goto bad;
    }
    uint32_t want = fnv1a(head, sizeof head, 2166136261u);
    want = fnv1a(&n, sizeof n, want);
    want = fnv1a(toks, sizeof(int32_t) * n, want);
    if (want != h || fgetc(f) != EOF) {
        why = "checksum mismatch";
        goto bad;
    }
    for (uint32_t i = 0; i < n; i++)
        if (toks[i] < 0 || toks[i] >= c->vocab_size) {
            why = "token id out of range";
            goto bad;
        }
    fclose(f);
    struct session *se = session_new(s, 0);
    if (!se || session_set_history(se, toks, (int)n) < 0) {
        if (se)
            session_close(s, se);
        free(toks);
        return -1;
    }
    memcpy(se->id, id, SRV_SESSION_ID_LEN + 1);
    free(toks);
    return 0;
bad:
    SRV_LOG(SLOG_WARN, "state: skipping %s: %s", path, why);
    free(toks);
    fclose(f);
    return -1;
}

int session_load_all(struct srv *s)
{
    if (!s->cfg.state_dir)
        return 0;
    if (mkdir(s->cfg.state_dir, 0700) < 0 && errno != EEXIST) {
        SRV_LOG(SLOG_ERROR, "state: cannot create %s: %s", s->cfg.state_dir,
                strerror(errno));
        return -1;
    }
    DIR *d = opendir(s->cfg.state_dir);
    if (!d) {
        SRV_LOG(SLOG_ERROR, "state: cannot open %s: %s", s->cfg.state_dir,
                strerror(errno));
        return -1;
    }
    struct dirent *de;
    int loaded = 0;
    char id[SRV_SESSION_ID_LEN + 1];
    while ((de = readdir(d))) {
        if (!is_state_name(de->d_name, id)) {
            size_t n = strlen(de->d_name);
            if (n > 8 && !strcmp(de->d_name + n - 8, ".session"))
                SRV_LOG(SLOG_WARN, "state: skipping %s/%s: not a session "
                        "file name", s->cfg.state_dir, de->d_name);
            continue;
        }
        if (session_find(s, id))
            continue;
        if (s->sessions.n >= s->cfg.max_sessions) {
            SRV_LOG(SLOG_WARN, "state: more sessions than --max-sessions; "
                    "the rest are skipped");
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", s->cfg.state_dir, de->d_name);
        if (load_one(s, path, id) == 0)
            loaded++;
    }
    closedir(d);
    SRV_LOG(SLOG_INFO, "state: %d sessions loaded from %s", loaded,
            s->cfg.state_dir);
    return loaded;
}
