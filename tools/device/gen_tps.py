#!/usr/bin/env python3
"""Decode tokens/s of `mtpd generate --json` for draft lengths k and batch
sizes, greedy, one model: batch 1 in one process with --compare-k (every
k stepped in turn, so drift hits all alike), batch B > 1 with
--n-samples B (B copies of the prompt advanced together), one process per
k. Throughput = generated tokens after the first of each sequence / the
decode seconds of the step loop (spec_stats: each pass's wall time shared
among its sequences, so the sum is the loop's wall time).

    python3 tools/device/gen_tps.py --mtpd BIN --model DIR --device cuda
        [--batches 1,8,64] [--ks 0,1,2,3,4,auto] [--max-tokens 128]
        [--budget S] [--json OUT]

The prompt: a code text through the model's tokenizer when it has one
(tokenizer.json), else 64 fixed ids."""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def prompt_ids(mtpd, model, n_max=200):
    if os.path.exists(os.path.join(model, "tokenizer.json")):
        with open(os.path.join(ROOT, "tools", "make_synthetic.py")) as f:
            text = f.read()[:1500]
        r = subprocess.run([mtpd, "tokenize", "--model", model],
                           input=json.dumps({"text": text}) + "\n",
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.strip():
            ids = json.loads(r.stdout.splitlines()[0])["ids"]
            if ids:
                return ids[:n_max]
    cfg = json.load(open(os.path.join(model, "config.json")))
    v = int(cfg["vocab_size"])
    return [(7 + 13 * i) % v for i in range(64)]


def tps(stats, n_seqs):
    gen = stats.get("generated_tokens", 0) - n_seqs
    sec = stats.get("decode_seconds", 0.0)
    return gen / sec if sec > 0 and gen > 0 else 0.0


def run(cmd, timeout):
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s", time.monotonic() - t0
    wall = time.monotonic() - t0
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["rc %d" %
                                                      r.returncode])[-1], wall
    return json.loads(r.stdout), None, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtpd", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", help="label in the results (default: the "
                    "model directory's name)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--ks", default="0,1,2,3,4,auto")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    name = a.name or os.path.basename(os.path.normpath(a.model))
    t_end = time.monotonic() + a.budget
    ids = ",".join(str(i) for i in prompt_ids(a.mtpd, a.model))
    r = subprocess.run([a.mtpd, "info", "--model", a.model, "--device",
                        a.device], capture_output=True, text=True,
                       timeout=120)
    info = json.loads(r.stdout) if r.returncode == 0 else {}
    ks = a.ks.split(",")
    base = [a.mtpd, "generate", "--model", a.model, "--ids", ids,
            "--max-tokens", str(a.max_tokens), "--ignore-eos",
            "--device", a.device, "--threads", str(min(a.threads, 16)),
            "--ctx", str(len(ids.split(",")) + a.max_tokens + 8)]
    rows = []

    def left():
        return t_end - time.monotonic()

    def add(batch, k, stats, err, wall, n_seqs, device=None):
        row = {"model": name, "batch": batch, "k": k, "device": device,
               "wall_s": round(wall, 2), "error": err,
               "active_bytes_per_token": info.get("active_bytes_per_token"),
               "weight_bytes": info.get("weight_bytes")}
        if stats:
            row.update(tok_s=round(tps(stats, n_seqs), 1),
                       accept=stats.get("acceptance_rate"),
                       mean_len=stats.get("mean_accepted_length"),
                       passes=stats.get("verify_passes"))
        rows.append(row)
        print(f"gen_tps: {name} batch {batch} k {k}: "
              + (f"{row['tok_s']} tok/s" if stats else f"error: {err}"),
              flush=True)

    for b in [int(x) for x in a.batches.split(",")]:
        if left() < 5:
            add(b, "*", None, "no time left", 0.0, b)
            continue
        if b == 1:
            out, err, wall = run(base + ["--compare-k", ",".join(ks)],
                                 min(left(), 120))
            if out is None:
                for k in ks:
                    add(1, k, None, err, wall, 1)
                continue
            for c in out["compare"]:
                add(1, c["k"], c["stats"], None, wall, 1,
                    out.get("device"))
            continue
        for k in ks:
            if left() < 5:
                add(b, k, None, "no time left", 0.0, b)
                continue
            out, err, wall = run(base + ["--n-samples", str(b),
                                         "--draft-tokens", k],
                                 min(left(), 90))
            add(b, k, out["stats"] if out else None, err, wall, b,
                out.get("device") if out else None)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
