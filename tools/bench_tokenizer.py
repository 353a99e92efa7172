#!/usr/bin/env python3
"""Encode throughput of `mtpd tokenize` vs Hugging Face `tokenizers`.

    python3 tools/bench_tokenizer.py [--tree /usr/lib/python3.11] [--mb 0]
                                     [--repeat 3] [--bin build/mtpd]

The input is a real source tree: every *.py file under --tree (sorted),
one text per file (the whole Python 3.11 stdlib is ~11 MB); --mb N keeps
only the first N MB. Both tokenizers encode the same list of texts in the
same run, single-threaded (RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=
false), each repeat with a fresh tokenizer state (cold BPE caches), best of
--repeat; only the encode calls are timed (mtpd: `tokenize --bench`, which
times itself; HF: Tokenizer.encode in a loop). The ids are compared in full
(mtpd tokenize on the same texts) before timing. Prints a table with MB/s
(MB = 10^6 bytes) and the ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZERS = {
    "deepseek-v3": "../shared/tokenizers/deepseek-v3",
    "pycode-mtp-tiny": "../shared/models/pycode-mtp-tiny",
    "mtpd-code-small": "models/mtpd-code-small",
}


def load_tree(tree, mb):
    texts, total = [], 0
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            with open(os.path.join(dirpath, fn), "rb") as f:
                t = f.read().decode("utf-8", errors="replace")
            texts.append(t)
            total += len(t.encode())
            if mb and total >= mb * 1e6:
                return texts
    return texts


def bench_hf(path, texts, repeat):
    from tokenizers import Tokenizer
    best = 1e30
    ntok = 0
    for _ in range(repeat):
        tok = Tokenizer.from_file(path)  # fresh: cold BPE cache
        t0 = time.perf_counter()
        ntok = 0
        for t in texts:
            ntok += len(tok.encode(t).ids)
        best = min(best, time.perf_counter() - t0)
    return best, ntok


def check_ids(binary, model_dir, path, jsonl, texts):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    with open(jsonl, "rb") as f:
        r = subprocess.run([binary, "tokenize", "--model", model_dir],
                           stdin=f, capture_output=True, check=True)
    got = [json.loads(x)["ids"] for x in r.stdout.decode().split("\n") if x]
    want = [tok.encode(t).ids for t in texts]
    bad = sum(g != w for g, w in zip(got, want)) + abs(len(got) - len(want))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", default="/usr/lib/python3.11")
    ap.add_argument("--mb", type=float, default=0,
                    help="use only the first N MB (0: the whole tree)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=os.environ.get(
        "MTPD_BIN", os.path.join(ROOT, "build", "mtpd")))
    ap.add_argument("--only", help="one tokenizer name")
    args = ap.parse_args()

    texts = load_tree(args.tree, args.mb)
    nbytes = sum(len(t.encode()) for t in texts)
    print("input: %s, %d files, %.2f MB" % (args.tree, len(texts),
                                             nbytes / 1e6))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = os.path.join(tmp, "texts.jsonl")
        with open(jsonl, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        for name, rel in TOKENIZERS.items():
            if args.only and args.only != name:
                continue
            d = os.path.normpath(os.path.join(ROOT, rel))
            p = os.path.join(d, "tokenizer.json")
            if not os.path.exists(p):
                print("%s: skipped (no %s)" % (name, p))
                continue
            bad = check_ids(args.bin, d, p, jsonl, texts)
            r = subprocess.run([args.bin, "tokenize", "--model", d, "--bench",
                                jsonl, "--repeat", str(args.repeat)],
                               capture_output=True, check=True)
            c = json.loads(r.stdout)
            hf_s, hf_tok = bench_hf(p, texts, args.repeat)
            rows.append((name, c["tokens"], hf_tok, bad, c["mb_per_s"],
                         nbytes / 1e6 / hf_s))
    print()
    print("%-16s %10s %8s %12s %12s %8s" % ("tokenizer", "tokens", "id diffs",
                                             "mtpd MB/s", "HF MB/s", "ratio"))
    for name, ct, ht, bad, cm, hm in rows:
        toks = str(ct) if ct == ht else "%d/%d" % (ct, ht)
        print("%-16s %10s %8d %12.2f %12.2f %7.2fx" % (name, toks, bad, cm, hm,
                                                       cm / hm))
    if any(r[3] or r[1] != r[2] for r in rows):
        sys.exit("ids differ from HF tokenizers")


if __name__ == "__main__":
    main()
