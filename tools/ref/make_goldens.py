"""Regenerates the committed transformers goldens under tests/model/golden/.

    python3 -m tools.ref.make_goldens [--out tests/model/golden] [--check-only]

Needs torch + transformers (not available in CI; the outputs are committed).
For each golden preset it writes the random checkpoint (tools.ref.random_ckpt)
into <out>/<preset>/ and computes with transformers' DeepseekV3 modules in
float32:
  - main-model logits at every position for fixed id sequences,
  - MTP module 0 logits at every MTP row (p = 0..n-2 over (h_p, ids[p+1])),
    built from transformers' DeepseekV3DecoderLayer / RMSNorm plus the MTP
    glue (enorm/hnorm/eh_proj, embedding zeroed at position 0,
    shared_head.norm, head),
  - a 32-token greedy continuation (main model).
Weights are loaded by this script with torch (FP8 dequantized with
torch.float8_e4m3fn, independent of tools.ref.ckpt's numpy decoder), so the
numpy reference is checked against an independent decoder too. Where
transformers' DeepseekV3 ignores a config field the reference honours
(moe_layer_freq), the dense layers are swapped in by hand.

It then asserts that tools.ref.dsv3_ref matches (max rel err per row,
max|a-b| / max|b|, <= 1e-5) for every golden preset and also for the
non-golden presets (checked, not written).
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys

import numpy as np

from . import dsv3_ref, random_ckpt

GOLDEN_PRESETS = ["bf16-base", "f32-qproj-yarn", "f16-nomtp", "fp8-yarn-mtp2"]
TOL = 1e-5


def case_ids(vocab, seed):
    """Fixed id sequences of each golden: a short and a longer one."""
    rng = np.random.default_rng(1000 + seed)
    return [[int(x) for x in rng.integers(2, vocab, 7)],
            [int(x) for x in rng.integers(2, vocab, 40)]]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b).max(-1) / np.abs(b).max(-1)).max())


# ---- torch side ----------------------------------------------------------

def _load_torch_tensors(model_dir):
    import torch
    from safetensors.torch import load_file
    from . import ckpt as _ck
    raw = {}
    for fn in _ck.shard_files(model_dir):
        raw.update(load_file(os.path.join(model_dir, fn)))
    cfg = _ck.load_config(model_dir)
    block = ((cfg.get("quantization_config") or {}).get("weight_block_size") or [128])[0]
    out = {}
    for name, t in raw.items():
        if name.endswith(".weight_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = raw[name[:-len("weight")] + "weight_scale_inv"].float()
            o, i = t.shape
            assert s.shape == (math.ceil(o / block), math.ceil(i / block))
            s = s.repeat_interleave(block, 0).repeat_interleave(block, 1)[:o, :i]
            out[name] = t.float() * s
        else:
            out[name] = t.float()
    return cfg, out


def _is_moe(cfg, idx):
    return bool(cfg.get("n_routed_experts")) and idx >= cfg["first_k_dense_replace"] \
        and idx % cfg.get("moe_layer_freq", 1) == 0


def _layer_state(sd, prefix, cfg, idx):
    """state dict of a DeepseekV3DecoderLayer from checkpoint names
    (per-expert gate/up/down -> transformers' fused 3-D experts)."""
    import torch
    out = {}
    for k, v in sd.items():
        if k.startswith(prefix) and ".experts." not in k:
            rest = k[len(prefix):]
            if rest.split(".")[0] in ("input_layernorm", "post_attention_layernorm",
                                     "self_attn", "mlp"):
                out[rest] = v
    if _is_moe(cfg, idx):
        E = cfg["n_routed_experts"]
        gu = [torch.cat([sd[f"{prefix}mlp.experts.{e}.gate_proj.weight"],
                         sd[f"{prefix}mlp.experts.{e}.up_proj.weight"]], 0) for e in range(E)]
        dn = [sd[f"{prefix}mlp.experts.{e}.down_proj.weight"] for e in range(E)]
        out["mlp.experts.gate_up_proj"] = torch.stack(gu)
        out["mlp.experts.down_proj"] = torch.stack(dn)
        out["mlp.gate.weight"] = out["mlp.gate.weight"].float()
    return out


def _make_layer(config, cfg, idx):
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as M
    layer = M.DeepseekV3DecoderLayer(config, idx)
    if _is_moe(cfg, idx) != isinstance(layer.mlp, M.DeepseekV3MoE):
        layer.mlp = M.DeepseekV3MoE(config) if _is_moe(cfg, idx) else M.DeepseekV3MLP(config)
    return layer


class TorchRef:
    """transformers' DeepseekV3 (float32, eager attention) + MTP glue."""

    def __init__(self, model_dir):
        import torch
        from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
        from transformers.models.deepseek_v3 import modeling_deepseek_v3 as M
        cfg, sd = _load_torch_tensors(model_dir)
        self.cfg = cfg
        c2 = {k: v for k, v in cfg.items() if k != "quantization_config"}
        config = DeepseekV3Config(**c2)
        config._attn_implementation = "eager"
        self.config = config
        torch.manual_seed(0)
        model = DeepseekV3ForCausalLM(config).float().eval()
        L = cfg["num_hidden_layers"]
        state = {"model.embed_tokens.weight": sd["model.embed_tokens.weight"],
                 "model.norm.weight": sd["model.norm.weight"],
                 "lm_head.weight": sd.get("lm_head.weight", sd["model.embed_tokens.weight"])}
        for i in range(L):
            model.model.layers[i] = _make_layer(config, cfg, i).float().eval()
            for k, v in _layer_state(sd, f"model.layers.{i}.", cfg, i).items():
                state[f"model.layers.{i}.{k}"] = v
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("inv_freq")]
        assert not missing and not unexpected, (missing, unexpected)
        self.model = model
        self.mtp = []
        for m in range(cfg.get("num_nextn_predict_layers", 0)):
            p = f"model.layers.{L + m}."
            if p + "enorm.weight" not in sd:
                break
            H, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
            mod = torch.nn.Module()
            mod.enorm = M.DeepseekV3RMSNorm(H, eps)
            mod.hnorm = M.DeepseekV3RMSNorm(H, eps)
            mod.head_norm = M.DeepseekV3RMSNorm(H, eps)
            mod.eh_proj = torch.nn.Linear(2 * H, H, bias=False)
            mod.block = _make_layer(config, cfg, L + m)
            mod.enorm.weight.data = sd[p + "enorm.weight"]
            mod.hnorm.weight.data = sd[p + "hnorm.weight"]
            mod.head_norm.weight.data = sd[p + "shared_head.norm.weight"]
            mod.eh_proj.weight.data = sd[p + "eh_proj.weight"]
            mod.block.load_state_dict(_layer_state(sd, p, cfg, L + m), strict=True)
            mod.embed = sd.get(p + "embed_tokens.weight", state["model.embed_tokens.weight"])
            mod.head = sd.get(p + "shared_head.head.weight", state["lm_head.weight"])
            self.mtp.append(mod.float().eval())

    def forward(self, ids):
        """-> (logits [n, V], post-norm hidden [n, H]) as float64 numpy."""
        import torch
        with torch.no_grad():
            out = self.model.model(torch.tensor([ids]))
            h = out.last_hidden_state
            lg = self.model.lm_head(h)
        return lg[0].double().numpy(), h[0]

    def mtp_logits(self, ids, module=0):
        """MTP module logits at rows p = 0..n-2 over (h_p, ids[p+1])."""
        import torch
        mod = self.mtp[module]
        _, h = self.forward(ids)
        with torch.no_grad():
            n = len(ids) - 1
            e = mod.embed[torch.tensor(ids[1:])].clone()
            e[0] = 0.0
            x = mod.eh_proj(torch.cat([mod.enorm(e), mod.hnorm(h[:-1])], -1))[None]
            pos = torch.arange(n)[None]
            pe = self.model.model.rotary_emb(x, pos)
            mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
            y = mod.block(x, attention_mask=mask, position_ids=pos, position_embeddings=pe)
            y = y[0] if isinstance(y, tuple) else y
            lg = mod.head_norm(y[0]) @ mod.head.T
        return lg.double().numpy()

    def greedy(self, ids, n):
        import torch
        with torch.no_grad():
            out = self.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                      min_new_tokens=n, eos_token_id=None, pad_token_id=0)
        return [int(t) for t in out[0, len(ids):]]


# ---- driver ----------------------------------------------------------------

def check_preset(model_dir, preset, seed):
    """Compares torch and numpy; -> golden dict of arrays + summary."""
    tr = TorchRef(model_dir)
    ref = dsv3_ref.load(model_dir)
    vocab = tr.cfg["vocab_size"]
    res = {}
    worst = 0.0
    for ci, ids in enumerate(case_ids(vocab, seed)):
        lt, _ = tr.forward(ids)
        lr, _ = ref.forward(ids)
        e = rel_err(lr, lt)
        worst = max(worst, e)
        assert e <= TOL, f"{preset}: main logits rel err {e:.3g} > {TOL}"
        res[f"ids_{ci}"] = np.array(ids, dtype=np.int64)
        res[f"logits_{ci}"] = lt.astype(np.float32)
        if tr.mtp:
            mt = tr.mtp_logits(ids)
            _, h = ref.forward(ids)
            mr, _ = ref.mtp_forward(0, h[:-1], ids[1:])
            e = rel_err(mr, mt)
            worst = max(worst, e)
            assert e <= TOL, f"{preset}: MTP logits rel err {e:.3g} > {TOL}"
            res[f"mtp_logits_{ci}"] = mt.astype(np.float32)
            assert rel_err(ref.mtp_last_logits(ids)[None], mt[-1:]) <= TOL
        if ci == 0:
            g = tr.greedy(ids, 32)
            gr = dsv3_ref.greedy_generate(ref, ids, 32)
            assert g == gr, f"{preset}: greedy differs\n{g}\n{gr}"
            res["greedy_ids"] = np.array(ids, dtype=np.int64)
            res["greedy_out"] = np.array(g, dtype=np.int64)
            gaps = dsv3_ref.logit_gaps(ref.forward(ids + g[:-1])[0][len(ids) - 1:])
            res["greedy_min_gap"] = np.float64(gaps.min())
    if not tr.cfg.get("quantization_config") and tr.cfg.get("moe_layer_freq", 1) == 1:
        # the checkpoint as written loads with from_pretrained and agrees
        hf = hf_logits(model_dir, res["ids_1"].tolist())
        e = rel_err(hf, res["logits_1"])
        assert e <= TOL, f"{preset}: from_pretrained vs manual load rel err {e:.3g}"
    st = ref.stats
    assert st.min_biased_score > 0, f"{preset}: a biased routing score <= 0"
    return res, worst, st


def hf_logits(model_dir, ids):
    """Logits from DeepseekV3ForCausalLM.from_pretrained (float32, eager)."""
    import torch
    from transformers import DeepseekV3ForCausalLM
    model = DeepseekV3ForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


SHARED_MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                            "models", "pycode-mtp-tiny")


def check_shared_model(path=SHARED_MODEL):
    """The trained reference checkpoint: numpy reference vs from_pretrained
    on main logits, and how often the MTP head's greedy token for position
    p+2 equals the main model's (README: 74.5% on held-out text)."""
    if not os.path.isdir(path):
        print("pycode-mtp-tiny: absent, skipped")
        return
    rng = np.random.default_rng(7)
    ref = dsv3_ref.load(path)
    ids = [int(x) for x in rng.integers(0, 8185, 48)]
    e = rel_err(ref.forward(ids)[0], hf_logits(path, ids))
    assert e <= TOL, f"pycode-mtp-tiny: rel err {e:.3g}"
    msg = f"pycode-mtp-tiny: numpy reference vs transformers max rel err {e:.2e}"
    src = os.path.join(os.path.dirname(os.__file__), "json", "decoder.py")
    tokfile = os.path.join(path, "tokenizer.json")
    try:
        from tokenizers import Tokenizer
        text = open(src).read()
        ids = Tokenizer.from_file(tokfile).encode(text).ids[:400]
        lg, h = ref.forward(ids)
        main = lg.argmax(-1)
        mtp = ref.mtp_forward(0, h[:-1], ids[1:])[0].argmax(-1)
        msg += f"; MTP/main greedy agreement on {src}: {(mtp[:-1] == main[1:-1]).mean():.3f}"
    except (ImportError, OSError) as ex:
        msg += f"; MTP agreement not measured ({ex})"
    print(msg)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None):
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join("tests", "model", "golden"))
    ap.add_argument("--check-only", action="store_true",
                    help="validate the reference against transformers, write nothing")
    a = ap.parse_args(argv)
    import tempfile
    tmp = tempfile.mkdtemp()
    try:
        for preset in random_ckpt.PRESETS:
            write = preset in GOLDEN_PRESETS and not a.check_only
            d = os.path.join(a.out, preset) if write else os.path.join(tmp, preset)
            if os.path.isdir(d):
                shutil.rmtree(d)
            random_ckpt.make_preset(preset, d, seed=0)
            res, worst, st = check_preset(d, preset, 0)
            print(f"{preset}: numpy reference vs transformers max rel err {worst:.2e}; "
                  f"routing margins expert {st.expert_margin:.2g} group {st.group_margin:.2g}; "
                  f"greedy min top1-top2 gap {float(res['greedy_min_gap']):.3g}"
                  + ("  [written]" if write else ""))
            if write:
                np.savez_compressed(os.path.join(d, "golden.npz"), **res)
                meta = {
                    "preset": preset, "seed": 0,
                    "generator": "python3 -m tools.ref.make_goldens",
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "compute": "float32, eager attention",
                    "max_rel_err_numpy_ref_vs_transformers": worst,
                    "cases": sum(1 for k in res if k.startswith("ids_")),
                    "files": {f: sha256(os.path.join(d, f)) for f in sorted(os.listdir(d))
                              if f != "golden.json"},
                }
                with open(os.path.join(d, "golden.json"), "w") as f:
                    json.dump(meta, f, indent=2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_shared_model()
    return 0


if __name__ == "__main__":
    sys.exit(main())
