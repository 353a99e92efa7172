"""Helpers shared by the tests/model pytest files: running mtpd and
comparing logits."""
import json
import os
import subprocess

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN_DIR = os.path.join(ROOT, "tests", "model", "golden")
SHARED_MODEL = os.path.join(ROOT, "..", "shared", "models", "pycode-mtp-tiny")
REL_TOL = 1e-4


def mtpd_bin():
    return os.environ.get("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))


def rel_err_rows(a, b):
    """max|a-b| / max|b| for each row (b is the reference)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    return np.abs(a - b).max(-1) / np.abs(b).max(-1)


def run_mtpd(binary, args, timeout=120):
    return subprocess.run([binary] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout)


def cpu_has_avx512_bf16():
    """True when /proc/cpuinfo lists AVX512-BF16 (and BW): where mtpd's
    --act-dtype bf16 takes effect."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags and " avx512bw" in flags


def ids_arg(ids):
    return ",".join(str(int(i)) for i in ids)


def mtpd_logits(binary, model_dir, ids, last=None, mtp=False, threads=None):
    """Runs `mtpd logits`; -> parsed JSON (asserts exit code 0)."""
    args = ["logits", "--model", model_dir, "--ids", ids_arg(ids)]
    if last is not None:
        args += ["--last", last]
    if mtp:
        args.append("--mtp")
    if threads is not None:
        args += ["--threads", threads]
    r = run_mtpd(binary, args)
    assert r.returncode == 0, f"mtpd logits failed ({r.returncode}): {r.stderr}"
    return json.loads(r.stdout)


def generate_available(binary):
    """True when this mtpd has a `generate` subcommand."""
    r = run_mtpd(binary, ["generate", "--help"], timeout=30)
    return r.returncode == 0


def mtpd_generate(binary, model_dir, ids, max_tokens, draft_tokens=0):
    """Runs `mtpd generate ... --json`; -> (CompletedProcess, JSON or None)."""
    r = run_mtpd(binary, ["generate", "--model", model_dir, "--ids", ids_arg(ids),
                          "--max-tokens", max_tokens, "--draft-tokens", draft_tokens,
                          "--json"])
    out = None
    if r.returncode == 0:
        out = json.loads(r.stdout)
    return r, out


def case_ids(vocab, seed, n):
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(0, vocab, n)]
