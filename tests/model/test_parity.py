"""mtpd (C) vs the numpy reference (tools/ref/dsv3_ref.py) and the committed
transformers goldens: logits at every position, MTP logits, greedy
continuations. Relative error per row = max|c - ref| / max|ref| <= 1e-4.

Skips only when the mtpd binary is absent ($MTPD_BIN, default build/mtpd);
the generate tests fail when `mtpd generate --help` does."""
import json
import os

import numpy as np
import pytest

from tools.ref import dsv3_ref, random_ckpt
from tools.ref.testutil import (GOLDEN_DIR, REL_TOL, SHARED_MODEL, case_ids,
                                generate_available, ids_arg, mtpd_generate,
                                mtpd_logits, rel_err_rows, run_mtpd)

PRESETS = sorted(random_ckpt.PRESETS)
GOLDENS = sorted(d for d in os.listdir(GOLDEN_DIR)
                 if os.path.exists(os.path.join(GOLDEN_DIR, d, "golden.npz")))
# (seed, length) of the id sequences run against every preset
CASES = [(1, 5), (2, 48)]


def check_logits(binary, model_dir, ref, ids, threads=None):
    """C logits at every position (and MTP module 0's last row) vs ref."""
    want_mtp = ref.n_mtp > 0 and len(ids) >= 2
    out = mtpd_logits(binary, model_dir, ids, last=len(ids), mtp=want_mtp, threads=threads)
    lg, _ = ref.forward(ids)
    err = rel_err_rows(out["logits"], lg)
    assert err.max() <= REL_TOL, f"main logits rel err {err.max():.3g} at row {err.argmax()}"
    if want_mtp:
        mr = ref.mtp_last_logits(ids)
        e = rel_err_rows(np.array(out["mtp_logits"])[None], mr[None]).max()
        assert e <= REL_TOL, f"MTP logits rel err {e:.3g}"
    return out


@pytest.mark.parametrize("seed,n", CASES)
@pytest.mark.parametrize("name", PRESETS)
def test_logits_every_position(mtpd, presets, name, seed, n):
    m = presets.model(name)
    check_logits(mtpd, presets.dir(name), m, case_ids(m.cfg.vocab_size, seed, n))


def test_default_last_is_one_row(mtpd, presets):
    m = presets.model("bf16-base")
    ids = case_ids(m.cfg.vocab_size, 3, 9)
    out = mtpd_logits(mtpd, presets.dir("bf16-base"), ids)
    assert len(out["logits"]) == 1
    assert "mtp_logits" not in out or out["mtp_logits"] is None
    lg, _ = m.forward(ids, logits_from=len(ids) - 1)
    assert rel_err_rows(out["logits"], lg).max() <= REL_TOL


@pytest.mark.parametrize("name", ["bf16-base", "f32-qproj-yarn", "fp8-yarn-mtp2"])
def test_mtp_two_ids(mtpd, presets, name):
    """Two ids: one MTP row, at position 0, where the embedding is zeroed."""
    m = presets.model(name)
    check_logits(mtpd, presets.dir(name), m, case_ids(m.cfg.vocab_size, 4, 2))


def test_single_thread(mtpd, presets):
    m = presets.model("fp8-yarn-mtp2")
    check_logits(mtpd, presets.dir("fp8-yarn-mtp2"), m,
                 case_ids(m.cfg.vocab_size, 7, 33), threads=1)


@pytest.fixture(scope="module")
def has_generate(mtpd):
    """`mtpd generate` exists in this tree: a binary where it fails is a
    broken build, so the generate tests fail rather than skip."""
    assert generate_available(mtpd), f"{mtpd} generate --help failed"
    return True


def check_greedy(binary, model_dir, ref, ids, draft_tokens=0, n=32):
    r, out = mtpd_generate(binary, model_dir, ids, n, draft_tokens)
    assert r.returncode == 0, f"mtpd generate failed ({r.returncode}): {r.stderr}"
    got = [int(t) for t in out["ids"]]
    eos = ref.cfg.eos_token_id
    want = dsv3_ref.greedy_generate(ref, ids, n)
    # mtpd stops at eos (and may leave it out of "ids"); the reference
    # here does not stop
    assert got == want[:len(got)], f"\nmtpd: {got}\nref:  {want}"
    assert len(got) == n or eos in (want[len(got)], got[-1] if got else None), \
        f"stopped early without eos: {got}"
    lg, _ = ref.forward(ids + want[:-1], logits_from=len(ids) - 1)
    assert dsv3_ref.logit_gaps(lg).min() > 1e-4, "reference has a near-tie: bad test ids"
    return got


@pytest.mark.parametrize("name", PRESETS)
def test_greedy_32(mtpd, has_generate, presets, name):
    m = presets.model(name)
    check_greedy(mtpd, presets.dir(name), m, case_ids(m.cfg.vocab_size, 21, 7))


@pytest.mark.parametrize("name,k", [("bf16-agree", 3), ("bf16-mtp2-freq2", 2)])
def test_greedy_32_with_drafts(mtpd, has_generate, presets, name, k):
    """Speculative greedy decoding is lossless: same ids as plain greedy."""
    m = presets.model(name)
    r, _ = mtpd_generate(mtpd, presets.dir(name), [2, 3], 1, k)
    if r.returncode == 2:
        pytest.skip(f"mtpd generate --draft-tokens {k} unsupported: {r.stderr.strip()}")
    check_greedy(mtpd, presets.dir(name), m, case_ids(m.cfg.vocab_size, 22, 7), draft_tokens=k)


@pytest.mark.parametrize("name,k,seed", [("bf16-agree", 1, 22), ("bf16-agree", 3, 23),
                                         ("bf16-mtp2-freq2", 2, 22), ("bf16-mtp2-freq2", 4, 23)])
def test_spec_acceptance_matches_reference(mtpd, has_generate, presets, name, k, seed):
    """Per-pass [k, accepted] of `mtpd generate --trace` == dsv3_ref.spec_sim
    (same drafting convention, incl. two MTP modules and the budget cap)."""
    m = presets.model(name)
    ids = case_ids(m.cfg.vocab_size, seed, 7)
    r = run_mtpd(mtpd, ["generate", "--model", presets.dir(name), "--ids", ids_arg(ids),
                        "--max-tokens", 32, "--draft-tokens", k, "--json", "--trace",
                        "--ignore-eos"])
    if r.returncode == 2:
        pytest.skip(f"mtpd generate --trace/--ignore-eos unsupported: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    gen, passes = dsv3_ref.spec_sim(m, ids, k, 32, trace=True)
    assert out["ids"] == gen
    assert out["passes"] == passes


# ---- committed transformers goldens -------------------------------------------

@pytest.mark.parametrize("name", GOLDENS)
def test_transformers_golden(mtpd, name):
    d = os.path.join(GOLDEN_DIR, name)
    g = np.load(os.path.join(d, "golden.npz"))
    n = 0
    while f"ids_{n}" in g:
        ids = g[f"ids_{n}"].tolist()
        has_mtp = f"mtp_logits_{n}" in g
        out = mtpd_logits(mtpd, d, ids, last=len(ids), mtp=has_mtp)
        err = rel_err_rows(out["logits"], g[f"logits_{n}"])
        assert err.max() <= REL_TOL, f"case {n}: rel err {err.max():.3g} row {err.argmax()}"
        if has_mtp:
            e = rel_err_rows(np.array(out["mtp_logits"])[None], g[f"mtp_logits_{n}"][-1:])
            assert e.max() <= REL_TOL, f"case {n}: MTP rel err {e.max():.3g}"
        n += 1
    assert n >= 2


@pytest.mark.parametrize("name", GOLDENS)
def test_transformers_golden_greedy(mtpd, has_generate, name):
    d = os.path.join(GOLDEN_DIR, name)
    g = np.load(os.path.join(d, "golden.npz"))
    r, out = mtpd_generate(mtpd, d, g["greedy_ids"].tolist(), 32)
    assert r.returncode == 0, r.stderr
    want = g["greedy_out"].tolist()  # transformers, not stopping at eos
    got = [int(t) for t in out["ids"]]
    eos = json.load(open(os.path.join(d, "config.json")))["eos_token_id"]
    assert got == want[:len(got)], f"\nmtpd: {got}\ngolden: {want}"
    assert len(got) == 32 or eos in (want[len(got)], got[-1] if got else None)


# ---- the trained reference checkpoint in ../shared --------------------------------

@pytest.fixture(scope="module")
def shared_model():
    if not os.path.isdir(SHARED_MODEL):
        pytest.skip(f"{SHARED_MODEL} absent")
    return dsv3_ref.load(SHARED_MODEL)


@pytest.mark.parametrize("seed,n", [(31, 6), (32, 24)])
def test_shared_model_logits(mtpd, shared_model, seed, n):
    ids = case_ids(shared_model.cfg.vocab_size, seed, n)
    check_logits(mtpd, SHARED_MODEL, shared_model, ids)


def test_shared_model_greedy(mtpd, has_generate, shared_model):
    bos = shared_model.cfg.bos_token_id
    check_greedy(mtpd, SHARED_MODEL, shared_model,
                 [bos] + case_ids(shared_model.cfg.vocab_size - 8, 33, 6), n=24)
