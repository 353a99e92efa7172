"""Small random DeepSeek-V3 (+MTP) checkpoints in Hugging Face format.

    python3 -m tools.ref.random_ckpt --list
    python3 -m tools.ref.random_ckpt --preset NAME --out DIR [--seed N]

Each preset is a tiny config exercising one combination of the features the
loader and forward pass must handle (q_lora_rank null/set, n_group 1/>1,
first_k_dense_replace 0/>0, moe_layer_freq, tied/untied embeddings, YaRN
on/off, F32/BF16/F16/FP8-block-128 weights, 0/1/2 MTP layers with or without
their own embed/head copies, single-file/sharded). Weights use a scaled init
(linear weights ~ N(0, 1/in)) so activations stay O(1) and top-1/top-2 logit
gaps are comfortably large. Deterministic for a given (preset, seed).
"""
import argparse
import copy
import json
import math
import os
import sys

import numpy as np

from . import ckpt

BASE = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 384,
    "hidden_size": 96,
    "intermediate_size": 160,
    "moe_intermediate_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_shared_experts": 1,
    "n_routed_experts": 8,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 48,
    "q_lora_rank": 64,
    "qk_rope_head_dim": 16,
    "v_head_dim": 24,
    "qk_nope_head_dim": 16,
    "n_group": 4,
    "topk_group": 2,
    "num_experts_per_tok": 3,
    "first_k_dense_replace": 1,
    "norm_topk_prob": True,
    "hidden_act": "silu",
    "max_position_embeddings": 512,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pretraining_tp": 1,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rope_interleave": True,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "num_nextn_predict_layers": 1,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "ep_size": 1,
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "torch_dtype": "bfloat16",
}

FP8_QCFG = {"activation_scheme": "dynamic", "fmt": "e4m3",
            "quant_method": "fp8", "weight_block_size": [128, 128]}

# name -> (config overrides, options)
#   dtype: storage dtype of float weights (F32/BF16/F16); fp8: block-quantize
#   the attention/MLP projections; shards: number of safetensors files (1 =
#   model.safetensors, no index); mtp_copies: store embed_tokens and
#   shared_head.head in the MTP layers (as DeepSeek-V3 does).
PRESETS = {
    # q_lora set, n_group 4 (top-2 groups), 1 dense layer, untied, no YaRN,
    # BF16, one MTP layer with its own embed/head copies, single file.
    "bf16-base": ({}, dict(dtype="BF16", shards=1, mtp_copies=True)),
    # q_proj (q_lora_rank null), n_group 1, all layers MoE, tied, YaRN with
    # mscale != mscale_all_dim, routed_scaling_factor 1.5, F32, MTP without
    # embed/head (falls back to the main model's), 2 shards + index.
    "f32-qproj-yarn": ({
        "routed_scaling_factor": 1.5,
        "q_lora_rank": None, "n_group": 1, "topk_group": 1,
        "first_k_dense_replace": 0, "tie_word_embeddings": True,
        "hidden_size": 64, "vocab_size": 320, "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "rope_scaling": {"type": "yarn", "factor": 4.0,
                         "original_max_position_embeddings": 128,
                         "beta_fast": 32, "beta_slow": 1,
                         "mscale": 0.707, "mscale_all_dim": 1.0},
        "torch_dtype": "float32",
    }, dict(dtype="F32", shards=2, mtp_copies=False)),
    # F16 weights, no MTP layer at all, 2 layers, 2 shared experts,
    # norm_topk_prob false.
    "f16-nomtp": ({
        "num_hidden_layers": 2, "num_nextn_predict_layers": 0,
        "n_shared_experts": 2, "norm_topk_prob": False,
        "n_routed_experts": 6, "n_group": 3, "topk_group": 2,
        "num_experts_per_tok": 2, "vocab_size": 300, "torch_dtype": "float16",
    }, dict(dtype="F16", shards=1, mtp_copies=False)),
    # Two MTP layers, moe_layer_freq 2 (layers 0, 1, 3 and MTP layer 5
    # dense; layer 2 and MTP layer 4 MoE), untied, BF16, 3 shards; weak
    # residual branches (agree) so recursive drafts are partly accepted;
    # rope_theta 50000, rms_norm_eps 1e-5.
    "bf16-mtp2-freq2": ({
        "rope_theta": 50000.0, "rms_norm_eps": 1e-5,
        "num_hidden_layers": 4, "num_nextn_predict_layers": 2,
        "moe_layer_freq": 2, "first_k_dense_replace": 1,
        "n_routed_experts": 8, "n_group": 2,
        "topk_group": 1, "num_experts_per_tok": 2, "vocab_size": 352,
    }, dict(dtype="BF16", shards=3, mtp_copies=True, agree=0.25)),
    # bf16-base with weak residual branches and an MTP eh_proj that passes the
    # token embedding through: greedy drafts are accepted 0..k times, for
    # speculative-decoding acceptance tests.
    "bf16-agree": ({}, dict(dtype="BF16", shards=1, mtp_copies=True, agree=0.15)),
    # FP8 block-128 projections with several and partial blocks (hidden 192,
    # q_lora 160, kv_a out 112, q_b out 144, kv_b out 216, o in 120,
    # intermediate 320), YaRN as in DeepSeek-V3 (mscale = mscale_all_dim = 1),
    # untied, two MTP layers without embed/head copies, 2 shards.
    "fp8-yarn-mtp2": ({
        "hidden_size": 192, "intermediate_size": 320, "moe_intermediate_size": 80,
        "num_attention_heads": 3, "num_key_value_heads": 3,
        "q_lora_rank": 160, "kv_lora_rank": 96, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16, "v_head_dim": 40, "vocab_size": 400,
        "n_routed_experts": 6, "n_group": 3, "topk_group": 2,
        "num_experts_per_tok": 2,
        "num_nextn_predict_layers": 2, "num_hidden_layers": 2,
        "max_position_embeddings": 2048,
        "rope_scaling": {"type": "yarn", "factor": 8.0,
                         "original_max_position_embeddings": 256,
                         "beta_fast": 32, "beta_slow": 1,
                         "mscale": 1.0, "mscale_all_dim": 1.0},
    }, dict(dtype="BF16", shards=2, mtp_copies=False, fp8=True)),
    # FP8 with 16x16 blocks that every head's W_UK / W_UV rows start on:
    # mtpd reads kv_b in place (model/absorb.c) instead of an fp32 copy
    "fp8-blk16-absorb": ({
        "hidden_size": 96, "intermediate_size": 160, "moe_intermediate_size": 48,
        "num_attention_heads": 2, "num_key_value_heads": 2,
        "q_lora_rank": 64, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16, "v_head_dim": 48, "vocab_size": 300,
        "n_routed_experts": 4, "n_group": 2, "topk_group": 1,
        "num_experts_per_tok": 2, "num_hidden_layers": 2,
    }, dict(dtype="BF16", fp8=True, fp8_block=16)),
}


def make_config(preset):
    over, opts = PRESETS[preset]
    cfg = copy.deepcopy(BASE)
    cfg.update(copy.deepcopy(over))
    if opts.get("fp8"):
        cfg["quantization_config"] = dict(FP8_QCFG)
        b = opts.get("fp8_block", 128)
        cfg["quantization_config"]["weight_block_size"] = [b, b]
    return cfg, opts


def _is_moe(cfg, idx):
    return (cfg["n_routed_experts"] and idx >= cfg["first_k_dense_replace"]
            and idx % cfg["moe_layer_freq"] == 0)


def _lin(rng, out_dim, in_dim, gain=1.0):
    return rng.standard_normal((out_dim, in_dim)) * (gain / math.sqrt(in_dim))


def _norm(rng, n):
    return 1.0 + 0.1 * rng.standard_normal(n)


def _block_tensors(rng, cfg, idx, gain=1.0):
    """Float64 tensors of decoder block idx (attention + MLP/MoE + norms);
    gain scales the residual-branch outputs (o_proj, down_proj)."""
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    p = f"model.layers.{idx}."
    t = {}
    t[p + "input_layernorm.weight"] = _norm(rng, H)
    a = p + "self_attn."
    if cfg["q_lora_rank"] is None:
        t[a + "q_proj.weight"] = _lin(rng, nh * qk, H)
    else:
        r = cfg["q_lora_rank"]
        t[a + "q_a_proj.weight"] = _lin(rng, r, H)
        t[a + "q_a_layernorm.weight"] = _norm(rng, r)
        t[a + "q_b_proj.weight"] = _lin(rng, nh * qk, r)
    kvr = cfg["kv_lora_rank"]
    t[a + "kv_a_proj_with_mqa.weight"] = _lin(rng, kvr + cfg["qk_rope_head_dim"], H)
    t[a + "kv_a_layernorm.weight"] = _norm(rng, kvr)
    t[a + "kv_b_proj.weight"] = _lin(rng, nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), kvr)
    t[a + "o_proj.weight"] = _lin(rng, H, nh * cfg["v_head_dim"], 0.7 * gain)
    t[p + "post_attention_layernorm.weight"] = _norm(rng, H)
    m = p + "mlp."
    if _is_moe(cfg, idx):
        E = cfg["n_routed_experts"]
        I = cfg["moe_intermediate_size"]
        t[m + "gate.weight"] = _lin(rng, E, H, 1.5)
        for e in range(E):
            t[f"{m}experts.{e}.gate_proj.weight"] = _lin(rng, I, H)
            t[f"{m}experts.{e}.up_proj.weight"] = _lin(rng, I, H)
            t[f"{m}experts.{e}.down_proj.weight"] = _lin(rng, H, I, 0.5 * gain)
        if cfg["n_shared_experts"]:
            Is = I * cfg["n_shared_experts"]
            t[m + "shared_experts.gate_proj.weight"] = _lin(rng, Is, H)
            t[m + "shared_experts.up_proj.weight"] = _lin(rng, Is, H)
            t[m + "shared_experts.down_proj.weight"] = _lin(rng, H, Is, 0.5 * gain)
        # +0.1 keeps every biased score positive, so masking the experts of
        # dropped groups with -inf (DeepSeek) or 0.0 (older transformers)
        # picks the same experts; a common shift does not change routing.
        t[m + "gate.e_score_correction_bias"] = 0.1 + 0.02 * rng.standard_normal(E)
    else:
        I = cfg["intermediate_size"]
        t[m + "gate_proj.weight"] = _lin(rng, I, H)
        t[m + "up_proj.weight"] = _lin(rng, I, H)
        t[m + "down_proj.weight"] = _lin(rng, H, I, 0.5 * gain)
    return t


def make_tensors(cfg, opts, seed=0):
    """-> {name: float64 array} for the whole checkpoint (unquantized)."""
    rng = np.random.default_rng(seed)
    H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    tied = cfg["tie_word_embeddings"]
    t = {}
    # tied: logits = h . E, so a smaller embedding keeps logits O(3)
    t["model.embed_tokens.weight"] = rng.standard_normal((V, H)) * (
        3.0 / math.sqrt(H) if tied else 1.0)
    # agree: weak residual branches make the main model close to a bigram
    # model (next token ~ f(current token)), and an MTP layer whose eh_proj
    # passes the embedding of t_{p+1} through then predicts f(t_{p+1}) =
    # the main model's token at p+2, so greedy drafts are often accepted.
    agree = opts.get("agree", 0.0)
    gain = agree if agree else 1.0
    for i in range(L):
        t.update(_block_tensors(rng, cfg, i, gain))
    t["model.norm.weight"] = _norm(rng, H)
    if not tied:
        t["lm_head.weight"] = _lin(rng, V, H, 3.0)
    head = t["model.embed_tokens.weight"] if tied else t["lm_head.weight"]
    for m in range(cfg["num_nextn_predict_layers"]):
        idx = L + m
        p = f"model.layers.{idx}."
        t[p + "enorm.weight"] = _norm(rng, H)
        t[p + "hnorm.weight"] = _norm(rng, H)
        eh = _lin(rng, H, 2 * H)
        if agree:
            eh[:, :H] = np.eye(H) + agree * eh[:, :H]
            eh[:, H:] *= agree
        t[p + "eh_proj.weight"] = eh
        t.update(_block_tensors(rng, cfg, idx, gain))
        t[p + "shared_head.norm.weight"] = _norm(rng, H)
        if opts.get("mtp_copies"):
            t[p + "embed_tokens.weight"] = t["model.embed_tokens.weight"].copy()
            t[p + "shared_head.head.weight"] = head.copy()
    return t


FP8_SKIP = ("eh_proj.weight", "gate.weight")


def is_fp8_tensor(name):
    """DeepSeek-V3 quantizes the attention / MLP / expert projections only."""
    return name.endswith("_proj.weight") and not name.endswith(FP8_SKIP)


def quantize_fp8_block(w, block=128):
    """-> (uint8 e4m3fn codes, fp32 scale_inv [ceil(out/b), ceil(in/b)]);
    scale = amax(block) / 448 so W ~= fp8 * scale_inv."""
    o, i = w.shape
    so, si = math.ceil(o / block), math.ceil(i / block)
    scale = np.zeros((so, si), dtype=np.float32)
    q = np.zeros_like(w, dtype=np.uint8)
    for bo in range(so):
        for bi in range(si):
            blk = w[bo * block:(bo + 1) * block, bi * block:(bi + 1) * block]
            s = np.float32(max(np.abs(blk).max(), 1e-12) / ckpt.FP8_E4M3_MAX)
            scale[bo, bi] = s
            q[bo * block:(bo + 1) * block, bi * block:(bi + 1) * block] = \
                ckpt.f32_to_fp8_e4m3fn_bits(blk / np.float64(s))
    return q, scale


def encode_tensors(tensors, opts, block=128):
    """float64 tensors -> {name: (dtype, storage array)} in checkpoint
    formats: e_score_correction_bias always F32; FP8 projections with
    weight_scale_inv when opts['fp8']; everything else opts['dtype']."""
    out = {}
    for name, w in tensors.items():
        if name.endswith("e_score_correction_bias"):
            out[name] = ("F32", ckpt.encode(w, "F32"))
        elif opts.get("fp8") and is_fp8_tensor(name):
            q, s = quantize_fp8_block(w, block)
            out[name] = ("F8_E4M3", q)
            out[name[:-len("weight")] + "weight_scale_inv"] = ("F32", s)
        else:
            out[name] = (opts["dtype"], ckpt.encode(w, opts["dtype"]))
    return out


def write_checkpoint(out_dir, cfg, encoded, shards=1):
    """Writes config.json and model.safetensors, or `shards` files
    model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    names = list(encoded)
    if shards <= 1:
        ckpt.write_safetensors(os.path.join(out_dir, "model.safetensors"),
                               encoded, {"format": "pt"})
        return
    per = math.ceil(len(names) / shards)
    weight_map = {}
    total = 0
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: encoded[n] for n in names[s * per:(s + 1) * per]}
        ckpt.write_safetensors(os.path.join(out_dir, fn), part, {"format": "pt"})
        for n, (_, arr) in part.items():
            weight_map[n] = fn
            total += arr.nbytes
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)


def make_preset(preset, out_dir, seed=0):
    """Writes preset `preset` to out_dir; returns out_dir."""
    cfg, opts = make_config(preset)
    tensors = make_tensors(cfg, opts, seed)
    encoded = encode_tensors(tensors, opts, opts.get("fp8_block", 128))
    write_checkpoint(out_dir, cfg, encoded, opts.get("shards", 1))
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="list presets")
    a = ap.parse_args(argv)
    if a.list or not a.preset:
        for name in PRESETS:
            print(name)
        return 0
    if not a.out:
        ap.error("--out is required")
    make_preset(a.preset, a.out, a.seed)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
