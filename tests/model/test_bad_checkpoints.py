"""Broken checkpoints: `mtpd logits` must exit non-zero without crashing
(no signal), printing exactly one stderr line `mtpd: error: ...` that names
the file (basename) and, where there is one, the tensor or config key.
A checkpoint without MTP tensors loads, and --mtp then fails naming MTP."""
import json
import os
import shutil
import struct
import subprocess

import pytest

from tools.ref import ckpt
from tools.ref.testutil import run_mtpd

IDS = "3,4,5"
SINGLE = "bf16-base"        # model.safetensors
SHARDED = "f32-qproj-yarn"  # 2 shards + index
FP8 = "fp8-yarn-mtp2"       # 2 shards + index, F8_E4M3 + weight_scale_inv
T_KVB = "model.layers.1.self_attn.kv_b_proj.weight"
T_QA = "model.layers.0.self_attn.q_a_proj.weight"


def copy_preset(presets, name, tmp_path):
    d = str(tmp_path / name)
    shutil.copytree(presets.dir(name), d)
    return d


def expect_error(binary, model_dir, *needles, mtp=False):
    """Runs mtpd logits; asserts a clean failure whose one error line
    contains every needle. -> the line."""
    args = ["logits", "--model", model_dir, "--ids", IDS] + (["--mtp"] if mtp else [])
    r = run_mtpd(binary, args, timeout=60)
    assert r.returncode > 0, f"exit {r.returncode} (negative = killed by a signal)\n{r.stderr}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{r.stderr}"
    line = lines[0]
    assert line.startswith("mtpd: error: "), line
    for n in needles:
        assert n in line, f"{n!r} not in: {line}"
    assert r.stdout.strip() == "", "nothing on stdout on failure"
    return line


def header_of(path):
    header, start, _ = ckpt.read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    return header, data


def write_raw(path, header, data, hlen=None):
    hb = json.dumps(header).encode() if isinstance(header, dict) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb) if hlen is None else hlen))
        f.write(hb)
        f.write(data)


def edit_tensors(path, fn):
    t = ckpt.read_safetensors(path)
    fn(t)
    ckpt.write_safetensors(path, t)


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    fn(cfg)
    json.dump(cfg, open(p, "w"))


def shard_of(d, tensor):
    wm = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
    return wm[tensor]


# ---- tensors ---------------------------------------------------------------

def test_missing_tensor(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    edit_tensors(os.path.join(d, "model.safetensors"), lambda t: t.pop(T_KVB))
    expect_error(mtpd, d, T_KVB)


def test_missing_tensor_sharded(mtpd, presets, tmp_path):
    """Tensor named by the index but absent from its shard."""
    d = copy_preset(presets, SHARDED, tmp_path)
    name = "model.layers.1.self_attn.o_proj.weight"
    shard = shard_of(d, name)
    edit_tensors(os.path.join(d, shard), lambda t: t.pop(name))
    expect_error(mtpd, d, name, shard)


def test_wrong_shape(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)

    def f(t):
        dt, a = t[T_QA]
        t[T_QA] = (dt, a[:, :-1].copy())
    edit_tensors(os.path.join(d, "model.safetensors"), f)
    expect_error(mtpd, d, T_QA)


def test_wrong_shape_embedding_vs_vocab(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    edit_config(d, lambda c: c.update(vocab_size=c["vocab_size"] + 1))
    expect_error(mtpd, d, "model.embed_tokens.weight")


def test_wrong_dtype(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    name = "model.layers.0.self_attn.kv_a_layernorm.weight"

    def f(t):
        _, a = t[name]
        t[name] = ("I16", a.view("<i2"))
    edit_tensors(os.path.join(d, "model.safetensors"), f)
    expect_error(mtpd, d, name)


def test_fp8_without_scale(mtpd, presets, tmp_path):
    d = copy_preset(presets, FP8, tmp_path)
    name = "model.layers.1.self_attn.o_proj.weight_scale_inv"
    shard = shard_of(d, name)
    edit_tensors(os.path.join(d, shard), lambda t: t.pop(name))
    idx = os.path.join(d, "model.safetensors.index.json")
    j = json.load(open(idx))
    del j["weight_map"][name]
    json.dump(j, open(idx, "w"))
    expect_error(mtpd, d, "model.layers.1.self_attn.o_proj.weight")


def test_fp8_scale_wrong_shape(mtpd, presets, tmp_path):
    d = copy_preset(presets, FP8, tmp_path)
    name = "model.layers.0.self_attn.q_a_proj.weight_scale_inv"  # [2, 2]

    def f(t):
        dt, a = t[name]
        t[name] = (dt, a[:1].copy())
    edit_tensors(os.path.join(d, shard_of(d, name)), f)
    expect_error(mtpd, d, "model.layers.0.self_attn.q_a_proj.weight")


# ---- safetensors file structure ---------------------------------------------------

def test_truncated_file(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    os.truncate(p, os.path.getsize(p) - 1000)
    expect_error(mtpd, d, "model.safetensors")


def test_truncated_inside_header(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    os.truncate(p, 100)
    expect_error(mtpd, d, "model.safetensors")


def test_empty_file(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    open(os.path.join(d, "model.safetensors"), "wb").close()
    expect_error(mtpd, d, "model.safetensors")


def test_bad_header_json(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    _, data = header_of(p)
    write_raw(p, b'{"model.embed_tokens.weight": {"dtype": "BF16", "shape": [', data)
    expect_error(mtpd, d, "model.safetensors")


def test_header_length_past_end(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    header, data = header_of(p)
    write_raw(p, header, data, hlen=os.path.getsize(p) * 4)
    expect_error(mtpd, d, "model.safetensors")


def test_header_length_huge(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    header, data = header_of(p)
    write_raw(p, header, data, hlen=(1 << 64) - 8)
    expect_error(mtpd, d, "model.safetensors")


def _bad_offsets(mtpd, presets, tmp_path, fn):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    header, data = header_of(p)
    fn(header, len(data))
    write_raw(p, header, data)
    return d


def test_offsets_inverted(mtpd, presets, tmp_path):
    def f(h, n):
        b, e = h[T_KVB]["data_offsets"]
        h[T_KVB]["data_offsets"] = [e, b]
    expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors", T_KVB)


def test_offsets_past_end(mtpd, presets, tmp_path):
    def f(h, n):
        b, e = h[T_KVB]["data_offsets"]
        h[T_KVB]["data_offsets"] = [n - (e - b) + 64, n + 64]
    expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors", T_KVB)


def test_offsets_huge(mtpd, presets, tmp_path):
    def f(h, n):
        b, e = h[T_KVB]["data_offsets"]
        h[T_KVB]["data_offsets"] = [(1 << 64) - 16, (1 << 64) - 16 + (e - b)]
    expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors", T_KVB)


def test_offsets_overlapping(mtpd, presets, tmp_path):
    def f(h, n):
        other = "model.layers.1.self_attn.o_proj.weight"
        b, e = h[T_KVB]["data_offsets"]
        ob, oe = h[other]["data_offsets"]
        # keep the size right, start half-way into the other tensor
        h[T_KVB]["data_offsets"] = [ob + (oe - ob) // 2, ob + (oe - ob) // 2 + (e - b)]
    line = expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors")
    assert T_KVB in line or "model.layers.1.self_attn.o_proj.weight" in line, line


def test_offsets_size_mismatch(mtpd, presets, tmp_path):
    def f(h, n):
        b, e = h[T_KVB]["data_offsets"]
        h[T_KVB]["data_offsets"] = [b, e - 2]
    expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors", T_KVB)


def test_unknown_dtype(mtpd, presets, tmp_path):
    def f(h, n):
        h[T_KVB]["dtype"] = "Q4_K"
    expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors", T_KVB)


def test_negative_shape(mtpd, presets, tmp_path):
    def f(h, n):
        h[T_KVB]["shape"] = [-h[T_KVB]["shape"][0], h[T_KVB]["shape"][1]]
    expect_error(mtpd, _bad_offsets(mtpd, presets, tmp_path, f), "model.safetensors", T_KVB)


def test_header_not_an_object(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    _, data = header_of(p)
    write_raw(p, b'[1, 2, 3]', data)
    expect_error(mtpd, d, "model.safetensors")


# ---- config.json and the index ----------------------------------------------------

def test_bad_config_json(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"vocab_size": 384, "hidden_size": 96,')
    expect_error(mtpd, d, "config.json")


def test_missing_config_json(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    os.remove(os.path.join(d, "config.json"))
    expect_error(mtpd, d, "config.json")


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "kv_lora_rank"])
def test_missing_config_key(mtpd, presets, tmp_path, key):
    d = copy_preset(presets, SINGLE, tmp_path)
    edit_config(d, lambda c: c.pop(key))
    expect_error(mtpd, d, "config.json", key)


def test_config_key_wrong_type(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    edit_config(d, lambda c: c.update(num_attention_heads="four"))
    expect_error(mtpd, d, "config.json", "num_attention_heads")


def test_index_names_missing_shard(mtpd, presets, tmp_path):
    d = copy_preset(presets, SHARDED, tmp_path)
    idx = os.path.join(d, "model.safetensors.index.json")
    j = json.load(open(idx))
    j["weight_map"]["model.norm.weight"] = "model-00003-of-00003.safetensors"
    json.dump(j, open(idx, "w"))
    expect_error(mtpd, d, "model-00003-of-00003.safetensors")


def test_shard_file_missing(mtpd, presets, tmp_path):
    d = copy_preset(presets, SHARDED, tmp_path)
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    expect_error(mtpd, d, "model-00002-of-00002.safetensors")


def test_bad_index_json(mtpd, presets, tmp_path):
    d = copy_preset(presets, SHARDED, tmp_path)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        f.write('{"weight_map": {"model.norm.weight": ')
    expect_error(mtpd, d, "model.safetensors.index.json")


def test_no_weights_at_all(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    os.remove(os.path.join(d, "model.safetensors"))
    expect_error(mtpd, d, "model.safetensors")


# ---- MTP -------------------------------------------------------------------

def test_checkpoint_without_mtp_tensors(mtpd, presets, tmp_path):
    """MTP layer removed (config still declares num_nextn_predict_layers 1):
    the main model loads and runs; --mtp fails with an MTP error."""
    d = copy_preset(presets, SINGLE, tmp_path)
    L = json.load(open(os.path.join(d, "config.json")))["num_hidden_layers"]
    edit_tensors(os.path.join(d, "model.safetensors"),
                 lambda t: [t.pop(k) for k in list(t) if k.startswith(f"model.layers.{L}.")])
    r = run_mtpd(mtpd, ["logits", "--model", d, "--ids", IDS], timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["logits"]) == 1
    expect_error(mtpd, d, "MTP", mtp=True)


def test_nomtp_preset_mtp_flag(mtpd, presets):
    expect_error(mtpd, presets.dir("f16-nomtp"), "MTP", mtp=True)


# ---- input quoted in messages is escaped -------------------------------------
# Names and strings from the checkpoint are quoted in the error line; bytes
# that are not printable UTF-8 (control characters, invalid UTF-8, lone
# surrogates that \u escapes decode to) must come out as \xNN, so the line
# is valid UTF-8 a terminal or a log can take.

# raw invalid UTF-8, then JSON escapes decoding to BEL, ESC (a terminal
# colour sequence) and a lone surrogate (WTF-8 bytes ED B3 BF)
ODD = b"odd\xff\xfe\\u0007\\u001b[31m\\udcffname"


def expect_escaped_error(binary, model_dir, *needles):
    """Like expect_error, on the raw bytes of stderr: one line, valid UTF-8,
    no control byte but its newline, containing every needle. -> the line."""
    args = ["logits", "--model", model_dir, "--ids", IDS]
    r = subprocess.run([binary] + args, capture_output=True, timeout=60)
    assert r.returncode > 0, f"exit {r.returncode}\n{r.stderr!r}"
    err = r.stderr
    assert err.endswith(b"\n") and err.count(b"\n") == 1, err
    line = err[:-1].decode("utf-8")  # raises on invalid UTF-8
    bad = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    assert not bad, f"control characters {bad!r} in {line!r}"
    assert line.startswith("mtpd: error: "), line
    for n in needles:
        assert n in line, f"{n!r} not in: {line}"
    return line


def test_tensor_name_not_printable(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    header, data = header_of(p)
    entry = header.pop(T_KVB)
    entry["dtype"] = "Q4_K"  # so that the error names this tensor
    hb = json.dumps(header)[:-1].encode()
    hb += b', "' + ODD + b'": ' + json.dumps(entry).encode() + b"}"
    write_raw(p, hb, data)
    line = expect_escaped_error(mtpd, d, "model.safetensors",
                                "odd\\xFF\\xFE\\x07\\x1B[31m\\xED\\xB3\\xBFname",
                                "unknown dtype")
    assert "Q4_K" in line


def test_dtype_not_printable(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    header, data = header_of(p)
    header[T_KVB]["dtype"] = "@@DT@@"
    hb = json.dumps(header).encode().replace(b"@@DT@@", b"\\u0000\xc2\x85\x7f")
    write_raw(p, hb, data)
    expect_escaped_error(mtpd, d, T_KVB, 'unknown dtype "\\x00\\xC2\\x85\\x7F"')


def test_index_key_not_printable(mtpd, presets, tmp_path):
    d = copy_preset(presets, SHARDED, tmp_path)
    p = os.path.join(d, "model.safetensors.index.json")
    idx = json.load(open(p))
    idx["weight_map"]["@@K@@"] = "../outside.safetensors"
    with open(p, "wb") as f:
        f.write(json.dumps(idx).encode().replace(b'"@@K@@"', b'"' + ODD + b'"'))
    expect_escaped_error(mtpd, d, "index.json",
                         "odd\\xFF\\xFE\\x07\\x1B[31m\\xED\\xB3\\xBFname",
                         "shard must be a file name")


def test_config_value_not_printable(mtpd, presets, tmp_path):
    d = copy_preset(presets, SINGLE, tmp_path)
    edit_config(d, lambda c: c.update(scoring_func="@@V@@"))
    p = os.path.join(d, "config.json")
    raw = open(p, "rb").read().replace(b"@@V@@", ODD)
    open(p, "wb").write(raw)
    expect_escaped_error(mtpd, d, "config.json", "scoring_func",
                         "odd\\xFF\\xFE\\x07\\x1B[31m\\xED\\xB3\\xBFname")


def test_config_key_not_printable(mtpd, presets, tmp_path):
    # a raw control byte in a key is a JSON syntax error; the message
    # locates it and must not echo the raw bytes around it
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "config.json")
    raw = open(p, "rb").read()
    open(p, "wb").write(b'{"k\xff\xfe\x1b[31m": 1, ' + raw.lstrip()[1:])
    expect_escaped_error(mtpd, d, "config.json", "control character")
    # an unexpected raw byte where a value should be is quoted escaped
    open(p, "wb").write(b'{"k": \x1b, ' + raw.lstrip()[1:])
    expect_escaped_error(mtpd, d, "config.json", "'\\x1B'")
    open(p, "wb").write(b'{"k": \xff, ' + raw.lstrip()[1:])
    expect_escaped_error(mtpd, d, "config.json", "'\\xFF'")


def test_long_odd_tensor_name_is_cut_cleanly(mtpd, presets, tmp_path):
    # 3000 bytes of multi-byte characters and escapes: the quote is cut at a
    # character boundary ("...") and the line stays one valid UTF-8 line
    d = copy_preset(presets, SINGLE, tmp_path)
    p = os.path.join(d, "model.safetensors")
    header, data = header_of(p)
    entry = header.pop(T_KVB)
    entry["dtype"] = "Q4_K"
    hb = json.dumps(header)[:-1].encode()
    hb += b', "' + ("\u20ac\\u0007" * 300).encode() + b'": ' + \
        json.dumps(entry).encode() + b"}"
    write_raw(p, hb, data)
    line = expect_escaped_error(mtpd, d, "model.safetensors", "\u20ac\\x07",
                                "...: unknown dtype")
    assert len(line.encode()) < 512
