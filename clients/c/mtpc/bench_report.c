/*
 * bench_report.c - what `mtpc bench` prints and writes: the table,
 * results.json, and the gnuplot charts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mtpc.h"

static void draft_str(int d, char *buf, size_t len)
{
    if (d == MTP_DRAFT_AUTO)
        snprintf(buf, len, "auto");
    else if (d == MTP_DRAFT_DEFAULT)
        snprintf(buf, len, "default");
    else
        snprintf(buf, len, "%d", d);
}

/* ---- the table -------------------------------------------------------------- */

void report_table(FILE *f, const struct bench_cfg *cfg,
                  const struct run_agg *runs, int n_runs,
                  const struct spec_counts *total)
{
    fprintf(f, "%d prompts, %d requests per run, max_tokens %d, "
            "temperature %g\n\n",
            cfg->n_prompts, cfg->n_requests, cfg->max_tokens,
            cfg->temperature);
    fprintf(f, "%4s %-7s %4s %9s %9s %9s %8s %8s %7s %7s %7s\n", "conc",
            "draft", "req", "tok/s", "TTFT p50", "TTFT p99", "ITL p50",
            "ITL p99", "accept", "acc len", "speedup");
    fprintf(f, "%4s %-7s %4s %9s %9s %9s %8s %8s %7s %7s %7s\n", "", "", "",
            "", "ms", "ms", "ms", "ms", "rate", "mean", "");
    for (int i = 0; i < n_runs; i++) {
        const struct run_agg *r = &runs[i];
        char d[16], sp[16] = "";
        draft_str(r->draft_tokens, d, sizeof d);
        if (r->speedup > 0)
            snprintf(sp, sizeof sp, "%.2fx", r->speedup);
        fprintf(f, "%4d %-7s %4d %9.1f %9.1f %9.1f %8.2f %8.2f %7.3f %7.3f "
                "%7s%s\n",
                r->concurrency, d, r->n_req, r->tok_s, r->ttft_p50,
                r->ttft_p99, r->itl_p50, r->itl_p99, counts_rate(&r->spec),
                counts_mean_len(&r->spec), sp,
                r->n_err ? "  (errors)" : "");
    }
    int kmax = counts_max_pos(total);
    if (!kmax) {
        fprintf(f, "\nno drafts (speculation off)\n");
        return;
    }
    fprintf(f, "\nacceptance by draft position (all speculative requests, "
            "%lld drafts%s)\n",
            (long long)total->drafts,
            total->approx ? "; conditional approximate" : "");
    fprintf(f, "%8s %10s %14s %12s\n", "position", "drafted", "unconditional",
            "conditional");
    for (int i = 0; i < kmax; i++)
        fprintf(f, "%8d %10lld %14.4f %12.4f\n", i + 1,
                (long long)total->drafted_at[i], counts_uncond(total, i),
                counts_cond(total, i));
    fprintf(f, "acceptance rate %.4f, mean accepted length %.3f, "
            "tokens per verify pass %.3f\n",
            counts_rate(total), counts_mean_len(total),
            counts_tokens_per_pass(total));
    fprintf(f, "\ndraft-length histogram\n%-16s", "draft tokens k");
    int hl = counts_hist_len(total);
    for (int k = 0; k < hl; k++)
        fprintf(f, " %7d", k);
    fprintf(f, "\n%-16s", "verify passes");
    for (int k = 0; k < hl; k++)
        fprintf(f, " %7lld", (long long)total->k_hist[k]);
    fprintf(f, "\naccepted-length histogram\n%-16s", "accepted a");
    for (int a = 0; a <= kmax; a++)
        fprintf(f, " %7d", a);
    fprintf(f, "\n%-16s", "drafts");
    for (int a = 0; a <= kmax; a++)
        fprintf(f, " %7lld", (long long)counts_accepted_exactly(total, a));
    fputc('\n', f);
}

/* ---- results.json ------------------------------------------------------------ */

static void json_counts(FILE *f, const struct spec_counts *c)
{
    int kmax = counts_max_pos(c), hl = counts_hist_len(c);
    fprintf(f, "{\"requests\": %lld, \"prompt_tokens\": %lld, "
            "\"generated_tokens\": %lld, \"verify_passes\": %lld, "
            "\"drafts\": %lld, \"drafted_tokens\": %lld, "
            "\"accepted_tokens\": %lld, \"acceptance_rate\": %.17g, "
            "\"mean_accepted_length\": %.17g, \"tokens_per_pass\": %.17g",
            (long long)c->requests, (long long)c->prompt_tokens,
            (long long)c->generated_tokens, (long long)c->passes,
            (long long)c->drafts, (long long)c->drafted,
            (long long)c->accepted, counts_rate(c), counts_mean_len(c),
            counts_tokens_per_pass(c));
    fprintf(f, ", \"acceptance_by_position\": [");
    for (int i = 0; i < kmax; i++)
        fprintf(f, i ? ", %.17g" : "%.17g", counts_uncond(c, i));
    fprintf(f, "], \"acceptance_by_position_conditional\": [");
    for (int i = 0; i < kmax; i++)
        fprintf(f, i ? ", %.17g" : "%.17g", counts_cond(c, i));
    fprintf(f, "], \"conditional_exact\": %s", c->approx ? "false" : "true");
    fprintf(f, ", \"drafted_by_position\": [");
    for (int i = 0; i < kmax; i++)
        fprintf(f, i ? ", %lld" : "%lld", (long long)c->drafted_at[i]);
    fprintf(f, "], \"accepted_by_position\": [");
    for (int i = 0; i < kmax; i++)
        fprintf(f, i ? ", %lld" : "%lld", (long long)c->accepted_at[i]);
    fprintf(f, "], \"k_histogram\": [");
    for (int k = 0; k < hl; k++)
        fprintf(f, k ? ", %lld" : "%lld", (long long)c->k_hist[k]);
    fprintf(f, "], \"accepted_length_histogram\": [");
    for (int a = 0; a <= kmax && c->drafts; a++)
        fprintf(f, a ? ", %lld" : "%lld",
                (long long)counts_accepted_exactly(c, a));
    fprintf(f, "]}");
}

static void json_stats(FILE *f, const struct mtp_stats *s)
{
    fprintf(f, "{\"prompt_tokens\": %lld, \"prompt_tokens_reused\": %lld, "
            "\"generated_tokens\": %lld, \"verify_passes\": %lld, "
            "\"drafts\": %lld, \"drafted_tokens\": %lld, "
            "\"accepted_tokens\": %lld, \"acceptance_rate\": %.17g, "
            "\"mean_accepted_length\": %.17g, \"tokens_per_pass\": %.17g, "
            "\"auto_pauses\": %lld",
            (long long)s->prompt_tokens, (long long)s->prompt_tokens_reused,
            (long long)s->generated_tokens, (long long)s->verify_passes,
            (long long)s->drafts, (long long)s->drafted_tokens,
            (long long)s->accepted_tokens, s->acceptance_rate,
            s->mean_accepted_length, s->tokens_per_pass,
            (long long)s->auto_pauses);
    fprintf(f, ", \"acceptance_by_position\": [");
    for (int i = 0; i < s->n_positions; i++)
        fprintf(f, i ? ", %.17g" : "%.17g", s->acceptance_by_position[i]);
    fprintf(f, "], \"acceptance_by_position_conditional\": [");
    for (int i = 0; i < s->n_positions; i++)
        fprintf(f, i ? ", %.17g" : "%.17g",
                s->acceptance_by_position_conditional[i]);
    fprintf(f, "], \"k_histogram\": [");
    for (int k = 0; k < s->n_k_histogram; k++)
        fprintf(f, k ? ", %lld" : "%lld", (long long)s->k_histogram[k]);
    fprintf(f, "], \"prefill_seconds\": %.9g, \"decode_seconds\": %.9g, "
            "\"draft_seconds\": %.9g, \"verify_seconds\": %.9g, "
            "\"refill_seconds\": %.9g, \"queue_seconds\": %.9g, "
            "\"prefill_tokens_per_s\": %.9g, \"decode_tokens_per_s\": %.9g}",
            s->prefill_seconds, s->decode_seconds, s->draft_seconds,
            s->verify_seconds, s->refill_seconds, s->queue_seconds,
            s->prefill_tokens_per_s, s->decode_tokens_per_s);
}

static void json_run(FILE *f, const struct run_agg *r)
{
    char d[16];
    draft_str(r->draft_tokens, d, sizeof d);
    fprintf(f, "{\"concurrency\": %d, \"mode\": \"%s\", \"draft_tokens\": "
            "\"%s\", \"requests\": %d, \"errors\": %d, "
            "\"wall_seconds\": %.6f, \"generated_tokens\": %lld, "
            "\"tokens_per_s\": %.6f, \"ttft_ms\": {\"p50\": %.4f, "
            "\"p99\": %.4f}, \"itl_ms\": {\"p50\": %.4f, \"p99\": %.4f}, "
            "\"latency_ms\": {\"p50\": %.4f, \"p99\": %.4f}",
            r->concurrency, r->baseline ? "baseline" : "spec", d, r->n_req,
            r->n_err, r->t_end - r->t_begin, (long long)r->tokens, r->tok_s,
            r->ttft_p50, r->ttft_p99, r->itl_p50, r->itl_p99, r->lat_p50,
            r->lat_p99);
    if (r->speedup > 0)
        fprintf(f, ", \"speedup\": %.6f", r->speedup);
    fprintf(f, ", \"spec\": ");
    json_counts(f, &r->spec);
    fputc('}', f);
}

static void json_req(FILE *f, const struct req_rec *r)
{
    fprintf(f, "{\"run\": %d, \"prompt\": %d, \"start_ms\": %.4f, ", r->run,
            r->prompt, r->t_start * 1e3);
    if (!r->ran) {
        fprintf(f, "\"error\": \"not run\"}");
        return;
    }
    if (r->status) {
        fprintf(f, "\"error\": ");
        json_puts(f, r->error, strlen(r->error));
        fputc('}', f);
        return;
    }
    fprintf(f, "\"ttft_ms\": %.4f, \"latency_ms\": %.4f, "
            "\"generated_tokens\": %lld, \"finish_reason\": \"%s\", "
            "\"itl_ms\": [",
            ((r->t_first ? r->t_first : r->t_end) - r->t_start) * 1e3,
            (r->t_end - r->t_start) * 1e3, (long long)r->n_tokens,
            r->finish_reason);
    for (int i = 0; i < r->n_itl; i++)
        fprintf(f, i ? ", %.4f" : "%.4f", (double)r->itl_ms[i]);
    fprintf(f, "], \"stats\": ");
    json_stats(f, &r->stats);
    fputc('}', f);
}

int report_json(FILE *f, const struct bench_cfg *cfg,
                const struct run_agg *runs, int n_runs,
                const struct spec_counts *total,
                const struct spec_counts *spec_total,
                const struct req_rec *recs, size_t n_recs, const char *model,
                const char *daemon_stats)
{
    char d[16];
    draft_str(cfg->draft_tokens, d, sizeof d);
    fprintf(f, "{\"config\": {\"prompts_file\": ");
    json_puts(f, cfg->prompts_file, strlen(cfg->prompts_file));
    fprintf(f, ", \"prompts\": %d, \"requests_per_run\": %d, "
            "\"concurrency\": [",
            cfg->n_prompts, cfg->n_requests);
    for (int i = 0; i < cfg->n_conc; i++)
        fprintf(f, i ? ", %d" : "%d", cfg->concurrency[i]);
    fprintf(f, "], \"draft_tokens\": \"%s\", \"temperature\": %.17g, "
            "\"max_tokens\": %d, \"seed\": %lld, \"ignore_eos\": %s, "
            "\"compare\": %s, \"model\": ",
            d, cfg->temperature, cfg->max_tokens, (long long)cfg->seed,
            cfg->ignore_eos ? "true" : "false",
            cfg->compare ? "true" : "false");
    json_puts(f, model ? model : "", model ? strlen(model) : 0);
    fprintf(f, "},\n \"runs\": [");
    for (int i = 0; i < n_runs; i++) {
        fprintf(f, i ? ",\n  " : "\n  ");
        json_run(f, &runs[i]);
    }
    fprintf(f, "],\n \"total\": ");
    json_counts(f, total);
    fprintf(f, ",\n \"spec_total\": ");
    json_counts(f, spec_total);
    fprintf(f, ",\n \"requests\": [");
    for (size_t i = 0; i < n_recs; i++) {
        fprintf(f, i ? ",\n  " : "\n  ");
        json_req(f, &recs[i]);
    }
    fprintf(f, "],\n \"daemon_stats\": %s}\n",
            daemon_stats ? daemon_stats : "null");
    return ferror(f) ? -1 : 0;
}

/* ---- charts ------------------------------------------------------------------- */

/* gnuplot's path, or NULL. */
static char *find_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char buf[4096];
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(buf, sizeof buf, "%.*s/gnuplot", (int)n, p);
        if (n && access(buf, X_OK) == 0)
            return strdup(buf);
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

static FILE *open_in(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "mtpc bench: cannot write %s: %s\n", path,
                strerror(errno));
    return f;
}

/* Writes the .dat files and plot.gp; returns the number of charts. */
static int write_plot_files(const char *dir, const struct bench_cfg *cfg,
                            const struct run_agg *runs, int n_runs,
                            const struct spec_counts *t)
{
    FILE *gp = open_in(dir, "plot.gp");
    if (!gp)
        return -1;
    int charts = 0, kmax = counts_max_pos(t);
    fprintf(gp, "# drawn by mtpc bench; rerun with: gnuplot plot.gp\n"
            "set terminal pngcairo size 900,540 noenhanced\n"
            "set grid ytics\nset key top right\nset style fill solid 0.8\n");
    if (kmax) {
        FILE *d = open_in(dir, "acceptance_by_position.dat");
        if (!d) {
            fclose(gp);
            return -1;
        }
        fprintf(d, "# position drafted unconditional conditional\n");
        for (int i = 0; i < kmax; i++)
            fprintf(d, "%d %lld %.6f %.6f\n", i + 1,
                    (long long)t->drafted_at[i], counts_uncond(t, i),
                    counts_cond(t, i));
        fclose(d);
        fprintf(gp, "set output 'acceptance_by_position.png'\n"
                "set title 'MTP draft acceptance by position (%lld drafts)'\n"
                "set xlabel 'draft position'\nset ylabel 'acceptance'\n"
                "set yrange [0:1.05]\nset xtics 1\n"
                "set style data histograms\nset style histogram cluster "
                "gap 1\n"
                "plot 'acceptance_by_position.dat' using 3:xtic(1) title "
                "'unconditional', '' using 4 title 'conditional'\n"
                "unset yrange\n",
                (long long)t->drafts);
        charts++;
        d = open_in(dir, "accepted_length.dat");
        if (!d) {
            fclose(gp);
            return -1;
        }
        fprintf(d, "# accepted_tokens drafts fraction\n");
        for (int a = 0; a <= kmax; a++) {
            int64_t n = counts_accepted_exactly(t, a);
            fprintf(d, "%d %lld %.6f\n", a, (long long)n,
                    t->drafts ? (double)n / (double)t->drafts : 0.0);
        }
        fclose(d);
        fprintf(gp, "set output 'accepted_length_histogram.png'\n"
                "set title 'accepted draft tokens per verify pass (mean "
                "accepted length %.3f)'\n"
                "set xlabel 'accepted draft tokens'\n"
                "set ylabel 'fraction of drafts'\nset yrange [0:*]\n"
                "plot 'accepted_length.dat' using 3:xtic(1) notitle\n"
                "unset yrange\n",
                counts_mean_len(t));
        charts++;
        d = open_in(dir, "draft_length.dat");
        if (!d) {
            fclose(gp);
            return -1;
        }
        fprintf(d, "# k verify_passes\n");
        for (int k = 0; k < counts_hist_len(t); k++)
            fprintf(d, "%d %lld\n", k, (long long)t->k_hist[k]);
        fclose(d);
        fprintf(gp, "set output 'draft_length_histogram.png'\n"
                "set title 'draft length per verify pass'\n"
                "set xlabel 'draft tokens k'\nset ylabel 'verify passes'\n"
                "set yrange [0:*]\n"
                "plot 'draft_length.dat' using 2:xtic(1) notitle\n"
                "unset yrange\n");
        charts++;
    }
    if (cfg->n_conc > 1) {
        FILE *d = open_in(dir, "throughput.dat");
        if (!d) {
            fclose(gp);
            return -1;
        }
        fprintf(d, "# concurrency spec_tok_s baseline_tok_s\n");
        for (int ci = 0; ci < cfg->n_conc; ci++) {
            double s = 0, b = 0;
            for (int i = 0; i < n_runs; i++) {
                if (runs[i].concurrency != cfg->concurrency[ci])
                    continue;
                if (runs[i].baseline)
                    b = runs[i].tok_s;
                else
                    s = runs[i].tok_s;
            }
            fprintf(d, "%d %.3f %.3f\n", cfg->concurrency[ci], s, b);
        }
        fclose(d);
        fprintf(gp, "set output 'tokens_per_s_vs_concurrency.png'\n"
                "set title 'throughput against concurrency'\n"
                "set xlabel 'concurrent clients'\n"
                "set ylabel 'generated tokens/s'\nset yrange [0:*]\n"
                "set style data linespoints\nset xtics auto\n"
                "set key top left\n"
                "plot 'throughput.dat' using 1:2:xtic(1) title 'speculative' "
                "lw 2");
        if (cfg->compare)
            fprintf(gp, ", '' using 1:3 title 'draft_tokens 0' lw 2");
        fputc('\n', gp);
        charts++;
    }
    fclose(gp);
    return charts;
}

int report_charts(const char *dir, const struct bench_cfg *cfg,
                  const struct run_agg *runs, int n_runs,
                  const struct spec_counts *total)
{
    char *gnuplot = find_gnuplot();
    if (!gnuplot) {
        fprintf(stderr, "mtpc bench: charts skipped: gnuplot not found "
                "(Debian: apt-get install gnuplot-nox); results.json has "
                "every number\n");
        return 0;
    }
    int charts = write_plot_files(dir, cfg, runs, n_runs, total);
    if (charts <= 0) {
        free(gnuplot);
        if (charts == 0)
            fprintf(stderr, "mtpc bench: no charts to draw (no drafts, one "
                    "concurrency)\n");
        return charts;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(dir) < 0)
            _exit(127);
        execl(gnuplot, "gnuplot", "plot.gp", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid > 0)
        waitpid(pid, &st, 0);
    free(gnuplot);
    if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
        fprintf(stderr, "mtpc bench: gnuplot failed on %s/plot.gp\n", dir);
        return -1;
    }
    fprintf(stderr, "wrote %d charts in %s (plot.gp redraws them)\n", charts,
            dir);
    return charts;
}
