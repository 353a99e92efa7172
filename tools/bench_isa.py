#!/usr/bin/env python3
"""bench_isa.py - one model on several CPU code paths (MTPD_ISA), interleaved
(A B A B ...) so all see the same load: prefill, decode and verify-row cost.

    tools/bench_isa.py [--model models/mtpd-code-small] [--isas avx512,amx]
        [--rounds 3] [--threads 2] [--tokens 256] [--reps 2] [--out FILE.md]

Per round and path: decode tok/s at k=0 and with MTP auto (`mtpd generate
--json`, --tokens after a 96-token held-out prompt, greedy), prefill tok/s
(a 512-token prompt), cost(T)/cost(1) for T = 1..5 (tools/bench_forward);
each the best of --reps runs. Reports medians over rounds and the median of
the per-round ratios to the first path, and whether the paths' greedy
tokens agree (k=0 and MTP auto).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools import quant_eval  # noqa: E402


def run(cmd, isa, timeout=600):
    env = dict(os.environ, MTPD_ISA=isa)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed: MTPD_ISA={isa} {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def gen(mtpd, model, isa, ids, n, k, threads):
    out = run([mtpd, "generate", "--model", model, "--ids",
               ",".join(map(str, ids)), "--max-tokens", str(n),
               "--draft-tokens", str(k), "--ignore-eos", "--json",
               "--threads", str(threads)], isa)
    return json.loads(out.strip().splitlines()[-1])


def cost_ratios(bench, model, isa, threads):
    out = run([bench, "--model", model, "--threads", str(threads),
               "--t", "1,2,3,4,5", "--secs", "0.5"], isa)
    res = {}
    for line in out.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) >= 3 and c[0].isdigit():
            res[int(c[0])] = (float(c[1]), float(c[2]))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "mtpd-code-small"))
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--isas", default="avx512,amx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    mtpd = os.path.join(a.build, "mtpd")
    bench = os.path.join(a.build, "bench_forward")
    isas = a.isas.split(",")
    wins = quant_eval.windows(mtpd, a.model, n_windows=2, n_tokens=512, skip=200)
    prompt, long_prompt = wins[0][:96], wins[1][:512]

    keys = ("k0", "auto", "prefill")
    speed = {i: {k: [] for k in keys + ("cost",)} for i in isas}
    ratio = {i: {k: [] for k in keys} for i in isas}
    toks = {}
    for r in range(a.rounds):
        this = {}
        for isa in isas:
            best = {}
            for k, ids, n, dk, field in (
                    ("k0", prompt, a.tokens, 0, "decode_tokens_per_s"),
                    ("auto", prompt, a.tokens, "auto", "decode_tokens_per_s"),
                    ("prefill", long_prompt, 1, 0, "prefill_tokens_per_s")):
                outs = [gen(mtpd, a.model, isa, ids, n, dk, a.threads)
                        for _ in range(a.reps)]
                best[k] = max(o["stats"][field] for o in outs)
                if k != "prefill":
                    toks[(isa, k)] = outs[0]["ids"]
            this[isa] = best
            for k in keys:
                speed[isa][k].append(best[k])
            speed[isa]["cost"].append(cost_ratios(bench, a.model, isa, a.threads))
        for isa in isas:
            for k in keys:
                ratio[isa][k].append(this[isa][k] / this[isas[0]][k])
        print(f"round {r + 1}: " + ", ".join(
            f"{i} {this[i]['k0']:.0f}/{this[i]['auto']:.0f}/{this[i]['prefill']:.0f}"
            for i in isas), file=sys.stderr)

    med = statistics.median
    base = isas[0]
    lines = [f"model `{os.path.relpath(a.model, ROOT)}`, {a.threads} threads, "
             f"{a.rounds} interleaved rounds (best of {a.reps} runs each), "
             f"{a.tokens} decode tokens; tok/s = median over rounds, "
             f"x {base} = median of the per-round ratios\n",
             f"| path | decode k=0 tok/s | x {base} | decode MTP auto tok/s | "
             f"x {base} | prefill 512 tok/s | x {base} |",
             "|---|---|---|---|---|---|---|"]
    for i in isas:
        s, q = speed[i], ratio[i]
        lines.append(f"| {i} | {med(s['k0']):.0f} | {med(q['k0']):.2f} | "
                     f"{med(s['auto']):.0f} | {med(q['auto']):.2f} | "
                     f"{med(s['prefill']):.0f} | {med(q['prefill']):.2f} |")
    lines += ["\ncost(T)/cost(1) of one forward call with T new rows "
              "(bench_forward), median over rounds\n",
              "| path | ms T=1 | T=2 | T=3 | T=4 | T=5 |", "|---|---|---|---|---|---|"]
    for i in isas:
        cs = speed[i]["cost"]
        lines.append(f"| {i} | {med(c[1][0] for c in cs):.3f} | " + " | ".join(
            f"{med(c[t][1] for c in cs):.2f}" for t in range(2, 6)) + " |")
    lines.append("")
    for i in isas[1:]:
        for k in ("k0", "auto"):
            x, y = toks[(base, k)], toks[(i, k)]
            same = sum(1 for p, q in zip(x, y) if p == q)
            first = next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), None)
            lines.append(f"greedy tokens {i} vs {base}, {k}: {same}/{len(x)} equal"
                         + (f", first difference at {first}" if first is not None else ""))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
