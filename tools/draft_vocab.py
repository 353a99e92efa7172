"""Token frequencies of a corpus -> the id list of an FR-Spec style draft
head (`mtpd generate --draft-vocab FILE`, or DIR/draft_vocab.txt).

    python3 tools/draft_vocab.py --model DIR --corpus PATH [PATH ...]
                                 [--max-files N] [--out FILE]

PATH is a file or a directory searched for *.py files (use the model's
TRAINING corpus, e.g. /usr/lib/python3.11 for the stdlib-trained models, so
benchmarks on held-out code stay held out). Writes every id seen, most
frequent first, one per line with its count as a comment; mtpd reads the
first N (--draft-vocab-size, default 512). Needs the `tokenizers` package.
The draft head may use any subset: exactness never depends on it, only the
acceptance rate does.
"""
import argparse
import collections
import os
import sys


def corpus_files(paths, max_files):
    out = []
    for p in paths:
        if os.path.isfile(p):
            out.append(p)
            continue
        for root, dirs, files in os.walk(p):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(".py"):
                    out.append(os.path.join(root, f))
    return out[:max_files] if max_files else out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="dir with tokenizer.json")
    ap.add_argument("--corpus", nargs="+", required=True)
    ap.add_argument("--max-files", type=int, default=0)
    ap.add_argument("--out", help="default: stdout")
    a = ap.parse_args(argv)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("draft_vocab: needs the tokenizers package")
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    counts = collections.Counter()
    files = corpus_files(a.corpus, a.max_files)
    total = 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        ids = tok.encode(text, add_special_tokens=False).ids
        counts.update(ids)
        total += len(ids)
    out = open(a.out, "w") if a.out else sys.stdout
    out.write(f"# draft vocabulary for {os.path.basename(os.path.normpath(a.model))}: "
              f"{len(counts)} ids seen in {total} tokens of {len(files)} files\n")
    cum = 0
    for rank, (i, c) in enumerate(counts.most_common()):
        cum += c
        out.write(f"{i}  # {c} {100.0 * cum / total:.2f}%\n")
    if a.out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
