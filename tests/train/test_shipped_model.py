"""The shipped default model (models/mtpd-code-small) is a complete HF
DeepSeek-V3 + MTP checkpoint within the repo's limits. numpy-free: reads
only JSON and safetensors headers, so it runs in CI.
"""
import json
import os
import struct

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIR = os.path.join(REPO, "models", "mtpd-code-small")


def _load(name):
    with open(os.path.join(DIR, name), encoding="utf-8") as f:
        return json.load(f)


def _header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def test_files_and_sizes():
    for f in ("config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "README.md", "model.safetensors.index.json"):
        assert os.path.isfile(os.path.join(DIR, f)), f
    idx = _load("model.safetensors.index.json")
    shards = sorted(set(idx["weight_map"].values()))
    total = 0
    for s in shards:
        size = os.path.getsize(os.path.join(DIR, s))
        assert size < 16 * 1024 * 1024, s
        total += size
    assert total < 60e6


def test_config_exercises_deepseek_features():
    c = _load("config.json")
    assert c["model_type"] == "deepseek_v3"
    assert c["q_lora_rank"] and c["kv_lora_rank"]
    assert c["n_routed_experts"] > c["num_experts_per_tok"] >= 2 and c["n_shared_experts"] == 1
    assert c["n_group"] > 1 and 1 <= c["topk_group"] < c["n_group"]
    assert 1 <= c["first_k_dense_replace"] < c["num_hidden_layers"]
    assert c["topk_method"] == "noaux_tc" and c["scoring_func"] == "sigmoid"
    assert c["norm_topk_prob"] is True and c["rope_interleave"] is True
    assert c["num_nextn_predict_layers"] == 1


def test_tensor_names_dtypes_shapes():
    c = _load("config.json")
    idx = _load("model.safetensors.index.json")["weight_map"]
    heads = {}
    for s in sorted(set(idx.values())):
        h = _header(os.path.join(DIR, s))
        h.pop("__metadata__", None)
        heads.update(h)
    assert set(heads) == set(idx)
    L, D, V = c["num_hidden_layers"], c["hidden_size"], c["vocab_size"]
    need = ["model.embed_tokens.weight", "model.norm.weight",
            "model.layers.0.mlp.gate_proj.weight"]
    for i in list(range(c["first_k_dense_replace"], L)) + [L]:
        p = f"model.layers.{i}."
        need += [p + "self_attn.q_a_proj.weight", p + "self_attn.q_a_layernorm.weight",
                 p + "self_attn.q_b_proj.weight", p + "self_attn.kv_a_proj_with_mqa.weight",
                 p + "self_attn.kv_a_layernorm.weight", p + "self_attn.kv_b_proj.weight",
                 p + "self_attn.o_proj.weight", p + "mlp.gate.weight",
                 p + "mlp.gate.e_score_correction_bias",
                 p + "mlp.shared_experts.down_proj.weight"]
        need += [f"{p}mlp.experts.{j}.{w}_proj.weight"
                 for j in range(c["n_routed_experts"]) for w in ("gate", "up", "down")]
    p = f"model.layers.{L}."
    need += [p + n for n in ("embed_tokens.weight", "enorm.weight", "hnorm.weight",
                             "eh_proj.weight", "shared_head.norm.weight",
                             "shared_head.head.weight")]
    for n in need:
        assert n in heads, n
    for n, h in heads.items():
        want = "F32" if n.endswith("e_score_correction_bias") else "BF16"
        assert h["dtype"] == want, n
    assert heads[p + "eh_proj.weight"]["shape"] == [D, 2 * D]
    assert heads[p + "shared_head.head.weight"]["shape"] == [V, D]
    assert heads["model.embed_tokens.weight"]["shape"] == [V, D]


def test_tokenizer_matches_config():
    c = _load("config.json")
    t = _load("tokenizer.json")
    added = {a["content"]: a["id"] for a in t["added_tokens"]}
    assert added["<｜begin▁of▁sentence｜>"] == c["bos_token_id"]
    assert added["<｜end▁of▁sentence｜>"] == c["eos_token_id"]
    for tok in ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>"):
        assert tok in added
    assert len(t["model"]["vocab"]) == c["vocab_size"]
    tc = _load("tokenizer_config.json")
    assert tc["add_bos_token"] is True and "chat_template" in tc
