"""Daemon benchmark (issue 10): `mtpd serve` under N concurrent streaming
clients, with its baselines measured in the same run. Prints markdown tables.

    python3 tools/bench_daemon.py [--bin build/mtpd] [--model DIR]
        [--clients 1,4,16] [--modes greedy,t0.7] [--max-tokens 64]
        [--requests 2] [--threads 2] [--prompt-chars 400] [--nobatch-args auto]
        [--edit-history 1500] [--edit-steps 12] [--idle-sessions 16]
        [--soak SECONDS] [--out FILE]

1. Concurrency: for each N and mode (greedy, temperature 0.7; draft tokens
   auto), N clients, each with its own connection and session, stream
   --requests completions each of held-out code prompts (tools/bench_spec's
   code_prompts: chunks of /usr/lib/python3/dist-packages, which the models
   never trained on), --max-tokens tokens each (ignore_eos, so every request
   generates the same number). Aggregate tokens/s = all generated tokens over
   the wall time of the whole round; time to first token (TTFT) = send to
   the first chunk carrying ids; inter-token latency (ITL) = the gap between
   two chunks, shared out over the ids of the later chunk (speculation emits
   several tokens per pass); p50/p99 over all requests / tokens.
2. Protocol overhead: one client streaming the same prompts against
   `mtpd generate` offline (same threads, greedy), alternated prompt by
   prompt; decode tokens/s = tokens after the first over the time after the
   first (client-observed for the daemon, decode_seconds for offline).
3. Cross-session batching on/off: the 16-client greedy round again with the
   daemon restarted with --nobatch-args (auto-detected from `mtpd serve
   --help`: --no-batching, one spec_step per session; skipped when the
   daemon has no such switch).
4. Editing session: a ~--edit-history token code history; request i sends
   the first history+4i ids (max_tokens 8) in one session (prefix reuse on)
   against the same request without a session (cold: nothing reused) and,
   when the daemon has --no-prefix-reuse, in one session of a daemon
   started with it.
5. RSS per idle session: the daemon's VmRSS before and after opening
   --idle-sessions sessions with a 512-token prompt each, divided by their
   number, next to the KV bytes session.info reports.
--soak SECONDS runs only a soak instead: the largest client count streaming
request after request (greedy and T=0.7 alternating), the daemon's RSS
every 10 s.
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "daemon"))

from daemon_fixture import Daemon, serve_missing  # noqa: E402  (also puts mtpd_client on sys.path)
from tools.bench_spec import code_prompts  # noqa: E402

import mtpd_client  # noqa: E402


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs, or nan."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


class Req:
    """Timings of one streamed request."""

    def __init__(self):
        self.t_send = 0.0
        self.t_first = None
        self.t_last = None
        self.t_done = None
        self.first_ids = 0
        self.itl = []
        self.tokens = 0
        self.stats = {}


async def stream_one(client, session, prompt, max_tokens, temperature, seed):
    r = Req()
    r.t_send = time.perf_counter()
    st = await client.generate(prompt, session=session, max_tokens=max_tokens,
                               temperature=temperature, seed=seed, ignore_eos=True,
                               draft_tokens="auto", stream=True)
    async for ch in st:
        if not ch.ids:
            continue
        now = time.perf_counter()
        if r.t_first is None:
            r.t_first = now
            r.first_ids = len(ch.ids)
        else:
            r.itl += [(now - r.t_last) / len(ch.ids)] * len(ch.ids)
        r.t_last = now
    res = await st.result()
    r.t_done = time.perf_counter()
    r.tokens = len(res.ids)
    r.stats = dict(res.stats)
    return r


async def round_(address, n_clients, prompts, requests, max_tokens, temperature):
    """N clients at once; -> (wall seconds, [Req])."""
    async def one_client(i):
        async with mtpd_client.AsyncClient(address) as c:
            async with c.session() as s:
                out = []
                for j in range(requests):
                    p = prompts[(i + j * n_clients) % len(prompts)]
                    out.append(await stream_one(c, s.id, p, max_tokens, temperature,
                                                seed=1000 * i + j))
                return out

    t0 = time.perf_counter()
    per = await asyncio.gather(*[one_client(i) for i in range(n_clients)])
    wall = time.perf_counter() - t0
    return wall, [r for rs in per for r in rs]


def summarize(wall, reqs):
    toks = sum(r.tokens for r in reqs)
    ttft = [r.t_first - r.t_send for r in reqs if r.t_first is not None]
    itl = [x for r in reqs for x in r.itl]
    acc = [r.stats.get("mean_accepted_length") for r in reqs
           if r.stats.get("mean_accepted_length") is not None]
    return {"tokens": toks, "wall": wall, "tps": toks / wall if wall else 0.0,
            "ttft50": pct(ttft, 50), "ttft99": pct(ttft, 99),
            "itl50": pct(itl, 50), "itl99": pct(itl, 99),
            "mal": statistics.mean(acc) if acc else float("nan")}


def offline_run(args, prompt):
    cmd = [args.bin, "generate", "--model", args.model, "--prompt", prompt,
           "--max-tokens", str(args.max_tokens), "--ignore-eos", "--json",
           "--draft-tokens", "auto", "--threads", str(args.threads)]
    if args.device:
        cmd += ["--device", args.device]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout)


def serve_help(binary):
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True)
    return r.stdout + r.stderr


def detect_nobatch(help_text):
    """Options that make the daemon run one spec_step per session, if its
    --help shows a switch for it."""
    for pat, val in ((r"--no-batching\b", None), (r"--max-batch\b", "1"),
                     (r"--batch\b", "off"), (r"--no-batch\b", None)):
        m = re.search(pat, help_text)
        if m:
            return [m.group(0)] + ([val] if val else [])
    return None


def rss(d):
    return d.rss_bytes()


def ms(x):
    return f"{1e3 * x:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", "--binary", default=os.environ.get("MTPD_BIN",
                                                   os.path.join(ROOT, "build", "mtpd")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "mtpd-code-small"))
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--modes", default="greedy,t0.7")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="per client and round")
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--prompt-chars", type=int, default=400,
                    help="load runs use the first CHARS of each code prompt (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", help="mtpd's --device for the daemon and the "
                    "offline runs (auto, cpu, cuda, cuda:N; default: auto)")
    ap.add_argument("--serve-args", default="", help="extra `mtpd serve` options")
    ap.add_argument("--nobatch-args", default="auto",
                    help="serve options that turn cross-session batching off "
                         "('auto': from serve --help; 'none': skip)")
    ap.add_argument("--reps", type=int, default=3,
                    help="runs per prompt of the single-client comparison (fastest counts)")
    ap.add_argument("--edit-history", type=int, default=1500)
    ap.add_argument("--edit-steps", type=int, default=12)
    ap.add_argument("--idle-sessions", type=int, default=16)
    ap.add_argument("--soak", type=int, default=0, metavar="SECONDS",
                    help="only the soak: the largest client count streaming for "
                         "SECONDS (greedy and T=0.7 alternating), RSS every 10 s")
    ap.add_argument("--http-vs-msgpack", action="store_true",
                    help="only the same streaming load through HTTP and msgpack-rpc "
                         "side by side (tools/bench_http.py, from the http branch)")
    ap.add_argument("--out", help="also write the tables to this file")
    args = ap.parse_args(argv)

    why = serve_missing(args.bin)
    if why:
        sys.exit(f"bench_daemon: {why}")
    help_text = serve_help(args.bin)
    base_args = args.serve_args.split()
    if "--threads" in help_text and "--threads" not in base_args:
        base_args += ["--threads", str(args.threads)]
    if args.device and "--device" not in base_args:
        base_args += ["--device", args.device]
    full = [p for _, p in code_prompts(args.n_prompts)]
    prompts = [p[:args.prompt_chars] if args.prompt_chars else p for p in full]
    lines = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    def log(s):
        print(s, file=sys.stderr, flush=True)

    clients = [int(x) for x in args.clients.split(",")]
    modes = args.modes.split(",")
    if args.http_vs_msgpack:
        import tempfile
        try:
            from tools.bench_http import compare
        except ImportError:
            sys.exit("bench_daemon: --http-vs-msgpack needs tools/bench_http.py")
        os.environ["MTPD_BIN"] = args.bin
        compare(prompts, clients, args.max_tokens, args.threads,
                tempfile.mkdtemp(prefix="bench_daemon"))
        return 0
    if args.soak:
        d = Daemon(args.bin, *base_args, model=args.model)
        try:
            samples = asyncio.run(_soak(d, prompts, max(clients), args.max_tokens,
                                        args.soak))
        finally:
            d.stop()
            d.cleanup()
        out(f"# soak: {max(clients)} clients, {args.soak} s, {args.max_tokens} tokens per "
            "request, mtpd serve " + " ".join(base_args) + "\n")
        out("| s | requests done | RSS KiB |\n|---:|---:|---:|")
        for t, n, r in samples:
            out(f"| {t:.0f} | {n} | {r // 1024} |")
        warm = samples[min(1, len(samples) - 1)][2]
        out(f"\nRSS growth after the first 10 s: {100.0 * (samples[-1][2] - warm) / warm:+.1f}%")
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
        return 0
    d = Daemon(args.bin, *base_args, model=args.model)
    try:
        with mtpd_client.Client(d.address) as c:
            hello = c.hello()
            c.generate(prompts[0], max_tokens=8)  # warm-up
        out(f"# bench_daemon {time.strftime('%Y-%m-%d %H:%M')}\n")
        out(f"model {hello['model'].get('name')} ({os.path.relpath(args.model, ROOT)}), "
            f"mtpd serve {' '.join(base_args)}, {os.cpu_count()} CPUs (shared), "
            f"{args.max_tokens} tokens per request, {args.requests} requests per client, "
            f"{len(prompts)} held-out code prompts"
            f"{f' (first {args.prompt_chars} chars)' if args.prompt_chars else ''}, "
            "draft tokens auto. Load average at the start "
            f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min): the machine is "
            "shared, compare rows of one run only.\n")

        # 1. concurrency
        res = {}
        for mode in modes:
            temp = 0.0 if mode == "greedy" else float(mode[1:])
            for n in clients:
                wall, reqs = asyncio.run(round_(d.address, n, prompts, args.requests,
                                                args.max_tokens, temp))
                res[(mode, n)] = summarize(wall, reqs)
                log(f"[concurrency] {mode} N={n}: {res[(mode, n)]['tps']:.1f} tok/s")
        out("## Concurrent streaming clients\n")
        out("| sampling | clients | tokens/s (aggregate) | vs 1 client | TTFT p50 ms "
            "| TTFT p99 ms | ITL p50 ms | ITL p99 ms | mean accepted length |")
        out("|---|---|---|---|---|---|---|---|---|")
        for mode in modes:
            one = res.get((mode, clients[0]))
            for n in clients:
                s = res[(mode, n)]
                out(f"| {mode} | {n} | {s['tps']:.1f} | {s['tps'] / one['tps']:.2f}x | "
                    f"{ms(s['ttft50'])} | {ms(s['ttft99'])} | {ms(s['itl50'])} | "
                    f"{ms(s['itl99'])} | {s['mal']:.2f} |")

        # 2. single-client stream against offline: per prompt and path the
        # fastest of --reps runs (the machine is shared: load only adds time)
        best = {}
        for rep in range(args.reps):
            for i, p in enumerate(prompts[:8]):
                st = offline_run(args, p)["stats"]
                cand = {"e2e_t": st["prefill_seconds"] + st["decode_seconds"],
                        "e2e_n": st["generated_tokens"], "dec_t": st["decode_seconds"],
                        "dec_n": st["generated_tokens"] - 1}
                if ("off", i) not in best or cand["e2e_t"] < best[("off", i)]["e2e_t"]:
                    best[("off", i)] = cand
                r = asyncio.run(_single(d.address, p, args.max_tokens))
                cand = {"e2e_t": r.t_done - r.t_send, "e2e_n": r.tokens,
                        "cli_t": r.t_last - r.t_first, "cli_n": r.tokens - r.first_ids,
                        "dec_t": r.stats.get("decode_seconds", 0.0),
                        "dec_n": r.stats.get("generated_tokens", 1) - 1}
                if ("d", i) not in best or cand["e2e_t"] < best[("d", i)]["e2e_t"]:
                    best[("d", i)] = cand

        def tot(kind, key):
            return sum(v[key] for (k, _), v in best.items() if k == kind)
        off_e2e_t, off_e2e_n = tot("off", "e2e_t"), tot("off", "e2e_n")
        off_dec_t, off_dec_n = tot("off", "dec_t"), tot("off", "dec_n")
        d_e2e_t, d_e2e_n = tot("d", "e2e_t"), tot("d", "e2e_n")
        d_cli_t, d_cli_n = tot("d", "cli_t"), tot("d", "cli_n")
        d_srv_t, d_srv_n = tot("d", "dec_t"), tot("d", "dec_n")
        off_e2e = off_e2e_n / off_e2e_t
        d_e2e = d_e2e_n / d_e2e_t
        out("\n## One streaming client against `mtpd generate` offline (greedy, same "
            f"8 prompts, alternated, fastest of {args.reps} per prompt and path)\n")
        out("end to end: generated tokens over prefill + decode (offline: its own timers; "
            "daemon: send to final response, seen by the client). Decode: tokens after the "
            "first over the time after the first (daemon: its stats, and as the client sees "
            "the chunks).\n")
        out("| path | end-to-end tokens/s | ratio | decode tokens/s | decode tokens/s "
            "(client-observed) |")
        out("|---|---|---|---|---|")
        out(f"| mtpd generate (offline) | {off_e2e:.1f} | 1.00 | {off_dec_n / off_dec_t:.1f} "
            "| - |")
        out(f"| mtpd serve, 1 client stream | {d_e2e:.1f} | {d_e2e / off_e2e:.2f} | "
            f"{d_srv_n / d_srv_t if d_srv_t else float('nan'):.1f} | "
            f"{d_cli_n / d_cli_t if d_cli_t else float('nan'):.1f} |")

        # 4. editing session, 5. RSS per idle session (same daemon)
        edit = asyncio.run(_editing(d.address, full, args, cold=True))
        nore = None
        if "--no-prefix-reuse" in help_text:
            d3 = Daemon(args.bin, *(base_args + ["--no-prefix-reuse"]), model=args.model)
            try:
                nore = asyncio.run(_editing(d3.address, full, args, cold=False))
            finally:
                d3.stop()
                d3.cleanup()
        out("\n## Editing session: prompt grows 4 tokens per request over a "
            f"{edit['history']}-token history (max_tokens 8)\n")
        out("TTFT: send to the first chunk with ids. Ratio: against the cold request.\n")
        out("| prefix reuse | TTFT p50 ms | TTFT p99 ms | prompt tokens reused (mean) "
            "| ratio (p50) |")
        out("|---|---|---|---|---|")
        cold50 = edit["cold50"]
        out(f"| off: no session (cold) | {ms(cold50)} | {ms(edit['cold99'])} | "
            f"{edit['cold_reused']:.0f} | 1.00 |")
        if nore:
            out(f"| off: same session, daemon --no-prefix-reuse | {ms(nore['warm50'])} | "
                f"{ms(nore['warm99'])} | {nore['warm_reused']:.0f} | "
                f"{nore['warm50'] / cold50:.3f} |")
        out(f"| on: one session | {ms(edit['warm50'])} | {ms(edit['warm99'])} | "
            f"{edit['warm_reused']:.0f} | {edit['warm50'] / cold50:.3f} |")

        idle = _idle_rss(d, prompts, args.idle_sessions)
        out("\n## Idle sessions\n")
        out("| sessions | tokens each | RSS before MiB | RSS after MiB | RSS per session KiB "
            "| KV bytes per session (session.info) KiB |")
        out("|---|---|---|---|---|---|")
        out(f"| {idle['n']} | {idle['tokens']} | {idle['before'] / 2**20:.1f} | "
            f"{idle['after'] / 2**20:.1f} | {idle['per'] / 1024:.0f} | "
            f"{idle['kv'] / 1024:.0f} |")
    finally:
        rc = d.stop()
        if rc != 0:
            log(f"mtpd serve exited {rc}:\n{d.log()[-4000:]}")
        d.cleanup()

    # 3. batching on/off
    nob = args.nobatch_args
    nob_list = (detect_nobatch(help_text) if nob == "auto"
                else None if nob == "none" else nob.split())
    out("\n## Cross-session batching (greedy)\n")
    if not nob_list:
        out("not measured: `mtpd serve --help` shows no switch that turns cross-session "
            "batching off (pass --nobatch-args)")
    else:
        n = max(clients)
        d2 = Daemon(args.bin, *(base_args + nob_list), model=args.model)
        try:
            wall, reqs = asyncio.run(round_(d2.address, n, prompts, args.requests,
                                            args.max_tokens, 0.0))
            off = summarize(wall, reqs)
        finally:
            d2.stop()
            d2.cleanup()
        on = res[("greedy", n)]
        one = res[("greedy", clients[0])]
        out(f"| batching | clients | tokens/s | vs {clients[0]} client(s) | on / off |")
        out("|---|---|---|---|---|")
        out(f"| on | {clients[0]} | {one['tps']:.1f} | 1.00x | |")
        out(f"| off ({' '.join(nob_list)}) | {n} | {off['tps']:.1f} | "
            f"{off['tps'] / one['tps']:.2f}x | 1.00 |")
        out(f"| on | {n} | {on['tps']:.1f} | {on['tps'] / one['tps']:.2f}x | "
            f"{on['tps'] / off['tps']:.2f}x |")
    out("\nSoak: not part of this run (--soak SECONDS). Load average at "
        f"the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}.")

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


async def _single(address, prompt, max_tokens):
    async with mtpd_client.AsyncClient(address) as c:
        return await stream_one(c, None, prompt, max_tokens, 0.0, 0)


async def _editing(address, prompts, args, cold):
    """TTFT of an editor's requests: the first history+4i ids of a long code
    text, max_tokens 8, in one session (after the history was cached), and
    with cold: the same request without a session, alternated."""
    async with mtpd_client.AsyncClient(address) as c:
        text = "".join(prompts)
        ids = await c.tokenize(text)
        while len(ids) < args.edit_history + 4 * args.edit_steps + 8:
            text += text
            ids = await c.tokenize(text)
        base = args.edit_history
        warm, colds, wr, cr = [], [], [], []
        async with c.session() as s:
            await s.generate(ids=ids[:base], max_tokens=1)  # the history is cached
            for i in range(1, args.edit_steps + 1):
                p = ids[:base + 4 * i]
                runs = [(s.id, warm, wr)] + ([(None, colds, cr)] if cold else [])
                for sess, ttft, reused in runs:
                    t0 = time.perf_counter()
                    st = await c.generate(ids=p, session=sess, max_tokens=8, stream=True,
                                          ignore_eos=True)
                    t_first = None
                    async for ch in st:
                        if ch.ids and t_first is None:
                            t_first = time.perf_counter()
                    r = await st.result()
                    ttft.append((t_first or time.perf_counter()) - t0)
                    reused.append(r.stats.get("prompt_tokens_reused", 0))
        return {"history": base, "warm50": pct(warm, 50), "warm99": pct(warm, 99),
                "cold50": pct(colds, 50), "cold99": pct(colds, 99),
                "warm_reused": statistics.mean(wr),
                "cold_reused": statistics.mean(cr) if cr else float("nan")}


async def _soak(d, prompts, n_clients, max_tokens, seconds):
    """n_clients streaming one request after another for `seconds`, each in
    its own session; -> [(elapsed s, requests done, RSS bytes)] every 10 s."""
    stop_at = time.perf_counter() + seconds
    done = [0]

    async def one_client(i):
        async with mtpd_client.AsyncClient(d.address) as c:
            async with c.session() as s:
                r = 0
                while time.perf_counter() < stop_at:
                    await stream_one(c, s.id, prompts[(i + r) % len(prompts)], max_tokens,
                                     0.7 if r % 2 else 0.0, seed=r)
                    r += 1
                    done[0] += 1

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(one_client(i)) for i in range(n_clients)]
    samples = []
    while not all(t.done() for t in tasks):
        samples.append((time.perf_counter() - t0, done[0], rss(d)))
        await asyncio.wait(tasks, timeout=10)
    await asyncio.gather(*tasks)
    samples.append((time.perf_counter() - t0, done[0], rss(d)))
    return samples


def _idle_rss(d, prompts, n):
    with mtpd_client.Client(d.address) as c:
        ids = c.tokenize("".join(prompts))[:512]
        time.sleep(0.5)
        before = rss(d)
        sids = []
        for i in range(n):
            sid = c.session_open()
            c.generate(ids=ids[:len(ids) - i], session=sid, max_tokens=1)
            sids.append(sid)
        time.sleep(0.5)
        after = rss(d)
        kv = statistics.mean(c.session_info(s)["kv_bytes"] for s in sids)
        for s in sids:
            c.session_close(s)
    return {"n": n, "tokens": len(ids), "before": before, "after": after,
            "per": (after - before) / n, "kv": kv}


if __name__ == "__main__":
    sys.exit(main())
