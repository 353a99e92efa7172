"""Smoke test of tools/train: a tokenizer, FIM data, two training steps on a
tiny DeepSeek-V3 + MTP config, a checkpoint in HF format that loads back,
and (when the C binary is built) the same logits and MTP logits from
`mtpd logits` as from the PyTorch model.

Skips when torch or tokenizers is missing (CI has neither).
"""
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from tools.train import data as D  # noqa: E402
from tools.train import model as M  # noqa: E402
from tools.train import tokenizer as T  # noqa: E402
from tools.train import train as TR  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _corpus(tmp):
    """A small real-code corpus: this repo's own tools/ Python files."""
    src = os.path.join(REPO, "tools")
    texts = []
    for root, _, files in sorted(os.walk(src)):
        for f in sorted(files):
            if f.endswith(".py"):
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    t = fh.read()
                # files spelling the special tokens out would add stray ones
                if t.strip() and "｜" not in t:
                    texts.append(t)
    assert len(texts) >= 5
    texts.sort(key=len, reverse=True)  # held out: the longest file
    cdir = tmp / "corpus"
    cdir.mkdir()
    for name, part in (("train", texts[1:]), ("heldout", texts[:1])):
        with open(cdir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i, t in enumerate(part):
                f.write(json.dumps({"name": f"py:{name}{i}", "lang": "py", "text": t}) + "\n")
    return cdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cdir = _corpus(tmp)
    docs = [json.loads(l)["text"] for l in open(cdir / "train.jsonl", encoding="utf-8")]
    tok_dir = tmp / "tok"
    T.save(T.train(docs, vocab_size=400), str(tok_dir))
    data_dir = tmp / "data"
    info = D.build(str(cdir), str(tok_dir / "tokenizer.json"), str(data_dir), fim_rate=0.5)
    out = tmp / "ckpt"
    cfg = dict(TR.CONFIGS["tiny"])
    torch.manual_seed(0)
    model, summary = TR.train(cfg, str(data_dir), str(tok_dir), str(out),
                              torch.device("cpu"), log=lambda s: None)
    return {"out": out, "model": model, "summary": summary, "info": info, "tok": tok_dir}


def test_two_steps_write_a_checkpoint(trained):
    out = trained["out"]
    s = trained["summary"]
    assert s["steps"] == 2 and s["tokens_seen"] == 2 * 2 * 32
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", "train_summary.json"):
        assert (out / f).exists(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_v3" and cfg["num_nextn_predict_layers"] == 1
    assert cfg["topk_method"] == "noaux_tc" and cfg["scoring_func"] == "sigmoid"
    assert cfg["rope_interleave"] is True
    sd = M.read_checkpoint(str(out))
    L = cfg["num_hidden_layers"]
    for name in ("model.embed_tokens.weight", "model.norm.weight",
                 "model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                 "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.7.down_proj.weight",
                 "model.layers.1.mlp.shared_experts.up_proj.weight",
                 f"model.layers.{L}.embed_tokens.weight", f"model.layers.{L}.enorm.weight",
                 f"model.layers.{L}.hnorm.weight", f"model.layers.{L}.eh_proj.weight",
                 f"model.layers.{L}.shared_head.norm.weight",
                 f"model.layers.{L}.shared_head.head.weight",
                 f"model.layers.{L}.mlp.gate.e_score_correction_bias"):
        assert name in sd, name
    for k, t in sd.items():
        want = torch.float32 if k.endswith("e_score_correction_bias") else torch.bfloat16
        assert t.dtype == want, k
    # the bias moved: aux-loss-free balancing ran after each step
    assert sd["model.layers.1.mlp.gate.e_score_correction_bias"].abs().sum() > 0
    assert sd[f"model.layers.{L}.eh_proj.weight"].shape == (cfg["hidden_size"],
                                                            2 * cfg["hidden_size"])


def test_fim_documents_present(trained):
    stream = np.load(os.path.join(os.path.dirname(trained["out"]), "data", "train.npy"))
    tok = T.load(str(trained["tok"] / "tokenizer.json"))
    fb, fh, fe = (T.token_id(tok, t) for t in (T.FIM_BEGIN, T.FIM_HOLE, T.FIM_END))
    n_begin = int((stream == fb).sum())
    assert n_begin > 0
    assert n_begin == int((stream == fh).sum()) == int((stream == fe).sum())
    # PSM order: each begin is followed by a hole and then an end
    b = np.flatnonzero(stream == fb)
    h = np.flatnonzero(stream == fh)
    e = np.flatnonzero(stream == fe)
    assert (b < h).all() and (h < e).all()


def test_reload_gives_same_logits(trained):
    out = str(trained["out"])
    m1 = M.from_pretrained(out)
    m2 = M.from_pretrained(out)
    ids = torch.randint(0, m1.c.vocab_size, (2, 20))
    with torch.no_grad():
        a, am = m1(ids)
        b, bm = m2(ids)
        # the trained in-memory model agrees up to bf16 rounding of weights
        c, cm = trained["model"](ids)
    assert torch.equal(a, b) and torch.equal(am, bm)
    assert (a - c).abs().max() < 0.05 * c.abs().max() + 1e-3


def _mtpd_bin():
    b = os.environ.get("MTPD_BIN", os.path.join(REPO, "build", "mtpd"))
    return b if os.path.isfile(b) and os.access(b, os.X_OK) else None


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def test_c_logits_match_pytorch(trained):
    binary = _mtpd_bin()
    if binary is None:
        pytest.skip("mtpd binary not built (set MTPD_BIN)")
    out = str(trained["out"])
    model = M.from_pretrained(out).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.c.vocab_size, (1, 12), generator=g)
    last = 3
    res = subprocess.run([binary, "logits", "--model", out,
                          "--ids", ",".join(str(int(i)) for i in ids[0]),
                          "--last", str(last), "--mtp"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    with torch.no_grad():
        logits, mtp_logits = model(ids)
    want = logits[0, -last:].numpy()
    assert np.asarray(got["logits"]).shape == want.shape
    assert _rel(got["logits"], want) <= 1e-3
    # MTP rows p = 0..n-2 over (h_p, ids[p+1]); mtp_logits is row n-2
    assert _rel(got["mtp_logits"], mtp_logits[0, -1].numpy()) <= 1e-3


def test_c_logits_match_pytorch_on_shipped_model():
    binary = _mtpd_bin()
    ship = os.path.join(REPO, "models", "mtpd-code-small")
    if binary is None or not os.path.isfile(os.path.join(ship, "config.json")):
        pytest.skip("mtpd binary or models/mtpd-code-small missing")
    model = M.from_pretrained(ship).eval()
    ids = torch.randint(0, model.c.vocab_size, (1, 40), generator=torch.Generator().manual_seed(2))
    res = subprocess.run([binary, "logits", "--model", ship,
                          "--ids", ",".join(str(int(i)) for i in ids[0]), "--last", "4", "--mtp"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    with torch.no_grad():
        logits, mtp_logits = model(ids)
    assert _rel(got["logits"], logits[0, -4:].numpy()) <= 1e-3
    assert _rel(got["mtp_logits"], mtp_logits[0, -1].numpy()) <= 1e-3
