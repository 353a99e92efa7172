"""Collects the training corpus: source code that every Debian 12 machine with
python3 and the C toolchain has on disk.

Sources (each file is one document):
  py  the Python standard library, /usr/lib/python3.11/**/*.py
  c   the C/C++ headers of the Debian packages libc6-dev, linux-libc-dev,
      libpython3.11-dev and libstdc++-12-dev (file lists from dpkg-query -L)

Determinism: paths are sorted, duplicates (same bytes) are kept once (the
first path in sorted order), files that are not UTF-8 are skipped, and the
held-out split is a pure function of the document's name ("py:" or "c:" +
path): sha256(name) % 100 < heldout_pct. manifest.json records the counts and
a sha256 over every (name, content) pair, so two machines can compare.

Writes into --out (default .work/train/corpus, git-ignored):
  train.jsonl, heldout.jsonl   one {"name", "lang", "text"} per line
  manifest.json
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

PY_ROOT = "/usr/lib/python3.11"
C_PACKAGES = ["libc6-dev", "linux-libc-dev", "libpython3.11-dev", "libstdc++-12-dev"]
HEADER_PREFIX = "/usr/include/"


def python_files(root=PY_ROOT):
    """Sorted absolute paths of the stdlib's .py files (no site-packages)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "dist-packages", "__pycache__"))
        for f in filenames:
            if f.endswith(".py"):
                out.append(os.path.join(dirpath, f))
    return sorted(out)


def header_files(packages=C_PACKAGES):
    """Sorted regular files under /usr/include owned by the given packages.
    Packages that are not installed are skipped (reported on stderr)."""
    out = set()
    for pkg in packages:
        try:
            res = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True,
                                 text=True, check=False)
        except FileNotFoundError:
            print("corpus: dpkg-query not found, no C headers", file=sys.stderr)
            return []
        if res.returncode != 0:
            print(f"corpus: package {pkg} not installed, skipped", file=sys.stderr)
            continue
        for line in res.stdout.splitlines():
            p = line.strip()
            if p.startswith(HEADER_PREFIX) and os.path.isfile(p) and not os.path.islink(p):
                out.add(p)
    return sorted(out)


def is_heldout(name, pct):
    h = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)
    return h % 100 < pct


def collect(sources=("py", "c"), heldout_pct=4):
    """Returns (docs, stats); docs is a list of dicts in deterministic order."""
    listing = []
    if "py" in sources:
        listing += [("py", "py:" + os.path.relpath(p, PY_ROOT), p) for p in python_files()]
    if "c" in sources:
        listing += [("c", "c:" + os.path.relpath(p, HEADER_PREFIX), p) for p in header_files()]
    seen = set()
    docs = []
    skipped = {"not_utf8": 0, "empty": 0, "duplicate": 0}
    for lang, name, path in listing:
        with open(path, "rb") as f:
            raw = f.read()
        digest = hashlib.sha256(raw).digest()
        if digest in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(digest)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped["not_utf8"] += 1
            continue
        if not text.strip():
            skipped["empty"] += 1
            continue
        docs.append({"name": name, "lang": lang, "text": text,
                     "heldout": is_heldout(name, heldout_pct)})
    return docs, skipped


def write(docs, skipped, out_dir, heldout_pct):
    os.makedirs(out_dir, exist_ok=True)
    h = hashlib.sha256()
    stats = {}
    files = {"train": open(os.path.join(out_dir, "train.jsonl"), "w", encoding="utf-8"),
             "heldout": open(os.path.join(out_dir, "heldout.jsonl"), "w", encoding="utf-8")}
    try:
        for d in docs:
            split = "heldout" if d["heldout"] else "train"
            files[split].write(json.dumps({"name": d["name"], "lang": d["lang"],
                                           "text": d["text"]}, ensure_ascii=False) + "\n")
            h.update(d["name"].encode() + b"\0" + d["text"].encode() + b"\0")
            key = f"{split}_{d['lang']}"
            s = stats.setdefault(key, {"files": 0, "bytes": 0})
            s["files"] += 1
            s["bytes"] += len(d["text"].encode())
    finally:
        for f in files.values():
            f.close()
    manifest = {"sources": {"py": PY_ROOT, "c": C_PACKAGES}, "heldout_pct": heldout_pct,
                "split": "sha256(name) % 100 < heldout_pct", "stats": stats,
                "skipped": skipped, "sha256": h.hexdigest()}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".work/train/corpus")
    ap.add_argument("--sources", default="py,c", help="comma list of py,c")
    ap.add_argument("--heldout-pct", type=int, default=4)
    a = ap.parse_args(argv)
    docs, skipped = collect(tuple(a.sources.split(",")), a.heldout_pct)
    m = write(docs, skipped, a.out, a.heldout_pct)
    print(json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
