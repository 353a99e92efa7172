"""Self-checks of the numpy reference and its checkpoint tools (numpy only;
no mtpd needed): float encodings, safetensors round trips, FP8 block
dequantization, the committed transformers goldens, preset sanity (logit
gaps, routing margins), and the generation / speculative simulation."""
import json
import os

import numpy as np
import pytest

from tools.ref import ckpt, dsv3_ref, make_goldens, random_ckpt
from tools.ref.testutil import GOLDEN_DIR, case_ids, rel_err_rows

GOLDENS = sorted(d for d in os.listdir(GOLDEN_DIR)
                 if os.path.exists(os.path.join(GOLDEN_DIR, d, "golden.npz")))


# ---- encodings -----------------------------------------------------------

def test_fp8_roundtrip_every_code():
    t = ckpt.FP8_E4M3_TABLE
    codes = np.arange(256, dtype=np.uint8)
    finite = ~np.isnan(t)
    assert (ckpt.f32_to_fp8_e4m3fn_bits(t[finite]) == codes[finite]).all()
    assert t[0x7E] == 448.0 and t[0x01] == 2.0 ** -9 and t[0x08] == 2.0 ** -6
    assert np.isnan(t[0x7F]) and np.isnan(t[0xFF])


def test_fp8_rounding_and_saturation():
    enc = ckpt.f32_to_fp8_e4m3fn_bits
    # ties go to the even code; 1.0625 lies halfway between 1.0 and 1.125
    assert enc(np.array([1.0625]))[0] == enc(np.array([1.0]))[0]
    assert enc(np.array([1.1875]))[0] == enc(np.array([1.25]))[0]
    assert enc(np.array([1.07]))[0] == enc(np.array([1.125]))[0]
    assert enc(np.array([2.0 ** -10]))[0] == 0          # tie 0 / 2^-9 -> 0 (even)
    assert enc(np.array([0.75 * 2.0 ** -9]))[0] == 1    # nearer 2^-9
    assert (enc(np.array([449.0, 1e6, -1e6])) == [0x7E, 0x7E, 0xFE]).all()
    assert enc(np.array([-0.0]))[0] == 0x80
    x = np.random.default_rng(0).uniform(-448, 448, 20000)
    y = ckpt.fp8_e4m3fn_bits_to_f32(enc(x))
    # nearest representable: error at most half a step (step = 2^(e-3))
    e = np.floor(np.log2(np.maximum(np.abs(x), 2.0 ** -6)))
    assert (np.abs(y - x) <= 2.0 ** (e - 4) + 1e-12).all()


def test_bf16_round_to_nearest_even():
    f = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5, 0.0],
                 dtype=np.float32)
    b = ckpt.f32_to_bf16_bits(f)
    assert list(b) == [0x3F80, 0x3F82, 0x3F81, 0xC020, 0x0000]
    x = np.random.default_rng(1).standard_normal(10000).astype(np.float32)
    y = ckpt.bf16_bits_to_f32(ckpt.f32_to_bf16_bits(x))
    assert (np.abs(y - x) <= np.abs(x) * 2.0 ** -8).all()  # half an ulp
    assert np.isnan(ckpt.bf16_bits_to_f32(ckpt.f32_to_bf16_bits(np.array([np.nan])))).all()


def test_safetensors_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    t = {"a": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
         "b": ("BF16", ckpt.f32_to_bf16_bits(rng.standard_normal(7))),
         "c": ("F8_E4M3", ckpt.f32_to_fp8_e4m3fn_bits(rng.standard_normal((2, 2)))),
         "d": ("I64", np.arange(4, dtype=np.int64))}
    p = str(tmp_path / "x.safetensors")
    ckpt.write_safetensors(p, t, {"format": "pt"})
    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
    assert hdr["__metadata__"] == {"format": "pt"}
    assert hdr["a"] == {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 60]}
    back = ckpt.read_safetensors(p)
    for k, (dt, arr) in t.items():
        assert back[k][0] == dt and (back[k][1] == arr).all()


def test_safetensors_readable_by_safetensors_lib(tmp_path):
    st = pytest.importorskip("safetensors.numpy",
                             reason="pip package safetensors (tools/setup.sh)")
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    p = str(tmp_path / "y.safetensors")
    ckpt.write_safetensors(p, {"w": ("F32", x), "i": ("I32", np.arange(3, dtype=np.int32))})
    got = st.load_file(p)
    assert (got["w"] == x).all() and (got["i"] == [0, 1, 2]).all()


def test_fp8_block_dequant_partial_edges():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((200, 300)) * np.linspace(0.1, 3, 300)[None]
    q, s = random_ckpt.quantize_fp8_block(w, 128)
    assert s.shape == (2, 3) and q.dtype == np.uint8
    deq = ckpt.dequant_fp8_block(ckpt.fp8_e4m3fn_bits_to_f32(q).astype(np.float64), s, 128)
    # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 (plus subnormals)
    assert np.abs(deq - w).max() <= np.abs(w).max() * 2.0 ** -4
    assert (np.abs(deq - w) <= np.abs(w) * 2.0 ** -4 + s.max() * 2.0 ** -9).all()
    # each block's amax maps to 448 exactly
    assert np.isclose(np.abs(deq[128:, 256:]).max(), np.abs(w[128:, 256:]).max(), rtol=1e-6)
    with pytest.raises(ValueError):
        ckpt.dequant_fp8_block(deq, s[:, :2], 128)


# ---- presets ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(random_ckpt.PRESETS))
def test_preset_sane(presets, name):
    """Configs load, logits are not degenerate, routing decisions are not
    near-ties (so fp32 engines must route like the float64 reference)."""
    m = presets.model(name)
    cfg = m.cfg
    assert m.n_mtp == cfg.num_nextn_predict_layers
    ids = case_ids(cfg.vocab_size, 11, 48)
    lg, h = m.forward(ids)
    assert lg.shape == (48, cfg.vocab_size) and h.shape == (48, cfg.hidden_size)
    gaps = dsv3_ref.logit_gaps(lg)
    assert np.median(gaps) > 0.2 and (gaps > 1e-3).mean() > 0.95
    assert 1.0 < lg.std() < 10.0
    assert m.stats.min_biased_score > 0
    assert m.stats.expert_margin > 1e-5 and m.stats.group_margin > 1e-5


def test_fp8_preset_is_quantized(presets):
    raw = ckpt.load_raw(presets.dir("fp8-yarn-mtp2"))
    w = raw["model.layers.0.self_attn.q_a_proj.weight"]
    s = raw["model.layers.0.self_attn.q_a_proj.weight_scale_inv"]
    assert w[0] == "F8_E4M3" and s[0] == "F32" and s[1].shape == (2, 2)  # 160x192
    assert raw["model.layers.2.eh_proj.weight"][0] == "BF16"
    assert raw["model.layers.1.mlp.gate.weight"][0] == "BF16"
    assert raw["model.layers.1.mlp.gate.e_score_correction_bias"][0] == "F32"
    cfg = ckpt.load_config(presets.dir("fp8-yarn-mtp2"))
    assert cfg["quantization_config"]["weight_block_size"] == [128, 128]


def test_cli_lists_and_writes(tmp_path, capsys):
    assert random_ckpt.main(["--list"]) == 0
    assert set(capsys.readouterr().out.split()) == set(random_ckpt.PRESETS)
    out = str(tmp_path / "m")
    assert random_ckpt.main(["--preset", "f16-nomtp", "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]


# ---- goldens (transformers, committed) ---------------------------------------

@pytest.mark.parametrize("name", GOLDENS)
def test_golden_files_match_generator(tmp_path, name):
    """The committed golden checkpoint is what random_ckpt writes today (if
    this fails, a preset changed: rerun python3 -m tools.ref.make_goldens)."""
    meta = json.load(open(os.path.join(GOLDEN_DIR, name, "golden.json")))
    d = str(tmp_path / name)
    random_ckpt.make_preset(name, d, seed=meta["seed"])
    for f in os.listdir(d):
        assert make_goldens.sha256(os.path.join(d, f)) == meta["files"][f], f
    for f, h in meta["files"].items():
        assert make_goldens.sha256(os.path.join(GOLDEN_DIR, name, f)) == h, f


@pytest.mark.parametrize("name", GOLDENS)
def test_reference_matches_transformers_golden(name):
    d = os.path.join(GOLDEN_DIR, name)
    g = np.load(os.path.join(d, "golden.npz"))
    m = dsv3_ref.load(d)
    n = 0
    while f"ids_{n}" in g:
        ids = g[f"ids_{n}"].tolist()
        lg, h = m.forward(ids)
        assert rel_err_rows(lg, g[f"logits_{n}"]).max() < 1e-5
        if f"mtp_logits_{n}" in g:
            ml, _ = m.mtp_forward(0, h[:-1], ids[1:])
            assert rel_err_rows(ml, g[f"mtp_logits_{n}"]).max() < 1e-5
        n += 1
    assert n >= 2
    gen = dsv3_ref.greedy_generate(m, g["greedy_ids"].tolist(), 32)
    assert gen == g["greedy_out"].tolist()


# ---- generation and the speculative simulation --------------------------------

@pytest.mark.parametrize("name,k", [("bf16-agree", 1), ("bf16-agree", 3),
                                    ("bf16-mtp2-freq2", 2), ("bf16-mtp2-freq2", 4)])
def test_spec_sim_is_lossless(presets, name, k):
    m = presets.model(name)
    prompt = case_ids(m.cfg.vocab_size, 5, 9)
    gen, passes = dsv3_ref.spec_sim(m, prompt, k, 32, trace=True)
    assert gen == dsv3_ref.greedy_generate(m, prompt, 32)
    assert all(0 <= a <= kk <= k for kk, a in passes)
    # one token from the prefill, a + 1 from every pass, never past the budget
    assert 1 + sum(a + 1 for _, a in passes) == 32
    produced = 1
    for kk, a in passes:  # k shrinks only to fit the remaining budget
        assert kk == min(k, 32 - produced - 1)
        produced += a + 1
    acc = [a for _, a in passes]
    assert acc == dsv3_ref.spec_sim(m, prompt, k, 32)[1]
    assert 0 < sum(acc) < k * len(acc)  # these presets accept some, not all
    eos = gen[5]
    g2, _ = dsv3_ref.spec_sim(m, prompt, k, 32, eos_id=eos)
    assert g2 == gen[:gen.index(eos) + 1]


def test_spec_sim_first_draft_is_mtp_last_row(presets):
    """Depth 0 draft == argmax of the `mtpd logits --mtp` row for the
    committed sequence; with one module reused, depth 1 feeds back the MTP
    hidden of that row and the drafted token."""
    m = presets.model("bf16-agree")
    seq = case_ids(m.cfg.vocab_size, 6, 12)
    _, h = m.forward(seq[:-1])
    drafts, dl = dsv3_ref.draft_tokens(m, seq, h, 2)
    assert drafts[0] == int(np.argmax(m.mtp_last_logits(seq)))
    _, h_all = m.forward(seq)
    lg, g = m.mtp_forward(0, h_all[:-1], seq[1:])
    rows_h = np.concatenate([h_all[:-1], g[-1:]])
    lg2, _ = m.mtp_forward(0, rows_h, seq[1:] + [drafts[0]])
    assert np.allclose(dl[1], lg2[-1]) and drafts[1] == int(np.argmax(lg2[-1]))


def test_mtp_embedding_zeroed_at_position_zero(presets):
    m = presets.model("bf16-base")
    ids = case_ids(m.cfg.vocab_size, 8, 6)
    _, h = m.forward(ids)
    a, _ = m.mtp_forward(0, h[:-1], ids[1:])
    b, _ = m.mtp_forward(0, h[:-1], [(ids[1] + 1) % m.cfg.vocab_size] + ids[2:])
    assert np.array_equal(a, b)                # row 0 ignores its token
    c, _ = m.mtp_forward(0, h[:-1], ids[1:2] + [(ids[2] + 1) % m.cfg.vocab_size] + ids[3:])
    assert np.array_equal(a[0], c[0])          # causal
    assert not np.allclose(a[1], c[1])         # row 1 uses its token


def test_forward_is_causal(presets):
    m = presets.model("f32-qproj-yarn")
    ids = case_ids(m.cfg.vocab_size, 9, 20)
    a, ha = m.forward(ids)
    b, hb = m.forward(ids[:12])
    assert np.allclose(a[:12], b, rtol=0, atol=1e-10)
