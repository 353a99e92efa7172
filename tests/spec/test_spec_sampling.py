"""Sampling under speculation: drafts are sampled from the MTP's q and
accepted by rejection sampling, so every emitted token must follow the
main model's (tempered, truncated) distribution p exactly.

On a 16-token random model we draw thousands of 5-token continuations in
one batched run and compare them with p computed by the numpy reference:
- the joint law of (t1, t2) (t2 is the first speculative position) with a
  chi-square test over all 256 cells;
- t3..t5 (deeper draft positions, bonus tokens) with a randomised
  probability-integral transform: u = F(t-1) + V p(t) is uniform when t ~ p.
Seeds are fixed, so the verdicts are deterministic. The same tests run with
MTPD_SPEC_BREAK_ACCEPT=1 (accept every draft) must fail: that shows the
tests catch a wrong acceptance rule."""
import math

import numpy as np
import pytest

from spec_helpers import generate

PROMPT = [0, 5, 9]
N_SAMPLES = 4000
P_MIN = 1e-4  # a correct sampler fails this with probability ~1e-4


def target_probs(logits, temperature, top_k=0, top_p=1.0):
    """The C sampler's target distribution (spec/sample.c): softmax of
    logits / T, keep top_k (ties: lower id), then the smallest prefix in
    descending order with mass >= top_p, renormalised."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    order = sorted(range(len(e)), key=lambda i: (-e[i], i))
    keep = len(e) if not 0 < top_k < len(e) else top_k
    if top_p < 1.0:
        tot = sum(e[i] for i in order[:keep])
        cum = 0.0
        for j, i in enumerate(order[:keep]):
            cum += e[i]
            if cum >= top_p * tot:
                keep = j + 1
                break
    p = np.zeros_like(e)
    p[order[:keep]] = e[order[:keep]]
    return p / p.sum()


def chi2_sf(chi, dof):
    """Upper tail of the chi-square distribution (Wilson-Hilferty)."""
    if dof <= 0:
        return 1.0
    z = ((chi / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_test(counts, probs):
    """Pearson chi-square p-value; cells with expected < 5 are pooled; an
    observation where p = 0 gives 0."""
    counts = np.asarray(counts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    n = counts.sum()
    if np.any((probs == 0) & (counts > 0)):
        return 0.0
    exp = probs * n
    big = exp >= 5
    chi = float((((counts[big] - exp[big]) ** 2) / exp[big]).sum())
    cells = int(big.sum())
    pe, po = exp[~big].sum(), counts[~big].sum()
    if pe > 0:
        chi += (po - pe) ** 2 / max(pe, 1.0)
        cells += 1
    return chi2_sf(chi, cells - 1)


def sample_runs(mtpd, model_dir, k, settings, env=None, seed=1000):
    out = generate(mtpd, model_dir, PROMPT, 5, k, "--ignore-eos",
                   "--n-samples", N_SAMPLES, "--seed", seed, *settings, env=env)
    seqs = [s["ids"] for s in out["samples"]]
    assert all(len(s) == 5 for s in seqs)
    return np.array(seqs), out["stats"]


def pvalues(ref, seqs, temperature, top_k, top_p):
    """(joint (t1, t2) chi-square p-value, PIT p-value over t3..t5)."""
    V = ref.cfg.vocab_size
    cache = {}

    def probs_after(prefix):
        key = tuple(prefix)
        if key not in cache:
            lg, _ = ref.forward(list(PROMPT) + list(prefix),
                                logits_from=len(PROMPT) + len(prefix) - 1)
            cache[key] = target_probs(lg[-1], temperature, top_k, top_p)
        return cache[key]

    p1 = probs_after([])
    joint = np.zeros((V, V))
    for a in range(V):
        if p1[a] > 0:
            joint[a] = p1[a] * probs_after([a])
    counts = np.zeros((V, V))
    for s in seqs:
        counts[s[0], s[1]] += 1
    p_joint = chi2_test(counts.ravel(), joint.ravel())

    # PIT of t3..t5 given their actual prefixes; one forward per distinct
    # 4-token prefix gives all three conditionals
    rng = np.random.default_rng(7)
    us = []
    rows = {}
    for s in seqs:
        key = tuple(int(x) for x in s[:4])
        if key not in rows:
            ids = list(PROMPT) + list(key)
            lg, _ = ref.forward(ids, logits_from=len(PROMPT) + 1)
            rows[key] = [target_probs(r, temperature, top_k, top_p) for r in lg]
        for j, row in enumerate(rows[key]):  # predicts t3, t4, t5
            t = int(s[2 + j])
            if row[t] == 0:
                return p_joint, 0.0
            us.append(row[:t].sum() + rng.random() * row[t])
    hist, _ = np.histogram(us, bins=20, range=(0.0, 1.0))
    p_pit = chi2_test(hist, np.full(20, 1 / 20))
    return p_joint, p_pit


CONFIGS = [
    # (k, temperature, top_k, top_p)
    (3, 1.0, 0, 1.0),
    (2, 0.7, 6, 0.9),
]


@pytest.mark.parametrize("k,temperature,top_k,top_p", CONFIGS)
def test_emitted_distribution_is_the_main_models(mtpd, tiny_vocab, k,
                                                 temperature, top_k, top_p):
    d, ref = tiny_vocab
    settings = ["--temperature", temperature, "--top-k", top_k, "--top-p", top_p]
    seqs, st = sample_runs(mtpd, d, k, settings)
    # both branches of the rule are exercised
    assert 0.2 < st["acceptance_rate"] < 0.95, st
    p_joint, p_pit = pvalues(ref, seqs, temperature, top_k, top_p)
    assert p_joint > P_MIN, f"(t1, t2) law differs from p: p-value {p_joint:.3g}"
    assert p_pit > P_MIN, f"t3..t5 law differs from p: p-value {p_pit:.3g}"


@pytest.mark.parametrize("k,temperature,top_k,top_p", CONFIGS)
def test_broken_acceptance_rule_is_detected(mtpd, tiny_vocab, k, temperature,
                                            top_k, top_p):
    """Accepting every draft emits the MTP's distribution: the tests above
    must reject it (otherwise they prove nothing)."""
    d, ref = tiny_vocab
    settings = ["--temperature", temperature, "--top-k", top_k, "--top-p", top_p]
    seqs, st = sample_runs(mtpd, d, k, settings,
                           env={"MTPD_SPEC_BREAK_ACCEPT": "1"})
    assert st["acceptance_rate"] == 1.0
    p_joint, p_pit = pvalues(ref, seqs, temperature, top_k, top_p)
    assert p_joint < 1e-8 and p_pit < 1e-8, (p_joint, p_pit)


@pytest.mark.parametrize("ctx_tokens", [0, 3])
def test_restricted_draft_head_is_exact(mtpd, tiny_vocab, tmp_path, ctx_tokens):
    """FR-Spec style draft head over 9 of the 16 ids (plus, with
    ctx_tokens, up to 3 ids each sequence has seen, so q's support grows
    during a run): q is zero elsewhere, acceptance uses that q, the output
    law is still p."""
    d, ref = tiny_vocab
    f = tmp_path / "vocab.txt"
    f.write_text("# test subset\n" + "\n".join(str(i) for i in
                                                 [6, 5, 0, 9, 10, 11, 12, 13, 3]))
    settings = ["--temperature", 1.0, "--draft-vocab", str(f),
                "--draft-ctx-tokens", ctx_tokens]
    seqs, st = sample_runs(mtpd, d, 3, settings, seed=2000)
    assert 0.1 < st["acceptance_rate"] < 0.95, st
    p_joint, p_pit = pvalues(ref, seqs, 1.0, 0, 1.0)
    assert p_joint > P_MIN and p_pit > P_MIN, (p_joint, p_pit)


def test_plain_sampling_distribution(mtpd, tiny_vocab):
    """k = 0 (no speculation) passes the same test: the reference side of
    the comparison is right."""
    d, ref = tiny_vocab
    seqs, _ = sample_runs(mtpd, d, 0, ["--temperature", 1.0], seed=77)
    p_joint, p_pit = pvalues(ref, seqs, 1.0, 0, 1.0)
    assert p_joint > P_MIN and p_pit > P_MIN, (p_joint, p_pit)


def test_batch_independent_with_context_draft_ids(mtpd, presets, tmp_path):
    """The restricted draft head's context ids belong to each sequence: a
    sampled sequence is the same alone and batched with other prompts."""
    d = presets.dir("bf16-agree")
    v = presets.model("bf16-agree").cfg.vocab_size
    f = tmp_path / "vocab.txt"
    f.write_text("\n".join(str(i) for i in range(0, v, 4)))
    args = ["--temperature", 0.9, "--ignore-eos", "--draft-vocab", f,
            "--draft-ctx-tokens", 64]
    solo = generate(mtpd, d, [3, 4, 5], 40, 3, "--seed", 21, *args)
    batch = generate(mtpd, d, "3,4,5;9,2,7,1;6", 40, 3, "--seed", 20,
                     "--n-samples", 3, *args)
    s = [x for x in batch["samples"] if x["prompt"] == 0 and x["seed"] == 21]
    assert s and s[0]["ids"] == solo["ids"]
    assert solo["stats"]["accepted_tokens"] > 0


def test_seed_reproducible(mtpd, presets):
    d = presets.dir("bf16-agree")
    args = ["--temperature", 0.8, "--top-p", 0.95, "--ignore-eos"]
    a = generate(mtpd, d, [3, 4, 5], 40, 3, "--seed", 11, *args)
    b = generate(mtpd, d, [3, 4, 5], 40, 3, "--seed", 11, *args)
    c = generate(mtpd, d, [3, 4, 5], 40, 3, "--seed", 12, *args)
    assert a["ids"] == b["ids"]
    assert a["stats"]["accepted_tokens"] == b["stats"]["accepted_tokens"]
    assert a["ids"] != c["ids"]
    # a sequence's sample does not depend on what else shares its batch
    batch = generate(mtpd, d, "3,4,5;7,8", 40, 3, "--seed", 10,
                     "--n-samples", 3, *args)
    s = [x for x in batch["samples"] if x["prompt"] == 0 and x["seed"] == 11]
    assert s and s[0]["ids"] == a["ids"]
