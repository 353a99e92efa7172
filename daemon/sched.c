/*
 * sched.c - the compute thread: continuous batching over all sessions.
 *
 * Loop: take the sequences to free and the jobs submitted since the last
 * pass (new requests join between passes), start the new ones (prefix
 * reuse + KV reservation), run ONE spec_step over every running job
 * with a row budget (decoding sequences first, prompt chunks after, so a
 * long prompt is prefilled across passes while the other streams go on),
 * then hand the emitted tokens and finished jobs to the loop thread
 * (notify queue + event_active). The loop thread never touches a
 * sequence while its job runs.
 */
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "srv.h"
#include "srv_engine.h"
#include "srv_log.h"

/* Under q->lock: queue j for the loop thread (once until it is taken). */
static void notify_locked(struct sched *q, struct job *j)
{
    if (j->notify_queued)
        return;
    j->notify_queued = 1;
    j->notify_next = NULL;
    if (q->notify_tail)
        q->notify_tail->notify_next = j;
    else
        q->notify_head = j;
    q->notify_tail = j;
}

/* How the token being emitted was produced (SRV_SRC_*, or its draft
 * position). A verify pass that drafted k and accepted a emits the
 * accepted drafts first, then the main model's token; the pass counter
 * of the sequence's stats tells a new pass from the next token of the
 * same one, so the library needs no hook for this. */
static int32_t token_source(struct job *j, struct spec_seq *seq)
{
    int64_t passes = spec_seq_stats(seq)->passes;
    int k = 0, a = 0;
    if (passes == 0)
        return SRV_SRC_PLAIN; /* the prefill's token */
    if (passes != j->src_passes) {
        j->src_passes = passes;
        j->src_idx = 0;
    }
    spec_seq_last_pass(seq, &k, &a);
    int i = j->src_idx++;
    if (i < a)
        return i + 1;
    return k == 0 ? SRV_SRC_PLAIN : a < k ? SRV_SRC_CORRECTION : SRV_SRC_BONUS;
}

/* Token callback (compute thread, inside spec_step): text and stop
 * strings, then the id, the text that may be shown and the token's
 * provenance go to the job's pending output. */
static int job_on_token(void *ud, struct spec_seq *seq, int32_t tok)
{
    struct job *j = ud;
    struct sched *q = j->sched;
    int stop = spec_textout_push(j->text, tok); /* < 0: text skipped */
    const char *p;
    size_t n = spec_textout_release(j->text, &p, 0);
    int32_t src[2] = {token_source(j, seq), (int32_t)n};
    pthread_mutex_lock(&q->lock);
    int bad = mtpd_tok_ids_append(&j->p_ids, &tok, 1) < 0 ||
              mtpd_tok_ids_append(&j->p_src, src, 2) < 0 ||
              (n && mtpd_tok_buf_append(&j->p_text, p, n) < 0);
    notify_locked(q, j);
    pthread_mutex_unlock(&q->lock);
    if (bad)
        srv_seq_cancel(seq); /* out of memory: end it */
    return stop == 1 ? SPEC_TOK_STOP : SPEC_TOK_CONTINUE;
}

static void job_fail(struct job *j, enum srv_err err, const char *msg)
{
    j->err = err;
    snprintf(j->errmsg, sizeof j->errmsg, "%s", msg);
    j->finish = SPEC_FINISH_ERROR;
}

/* Starts j's sequence: 0, or -1 with j->err set. */
static int job_start(struct sched *q, struct job *j)
{
    struct spec_engine *e = q->srv->engine;
    j->params.on_token = job_on_token;
    j->params.ud = j;
    int rc = srv_seq_begin(e, &j->seq, &j->params, j->prompt, j->n_prompt,
                           !q->srv->cfg.no_prefix_reuse);
    if (rc >= 0) {
        j->reused = rc;
        rc = srv_seq_reserve(j->seq, j->reserve);
    }
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot start the generation: %s",
                 mtpd_err_str(rc));
        job_fail(j, rc == MTPD_ENOMEM ? SRV_E_KV_BUDGET
                    : rc == MTPD_EFULL ? SRV_E_OVER_LIMIT
                    : rc == MTPD_EINVAL ? SRV_E_BAD_PARAMS
                                        : SRV_E_INTERNAL, msg);
        return -1;
    }
    j->started = 1;
    return 0;
}

/* Collects a finished job's results and hands it to the loop thread. */
static void job_done(struct sched *q, struct job *j)
{
    if (j->started) {
        /* the library's reason (a cancel that came as the generation
         * ended anyway keeps "length"/"stop") */
        if (!j->finish_override || j->lib_cancel)
            j->finish = spec_seq_finish(j->seq);
        if (j->finish == SPEC_FINISH_ERROR && !j->err) {
            j->err = SRV_OK; /* a result with finish_reason "error" */
            snprintf(j->errmsg, sizeof j->errmsg, "%s",
                     srv_seq_error(j->seq));
        }
        int n;
        const int32_t *out = spec_seq_output(j->seq, &n);
        if (n > 0)
            mtpd_tok_ids_append(&j->out_ids, out, (size_t)n);
        j->stats = *spec_seq_stats(j->seq);
        /* keep only what the history holds reserved */
        srv_seq_reserve(j->seq, j->n_prompt + n);
    }
    if (j->seq)
        j->kv_bytes = srv_seq_kv_bytes(j->seq);
    spec_textout_finish(j->text);
    const char *p;
    size_t n = spec_textout_release(j->text, &p, 1);
    size_t all_len = 0;
    const char *all = spec_textout_text(j->text, &all_len);
    if (!all)
        all = "";
    j->out_text = malloc(all_len + 1);
    if (j->out_text) {
        memcpy(j->out_text, all, all_len);
        j->out_text[all_len] = 0;
        j->out_len = all_len;
    }
    pthread_mutex_lock(&q->lock);
    if (n)
        mtpd_tok_buf_append(&j->p_text, p, n);
    j->done = 1;
    notify_locked(q, j);
    pthread_mutex_unlock(&q->lock);
}

static int grow_active(struct sched *q, int need)
{
    if (need <= q->cap_active)
        return 0;
    int cap = q->cap_active ? 2 * q->cap_active : 64;
    while (cap < need)
        cap *= 2;
    struct job **a = realloc(q->active, sizeof *a * (size_t)cap);
    if (!a)
        return -1;
    q->active = a;
    struct spec_seq **s = realloc(q->seqs, sizeof *s * (size_t)cap);
    if (!s)
        return -1;
    q->seqs = s;
    unsigned char *d = realloc(q->deferred, (size_t)cap);
    if (!d)
        return -1;
    q->deferred = d;
    q->cap_active = cap;
    return 0;
}

static void *sched_main(void *arg)
{
    struct sched *q = arg;
    struct spec_engine *e = q->srv->engine;
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (!q->quit && !q->submit_head && !q->frees && !q->n_active)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->quit && !q->submit_head && !q->n_active) {
            struct seq_free_item *f = q->frees;
            q->frees = NULL;
            pthread_mutex_unlock(&q->lock);
            while (f) {
                struct seq_free_item *nx = f->next;
                spec_seq_free(f->seq);
                free(f);
                f = nx;
            }
            break;
        }
        struct seq_free_item *frees = q->frees;
        struct job *fresh = q->submit_head;
        q->frees = NULL;
        q->submit_head = q->submit_tail = NULL;
        q->n_submitted = 0;
        pthread_mutex_unlock(&q->lock);

        while (frees) { /* before starting jobs: the pool gets them back */
            struct seq_free_item *nx = frees->next;
            spec_seq_free(frees->seq);
            free(frees);
            frees = nx;
        }
        double now = srv_now();
        for (struct job *j = fresh, *nx; j; j = nx) {
            nx = j->qnext;
            j->qnext = NULL;
            j->queue_s = now - j->t_submit;
            if (atomic_load(&j->cancel)) {
                j->finish_override = atomic_load(&j->cancel);
                job_fail(j, SRV_E_CANCELLED, "cancelled before it started");
                job_done(q, j);
                continue;
            }
            if (grow_active(q, q->n_active + 1) < 0 || job_start(q, j) < 0) {
                if (!j->err)
                    job_fail(j, SRV_E_INTERNAL, "out of memory");
                job_done(q, j);
                continue;
            }
            q->active[q->n_active++] = j;
        }
        /* cancellations: the library ends the sequence at this step, or
         * (older library) the job leaves the batch here */
        int n = 0;
        for (int i = 0; i < q->n_active; i++) {
            struct job *j = q->active[i];
            int c = atomic_load(&j->cancel);
            if (c && !j->finish_override) {
                j->finish_override = c;
                j->lib_cancel = srv_seq_cancel(j->seq);
            }
            if (j->finish_override && !j->lib_cancel)
                continue;
            q->seqs[n++] = j->seq;
        }
        /* ONE step for all (--no-batching, for benchmarks: one each) */
        int per = q->srv->cfg.no_batching ? 1 : n;
        for (int i = 0; i < n; i += per) {
            int rc = srv_step(e, q->seqs + i, per, q->srv->cfg.step_rows);
            if (rc < 0)
                SRV_LOG(SLOG_ERROR, "step over %d sequences failed: %s", per,
                        mtpd_err_str(rc));
        }
        int kept = 0;
        for (int i = 0; i < q->n_active; i++) {
            struct job *j = q->active[i];
            int finished = j->finish_override
                               ? (!j->lib_cancel ||
                                  spec_seq_finish(j->seq) != SPEC_RUNNING)
                               : spec_seq_finish(j->seq) != SPEC_RUNNING;
            if (finished) {
                if (j->finish_override && !j->lib_cancel)
                    j->finish = SPEC_FINISH_CANCELLED;
                job_done(q, j);
            } else {
                q->active[kept++] = j;
            }
        }
        q->n_active = kept;
        pthread_mutex_lock(&q->lock);
        int any = q->notify_head != NULL;
        pthread_mutex_unlock(&q->lock);
        if (any)
            event_active(q->notify_ev, EV_READ, 0);
    }
    return NULL;
}

/* Loop thread: the jobs with new output. Their pending output is taken
 * under the lock (the compute thread may queue them again at once), then
 * sent without it. */
struct notify_item {
    struct job *j;
    struct mtpd_tok_ids ids;
    struct mtpd_tok_buf text;
    struct mtpd_tok_ids src;
    int done;
};

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sched *q = arg;
    struct notify_item *items = NULL;
    int n = 0, cap = 0;
    pthread_mutex_lock(&q->lock);
    for (struct job *j = q->notify_head; j; j = j->notify_next) {
        if (n == cap) {
            int nc = cap ? 2 * cap : 64;
            struct notify_item *ni = realloc(items, sizeof *ni * (size_t)nc);
            if (!ni)
                break; /* the rest stay queued for the next round */
            items = ni;
            cap = nc;
        }
        items[n].j = j;
        items[n].ids = j->p_ids;
        items[n].text = j->p_text;
        items[n].src = j->p_src;
        items[n].done = j->done;
        memset(&j->p_src, 0, sizeof j->p_src);
        memset(&j->p_ids, 0, sizeof j->p_ids);
        memset(&j->p_text, 0, sizeof j->p_text);
        j->notify_queued = 0;
        q->notify_head = j->notify_next;
        n++;
    }
    if (!q->notify_head)
        q->notify_tail = NULL;
    int more = q->notify_head != NULL;
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < n; i++) {
        struct notify_item *it = &items[i];
        if (it->j->http)
            http_job_output(q->srv, it->j, &it->ids, &it->src,
                            it->text.p ? it->text.p : "", it->text.n,
                            it->done);
        methods_on_job_output(q->srv, it->j, &it->ids,
                              it->text.p ? it->text.p : "", it->text.n,
                              it->done);
        mtpd_tok_ids_free(&it->ids);
        mtpd_tok_ids_free(&it->src);
        mtpd_tok_buf_free(&it->text);
    }
    free(items);
    if (more)
        event_active(q->notify_ev, EV_READ, 0);
}

int sched_start(struct srv *s)
{
    struct sched *q = &s->sched;
    q->srv = s;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->notify_ev = event_new(s->base, -1, 0, on_notify, q);
    if (!q->notify_ev)
        return -1;
    if (pthread_create(&q->thread, NULL, sched_main, q))
        return -1;
    q->running = 1;
    return 0;
}

void sched_stop(struct sched *q)
{
    if (q->running) {
        pthread_mutex_lock(&q->lock);
        q->quit = 1;
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->thread, NULL);
        q->running = 0;
    }
    if (q->notify_ev)
        event_free(q->notify_ev);
    q->notify_ev = NULL;
    free(q->active);
    free(q->seqs);
    free(q->deferred);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
}

void sched_submit(struct sched *q, struct job *j)
{
    j->sched = q;
    j->qnext = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->submit_tail)
        q->submit_tail->qnext = j;
    else
        q->submit_head = j;
    q->submit_tail = j;
    q->n_submitted++;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

void sched_free_seq(struct sched *q, struct spec_seq *seq)
{
    struct seq_free_item *f = malloc(sizeof *f);
    if (!f) { /* cannot hand it over: leak rather than race */
        SRV_LOG(SLOG_ERROR, "out of memory freeing a sequence");
        return;
    }
    f->seq = seq;
    pthread_mutex_lock(&q->lock);
    f->next = q->frees;
    q->frees = f;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

int sched_queue_depth(struct sched *q)
{
    pthread_mutex_lock(&q->lock);
    int n = q->n_submitted;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void job_free(struct job *j)
{
    spec_textout_free(j->text);
    mtpd_tok_ids_free(&j->p_ids);
    mtpd_tok_ids_free(&j->p_src);
    mtpd_tok_buf_free(&j->p_text);
    mtpd_tok_ids_free(&j->out_ids);
    free(j->out_text);
    free(j->prompt);
    free(j);
}
