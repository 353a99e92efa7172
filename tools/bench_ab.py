#!/usr/bin/env python3
"""bench_ab.py - interleaved A/B of two builds of one benchmark.

Runs the same benchmark command from two build directories alternately
(A, B, A, B, ...) for --rounds rounds, so both see the same machine load,
and prints a markdown table of the best time per row key of each build and
their ratio.

    tools/bench_ab.py --a /tmp/base/build --b build --rounds 3 \
        --key-col 0 --val-col 1 -- bench_forward --model DIR --t 1,4,16

The command's first word is looked up in each build directory. Rows are
the lines of the command's markdown tables (bench_forward) or of its
whitespace-separated table (bench_kernels: --key-col 0,1,2,3 --val-col 4);
a row's key is the given columns joined, its value the given column as a
float (lower is better). Rows whose value does not parse are skipped.
"""
import argparse
import os
import subprocess
import sys


def rows(out, key_cols, val_col):
    res = {}
    order = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
        else:
            cells = line.split()
        if len(cells) <= max(key_cols + [val_col]):
            continue
        try:
            v = float(cells[val_col])
        except ValueError:
            continue
        k = " ".join(cells[i] for i in key_cols)
        if k not in res:
            order.append(k)
        res[k] = v
    return order, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="baseline build directory")
    ap.add_argument("--b", required=True, help="new build directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--key-col", default="0")
    ap.add_argument("--val-col", type=int, default=1)
    ap.add_argument("--label-a", default="base")
    ap.add_argument("--label-b", default="new")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")
    key_cols = [int(c) for c in a.key_col.split(",")]
    best = {a.label_a: {}, a.label_b: {}}
    order = []
    for r in range(a.rounds):
        for label, d in ((a.label_a, a.a), (a.label_b, a.b)):
            exe = os.path.join(d, cmd[0])
            p = subprocess.run([exe] + cmd[1:], capture_output=True,
                               text=True)
            if p.returncode != 0:
                sys.stderr.write(p.stdout + p.stderr)
                sys.exit("%s failed (%d)" % (exe, p.returncode))
            o, res = rows(p.stdout, key_cols, a.val_col)
            order = order or o
            for k, v in res.items():
                b = best[label]
                b[k] = min(v, b.get(k, v))
    print("interleaved %d rounds, best of each: `%s`\n" %
          (a.rounds, " ".join(cmd)))
    print("| row | %s | %s | %s/%s |" % (a.label_a, a.label_b, a.label_b,
                                          a.label_a))
    print("|---|---|---|---|")
    for k in order:
        va, vb = best[a.label_a].get(k), best[a.label_b].get(k)
        if va is None or vb is None:
            continue
        print("| %s | %.3f | %.3f | %.3f |" % (k, va, vb, vb / va))


if __name__ == "__main__":
    main()
