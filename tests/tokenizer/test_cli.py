"""`mtpd tokenize` behaviour beyond parity: bad tokenizer files, bad input
lines, out-of-range ids, --add-bos, --info, chat/FIM errors.

Uses the committed fixtures (tests/tokenizer/fixtures) and the committed
default model, so it runs without ../shared; the checks on the real
tokenizers there skip when it is absent.
"""
import json
import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
BIN = os.environ.get("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))
FIX = os.path.join(ROOT, "tests", "tokenizer", "fixtures")
GPT2 = os.path.join(FIX, "bl_gpt2.json")
PYCODE = os.path.normpath(os.path.join(ROOT, "../shared/models/pycode-mtp-tiny"))
DSV3 = os.path.normpath(os.path.join(ROOT, "../shared/tokenizers/deepseek-v3"))

pytestmark = pytest.mark.skipif(not os.path.exists(BIN),
                                reason="no mtpd binary at " + BIN)


def run(args, stdin=b""):
    if isinstance(stdin, str):
        stdin = stdin.encode()
    return subprocess.run([BIN, "tokenize"] + args, input=stdin,
                          capture_output=True, timeout=120)


def lines(r):
    return [json.loads(x) for x in r.stdout.decode().split("\n") if x]


def base():
    with open(GPT2) as f:
        return json.load(f)


def drop_model(d):
    del d["model"]


def unknown_pretok(d):
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "Foo"}]}


def bad_merge_shape(d):
    d["model"]["merges"][0] = "a b c"


def merge_not_in_vocab(d):
    d["model"]["merges"][3] = ["Ġ", "zzzq"]


def bad_merge_type(d):
    d["model"]["merges"][5] = 17


def nfc(d):
    d["normalizer"] = {"type": "NFC"}


def unigram(d):
    d["model"]["type"] = "Unigram"


def added_no_content(d):
    del d["added_tokens"][0]["content"]


def vocab_bad_id(d):
    d["model"]["vocab"]["Ġ"] = "seven"


def bad_regex(d):
    d["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(unclosed"},
                          "behavior": "Isolated", "invert": False}


def bad_decoder(d):
    d["decoder"] = {"type": "Metaspace"}


def truncation(d):
    d["truncation"] = {"max_length": 8}


@pytest.mark.parametrize("mutate,needle", [
    (drop_model, "missing key 'model'"),
    (unknown_pretok, "pre_tokenizer.pretokenizers[1].type"),
    (bad_merge_shape, "model.merges[0]"),
    (merge_not_in_vocab, "model.merges[3]: token 'zzzq' is not in model.vocab"),
    (bad_merge_type, "model.merges[5]"),
    (nfc, "normalizer.type"),
    (unigram, "model.type"),
    (added_no_content, "added_tokens[0]: missing key 'content'"),
    (vocab_bad_id, "model.vocab['Ġ']"),
    (bad_regex, "pre_tokenizer.pattern.Regex"),
    (bad_decoder, "decoder.type"),
    (truncation, "truncation"),
])
def test_malformed_tokenizer_json(tmp_path, mutate, needle):
    d = base()
    mutate(d)
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(d, ensure_ascii=False))
    r = run(["--tokenizer", str(p)], '{"text": "hi"}\n')
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"", err
    assert needle in err, err


# odd bytes: a terminal escape, BEL and a lone surrogate (WTF-8 ED B3 BF)
ODD = "\x1b[2J\x07\udcff"
ODD_SHOWN = "\\x1B[2J\\x07\\xED\\xB3\\xBF"


def odd_type(d):
    d["model"]["type"] = ODD


def odd_vocab_key(d):
    d["model"]["vocab"][ODD] = "seven"


def odd_merge(d):
    d["model"]["merges"][3] = ["Ġ", ODD]


def odd_decoder(d):
    d["decoder"] = {"type": ODD}


@pytest.mark.parametrize("mutate,needle", [
    (odd_type, "model.type: '%s'" % ODD_SHOWN),
    (odd_vocab_key, "model.vocab['%s']" % ODD_SHOWN),
    (odd_merge, "token '%s' is not in model.vocab" % ODD_SHOWN),
    (odd_decoder, "unsupported decoder '%s'" % ODD_SHOWN),
])
def test_quoted_input_is_escaped(tmp_path, mutate, needle):
    """Strings from tokenizer.json quoted in an error come out as printable
    UTF-8: control bytes and invalid UTF-8 as \\xNN."""
    d = base()
    mutate(d)
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(d))  # ASCII, with \u escapes
    r = run(["--tokenizer", str(p)], '{"text": "hi"}\n')
    assert r.returncode == 1 and r.stdout == b"", r.stderr
    err = r.stderr.decode("utf-8")  # raises on invalid UTF-8
    assert not [c for c in err[:-1] if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F], err
    assert needle in err, err


def test_not_json(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_text('{"model": {"type": "BPE", ')
    r = run(["--tokenizer", str(p)])
    assert r.returncode == 1 and "line 1" in r.stderr.decode()
    r = run(["--tokenizer", str(tmp_path / "missing.json")])
    assert r.returncode == 1 and "cannot" in r.stderr.decode()


def test_usage_errors():
    assert run([]).returncode == 2
    assert run(["--tokenizer", GPT2, "--model", FIX]).returncode == 2
    assert run(["--tokenizer", GPT2, "--stream"]).returncode == 2
    assert run(["--tokenizer", GPT2, "--frobnicate"]).returncode == 2


def test_decode_out_of_range_ids():
    n = len(base()["model"]["vocab"]) + len(base()["added_tokens"])
    src = "\n".join(json.dumps(x) for x in [
        {"ids": [72, 73]}, {"ids": [72, n + 1000]}, {"ids": [-1]},
        {"ids": [1.5]}, {"ids": [2 ** 40]}, {"ids": "x"}, {"ids": []},
        {"ids": [74]}]) + "\n"
    for extra in ([], ["--stream"], ["--no-special"]):
        r = run(["--tokenizer", GPT2, "--decode"] + extra, src)
        out = lines(r)
        assert r.returncode == 1 and len(out) == 8
        assert "text" in out[0] and "text" in out[6] and "text" in out[7]
        for k in (1, 2, 3, 4, 5):
            assert "error" in out[k], out[k]
        assert str(n + 1000) in out[1]["error"]


def test_bad_input_lines():
    src = (b'{"text": "ok"}\n'
           b'not json\n'
           b'{"txt": "x"}\n'
           b'{"text": 5}\n'
           b'["text"]\n'
           b'{"text": "bad \xff byte"}\n'
           b'{"text": "lone \\ud800 surrogate"}\n'
           b'{"text": "\xed\xa0\x80 encoded surrogate"}\n'
           b'{"text": "ok again"}\n')
    r = run(["--tokenizer", GPT2], src)
    out = lines(r)
    assert r.returncode == 1 and len(out) == 9
    assert "ids" in out[0] and "ids" in out[8]
    for k in range(1, 8):
        assert "error" in out[k], (k, out[k])
    assert "UTF-8" in out[5]["error"] and "offset 4" in out[5]["error"]
    assert "UTF-8" in out[6]["error"] and "UTF-8" in out[7]["error"]


def test_add_bos_follows_tokenizer_config(tmp_path):
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(json.dumps({"bos_token": "<s>", "eos_token": {
        "content": "</s>"}, "add_bos_token": True, "add_eos_token": True}))
    text = '{"text": "hello world"}\n'
    plain = lines(run(["--tokenizer", GPT2, "--no-special"], text))[0]["ids"]
    post = lines(run(["--tokenizer", GPT2], text))[0]["ids"]
    d = base()
    bos = [t["id"] for t in d["added_tokens"] if t["content"] == "<s>"][0]
    eos = [t["id"] for t in d["added_tokens"] if t["content"] == "</s>"][0]
    assert post == [bos] + plain + [eos]  # the TemplateProcessing
    r = run(["--tokenizer", GPT2, "--config", str(cfg), "--add-bos"], text)
    assert lines(r)[0]["ids"] == [bos] + plain + [eos]
    cfg.write_text(json.dumps({"bos_token": "<s>", "add_bos_token": True}))
    r = run(["--tokenizer", GPT2, "--config", str(cfg), "--add-bos"], text)
    assert lines(r)[0]["ids"] == [bos] + plain
    cfg.write_text(json.dumps({"bos_token": "<nope>"}))
    r = run(["--tokenizer", GPT2, "--config", str(cfg)], text)
    assert r.returncode == 1 and "bos_token" in r.stderr.decode()


def test_chat_template_errors(tmp_path):
    msg = '{"messages": [{"role": "user", "content": "hi"}]}\n'
    r = run(["--tokenizer", GPT2, "--chat"], msg)
    assert "no chat_template" in lines(r)[0]["error"]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"chat_template": "{{ messages }}"}))
    r = run(["--tokenizer", GPT2, "--config", str(cfg), "--chat"], msg)
    assert "unknown chat_template" in lines(r)[0]["error"]
    r = run(["--tokenizer", GPT2, "--fim"], '{"prefix": "a", "suffix": "b"}\n')
    assert "FIM" in lines(r)[0]["error"]


# the committed default model always; the ../shared one when present
INFO = [(os.path.join(ROOT, "models", "mtpd-code-small"), 0, 1, 6),
        pytest.param(PYCODE, 8185, 8186, 8191, marks=pytest.mark.skipif(
            not os.path.isdir(PYCODE), reason="no ../shared"))]


@pytest.mark.parametrize("model,bos,eos,assistant", INFO)
def test_info_and_roles(model, bos, eos, assistant):
    r = run(["--model", model, "--info"])
    info = json.loads(r.stdout)
    assert info == {"n_ids": 8192, "bos_id": bos, "eos_id": eos,
                    "chat_template": "deepseek-v3-plain"}
    bad = '{"messages": [{"role": "tool", "content": "x"}]}\n'
    out = lines(run(["--model", model, "--chat"], bad))
    assert "role 'tool'" in out[0]["error"]
    # a role quoted in the error is escaped (no raw control bytes)
    odd = '{"messages": [{"role": "\\u001b[2J\\u0007", "content": "x"}]}\n'
    r = run(["--model", model, "--chat"], odd)
    err = lines(r)[0]["error"]
    assert "role '\\x1B[2J\\x07'" in err, err
    noprompt = lines(run(["--model", model, "--chat"], json.dumps(
        {"messages": [{"role": "user", "content": "hi"}],
         "add_generation_prompt": False}) + "\n"))[0]["ids"]
    withp = lines(run(["--model", model, "--chat"], json.dumps(
        {"messages": [{"role": "user", "content": "hi"}]}) + "\n"))[0]["ids"]
    assert withp == noprompt + [assistant]  # <｜Assistant｜>


@pytest.mark.skipif(not os.path.isdir(DSV3), reason="no ../shared")
def test_long_line_is_not_quadratic():
    """100 kB lines without spaces (one BPE word each) encode fast."""
    lines_in = "".join(json.dumps({"text": t}) + "\n" for t in [
        "a" * 100_000, "ab" * 50_000, "7" * 100_000, "é" * 50_000,
        "x" + " " * 100_000 + "y"])
    t0 = time.monotonic()
    r = run(["--model", DSV3], lines_in)
    dt = time.monotonic() - t0
    assert r.returncode == 0 and len(lines(r)) == 5
    assert dt < 5.0, dt
