"""Speculative-decoding benchmark: tokens/s of `mtpd generate` for
k = 0..4 and auto, greedy and temperature 0.7, on held-out code prompts and
on chat prompts; speed-up over k = 0 measured in the same run, acceptance
by draft position, mean accepted length. Prints markdown tables.

    python3 tools/bench_spec.py [--model DIR ...] [--threads 2]
        [--max-tokens 128] [--n-code 4] [--n-chat 2] [--reps 1]
        [--ks 0,1,2,3,4,auto] [--modes greedy,t0.7] [--draft-vocab auto|off]

Models: the default model (models/mtpd-code-small) and
../shared/models/pycode-mtp-tiny, whichever exist, unless --model is given.
Code prompts are chunks of .py files from /usr/lib/python3/dist-packages
(the models train on /usr/lib/python3.11, so these are held out), chosen by
a hash of the path; chat prompts use the model's chat template (--chat).
Each prompt runs all k values in ONE process (`mtpd generate --compare-k`:
one sequence per k, advanced in turn pass by pass, so load from other
processes hits every k alike), --reps times; for each (prompt, k) the
fastest repetition counts, and tokens/s is the sum of tokens over the sum of
those decode times.
--draft-vocab auto uses tools/draft_vocab/<model name>.txt (or
DIR/draft_vocab.txt) when present.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CODE_TREE = "/usr/lib/python3/dist-packages"
CHAT_PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "How do I read a CSV file and compute the average of one column?",
    "Explain what a Python decorator is, with a short example.",
    "Write a class that implements a simple LRU cache.",
]


def code_prompts(n, lines=40, skip=20):
    """n chunks of `lines` lines from held-out .py files (deterministic)."""
    files = []
    for root, dirs, fs in os.walk(CODE_TREE):
        dirs.sort()
        for f in sorted(fs):
            if f.endswith(".py"):
                files.append(os.path.join(root, f))
    files.sort(key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) < skip + lines:
            continue
        chunk = "\n".join(text[skip:skip + lines]) + "\n"
        if 600 <= len(chunk) <= 3000:
            out.append((os.path.relpath(path, CODE_TREE), chunk))
        if len(out) == n:
            break
    return out


def run(binary, model, prompt, ks, mode, args, chat):
    """One process, every k interleaved; -> {k: stats}."""
    cmd = [binary, "generate", "--model", model, "--prompt", prompt,
           "--max-tokens", str(args.max_tokens), "--compare-k", ",".join(ks),
           "--threads", str(args.threads), "--ignore-eos", "--seed", "1"]
    if args.device:
        cmd += ["--device", args.device]
    if mode != "greedy":
        cmd += ["--temperature", mode[1:]]
    if chat:
        cmd.append("--chat")
    if args.draft_vocab_file:
        cmd += ["--draft-vocab", args.draft_vocab_file]
        if args.draft_vocab_size:
            cmd += ["--draft-vocab-size", str(args.draft_vocab_size)]
        if args.draft_ctx_tokens >= 0:
            cmd += ["--draft-ctx-tokens", str(args.draft_ctx_tokens)]
    elif args.draft_vocab == "off":
        cmd += ["--draft-vocab", "off"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])}...: {r.stderr.strip()}")
    out = json.loads(r.stdout)["compare"]
    if mode == "greedy":
        assert all(c["ids"] == out[0]["ids"] for c in out), "greedy ids differ across k"
    return {c["k"]: c["stats"] for c in out}


class Cell:
    """Sums over the prompts of one (set, mode, k) for one repetition."""

    def __init__(self):
        self.tokens = 0
        self.seconds = 0.0
        self.drafts = 0
        self.accepted = 0
        self.acc_pos = []  # summed accepted-at-position counts
        self.drafted_pos = []
        self.passes = 0
        self.verify_s = self.draft_s = self.refill_s = 0.0

    def add(self, st):
        self.tokens += st["generated_tokens"] - 1
        self.seconds += st["decode_seconds"]
        self.passes += st["verify_passes"]
        self.verify_s += st["verify_seconds"]
        self.draft_s += st["draft_seconds"]
        self.refill_s += st["refill_seconds"]
        self.drafts += st["drafts"]
        self.accepted += st["accepted_tokens"]
        # rates x drafts reconstruct the counts (every draft of a fixed-k
        # run drafts every position; auto runs are approximate)
        for i, r in enumerate(st["acceptance_by_position"]):
            while len(self.acc_pos) <= i:
                self.acc_pos.append(0.0)
                self.drafted_pos.append(0.0)
            n = st["drafts"] * st["k_histogram_frac"][i]
            self.acc_pos[i] += r * n
            self.drafted_pos[i] += n

    def tps(self):
        return self.tokens / self.seconds if self.seconds else 0.0

    def per_pass_ms(self):
        """(verify, MTP refill, draft steps, everything else) ms per pass."""
        n = self.passes or 1
        v, r, d = self.verify_s / n, self.refill_s / n, self.draft_s / n
        return 1e3 * v, 1e3 * r, 1e3 * d, 1e3 * (self.seconds / n - v - r - d)


def cost_table(results, sets, ks, mode):
    """Where the time of a pass goes, in units of one plain decode step
    (k = 0 of the same run): the main model's verify pass, the MTP refill
    (exact rows for the accepted tokens + the first draft), the further
    draft steps, and the rest (acceptance, sampling, bookkeeping). The
    speed-up is tokens per pass over the summed costs; 'verify only' is
    what it would be if drafting were free."""
    print(f"\nWhere the time of a pass goes ({mode}; costs in plain decode "
          "steps of the same run):\n")
    print("| prompts | k | tokens/pass | verify | MTP refill | draft steps "
          "| other | pass total | speed-up | speed-up if drafts were free |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for set_name, _, _ in sets:
        base = results.get((set_name, mode, ks[0]))
        if base is None or ks[0] != "0" or not base.passes:
            continue
        step = base.seconds / base.passes * 1e3
        for k in ks[1:]:
            c = results[(set_name, mode, k)]
            if not c.passes:
                continue
            v, r, d, o = (x / step for x in c.per_pass_ms())
            tpp = c.tokens / c.passes
            tot = v + r + d + o
            print(f"| {set_name} | {k} | {tpp:.2f} | {v:.2f} | {r:.2f} | "
                  f"{d:.2f} | {o:.2f} | {tot:.2f} | {tpp / tot:.2f}x | "
                  f"{tpp / v:.2f}x |")


def add_frac(st):
    """Fraction of drafts that drafted position i (from the k histogram)."""
    h = st.get("k_histogram", [])
    drafts = sum(h[1:]) or 1
    st["k_histogram_frac"] = [sum(h[i + 1:]) / drafts for i in range(len(h))]
    return st


def bench_model(binary, model, args):
    name = os.path.basename(os.path.normpath(model))
    args.draft_vocab_file = None
    if args.draft_vocab not in ("auto", "off"):
        args.draft_vocab_file = args.draft_vocab
    elif args.draft_vocab == "auto":
        for cand in (os.path.join(ROOT, "tools", "draft_vocab", name + ".txt"),
                     os.path.join(model, "draft_vocab.txt")):
            if os.path.exists(cand):
                args.draft_vocab_file = cand
                break
    sets = [("code", False, [p for _, p in code_prompts(args.n_code)])]
    if args.n_chat:
        sets.append(("chat", True, CHAT_PROMPTS[:args.n_chat]))
    ks = args.ks.split(",")
    modes = args.modes.split(",")
    best = {}  # (set, mode, k, prompt index) -> stats of the fastest rep
    for rep in range(args.reps):
        for set_name, chat, prompts in sets:
            for mode in modes:
                for pi, prompt in enumerate(prompts):
                    for k, st in run(binary, model, prompt, ks, mode, args,
                                     chat).items():
                        st = add_frac(st)
                        key = (set_name, mode, k, pi)
                        if key not in best or st["decode_seconds"] < best[key]["decode_seconds"]:
                            best[key] = st
            print(f"[{name}] rep {rep + 1}/{args.reps} done", file=sys.stderr)
    results = {}
    for (set_name, mode, k, pi), st in best.items():
        results.setdefault((set_name, mode, k), Cell()).add(st)
    print(f"\n### {name}\n")
    print(f"{args.threads} threads, {args.max_tokens} tokens per prompt, "
          f"{len(sets[0][2])} code prompts" +
          (f", {len(sets[1][2])} chat prompts" if len(sets) > 1 else "") +
          f", best of {args.reps} run(s) per prompt; draft vocabulary: "
          f"{os.path.relpath(args.draft_vocab_file, ROOT) if args.draft_vocab_file else 'full'}\n")
    print("| prompts | sampling | k | tokens/s | speed-up vs k=0 | mean accepted length "
          "| acceptance by position (unconditional) |")
    print("|---|---|---|---|---|---|---|")
    for set_name, _, _ in sets:
        for mode in modes:
            base = results[(set_name, mode, ks[0])].tps()
            for k in ks:
                c = results[(set_name, mode, k)]
                tps = c.tps()
                mal = 1 + c.accepted / c.drafts if c.drafts else 1.0
                pos = ", ".join(f"{a / d:.2f}" for a, d in
                                zip(c.acc_pos, c.drafted_pos) if d > 0)
                print(f"| {set_name} | {mode} | {k} | {tps:.1f} | "
                      f"{tps / base:.2f}x | {mal:.2f} | {pos or '-'} |")
    for mode in modes:
        cost_table(results, sets, ks, mode)
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append")
    ap.add_argument("--bin", default=os.environ.get("MTPD_BIN",
                                                   os.path.join(ROOT, "build", "mtpd")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", help="mtpd's --device (auto, cpu, cuda, "
                    "cuda:N; default: mtpd's, auto)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--n-code", type=int, default=4)
    ap.add_argument("--n-chat", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--ks", default="0,1,2,3,4,auto")
    ap.add_argument("--modes", default="greedy,t0.7")
    ap.add_argument("--draft-vocab", default="auto",
                    help="auto (tools/draft_vocab/<model>.txt if present), off, or a file")
    ap.add_argument("--draft-vocab-size", type=int, default=0,
                    help="ids of the list to use (default: mtpd's, 512)")
    ap.add_argument("--draft-ctx-tokens", type=int, default=-1,
                    help="context ids added to the draft head (default: "
                         "mtpd's, 1024; 0 = off)")
    args = ap.parse_args(argv)
    models = args.model or [m for m in (
        os.path.join(ROOT, "models", "mtpd-code-small"),
        os.path.join(ROOT, "..", "shared", "models", "pycode-mtp-tiny"))
        if os.path.isdir(m)]
    if not models:
        sys.exit("bench_spec: no model found (use --model DIR)")
    for m in models:
        bench_model(args.bin, m, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
