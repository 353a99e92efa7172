#!/usr/bin/env python3
"""Benchmark of `mtpd serve` (issue 10): N concurrent streaming clients on
held-out code prompts, and in the same run the baselines the daemon is
judged against.

  python3 tools/bench_daemon.py [--clients 1,4,16] [--max-tokens 64]

Tables (markdown on stdout):
 1. per (clients, temperature): aggregate tokens/s, time to first token and
    inter-token latency p50/p99 (draft tokens auto);
 2. (a) one client streaming vs `mtpd generate` offline, same prompts;
 3. (b) cross-session batching on vs off (--no-batching: one spec_step per
    session) at the largest client count vs one client;
 4. (c) an editing session (1500-token history, a few tokens added per
    request): time to first token with prefix reuse on vs off;
 5. daemon RSS per idle session.
Each daemon runs in its own process with --threads (default 2). Timings
on a shared machine are noisy: compare rows of the same run only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "daemon"))

from serve_helpers import MODEL, Daemon  # noqa: E402
from tools.bench_spec import code_prompts  # noqa: E402


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def stream_one(d, prompt, max_tokens, temperature, seed, out):
    """One client: one streamed request; appends (tokens, ttft, itls,
    wall) to out."""
    c = d.client(timeout=600)
    t0 = time.time()
    msgid = c.send("generate", {"prompt": prompt, "max_tokens": max_tokens,
                                "temperature": temperature, "seed": seed,
                                "ignore_eos": True, "stream": True})
    first, last, itls, n = None, None, [], 0
    while True:
        m = c.recv()
        now = time.time()
        if m[0] == 2:
            k = len(m[2][0]["ids"])
            if first is None:
                first = now - t0
            elif k:
                # a chunk of k tokens: k inter-token gaps of equal share
                itls += [(now - last) / k] * k
            if k:
                last = now
            n += k
        elif m[0] == 1 and m[1] == msgid:
            assert m[2] is None, m[2]
            break
    out.append((n, first, itls, time.time() - t0))
    c.close()


def run_clients(d, prompts, n_clients, max_tokens, temperature):
    out, threads = [], []
    t0 = time.time()
    for i in range(n_clients):
        t = threading.Thread(target=stream_one, args=(
            d, prompts[i % len(prompts)], max_tokens, temperature, i, out))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    wall = time.time() - t0
    tokens = sum(o[0] for o in out)
    return {"tps": tokens / wall, "ttft": [o[1] for o in out],
            "itl": sum((o[2] for o in out), []), "wall": wall}


def offline_tps(binary, prompt, max_tokens, threads):
    r = subprocess.run([binary, "generate", "--model", MODEL, "--prompt",
                        prompt, "--max-tokens", str(max_tokens),
                        "--ignore-eos", "--json", "--threads", str(threads)],
                       capture_output=True, check=True, timeout=600)
    st = json.loads(r.stdout)["stats"]
    return st["generated_tokens"], st["prefill_seconds"] + st["decode_seconds"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def editing_session(d, prompt_ids, grow, requests):
    """TTFT of requests that each add `grow` tokens to a long history
    (8 tokens generated per request, as an editor's completion would)."""
    c = d.client(timeout=600)
    sess = c.call("session.open")[1]["session"]
    ids = list(prompt_ids)
    ttfts = []
    for r in range(requests):
        t0 = time.time()
        msgid = c.send("generate", {"session": sess, "ids": ids,
                                    "max_tokens": 8, "stream": True})
        first = None
        while True:
            m = c.recv()
            if m[0] == 2 and first is None:
                first = time.time() - t0
            if m[0] == 1 and m[1] == msgid:
                err, res = m[2], m[3]
                break
        assert err is None, err
        ttfts.append(first)
        ids = ids + res["ids"] + prompt_ids[r * grow % 500:][:grow]
    c.close()
    return ttfts[1:]  # the first request is cold in both modes


def soak(d, prompts, n_clients, max_tokens, seconds):
    """n_clients streaming one request after another for `seconds`, each in
    its own session; returns [(elapsed s, RSS KiB)] sampled every 10 s."""
    stop_at = time.time() + seconds
    samples = []

    def client(i):
        c = d.client(timeout=600)
        sess = c.call("session.open")[1]["session"]
        r = 0
        while time.time() < stop_at:
            c.call("generate", {"session": sess, "prompt":
                                prompts[(i + r) % len(prompts)],
                                "max_tokens": max_tokens,
                                "temperature": 0.7 if r % 2 else 0.0,
                                "stream": True})
            r += 1
        c.close()

    threads = [threading.Thread(target=client, args=(i,))
               for i in range(n_clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append((time.time() - t0, rss_kib(d.proc.pid)))
        time.sleep(10)
    for t in threads:
        t.join()
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-chars", type=int, default=400,
                    help="load runs: the first CHARS of each code prompt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--soak", type=int, default=0, metavar="SECONDS",
                    help="only the soak: the largest client count streaming "
                    "for SECONDS, RSS every 10 s")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mtpd"))
    args = ap.parse_args()
    os.environ["MTPD_BIN"] = args.binary
    clients = [int(x) for x in args.clients.split(",")]
    full = [p for _, p in code_prompts(max(clients))]
    prompts = [p[:args.prompt_chars] for p in full]
    tmp = tempfile.mkdtemp(prefix="bench_daemon")

    def daemon(*extra):
        return Daemon(tmp, "--threads", str(args.threads), *extra)

    if args.soak:
        d = daemon()
        samples = soak(d, prompts, max(clients), args.max_tokens, args.soak)
        d.stop()
        print(f"# soak: {max(clients)} clients, {args.soak} s\n")
        print("| s | RSS KiB |\n|---:|---:|")
        for t, r in samples:
            print(f"| {t:.0f} | {r} |")
        warm = samples[min(1, len(samples) - 1)][1]
        print(f"\nRSS growth after the first 10 s: "
              f"{100.0 * (samples[-1][1] - warm) / warm:+.1f}%")
        return

    print(f"# bench_daemon: {MODEL}, {args.threads} threads, "
          f"{args.max_tokens} tokens per request, draft tokens auto, "
          f"{len(prompts)} held-out code prompts (first {args.prompt_chars} "
          f"chars)\n")
    print("| clients | T | agg tok/s | TTFT p50 ms | TTFT p99 ms | "
          "ITL p50 ms | ITL p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    d = daemon()
    res = {}
    for temp in (0.0, 0.7):
        for n in clients:
            r = run_clients(d, prompts, n, args.max_tokens, temp)
            res[(n, temp)] = r
            print(f"| {n} | {temp} | {r['tps']:.1f} | "
                  f"{1e3 * pct(r['ttft'], 50):.0f} | "
                  f"{1e3 * pct(r['ttft'], 99):.0f} | "
                  f"{1e3 * pct(r['itl'], 50):.1f} | "
                  f"{1e3 * pct(r['itl'], 99):.1f} |", flush=True)

    # (a) protocol overhead: one client vs offline, same prompts
    on = [run_clients(d, [p], 1, args.max_tokens, 0.0) for p in prompts[:4]]
    off = [offline_tps(args.binary, p, args.max_tokens, args.threads)
           for p in prompts[:4]]
    d_tps = sum(args.max_tokens for _ in on) / sum(r["wall"] for r in on)
    o_tps = sum(t for t, _ in off) / sum(s for _, s in off)
    print("\n| (a) one client, 4 prompts | tok/s |\n|---|---:|")
    print(f"| mtpd generate offline (compute time) | {o_tps:.1f} |")
    print(f"| mtpd serve, streamed (request wall time) | {d_tps:.1f} |")
    print(f"| ratio | {d_tps / o_tps:.2f} |")

    # RSS per idle session
    base = rss_kib(d.proc.pid)
    c = d.client()
    for i in range(32):
        s = c.call("session.open")[1]["session"]
        c.call("generate", {"session": s, "prompt": prompts[i % len(prompts)],
                            "max_tokens": 16})
    grown = rss_kib(d.proc.pid)
    c.close()
    d.stop()

    # (b) batching on vs off
    nmax = max(clients)
    d = daemon("--no-batching")
    r_off = run_clients(d, prompts, nmax, args.max_tokens, 0.0)
    d.stop()
    r_on = res[(nmax, 0.0)]
    r_one = res[(min(clients), 0.0)]
    print(f"\n| (b) {nmax} clients, greedy | agg tok/s | vs 1 client |")
    print("|---|---:|---:|")
    print(f"| 1 client | {r_one['tps']:.1f} | 1.00 |")
    print(f"| batching on (one spec_step for all) | {r_on['tps']:.1f} | "
          f"{r_on['tps'] / r_one['tps']:.2f} |")
    print(f"| batching off (one spec_step per session) | {r_off['tps']:.1f}"
          f" | {r_off['tps'] / r_one['tps']:.2f} |")

    # (c) editing session: prefix reuse on vs off
    d = daemon()
    c = d.client()
    text = "".join(full)
    ids = c.call("tokenize", {"text": text})[1]["ids"][:1500]
    c.close()
    t_on = editing_session(d, ids, 4, 6)
    d.stop()
    d = daemon("--no-prefix-reuse")
    t_off = editing_session(d, ids, 4, 6)
    d.stop()
    print("\n| (c) editing session, 1500-token history, +4 tokens per request"
          " | TTFT median ms |\n|---|---:|")
    print(f"| prefix reuse off (cold) | {1e3 * statistics.median(t_off):.0f} |")
    print(f"| prefix reuse on | {1e3 * statistics.median(t_on):.0f} |")
    print(f"| on / off | {statistics.median(t_on) / statistics.median(t_off):.3f} |")

    print(f"\nRSS: {base} KiB after the load runs; +{(grown - base) / 32:.0f} "
          f"KiB per idle session (32 sessions of ~{len(prompts[0]) // 4}+16 "
          f"tokens, KV pages included)")


if __name__ == "__main__":
    main()
