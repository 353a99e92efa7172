#!/usr/bin/env python3
"""bench_quant.py - bf16 vs q8 vs q4 (and fp8) on one model: speed and
quality, formats interleaved (A B C A B C ...) so all see the same load.

    tools/bench_quant.py [--model models/mtpd-code-small] [--rounds 3]
        [--threads 2] [--formats q8,q4] [--out FILE.md]

Quantizes the model with `mtpd quantize` into a temporary directory, then
per round and format:
  - decode tok/s at k=0 and with MTP auto (`mtpd generate --json`,
    --tokens (256) after a 96-token held-out prompt, greedy, --ignore-eos);
  - prefill tok/s (a 512-token prompt, 1 generated token);
  - cost(T)/cost(1) for T = 1..5 (tools/bench_forward: k+1 verify rows).
Each is the best of --reps (2) runs within the round. Speed is reported
as the median over rounds and, per round, the ratio to
bf16 measured in that round (median of those ratios): on a shared machine
the ratios are what to read.
Quality (once): top-1 agreement with the source model and next-token loss
over held-out windows (tools/quant_eval.py), and MTP acceptance by
position at a fixed k=3 on held-out prompts.
Prints a markdown report (and writes it to --out).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools import quant_eval  # noqa: E402


def run(cmd, timeout=600):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


# bf16a: the bf16 checkpoint with activations rounded to bf16
EXTRA = {"bf16a": ["--act-dtype", "bf16"]}


def gen(mtpd, model, ids, n, k, threads, extra=()):
    out = run([mtpd, "generate", "--model", model, "--ids",
               ",".join(map(str, ids)), "--max-tokens", str(n),
               "--draft-tokens", str(k), "--ignore-eos", "--json",
               "--threads", str(threads), *extra])
    return json.loads(out.strip().splitlines()[-1])["stats"]


def cost_ratios(bench, model, threads, act_bf16=False):
    out = run([bench, "--model", model, "--threads", str(threads),
               "--t", "1,2,3,4,5", "--secs", "0.5"]
              + (["--act-bf16"] if act_bf16 else []))
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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats", default="q8,q4",
                    help="besides bf16: q8, q4 (Q4_S), q4h (Q4_S with "
                         "the output heads at 4 bits too), q4_1, fp8, bf16a "
                         "(bf16 with --act-dtype bf16)")
    ap.add_argument("--tokens", type=int, default=256, help="decode tokens per run")
    ap.add_argument("--reps", type=int, default=2, help="runs per round (best kept)")
    ap.add_argument("--out")
    a = ap.parse_args()
    mtpd = os.path.join(a.build, "mtpd")
    bench = os.path.join(a.build, "bench_forward")
    tmp = tempfile.mkdtemp(prefix="bench_quant_")
    models = {"bf16": a.model}
    for f in a.formats.split(","):
        if f == "bf16a":
            models[f] = a.model
            continue
        d = os.path.join(tmp, f)
        q = ["--format", "q4", "--head-q4"] if f == "q4h" else ["--format", f]
        run([mtpd, "quantize", "--model", a.model, "--out", d, *q])
        models[f] = d
    names = list(models)

    wins = quant_eval.windows(mtpd, a.model, n_windows=4, n_tokens=512, skip=200)
    prompt = wins[0][:96]
    long_prompt = wins[1][:512]

    speed = {n: {"k0": [], "auto": [], "prefill": [], "cost": []} for n in names}
    ratio = {n: {"k0": [], "auto": [], "prefill": []} for n in names}
    for r in range(a.rounds):
        this = {}
        for n in names:
            m = models[n]
            # best of --reps runs: a descheduled run says nothing of the format
            x = EXTRA.get(n, ())
            s0 = max(gen(mtpd, m, prompt, a.tokens, 0, a.threads, x)["decode_tokens_per_s"]
                     for _ in range(a.reps))
            sa = max(gen(mtpd, m, prompt, a.tokens, "auto", a.threads, x)["decode_tokens_per_s"]
                     for _ in range(a.reps))
            sp = max(gen(mtpd, m, long_prompt, 1, 0, a.threads, x)["prefill_tokens_per_s"]
                     for _ in range(a.reps))
            this[n] = {"k0": s0, "auto": sa, "prefill": sp}
            speed[n]["k0"].append(s0)
            speed[n]["auto"].append(sa)
            speed[n]["prefill"].append(sp)
            speed[n]["cost"].append(cost_ratios(bench, m, a.threads,
                                                n == "bf16a"))
        for n in names:
            for key in ("k0", "auto", "prefill"):
                ratio[n][key].append(this[n][key] / this["bf16"][key])
        print(f"round {r + 1}: " + ", ".join(
            f"{n} {this[n]['k0']:.0f}/{this[n]['auto']:.0f}/{this[n]['prefill']:.0f}"
            for n in names), file=sys.stderr)

    med = statistics.median
    lines = []
    lines.append(f"model `{os.path.relpath(a.model, ROOT)}`, {a.threads} threads, "
                 f"{a.rounds} interleaved rounds (best of {a.reps} runs each), "
                 f"{a.tokens} decode tokens; tok/s = median over rounds, "
                 "x bf16 = median of the per-round ratios\n")
    lines.append("| format | decode k=0 tok/s | x bf16 | decode MTP auto tok/s | x bf16 "
                 "| auto / k=0 | prefill 512 tok/s | x bf16 |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for n in names:
        s, q = speed[n], ratio[n]
        lines.append(f"| {n} | {med(s['k0']):.0f} | {med(q['k0']):.2f} | "
                     f"{med(s['auto']):.0f} | {med(q['auto']):.2f} | "
                     f"{med(s['auto']) / med(s['k0']):.2f} | {med(s['prefill']):.0f} | "
                     f"{med(q['prefill']):.2f} |")
    lines.append("\ncost(T)/cost(1) of one forward call with T new rows "
                 "(bench_forward; T = k+1 verify rows), median over rounds\n")
    lines.append("| format | ms T=1 | T=2 | T=3 | T=4 | T=5 |")
    lines.append("|---|---|---|---|---|---|")
    for n in names:
        cs = speed[n]["cost"]
        ms1 = med(c[1][0] for c in cs)
        lines.append(f"| {n} | {ms1:.3f} | " + " | ".join(
            f"{med(c[t][1] for c in cs):.2f}" for t in range(2, 6)) + " |")

    lines.append("\nquality against bf16: held-out windows (4 x 512 positions), "
                 "MTP acceptance at k=3 on 4 held-out prompts (96 tokens, 128 generated)\n")
    lines.append("| format | top-1 agreement | next-token loss (nats) | mean abs dlogit "
                 "| MTP accept pos 1 | pos 2 | pos 3 | tokens/pass |")
    lines.append("|---|---|---|---|---|---|---|---|")
    qual = {n: quant_eval.compare(mtpd, a.model, models[n], wins,
                                  EXTRA.get(n, ()))
            for n in names if n != "bf16"}
    ref_nll = next(iter(qual.values()))["ref_nll"] if qual else float("nan")
    qual["bf16"] = {"top1": 1.0, "nll": ref_nll, "mean_abs": 0.0}
    for n in names:
        q = qual[n]
        acc = [[], [], []]
        tpp = []
        for w in wins:
            st = gen(mtpd, models[n], w[:96], 128, 3, a.threads,
                     EXTRA.get(n, ()))
            for i in range(3):
                acc[i].append(st["acceptance_by_position"][i])
            tpp.append(st["tokens_per_pass"])
        lines.append(f"| {n} | {q['top1']:.3f} | {q['nll']:.4f} | {q['mean_abs']:.3f} | "
                     + " | ".join(f"{statistics.mean(x):.3f}" for x in acc)
                     + f" | {statistics.mean(tpp):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
