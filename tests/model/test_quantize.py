"""`mtpd quantize`: q8 / q4 / fp8 copies of a checkpoint that mtpd loads
like any other, what is kept at full precision, and the quality of the
default model's q8 and q4 copies against the bf16 one on held-out text
(tools/quant_eval.py). Broken quantized checkpoints fail with one clear
error line (as tests/model/test_bad_checkpoints.py)."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from tools import quant_eval
from tools.ref import ckpt
from tools.ref.testutil import run_mtpd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "models", "mtpd-code-small")
PRESET = "bf16-base"
T_QA = "model.layers.0.self_attn.q_a_proj.weight"  # [64, 96]: whole blocks

# Measured on the held-out windows below (2026-12-02; 4 x 256 positions,
# int8 activations): q8 top-1 0.980, mean |dlogit| 0.040, max 3.34, nll
# +0.0001 nats; q4 top-1 0.904; fp8 top-1 0.955. The bounds leave room for other
# machines' rounding (AVX2 vs AVX-512 sums), not for a broken kernel (a
# wrong nibble or scale drops agreement below 0.3).
Q8_TOP1, Q8_MEAN_ABS, Q8_MAX_ABS, Q8_NLL = 0.96, 0.07, 6.0, 0.02
Q4_TOP1 = 0.80
FP8_TOP1 = 0.90


def quantize(mtpd, src, out, fmt, *extra):
    r = run_mtpd(mtpd, ["quantize", "--model", src, "--out", out,
                        "--format", fmt, *extra], timeout=300)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def default_q(mtpd, tmp_path_factory):
    """The default model quantized to q8, q4 (Q4_S), q4_1 and fp8 (once)."""
    base = tmp_path_factory.mktemp("quant")
    out = {}
    for fmt in ("q8", "q4", "q4_1", "fp8"):
        out[fmt] = str(base / fmt)
        quantize(mtpd, DEFAULT, out[fmt], fmt)
    return out


@pytest.fixture(scope="module")
def heldout(mtpd):
    return quant_eval.windows(mtpd, DEFAULT, n_windows=4, n_tokens=256)


def header(model_dir):
    h, _, _ = ckpt.read_header(os.path.join(model_dir, "model.safetensors"))
    return h


# ---- the command -----------------------------------------------------------

def test_help(mtpd):
    r = run_mtpd(mtpd, ["quantize", "--help"])
    assert r.returncode == 0
    for word in ("q8", "q4", "fp8", "--keep", "quantization_config",
                 "router", "embeddings"):
        assert word in r.stdout, word


@pytest.mark.parametrize("args,needle", [
    (["--format", "q3"], "unknown --format"),
    (["--format", "q8"], "required"),           # no --out
    (["--format", "q8", "--out", "x", "--bogus"], "unknown option"),
])
def test_usage_errors(mtpd, args, needle):
    a = ["quantize", "--model", DEFAULT] + args
    if "--out" not in args and needle != "required":
        a += ["--out", "/nonexistent/never"]
    r = run_mtpd(mtpd, a)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_refuses_existing_checkpoint_and_quantized_input(mtpd, presets, tmp_path):
    src = presets.dir(PRESET)
    r = run_mtpd(mtpd, ["quantize", "--model", src, "--out", src, "--format", "q8"])
    assert r.returncode == 1 and "must not hold a checkpoint" in r.stderr
    out = str(tmp_path / "q8")
    quantize(mtpd, src, out, "q8")
    r = run_mtpd(mtpd, ["quantize", "--model", out, "--out", str(tmp_path / "again"),
                        "--format", "q4"])
    assert r.returncode == 1 and "already quantized" in r.stderr, r.stderr


def test_what_is_kept(mtpd, default_q):
    for fmt, code in (("q8", "I8"), ("q4", "U8"), ("q4_1", "U8")):
        d = default_q[fmt]
        cfg = json.load(open(os.path.join(d, "config.json")))
        want = {"q8": "q8_0", "q4": "q4_s", "q4_1": "q4_1"}[fmt]
        assert cfg["quantization_config"]["quant_method"] == "mtpd"
        assert cfg["quantization_config"]["format"] == want
        h = header(d)
        for f in ("tokenizer.json", "draft_vocab.txt", "generation_config.json"):
            assert os.path.exists(os.path.join(d, f)), f
        # norms, router, its bias, embeddings: as in the source
        for name in ("model.norm.weight", "model.embed_tokens.weight",
                     "model.layers.1.mlp.gate.weight",
                     "model.layers.1.mlp.gate.e_score_correction_bias",
                     "model.layers.1.input_layernorm.weight",
                     "model.layers.8.embed_tokens.weight",
                     "model.layers.8.enorm.weight"):
            assert h[name]["dtype"] in ("BF16", "F32"), (name, h[name])
        # kv_b (read per head by the absorbed attention): Q8_0 in every
        # integer format, the MTP module's too
        for name in ("model.layers.1.self_attn.kv_b_proj.weight",
                     "model.layers.8.self_attn.kv_b_proj.weight"):
            assert h[name]["dtype"] == "I8", (name, h[name])
            assert h[name + "_qscale"]["dtype"] == "F16", name
        # projections and experts of the main model and the MTP module
        for name in ("model.layers.0.mlp.down_proj.weight",
                     "model.layers.1.mlp.experts.3.up_proj.weight",
                     "model.layers.8.self_attn.q_a_proj.weight",
                     "model.layers.8.eh_proj.weight"):
            assert h[name]["dtype"] == code, (name, h[name])
            if fmt == "q4":  # Q4_S: scale and min bytes, exponent pairs
                assert h[name + "_qscale"]["dtype"] == "U8"
                assert h[name + "_qmin"]["dtype"] == "I8"
                assert h[name + "_qexp"]["dtype"] == "I8"
            else:
                assert h[name + "_qscale"]["dtype"] == "F16"
        # tied embeddings: the output head is its own quantized tensor
        assert h["lm_head.weight"]["dtype"] == "I8"
        assert h["model.layers.8.shared_head.head.weight"]["dtype"] == "I8"
    h = header(default_q["fp8"])
    assert h["model.layers.1.self_attn.kv_b_proj.weight"]["dtype"] in ("BF16", "F32")
    assert h["model.layers.0.mlp.down_proj.weight"]["dtype"] == "F8_E4M3"
    assert h["model.layers.0.mlp.down_proj.weight_scale_inv"]["dtype"] == "F32"


def test_keep_pattern(mtpd, presets, tmp_path):
    src = presets.dir(PRESET)
    out = str(tmp_path / "keep")
    quantize(mtpd, src, out, "q8", "--keep", "model.layers.0.*,*.o_proj.weight")
    h = header(out)
    src_h = ckpt.read_header(os.path.join(src, "model.safetensors"))[0]
    for name, v in h.items():
        if name == "__metadata__" or name.endswith(("_qscale", "_qmin",
                                                    "_qexp")):
            continue
        if name.startswith("model.layers.0.") or name.endswith("o_proj.weight"):
            assert v["dtype"] == src_h[name]["dtype"], name
    assert h["model.layers.1.self_attn.q_a_proj.weight"]["dtype"] == "I8"


# ---- loading and quality ---------------------------------------------------

def test_q8_quality(mtpd, default_q, heldout):
    q = quant_eval.compare(mtpd, DEFAULT, default_q["q8"], heldout)
    assert q["top1"] >= Q8_TOP1, q
    assert q["mean_abs"] <= Q8_MEAN_ABS and q["max_abs"] <= Q8_MAX_ABS, q
    assert q["nll"] - q["ref_nll"] <= Q8_NLL, q


def test_q4_fp8_quality(mtpd, default_q, heldout):
    q = quant_eval.compare(mtpd, DEFAULT, default_q["q4"], heldout[:2])
    assert q["top1"] >= Q4_TOP1, q
    q = quant_eval.compare(mtpd, DEFAULT, default_q["q4_1"], heldout[:2])
    assert q["top1"] >= Q4_TOP1, q
    q = quant_eval.compare(mtpd, DEFAULT, default_q["fp8"], heldout[:2])
    assert q["top1"] >= FP8_TOP1, q


# ---- Q4_S as its format says (kernels.h), in numpy ------------------------

def q4s_dequant(codes, sc, mn, ex):
    """W = q * sc * 2^e + mn * 2^f per block of 32; (e, f) per 8 blocks;
    block bytes 0..15 hold weights i (low nibble) and 16 + i (high)."""
    rows, nb = sc.shape
    c = codes.reshape(rows, nb, 16)
    q = np.concatenate([c & 15, c >> 4], axis=2).astype(np.float64)
    e = ex.reshape(rows, -1, 2).astype(np.float64)
    g = np.arange(nb) // 8
    d = sc * np.exp2(e[:, g, 0])
    m = mn * np.exp2(e[:, g, 1])
    return (q * d[..., None] + m[..., None]).reshape(rows, nb * 32)


def q41_dequant(codes, d, m):
    rows, nb = d.shape
    c = codes.reshape(rows, nb, 16)
    q = np.concatenate([c & 15, c >> 4], axis=2).astype(np.float64)
    return (q * d.astype(np.float64)[..., None] +
            m.astype(np.float64)[..., None]).reshape(rows, nb * 32)


Q4_NAMES = ("model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.experts.3.down_proj.weight",  # 5 blocks
            "model.layers.1.self_attn.q_a_proj.weight",
            "model.layers.8.eh_proj.weight")


def test_q4s_error_against_q41(default_q):
    """Each Q4_S matrix, decoded from its tensors, is as close to the
    source as Q4_1's (5 bits a weight) give or take 10% (RMS)."""
    src = ckpt.load_raw(DEFAULT)
    s4 = ckpt.read_safetensors(os.path.join(default_q["q4"], "model.safetensors"))
    s1 = ckpt.read_safetensors(os.path.join(default_q["q4_1"], "model.safetensors"))
    for name in Q4_NAMES:
        w = ckpt.decode(src[name][1], src[name][0]).astype(np.float64)
        a = q4s_dequant(s4[name][1], s4[name + "_qscale"][1],
                        s4[name + "_qmin"][1], s4[name + "_qexp"][1])
        b = q41_dequant(s1[name][1], s1[name + "_qscale"][1], s1[name + "_qmin"][1])
        ea = np.sqrt(np.mean((a - w) ** 2))
        eb = np.sqrt(np.mean((b - w) ** 2))
        assert 0 < ea <= 1.1 * eb, (name, ea, eb)


def test_q4s_block_choice(default_q):
    """The quantizer's choices, recomputed in numpy: per group the
    smallest exponents that hold the largest scale in 255 and |min| in 127
    steps; per block a (min, scale) pair fitting its weights at least as
    well as the pair that covers them (min rounded down, scale up)."""
    src = ckpt.load_raw(DEFAULT)
    s4 = ckpt.read_safetensors(os.path.join(default_q["q4"], "model.safetensors"))
    for name in Q4_NAMES:
        w = ckpt.decode(src[name][1], src[name][0]).astype(np.float32)
        rows, cols = w.shape
        nb = cols // 32
        b = w.reshape(rows, nb, 32).astype(np.float64)
        lo, hi = b.min(2), b.max(2)
        ex = s4[name + "_qexp"][1].reshape(rows, -1, 2).astype(np.int64)
        g = np.arange(nb) // 8
        e, f = ex[:, g, 0], ex[:, g, 1]
        # minimal exponents, per group
        dmax = np.zeros(ex.shape[:2])
        mmax = np.zeros(ex.shape[:2])
        np.maximum.at(dmax.T, g, ((hi - lo) / 15).T)
        np.maximum.at(mmax.T, g, np.abs(lo).T)
        for k, (m, lim) in enumerate(((dmax, 255), (mmax, 127))):
            x = ex[:, :, k]
            assert (m <= lim * np.exp2(x) * (1 + 1e-6)).all(), name
            assert ((x == -24) | (m > lim * np.exp2(x - 1))).all(), name
        # the stored pair against the covering one, squared error per block
        def sse(d, mq):
            q = np.clip(np.rint((b - mq[..., None]) / np.where(d > 0, d, 1)[..., None]), 0, 15)
            q = np.where(d[..., None] > 0, q, 0)
            return ((q * d[..., None] + mq[..., None] - b) ** 2).sum(2)
        pe, pf = np.exp2(e), np.exp2(f)
        got = sse(s4[name + "_qscale"][1] * pe, s4[name + "_qmin"][1] * pf)
        mc = np.clip(np.floor(lo / pf), -128, 127) * pf
        sc = np.clip(np.ceil((hi - mc) / 15 / pe), 0, 255) * pe
        cover = sse(sc, mc)
        assert (got <= cover * (1 + 1e-4) + 1e-12).all(), (name, np.argmax(got - cover))


def test_q4s_read_as_documented(mtpd, default_q, heldout, tmp_path):
    """mtpd's logits on the Q4_S copy against an F32 checkpoint of the
    weights numpy decodes from it (heads: Q8_0 decoded too): only the
    int8 rounding of activations separates them (a misread nibble, scale
    or exponent drops agreement far below these bounds)."""
    d = default_q["q4"]
    out = tmp_path / "deq"
    shutil.copytree(d, out)
    t = ckpt.read_safetensors(os.path.join(d, "model.safetensors"))
    dense = {}
    for name, (dt, arr) in t.items():
        if name.endswith(("_qscale", "_qmin", "_qexp")):
            continue
        if dt == "U8":
            w = q4s_dequant(arr, t[name + "_qscale"][1], t[name + "_qmin"][1],
                            t[name + "_qexp"][1])
            dense[name] = ("F32", w.astype(np.float32))
        elif dt == "I8":
            sc = t[name + "_qscale"][1].astype(np.float32)
            w = arr.astype(np.float32) * np.repeat(sc, 32, axis=1)
            dense[name] = ("F32", w)
        else:
            dense[name] = (dt, arr)
    ckpt.write_safetensors(str(out / "model.safetensors"), dense)
    edit_config(str(out), lambda c: c.pop("quantization_config"))
    q = quant_eval.compare(mtpd, str(out), d, heldout[:2])
    assert q["top1"] >= Q8_TOP1, q
    assert q["mean_abs"] <= Q8_MEAN_ABS, q


@pytest.mark.parametrize("fmt", ["q8", "q4"])
def test_generate_speculative_equals_plain(mtpd, default_q, fmt):
    """Greedy generation on the quantized model: MTP speculation (k=3 and
    auto) gives exactly the plain decode (the kernels are batch
    invariant), and the first tokens match the bf16 model's."""
    outs = {}
    for k in ("0", "3", "auto"):
        r = run_mtpd(mtpd, ["generate", "--model", default_q[fmt], "--prompt",
                            "import os\nimport sys\n\ndef main(argv):\n",
                            "--max-tokens", "48", "--draft-tokens", k,
                            "--ignore-eos", "--json"], timeout=120)
        assert r.returncode == 0, r.stderr
        outs[k] = json.loads(r.stdout.strip().splitlines()[-1])
    assert outs["0"]["ids"] == outs["3"]["ids"] == outs["auto"]["ids"]
    assert len(outs["0"]["ids"]) == 48


# ---- damaged quantized checkpoints ----------------------------------------

@pytest.fixture
def q8_preset(mtpd, presets, tmp_path):
    out = str(tmp_path / "q8")
    quantize(mtpd, presets.dir(PRESET), out, "q8")
    return out


def expect_error(mtpd, d, *needles):
    r = run_mtpd(mtpd, ["logits", "--model", d, "--ids", "3,4,5"], timeout=60)
    assert r.returncode > 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mtpd: error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    fn(cfg)
    json.dump(cfg, open(p, "w"))


def edit_tensors(d, fn):
    p = os.path.join(d, "model.safetensors")
    t = ckpt.read_safetensors(p)
    fn(t)
    ckpt.write_safetensors(p, t)


def test_loads(mtpd, q8_preset):
    r = run_mtpd(mtpd, ["logits", "--model", q8_preset, "--ids", "3,4,5"])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("fmt", ["q3_k", "", 7])
def test_unknown_format(mtpd, q8_preset, fmt):
    edit_config(q8_preset, lambda c: c["quantization_config"].update(format=fmt))
    expect_error(mtpd, q8_preset, "config.json", "quantization_config.format")


def test_unknown_method(mtpd, q8_preset):
    edit_config(q8_preset, lambda c: c["quantization_config"].update(quant_method="gptq"))
    expect_error(mtpd, q8_preset, "quantization_config.quant_method", "gptq")


def test_codes_without_quantization_config(mtpd, q8_preset):
    edit_config(q8_preset, lambda c: c.pop("quantization_config"))
    expect_error(mtpd, q8_preset, "I8 weight", "no mtpd quantization_config")


def test_q8_codes_in_q4_checkpoint_need_u8(mtpd, q8_preset):
    # q4_1 holds I8 heads too, but a U8 weight needs format q4_1 or q4_s
    def to_u8(t):
        t[T_QA] = ("U8", t[T_QA][1].view(np.uint8))
    edit_tensors(q8_preset, to_u8)
    expect_error(mtpd, q8_preset, T_QA, "not mtpd q4_1 or q4_s")


def test_missing_scale(mtpd, q8_preset):
    edit_tensors(q8_preset, lambda t: t.pop(T_QA + "_qscale"))
    expect_error(mtpd, q8_preset, T_QA + "_qscale", "missing")


@pytest.mark.parametrize("preset", ["q8_preset", "q4_preset"])
def test_scale_wrong_shape(mtpd, request, preset):
    d = request.getfixturevalue(preset)

    def cut(t):
        dt, v = t[T_QA + "_qscale"]
        t[T_QA + "_qscale"] = (dt, v[:, :1].copy())
    edit_tensors(d, cut)
    expect_error(mtpd, d, T_QA + "_qscale", "wrong shape")


# Q8_0's scales are F16; Q4_S's mins I8 (its scales U8)
@pytest.mark.parametrize("preset,suffix,bad,want", [
    ("q8_preset", "_qscale", ("F32", np.float32), "expected F16"),
    ("q4_preset", "_qmin", ("U8", np.uint8), "expected I8"),
])
def test_scale_wrong_dtype(mtpd, request, preset, suffix, bad, want):
    d = request.getfixturevalue(preset)

    def retype(t):
        t[T_QA + suffix] = (bad[0], t[T_QA + suffix][1].astype(bad[1]))
    edit_tensors(d, retype)
    expect_error(mtpd, d, T_QA + suffix, want)


def test_scale_not_finite(mtpd, q8_preset):
    def inf(t):
        s = t[T_QA + "_qscale"][1].copy()
        s[3, 1] = np.inf
        t[T_QA + "_qscale"] = ("F16", s)
    edit_tensors(q8_preset, inf)
    expect_error(mtpd, q8_preset, T_QA + "_qscale", "damaged")


def test_codes_wrong_shape(mtpd, q8_preset):
    def cut(t):
        t[T_QA] = ("I8", t[T_QA][1][:, :64].copy())
    edit_tensors(q8_preset, cut)
    expect_error(mtpd, q8_preset, T_QA, "wrong shape")


# ---- damaged Q4_S checkpoints ----------------------------------------------

@pytest.fixture
def q4_preset(mtpd, presets, tmp_path):
    out = str(tmp_path / "q4")
    quantize(mtpd, presets.dir(PRESET), out, "q4")
    return out


def test_q4s_loads(mtpd, q4_preset):
    r = run_mtpd(mtpd, ["logits", "--model", q4_preset, "--ids", "3,4,5"])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("value", [8, -25, 127])
def test_q4s_exponent_out_of_range(mtpd, q4_preset, value):
    def bad(t):
        e = t[T_QA + "_qexp"][1].copy()
        e[1, 0] = value
        t[T_QA + "_qexp"] = ("I8", e)
    edit_tensors(q4_preset, bad)
    expect_error(mtpd, q4_preset, T_QA, "damaged", "_qexp")


def test_q4s_missing_exponents(mtpd, q4_preset):
    edit_tensors(q4_preset, lambda t: t.pop(T_QA + "_qexp"))
    expect_error(mtpd, q4_preset, T_QA + "_qexp", "missing")



def cpu_has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags and "f16c" in flags


@pytest.mark.skipif(not cpu_has_avx2(), reason="no AVX2 on this CPU")
@pytest.mark.parametrize("fmt", ["q4", "q4_1"])
def test_q4_rows_interleaved_same_logits(mtpd, default_q, fmt):
    """With the AVX2 kernels (MTPD_ISA=avx2) mtpd copies the Q4 matrices
    with eight rows interleaved at load (kernels.h, Q4_X8); the logits,
    main model and MTP module, are the ones of the row-major layout bit
    for bit (--q4-layout rows keeps it)."""
    env = dict(os.environ, MTPD_ISA="avx2")
    r = subprocess.run([mtpd, "info", "--model", default_q[fmt]],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "Q4 rows interleaved for AVX2" in r.stderr, r.stderr
    outs = {}
    for layout in ("auto", "rows"):
        r = subprocess.run([mtpd, "logits", "--model", default_q[fmt], "--ids",
                            "5,17,300,42,9,77,1000,3", "--last", "4", "--mtp",
                            "--q4-layout", layout],
                           capture_output=True, text=True, timeout=120,
                           env=env)
        assert r.returncode == 0, r.stderr
        outs[layout] = json.loads(r.stdout)
    assert outs["auto"] == outs["rows"]
    assert len(outs["auto"]["logits"]) == 4 and "mtp_logits" in outs["auto"]
