"""Rollback and edge cases of speculative decoding: caches after rejections
equal a fresh prefill; max_tokens < k+1; EOS inside a draft; the context
limit reached mid-draft; k beyond anything useful; a model without MTP;
stop strings; the CLI's --help and argument errors."""
import json
import os
import subprocess

import numpy as np
import pytest

from tools.ref.testutil import case_ids, cpu_has_avx512_bf16

from spec_helpers import (DEFAULT_MODEL, SHARED_MODEL, generate,
                          generate_prompt, ids_arg)


@pytest.mark.parametrize("name,k", [("bf16-agree", 3), ("bf16-mtp2-freq2", 4),
                                    ("f32-qproj-yarn", 2)])
def test_rollback_equals_fresh_prefill(mtpd, presets, name, k):
    """After every pass with a rejection (up to 16), one more position on
    the rolled-back caches gives the same main and MTP logits as on caches
    built from scratch over the accepted sequence."""
    v = presets.model(name).cfg.vocab_size
    out = generate(mtpd, presets.dir(name), case_ids(v, 5, 9), 40, k,
                   "--ignore-eos", "--check-rollback")
    rb = out["rollback_check"]
    assert rb["checks"] > 0, "no pass had a rejection: nothing was checked"
    assert 0 <= rb["main_max_abs_diff"] < 1e-3, rb
    assert 0 <= rb["mtp_max_abs_diff"] < 1e-3, rb


def test_rollback_sampling(mtpd, presets):
    v = presets.model("bf16-agree").cfg.vocab_size
    out = generate(mtpd, presets.dir("bf16-agree"), case_ids(v, 6, 4), 40, 4,
                   "--ignore-eos", "--check-rollback", "--temperature", 1.0,
                   "--seed", 3)
    rb = out["rollback_check"]
    assert rb["checks"] > 0 and rb["main_max_abs_diff"] < 1e-3 and \
        rb["mtp_max_abs_diff"] < 1e-3, rb


def test_max_tokens_below_k_plus_one(mtpd, presets):
    d = presets.dir("bf16-agree")
    prompt = case_ids(presets.model("bf16-agree").cfg.vocab_size, 8, 6)
    full = generate(mtpd, d, prompt, 8, 0, "--ignore-eos")["ids"]
    for n in (1, 2, 3, 4):
        out = generate(mtpd, d, prompt, n, 4, "--ignore-eos", "--trace")
        assert out["ids"] == full[:n]
        assert out["finish_reason"] == "length"
        # a pass never drafts more than it could emit
        emitted = 1
        for k, a in out["passes"]:
            assert k <= n - emitted - 1, out["passes"]
            emitted += a + 1
        assert out["stats"]["generated_tokens"] == n


def test_eos_inside_the_draft(mtpd, presets):
    """Declare as EOS a token that the greedy continuation produces in the
    middle of a pass: every k stops right before it, never emitting the
    tokens drafted after it."""
    d = presets.dir("bf16-agree")
    prompt = case_ids(presets.model("bf16-agree").cfg.vocab_size, 22, 7)
    full = generate(mtpd, d, prompt, 24, 0, "--ignore-eos")["ids"]
    ref_k3 = generate(mtpd, d, prompt, 24, 3, "--ignore-eos", "--trace")
    # the first token that was an accepted draft at position >= 2
    pos, emitted = None, 1
    for k, a in ref_k3["passes"]:
        if a >= 2 and emitted + 1 < len(full) and full[emitted + 1] not in full[:emitted + 1]:
            pos = emitted + 1
            break
        emitted += a + 1
    assert pos is not None, "no suitable pass (test ids)"
    eos = full[pos]
    for k in range(0, 5):
        out = generate(mtpd, d, prompt, 24, k, "--eos", eos)
        assert out["ids"] == full[:pos], f"k={k}"
        assert out["finish_reason"] == "stop"


def test_context_limit_mid_draft(mtpd, presets):
    d = presets.dir("bf16-agree")
    prompt = case_ids(presets.model("bf16-agree").cfg.vocab_size, 9, 10)
    ctx = 17
    base = generate(mtpd, d, prompt, 100, 0, "--ignore-eos", "--ctx", ctx)
    assert base["finish_reason"] == "context"
    # ctx positions hold prompt + output minus the last (pending) token
    assert len(base["ids"]) == ctx - len(prompt) + 1
    for k in (1, 3, 4, 16):
        out = generate(mtpd, d, prompt, 100, k, "--ignore-eos", "--ctx", ctx,
                       "--trace")
        assert out["ids"] == base["ids"], f"k={k}"
        assert out["finish_reason"] == "context"
        pos = len(prompt)
        for kk, a in out["passes"]:
            assert pos + kk + 1 <= ctx, out["passes"]  # never past the cache
            pos += a + 1
    # prompt longer than the context: usage error
    r = generate(mtpd, d, prompt, 5, 1, "--ctx", 5, expect_rc=2)
    assert "context" in r.stderr


@pytest.mark.parametrize("n", [1, 3])
def test_ctx_above_the_model_context(mtpd, presets, n):
    """--ctx above max_position_embeddings (512 here) means the model's
    context: generation ends with "context" there, also for sequences
    batched with others that go on (issue 9: it used to exit 1 with
    "capacity exceeded")."""
    d = presets.dir("bf16-agree")
    v = presets.model("bf16-agree").cfg.vocab_size
    long = case_ids(v, 12, 505)
    out = generate(mtpd, d, long, 40, 2, "--ignore-eos", "--ctx", 5000)
    assert out["finish_reason"] == "context"
    assert len(out["ids"]) == 512 - 505 + 1
    if n > 1:  # batch-mates of a sequence that hits the context
        short = case_ids(v, 13, 6)
        alone = generate(mtpd, d, short, 40, 2, "--ignore-eos")["ids"]
        both = generate(mtpd, d, ids_arg(long) + ";" + ids_arg(short), 40, 2,
                        "--ignore-eos", "--ctx", 5000, "--n-samples", n)
        for smp in both["samples"]:
            if smp["prompt"] == 0:
                assert smp["finish_reason"] == "context"
                assert smp["ids"] == out["ids"]
            else:
                assert smp["finish_reason"] == "length"
                assert smp["ids"] == alone


def test_k_larger_than_useful(mtpd, presets):
    """k = 16 with one MTP module (recursion 15 steps deep) and with two
    modules: still exact; k = 17 is refused."""
    for name in ("bf16-agree", "bf16-mtp2-freq2"):
        d = presets.dir(name)
        prompt = case_ids(presets.model(name).cfg.vocab_size, 30, 5)
        base = generate(mtpd, d, prompt, 40, 0, "--ignore-eos")["ids"]
        out = generate(mtpd, d, prompt, 40, 16, "--ignore-eos")
        assert out["ids"] == base
        assert len(out["stats"]["acceptance_by_position"]) == 16
    r = generate(mtpd, presets.dir("bf16-agree"), [1, 2], 5, 17, expect_rc=2)
    assert "--draft-tokens" in r.stderr


def test_model_without_mtp(mtpd, presets):
    d = presets.dir("f16-nomtp")
    prompt = case_ids(presets.model("f16-nomtp").cfg.vocab_size, 3, 6)
    base = generate(mtpd, d, prompt, 16, 0, "--ignore-eos")
    for k in ("3", "auto"):
        out = generate(mtpd, d, prompt, 16, k, "--ignore-eos")
        assert out["ids"] == base["ids"]
        assert "no MTP module" in out["notice"]
        assert out["stats"]["drafts"] == 0
    r = subprocess.run([mtpd, "generate", "--model", d, "--ids", "1,2",
                        "--max-tokens", "3", "--draft-tokens", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "notice" in r.stderr


def test_auto_draft_length(mtpd, presets):
    d = presets.dir("bf16-agree")
    prompt = case_ids(presets.model("bf16-agree").cfg.vocab_size, 31, 6)
    base = generate(mtpd, d, prompt, 60, 0, "--ignore-eos")["ids"]
    out = generate(mtpd, d, prompt, 60, "auto", "--ignore-eos", "--auto-max", 6)
    assert out["ids"] == base
    assert out["draft_tokens"] == "auto"
    hist = out["stats"]["k_histogram"]
    assert len(hist) <= 7 and sum(hist) == out["stats"]["verify_passes"]


@pytest.mark.parametrize("name", ["bf16-base", "bf16-mtp2-freq2"])
def test_auto_pause_and_resume(mtpd, presets, name):
    """A random MTP head is never accepted: auto pauses speculation (only
    the main hidden states are logged), resumes after the pause, catches
    the MTP caches up from the log in one call and pauses again. The ids
    stay those of plain decoding, and the rollback check run at the first
    rejection after each pause finds the caught-up MTP caches equal to a
    fresh prefill."""
    d = presets.dir(name)
    prompt = case_ids(presets.model(name).cfg.vocab_size, 5, 3)
    base = generate(mtpd, d, prompt, 300, 0, "--ignore-eos")["ids"]
    # auto decides from measured step times: on a machine busy with other
    # work one run's timings can say "keep drafting" all along. The ids
    # must equal plain decoding in every run; the pause is looked for in
    # up to three.
    for attempt in range(3):
        out = generate(mtpd, d, prompt, 300, "auto", "--ignore-eos",
                       "--trace", "--check-rollback")
        assert out["ids"] == base
        ks = [k for k, _ in out["passes"]]
        resumed = any(ks[i] > 0 and all(x == 0 for x in ks[i - 32:i])
                      for i in range(32, len(ks)))
        if out["stats"]["auto_pauses"] >= 2 and resumed:
            break
    assert out["stats"]["auto_pauses"] >= 2, out["stats"]
    assert resumed, ks
    rb = out["rollback_check"]
    assert rb["checks"] > 0 and rb["mtp_max_abs_diff"] < 1e-3, rb


# The committed default model always runs these (it has a tokenizer and
# a chat template); the reference model of ../shared when it is there.
TEXT_MODELS = pytest.mark.parametrize(
    "model_dir", [DEFAULT_MODEL, SHARED_MODEL],
    ids=["mtpd-code-small", "pycode-mtp-tiny"])


def text_model(model_dir):
    if model_dir == SHARED_MODEL and not os.path.isdir(SHARED_MODEL):
        pytest.skip("needs ../shared/models/pycode-mtp-tiny")
    assert os.path.exists(os.path.join(model_dir, "tokenizer.json")), model_dir
    return model_dir


@TEXT_MODELS
def test_stop_string(mtpd, model_dir):
    model = text_model(model_dir)
    text = "def add(a, b):\n"
    base = generate_prompt(mtpd, model, text, 64, 0, "--ignore-eos")
    t = base["text"]
    assert len(t) > 30
    stop = t[20:24]
    cut = t.find(stop)
    for k in (0, 2, 4):
        out = generate_prompt(mtpd, model, text, 64, k, "--stop", stop,
                              "--ignore-eos")
        assert out["finish_reason"] == "stop"
        assert out["text"] == t[:cut], f"k={k}"
        assert out["ids"] == base["ids"][:len(out["ids"])]
        assert len(out["ids"]) < len(base["ids"])


@TEXT_MODELS
def test_chat_prompt(mtpd, model_dir):
    model = text_model(model_dir)
    q = "Sort a list in Python."
    base = generate_prompt(mtpd, model, q, 24, 0, "--chat")
    plain = generate_prompt(mtpd, model, q, 24, 0)
    assert base["stats"]["prompt_tokens"] > plain["stats"]["prompt_tokens"]
    out = generate_prompt(mtpd, model, q, 24, 3, "--chat")
    assert out["ids"] == base["ids"]
    assert out["text"] == base["text"]


@TEXT_MODELS
def test_streaming_text_equals_json_text(mtpd, model_dir):
    model = text_model(model_dir)
    args = [mtpd, "generate", "--model", model, "--prompt",
            "import re\n", "--max-tokens", "40", "--draft-tokens", "3",
            "--ignore-eos"]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    j = generate_prompt(mtpd, model, "import re\n", 40, 3, "--ignore-eos")
    assert len(j["text"]) > 20
    assert r.stdout == j["text"]
    assert "decode" in r.stderr and "tok/s" in r.stderr
    # with a stop string the streamed text is cut exactly as the JSON's:
    # a 12-byte one spans tokens, so its first part must be held back
    stop = j["text"][10:22]
    r = subprocess.run(args + ["--stop", stop], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == j["text"][:j["text"].find(stop)]


def test_help_and_usage_errors(mtpd, presets):
    r = subprocess.run([mtpd, "generate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--model", "--prompt", "--ids", "--max-tokens", "--draft-tokens",
                 "--temperature", "--top-p", "--top-k", "--seed", "--threads",
                 "--json", "--chat", "--stop"):
        assert flag in r.stdout, flag
    d = presets.dir("bf16-agree")
    for bad in (["--draft-tokens", "x"], ["--temperature", "-1"],
                ["--top-p", "0"], ["--bogus"], ["--max-tokens", "0"]):
        r = subprocess.run([mtpd, "generate", "--model", d, "--ids", "1,2"] + bad,
                           capture_output=True, text=True)
        assert r.returncode == 2, bad
    r = subprocess.run([mtpd, "generate", "--model", d, "--ids", "1,99999"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "vocab" in r.stderr


def _logits_by(mtpd, d, prompt, opt, values):
    """`mtpd logits --last 4 --mtp` with opt set to each of values ->
    {value: parsed JSON}."""
    from tools.ref.testutil import run_mtpd
    out = {}
    for val in values:
        r = run_mtpd(mtpd, ["logits", "--model", d, "--ids",
                            ",".join(map(str, prompt)), "--last", 4, "--mtp",
                            opt, val])
        assert r.returncode == 0, r.stderr
        out[val] = json.loads(r.stdout)
    return out


@pytest.mark.parametrize("name", ["bf16-agree", "fp8-yarn-mtp2"])
def test_kv_cache_bf16(mtpd, presets, name):
    """--kv-dtype bf16 stores the latent cache in BF16 (half the bytes per
    token): logits stay within a few percent of the fp32 cache's, and
    within that mode greedy speculation still equals plain decoding and
    rolled-back caches equal a fresh prefill."""
    from tools.ref.testutil import run_mtpd
    d = presets.dir(name)
    v = presets.model(name).cfg.vocab_size
    prompt = case_ids(v, 48, 5)
    lg = _logits_by(mtpd, d, prompt, "--kv-dtype", ("f32", "bf16"))
    for key in ("logits", "mtp_logits"):
        a, b = np.array(lg["f32"][key]), np.array(lg["bf16"][key])
        rel = np.abs(a - b).max() / np.abs(a).max()
        assert 0 < rel < 5e-2, (key, rel)  # it is a different cache ...
    base = generate(mtpd, d, prompt, 40, 0, "--ignore-eos", "--kv-dtype", "bf16")
    spec = generate(mtpd, d, prompt, 40, 3, "--ignore-eos", "--kv-dtype", "bf16",
                    "--check-rollback")
    assert spec["ids"] == base["ids"]
    rb = spec["rollback_check"]
    assert rb["main_max_abs_diff"] < 1e-3 and rb["mtp_max_abs_diff"] < 1e-3, rb
    r = run_mtpd(mtpd, ["info", "--model", d, "--kv-dtype", "bf16"])
    f = run_mtpd(mtpd, ["info", "--model", d])
    assert json.loads(r.stdout)["kv_bytes_per_token"] * 2 == \
        json.loads(f.stdout)["kv_bytes_per_token"]
    assert run_mtpd(mtpd, ["generate", "--model", d, "--ids", "1,2",
                           "--kv-dtype", "f16"]).returncode == 2


@pytest.mark.parametrize("name", ["bf16-agree", "bf16-mtp2-freq2"])
def test_act_bf16(mtpd, presets, name):
    """--act-dtype bf16: BF16 matrices multiply bf16-rounded activations
    where the CPU has AVX512-BF16 (else nothing changes). Logits stay
    within a few percent of the exact ones, greedy speculation still
    equals plain decoding in that mode, and rolled-back caches equal a
    fresh prefill."""
    from tools.ref.testutil import run_mtpd
    d = presets.dir(name)
    v = presets.model(name).cfg.vocab_size
    prompt = case_ids(v, 40, 7)
    info = json.loads(run_mtpd(mtpd, ["info", "--model", d, "--act-dtype",
                                      "bf16"]).stdout)
    on = info["act_dtype"] == "bf16"
    assert on == cpu_has_avx512_bf16(), info
    assert json.loads(run_mtpd(mtpd, ["info", "--model", d]).stdout)[
        "act_dtype"] == "f32"
    lg = _logits_by(mtpd, d, prompt, "--act-dtype", ("f32", "bf16"))
    for key in ("logits", "mtp_logits"):
        a, b = np.array(lg["f32"][key]), np.array(lg["bf16"][key])
        rel = np.abs(a - b).max() / np.abs(a).max()
        if on:
            assert 0 < rel < 5e-2, (key, rel)
        else:
            assert rel == 0, (key, rel)
    base = generate(mtpd, d, prompt, 40, 0, "--ignore-eos", "--act-dtype",
                    "bf16")
    for k in (2, "auto"):
        spec = generate(mtpd, d, prompt, 40, k, "--ignore-eos", "--act-dtype",
                        "bf16", "--check-rollback")
        assert spec["ids"] == base["ids"], k
        rb = spec["rollback_check"]
        assert rb["main_max_abs_diff"] < 1e-3 and \
            rb["mtp_max_abs_diff"] < 1e-3, rb
    assert run_mtpd(mtpd, ["generate", "--model", d, "--ids", "1,2",
                           "--act-dtype", "f16"]).returncode == 2


def test_auto_pause_many_sequences(mtpd, presets):
    """Eight sequences pause and resume together: their catch-ups do not
    all fit one MTP call (8 x 33 rows > 256), so some wait a pass while
    their logs grow; every sequence still generates plain decoding's ids."""
    d = presets.dir("bf16-base")
    prompt = case_ids(presets.model("bf16-base").cfg.vocab_size, 5, 3)
    base = generate(mtpd, d, prompt, 200, 0, "--ignore-eos")["ids"]
    out = generate(mtpd, d, prompt, 200, "auto", "--ignore-eos",
                   "--n-samples", 8)
    assert [s["ids"] for s in out["samples"]] == [base] * 8
    assert out["stats"]["auto_pauses"] >= 8, out["stats"]
