#!/usr/bin/env python3
"""A/B of two bench_attention binaries (say, a build of the base commit
against the current one), run alternately so machine noise hits both
alike: A, B, A, B, ... for --rounds rounds. Each run prints its median ms
per forward for every (context, rows); this prints, per (context, rows)
and column, the median over the rounds of A and of B, and B / A.

  tools/bench_attention_ab.py A_BIN B_BIN --model DIR [--rounds 3]
      [--steps 100] [--ctx 1000,2000,3000] [--rows 1,3] [--threads 2]
      [--stat median|p10] [--cpu]
"""
import argparse
import statistics
import subprocess
import sys

COLS = ["heads ms", "positions ms", "f32 KV ms", "bf16 KV ms"]


def run(binary, a):
    cmd = [binary, "--model", a.model, "--threads", str(a.threads),
           "--steps", str(a.steps), "--ctx", a.ctx, "--rows", a.rows,
           "--stat", a.stat] + (["--cpu"] if a.cpu else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = {}
    for line in out.stdout.splitlines():
        f = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(f) == 8 and f[0].isdigit():
            res[(int(f[0]), int(f[1]))] = [float(f[i]) for i in (2, 3, 5, 6)]
    if not res:
        sys.exit(f"bench_attention_ab: no table from {binary}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a_bin")
    ap.add_argument("b_bin")
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--ctx", default="1000,2000,3000")
    ap.add_argument("--rows", default="1,3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stat", default="median", choices=["median", "p10"])
    ap.add_argument("--cpu", action="store_true",
                    help="CPU time of the calling thread, not wall time")
    a = ap.parse_args()
    runs = {"A": [], "B": []}
    for _ in range(a.rounds):
        runs["A"].append(run(a.a_bin, a))
        runs["B"].append(run(a.b_bin, a))
    print(f"A = {a.a_bin}, B = {a.b_bin}; model {a.model}, {a.threads} "
          f"threads; per cell the median over {a.rounds} alternating runs of "
          f"each binary's {a.stat} of {a.steps} forwards (ms, "
          f"{'CPU time of the calling thread' if a.cpu else 'wall time'})\n")
    head = "| context | rows |"
    for c in COLS:
        head += f" {c} A | {c} B | B / A |"
    print(head)
    print("|---|---|" + "---|---|---|" * len(COLS))
    for key in sorted(runs["A"][0]):
        line = f"| {key[0]} | {key[1]} |"
        for i in range(len(COLS)):
            ma = statistics.median(r[key][i] for r in runs["A"])
            mb = statistics.median(r[key][i] for r in runs["B"])
            line += f" {ma:.3f} | {mb:.3f} | {mb / ma:.2f} |"
        print(line)


if __name__ == "__main__":
    main()
