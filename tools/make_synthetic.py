#!/usr/bin/env python3
"""Writes a synthetic DeepSeek-V3-shaped checkpoint of random bf16 weights,
too big for the CPU caches, for the bandwidth benchmark (tools/bench_forward).

The weights are random (N(0, 0.02) rounded to bf16), so the model's outputs
mean nothing; only the shapes and bytes matter. Tensors are streamed to
disk one at a time, so memory use stays small whatever the size.

    python3 tools/make_synthetic.py --out .work/synthetic-3g [--preset 3g]
        [--mtp N]

--mtp N adds N MTP ("next-n") modules after the main layers (enorm, hnorm,
eh_proj, a MoE block, shared_head.norm; embeddings and head shared with
the main model), so speculation runs on it; random weights accept few
drafts, so it measures what drafting and verifying cost, not what they
gain.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

PRESETS = {
    # ~3.5 GB of weights, ~2 GB touched per decoded token
    "3g": dict(hidden_size=3072, num_hidden_layers=6, num_attention_heads=32,
               q_lora_rank=1024, kv_lora_rank=512, qk_nope_head_dim=128,
               qk_rope_head_dim=64, v_head_dim=128, intermediate_size=8192,
               moe_intermediate_size=2048, n_routed_experts=16,
               num_experts_per_tok=4, n_shared_experts=1, n_group=4,
               topk_group=2, first_k_dense_replace=1, vocab_size=32000),
    # small, for a quick check of this script
    "tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                 q_lora_rank=64, kv_lora_rank=64, qk_nope_head_dim=32,
                 qk_rope_head_dim=16, v_head_dim=32, intermediate_size=512,
                 moe_intermediate_size=128, n_routed_experts=8,
                 num_experts_per_tok=2, n_shared_experts=1, n_group=2,
                 topk_group=1, first_k_dense_replace=1, vocab_size=1000),
}


def tensor_shapes(c, n_mtp=0):
    """(name, shape, dtype) in file order, HF DeepseekV3 names."""
    hid = c["hidden_size"]
    out = [("model.embed_tokens.weight", (c["vocab_size"], hid), "BF16")]
    for i in range(c["num_hidden_layers"]):
        out += layer_shapes(c, i, i >= c["first_k_dense_replace"])
    out.append(("model.norm.weight", (hid,), "BF16"))
    out.append(("lm_head.weight", (c["vocab_size"], hid), "BF16"))
    for k in range(n_mtp):
        p = f"model.layers.{c['num_hidden_layers'] + k}."
        out += [(p + "enorm.weight", (hid,), "BF16"),
                (p + "hnorm.weight", (hid,), "BF16"),
                (p + "eh_proj.weight", (hid, 2 * hid), "BF16")]
        out += layer_shapes(c, c["num_hidden_layers"] + k, True)
        out.append((p + "shared_head.norm.weight", (hid,), "BF16"))
    return out


def layer_shapes(c, i, moe):
    """One decoder layer's tensors: attention, then a dense MLP or MoE."""
    H, hid = c["num_attention_heads"], c["hidden_size"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    p = f"model.layers.{i}."
    out = [
        (p + "input_layernorm.weight", (hid,), "BF16"),
        (p + "post_attention_layernorm.weight", (hid,), "BF16"),
        (p + "self_attn.q_a_proj.weight", (c["q_lora_rank"], hid), "BF16"),
        (p + "self_attn.q_a_layernorm.weight", (c["q_lora_rank"],), "BF16"),
        (p + "self_attn.q_b_proj.weight", (H * qk, c["q_lora_rank"]), "BF16"),
        (p + "self_attn.kv_a_proj_with_mqa.weight",
         (c["kv_lora_rank"] + c["qk_rope_head_dim"], hid), "BF16"),
        (p + "self_attn.kv_a_layernorm.weight", (c["kv_lora_rank"],), "BF16"),
        (p + "self_attn.kv_b_proj.weight",
         (H * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"]),
         "BF16"),
        (p + "self_attn.o_proj.weight", (hid, H * c["v_head_dim"]), "BF16"),
    ]
    if not moe:
        inter = c["intermediate_size"]
        for n in ("gate_proj", "up_proj"):
            out.append((p + f"mlp.{n}.weight", (inter, hid), "BF16"))
        out.append((p + "mlp.down_proj.weight", (hid, inter), "BF16"))
        return out
    E, inter = c["n_routed_experts"], c["moe_intermediate_size"]
    out.append((p + "mlp.gate.weight", (E, hid), "BF16"))
    out.append((p + "mlp.gate.e_score_correction_bias", (E,), "F32"))
    experts = [f"mlp.experts.{e}." for e in range(E)]
    experts.append("mlp.shared_experts.")
    for ex in experts:
        i_sz = inter * (c["n_shared_experts"] if "shared" in ex else 1)
        out.append((p + ex + "gate_proj.weight", (i_sz, hid), "BF16"))
        out.append((p + ex + "up_proj.weight", (i_sz, hid), "BF16"))
        out.append((p + ex + "down_proj.weight", (hid, i_sz), "BF16"))
    return out


def random_block(rng, shape, dtype, name):
    n = int(np.prod(shape))
    if dtype == "F32":
        return (rng.standard_normal(n) * 0.01).astype("<f4").tobytes()
    if name.endswith("norm.weight"):
        return np.full(n, 0x3F80, dtype="<u2").tobytes()  # 1.0 in bf16
    x = (rng.standard_normal(n, dtype=np.float32) * 0.02).view(np.uint32)
    return (x >> 16).astype("<u2").tobytes()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="3g", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mtp", type=int, default=0,
                    help="MTP modules to add (default 0)")
    a = ap.parse_args(argv)
    c = dict(PRESETS[a.preset])
    cfg = dict(c, architectures=["DeepseekV3ForCausalLM"],
               model_type="deepseek_v3", moe_layer_freq=1,
               routed_scaling_factor=2.5, norm_topk_prob=True,
               topk_method="noaux_tc", scoring_func="sigmoid",
               rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
               max_position_embeddings=4096, tie_word_embeddings=False,
               num_nextn_predict_layers=a.mtp, bos_token_id=0, eos_token_id=1,
               torch_dtype="bfloat16")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    shapes = tensor_shapes(c, a.mtp)
    header, off = {}, 0
    for name, shape, dt in shapes:
        nbytes = int(np.prod(shape)) * (4 if dt == "F32" else 2)
        header[name] = {"dtype": dt, "shape": list(shape),
                        "data_offsets": [off, off + nbytes]}
        off += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    rng = np.random.default_rng(a.seed)
    path = os.path.join(a.out, "model.safetensors")
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        done, shown = 0, -1
        for name, shape, dt in shapes:
            f.write(random_block(rng, shape, dt, name))
            done += int(np.prod(shape)) * (4 if dt == "F32" else 2)
            pct = 100 * done // off
            if pct // 5 != shown // 5:
                shown = pct
                print(f"\rmake_synthetic: {done / 1e9:6.2f} / {off / 1e9:.2f}"
                      f" GB", end="", file=sys.stderr, flush=True)
    os.replace(path + ".tmp", path)
    print(f"\nmake_synthetic: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
