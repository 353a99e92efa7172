#!/usr/bin/env python3
"""HTTP vs MessagePack-RPC on the same daemon (issue 12's benchmark):
the same streaming workload (N concurrent clients, held-out code
prompts, greedy, 3 draft tokens, ignore_eos) through
POST /v1/completions (SSE) and through msgpack-rpc `generate`
(stream: true), in one run, against one `mtpd serve --http` process.
Aggregate tokens/s and time to first token side by side.

  python3 tools/bench_daemon.py --http-vs-msgpack [--clients 1,4,16]
  python3 tools/bench_http.py [--clients 1,4,16] [--max-tokens 64] [--rounds 3]

Each row is paired rounds (msgpack then HTTP, then the other order, ...):
the medians of each protocol's tokens/s and of the per-round ratios, so
drift on a shared machine hits both alike. The daemon's CPU time per
generated token (from /proc) shows the protocol's cost even when other
processes make the wall-clock numbers noisy. msgpack-rpc goes over the
daemon's Unix socket (its default transport), HTTP over loopback TCP. HTTP conversations are off
(--http-conversations 0) so that no run reuses another's prefix.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "daemon"))

from http_helpers import HttpDaemon  # noqa: E402
from serve_helpers import MODEL  # noqa: E402


K = 3  # draft tokens, fixed: both protocols run the same passes (auto
       # picks k from measured timings, which differ run to run)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def http_one(port, prompt, max_tokens, out):
    """One streamed completion over HTTP: (tokens, ttft, wall). A raw
    socket and no JSON parsing until the usage chunk at the end, so the
    client's own CPU (it shares the machine with the daemon) stays below
    the msgpack client's."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "ignore_eos": True, "stream": True,
                       "draft_tokens": K,
                       "stream_options": {"include_usage": True}}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=600)
    t0 = time.time()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: b\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n" % len(body) + body)
    buf, first = b"", None
    while True:
        data = s.recv(1 << 16)
        if not data:
            break
        if first is None and b"data: {" in data:
            first = time.time() - t0  # chunks carry text (no provenance)
        buf += data
        if b"data: [DONE]" in buf[-64:]:
            break
    s.close()
    assert b" 200 OK" in buf[:20], buf[:200]
    usage = buf[buf.rindex(b"data: {\"id\""):].split(b"\n", 1)[0][6:]
    n = json.loads(usage)["usage"]["completion_tokens"]
    out.append((n, first, time.time() - t0))


def rpc_one(d, prompt, max_tokens, out):
    """The same request over msgpack-rpc: (tokens, ttft, wall)."""
    c = d.client(timeout=600)
    t0 = time.time()
    msgid = c.send("generate", {"prompt": prompt, "max_tokens": max_tokens,
                                "temperature": 0, "ignore_eos": True,
                                "draft_tokens": K, "stream": True})
    first, n = None, 0
    while True:
        m = c.recv()
        if m[0] == 2 and first is None and m[2][0]["text"]:
            first = time.time() - t0
        elif m[0] == 1 and m[1] == msgid:
            assert m[2] is None, m[2]
            n = len(m[3]["ids"])
            break
    out.append((n, first, time.time() - t0))
    c.close()


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(kind, d, prompts, n_clients, max_tokens):
    out, threads = [], []
    c0 = cpu_s(d.proc.pid)
    t0 = time.time()
    for i in range(n_clients):
        p = prompts[i % len(prompts)]
        t = threading.Thread(
            target=http_one if kind == "http" else rpc_one,
            args=((d.port if kind == "http" else d), p, max_tokens, out))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    wall = time.time() - t0
    tokens = sum(o[0] for o in out)
    return {"tps": tokens / wall,
            "cpu_ms": 1e3 * (cpu_s(d.proc.pid) - c0) / max(tokens, 1),
            "ttft": [o[1] for o in out if o[1] is not None]}


def compare(prompts, clients, max_tokens, threads, tmp, rounds=3):
    d = HttpDaemon(tmp, "--threads", str(threads), "--http-conversations",
                   "0")
    try:
        run("rpc", d, prompts, 2, 8)  # warm up both paths
        run("http", d, prompts, 2, 8)
        print(f"# HTTP vs msgpack-rpc: {MODEL}, {threads} threads, "
              f"{max_tokens} tokens per request, greedy, draft tokens {K}, "
              f"{rounds} paired rounds per row (order alternating), load "
              f"average {os.getloadavg()[0]:.1f}\n")
        print("| clients | msgpack tok/s | HTTP tok/s | HTTP / msgpack "
              "(median of rounds) | msgpack TTFT p50 / p99 ms | "
              "HTTP TTFT p50 / p99 ms | daemon CPU ms per token, msgpack "
              "/ HTTP |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in clients:
            rs, hs, ratios = [], [], []
            for i in range(rounds):
                order = ("rpc", "http") if i % 2 == 0 else ("http", "rpc")
                got = {k: run(k, d, prompts, n, max_tokens) for k in order}
                rs.append(got["rpc"])
                hs.append(got["http"])
                ratios.append(got["http"]["tps"] / got["rpc"]["tps"])
            tr = statistics.median(r["tps"] for r in rs)
            th = statistics.median(h["tps"] for h in hs)
            ttr = sum((r["ttft"] for r in rs), [])
            tth = sum((h["ttft"] for h in hs), [])
            print(f"| {n} | {tr:.1f} | {th:.1f} | "
                  f"{statistics.median(ratios):.3f} | "
                  f"{1e3 * pct(ttr, 50):.0f} / {1e3 * pct(ttr, 99):.0f} | "
                  f"{1e3 * pct(tth, 50):.0f} / {1e3 * pct(tth, 99):.0f} | "
                  f"{statistics.median(r['cpu_ms'] for r in rs):.2f} / "
                  f"{statistics.median(h['cpu_ms'] for h in hs):.2f} |",
                  flush=True)
    finally:
        d.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-chars", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mtpd"))
    args = ap.parse_args()
    os.environ["MTPD_BIN"] = args.binary
    from tools.bench_spec import code_prompts
    clients = [int(x) for x in args.clients.split(",")]
    prompts = [p[:args.prompt_chars] for _, p in code_prompts(max(clients))]
    compare(prompts, clients, args.max_tokens, args.threads,
            tempfile.mkdtemp(prefix="bench_http"), args.rounds)


if __name__ == "__main__":
    main()
