"""Parity of `mtpd tokenize` with Hugging Face `tokenizers`.

The goldens (tests/tokenizer/golden/*.jsonl.gz, written by
tools/tok_goldens.py) hold HF's ids and decodes for the shared corpus; this
test needs only the mtpd binary ($MTPD_BIN, default build/mtpd). Real
tokenizers live in ../shared or models/ and are skipped when absent; the
fixtures in tests/tokenizer/fixtures are always there.

Checked per tokenizer: encode (100% identical ids), encode with
--no-special, decode (== HF decode, and == the text wherever HF
round-trips), decode with skip_special_tokens, the incremental decoder
(--decode --stream, one id at a time) == decode-all, random id sequences
(lossy UTF-8), chat and FIM prompts, and the Unicode sweeps (hashes).
"""
import gzip
import json
import os
import subprocess

import pytest

from tools.tok_sweep import ids_sha, sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
GOLDEN = os.path.join(ROOT, "tests", "tokenizer", "golden")
BIN = os.environ.get("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))


def _load(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _header(name):
    with gzip.open(os.path.join(GOLDEN, name + ".jsonl.gz"), "rt",
                   encoding="utf-8") as f:
        return json.loads(f.readline())["header"]


CORPUS = _load(os.path.join(GOLDEN, "corpus.jsonl.gz"))
NAMES = sorted(fn[:-len(".jsonl.gz")] for fn in os.listdir(GOLDEN)
               if fn.endswith(".jsonl.gz") and fn != "corpus.jsonl.gz")
# real tokenizers have chat/FIM prompts and Unicode sweeps in their goldens;
# the small fixtures only the corpus
REAL = [n for n in NAMES if _header(n)["kind"] == "real"]


def tok_args(header):
    p = os.path.normpath(os.path.join(ROOT, header["path"]))
    if header["kind"] == "fixture":
        return ["--tokenizer", p]
    return ["--model", p]


def run_cli(args, lines):
    """Runs mtpd tokenize with one JSON object per input line; returns the
    parsed output lines (one per input line)."""
    data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    r = subprocess.run([BIN, "tokenize"] + args, input=data.encode(),
                       capture_output=True, timeout=600)
    # not splitlines(): decoded text may hold U+2028, U+0085, ...
    out = [json.loads(x) for x in r.stdout.decode().split("\n") if x]
    assert len(out) == len(lines), (r.returncode, r.stderr.decode()[-2000:])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return out


_cache = {}


def golden(name):
    if name not in _cache:
        if not os.path.exists(BIN):
            pytest.skip("no mtpd binary at %s (build it, or set MTPD_BIN)"
                        % BIN)
        recs = _load(os.path.join(GOLDEN, name + ".jsonl.gz"))
        header = recs[0]["header"]
        p = os.path.normpath(os.path.join(ROOT, header["path"]))
        # only tokenizers outside the repository (../shared) may be absent;
        # a missing fixture or committed model is a broken checkout
        outside = os.path.relpath(p, ROOT).startswith("..")
        assert os.path.exists(p) or outside, "%s: %s is missing" % (name, p)
        _cache[name] = (header, recs[1:]) if os.path.exists(p) else None
    g = _cache[name]
    if g is None:
        pytest.skip("%s: tokenizer not present (../shared)" % name)
    return g


def first_diffs(pairs, n=5):
    """Formats the first n (index, got, want) mismatches."""
    out = []
    for i, got, want in pairs[:n]:
        out.append("#%s:\n  got  %s\n  want %s" % (
            i, json.dumps(got, ensure_ascii=False)[:400],
            json.dumps(want, ensure_ascii=False)[:400]))
    return "\n".join(out)


def texts_of(recs):
    return [r for r in recs if "i" in r]


@pytest.mark.parametrize("name", NAMES)
def test_encode(name):
    header, recs = golden(name)
    rs = texts_of(recs)
    assert len(rs) >= (2000 if header["kind"] == "real" else 500)
    out = run_cli(tok_args(header), [{"text": CORPUS[r["i"]]} for r in rs])
    bad = [(r["i"], o.get("ids", o), r["ids"]) for r, o in zip(rs, out)
           if o.get("ids") != r["ids"]]
    assert not bad, "%d/%d differ\n%s" % (len(bad), len(rs), first_diffs(bad))


@pytest.mark.parametrize("name", NAMES)
def test_encode_no_special(name):
    header, recs = golden(name)
    rs = texts_of(recs)
    out = run_cli(tok_args(header) + ["--no-special"],
                  [{"text": CORPUS[r["i"]]} for r in rs])
    bad = [(r["i"], o.get("ids", o), r.get("ids_ns", r["ids"]))
           for r, o in zip(rs, out) if o.get("ids") != r.get("ids_ns", r["ids"])]
    assert not bad, "%d/%d differ\n%s" % (len(bad), len(rs), first_diffs(bad))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["all", "stream"])
def test_decode(name, mode):
    header, recs = golden(name)
    rs = texts_of(recs)
    args = tok_args(header) + ["--decode"] + (["--stream"] if mode == "stream"
                                             else [])
    out = run_cli(args, [{"ids": r["ids"]} for r in rs])
    bad, roundtrip = [], 0
    for r, o in zip(rs, out):
        want = r.get("dec", CORPUS[r["i"]])
        if o.get("text") != want:
            bad.append((r["i"], o.get("text", o), want))
        roundtrip += "dec" not in r
    assert not bad, "%d/%d differ\n%s" % (len(bad), len(rs), first_diffs(bad))
    if header["kind"] == "real":
        # decode(encode(x)) == x wherever HF round-trips: nearly everywhere
        assert roundtrip > len(rs) * 0.9


@pytest.mark.parametrize("name", NAMES)
def test_decode_skip_special(name):
    header, recs = golden(name)
    rs = texts_of(recs)
    out = run_cli(tok_args(header) + ["--decode", "--no-special"],
                  [{"ids": r["ids"]} for r in rs])
    bad = []
    for r, o in zip(rs, out):
        want = r.get("dec_skip", r.get("dec", CORPUS[r["i"]]))
        if o.get("text") != want:
            bad.append((r["i"], o.get("text", o), want))
    assert not bad, "%d/%d differ\n%s" % (len(bad), len(rs), first_diffs(bad))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["all", "stream", "skip"])
def test_decode_random_ids(name, mode):
    """Random id sequences split UTF-8 characters across tokens and
    produce invalid UTF-8: U+FFFD exactly where Rust's lossy decode puts
    it, also when decoding one id at a time."""
    header, recs = golden(name)
    rs = [r for r in recs if "rand" in r]
    assert rs
    args = tok_args(header) + ["--decode"]
    args += {"all": [], "stream": ["--stream"], "skip": ["--no-special"]}[mode]
    out = run_cli(args, [{"ids": r["rand"]} for r in rs])
    key = "dec_skip" if mode == "skip" else "dec"
    bad = [(k, o.get("text", o), r[key]) for k, (r, o) in
           enumerate(zip(rs, out)) if o.get("text") != r[key]]
    assert not bad, "%d/%d differ\n%s" % (len(bad), len(rs), first_diffs(bad))


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("fmt", ["chat", "fim"])
def test_prompt_formats(name, fmt):
    header, recs = golden(name)
    rs = [r for r in recs if fmt in r]
    assert rs, "%s: no %s goldens" % (name, fmt)
    out = run_cli(tok_args(header) + ["--" + fmt], [r[fmt] for r in rs])
    bad = [(k, o.get("ids", o), r["ids"]) for k, (r, o) in
           enumerate(zip(rs, out)) if o.get("ids") != r["ids"]]
    assert not bad, "%d/%d differ\n%s" % (len(bad), len(rs), first_diffs(bad))


@pytest.mark.parametrize("name", REAL)
def test_unicode_sweeps(name):
    header, recs = golden(name)
    want = {r["sweep"]: r for r in recs if "sweep" in r}
    assert want, "%s: no sweeps" % name
    texts = dict(sweeps())
    assert set(want) == set(texts)
    names = sorted(want)
    out = run_cli(tok_args(header), [{"text": texts[n]} for n in names])
    bad = [n for n, o in zip(names, out)
           if ids_sha(o.get("ids", [])) != want[n]["sha"]]
    assert not bad, "%d/%d sweeps differ: %s" % (len(bad), len(names),
                                                  bad[:20])
