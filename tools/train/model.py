"""DeepSeek-V3 + one MTP module in PyTorch, for training the project's model.

Main model (the same function as transformers' DeepseekV3ForCausalLM):
  embed -> layers (MLA attention + dense MLP for the first k layers, MoE
  after) -> model.norm -> lm_head (tied to the embedding or not).
  - MLA: q = q_b(q_norm(q_a(x))); [c_kv | k_pe] = kv_a(x); c_kv normed,
    kv_b(c_kv) -> per-head [k_nope | v]; RoPE on q_pe and on the single
    shared k_pe, DeepSeek's interleaved layout: pairs (2i, 2i+1) rotate by
    frequency theta^(-2i/d); softmax scale (qk_nope + qk_rope)^-0.5 (no YaRN).
  - MoE: sigmoid scores; selection on scores + e_score_correction_bias
    (fp32, never in the weights); group score = sum of the top-2 biased
    scores in each group, top topk_group groups kept, the others masked
    with -inf; top-k experts; weights = unbiased scores of the chosen
    experts, normalized to sum 1 (norm_topk_prob), times
    routed_scaling_factor; plus the shared expert(s), unscaled.
MTP module (stored as layer num_hidden_layers), row p (0 <= p <= T-2):
  x_p = eh_proj(concat[enorm(embed(t_{p+1})), hnorm(h_p)])   embedding FIRST
  h_p = the main model's hidden state after model.norm; the embedding is
  zeroed at absolute position 0 (vLLM's convention). Then one decoder
  block (MLA + MoE, own causal attention, RoPE position p),
  shared_head.norm, shared_head.head -> logits for t_{p+2}.

Routed experts are held as 3-D tensors ([E, I, D]) and run as one padded
batched matmul; hf_state_dict() splits them into DeepSeek's per-expert
names. The routers' fp32 gate weights and biases are the only fp32 tensors
a checkpoint keeps; everything else is saved in bf16.
"""
import dataclasses
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class Config:
    vocab_size: int = 8192
    hidden_size: int = 384
    intermediate_size: int = 1024
    moe_intermediate_size: int = 160
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    q_lora_rank: int = 192
    kv_lora_rank: int = 128
    qk_nope_head_dim: int = 48
    qk_rope_head_dim: int = 16
    v_head_dim: int = 64
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    num_experts_per_tok: int = 2
    first_k_dense_replace: int = 1
    n_group: int = 4
    topk_group: int = 2
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    num_nextn_predict_layers: int = 1
    initializer_range: float = 0.02
    bos_token_id: int = 0
    eos_token_id: int = 1

    def hf_dict(self):
        """config.json for transformers' DeepseekV3Config and the C loader."""
        return {
            "architectures": ["DeepseekV3ForCausalLM"],
            "model_type": "deepseek_v3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "n_shared_experts": self.n_shared_experts,
            "n_routed_experts": self.n_routed_experts,
            "routed_scaling_factor": self.routed_scaling_factor,
            "kv_lora_rank": self.kv_lora_rank,
            "q_lora_rank": self.q_lora_rank,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "v_head_dim": self.v_head_dim,
            "qk_nope_head_dim": self.qk_nope_head_dim,
            "n_group": self.n_group,
            "topk_group": self.topk_group,
            "num_experts_per_tok": self.num_experts_per_tok,
            "first_k_dense_replace": self.first_k_dense_replace,
            "norm_topk_prob": self.norm_topk_prob,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "rms_norm_eps": self.rms_norm_eps,
            "use_cache": True,
            "pad_token_id": None,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pretraining_tp": 1,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "rope_interleave": True,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "num_nextn_predict_layers": self.num_nextn_predict_layers,
            "moe_layer_freq": 1,
            "topk_method": "noaux_tc",
            "scoring_func": "sigmoid",
            "ep_size": 1,
            "aux_loss_alpha": 0.0,
            "seq_aux": True,
            "torch_dtype": "bfloat16",
        }

    @classmethod
    def from_hf(cls, d):
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields and v is not None}
        if d.get("rope_scaling"):
            raise ValueError("rope_scaling (YaRN) is not supported by tools/train/model.py")
        if d.get("topk_method", "noaux_tc") != "noaux_tc" or d.get("scoring_func", "sigmoid") != "sigmoid":
            raise ValueError("only noaux_tc + sigmoid routing is supported")
        return cls(**kw)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dt)


def rope_angles(positions, dim, theta):
    """cos, sin of shape [..., dim/2] for integer positions [...]."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device,
                                        dtype=torch.float32) / dim))
    ang = positions.to(torch.float32)[..., None] * inv
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    """Interleaved RoPE: x [..., T, d] with pairs (2i, 2i+1); cos/sin
    broadcastable to [..., T, d/2]. Output keeps the interleaved layout."""
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    return torch.stack((o1, o2), dim=-1).flatten(-2).to(x.dtype)


class MLA(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        h, qk = c.num_attention_heads, c.qk_nope_head_dim + c.qk_rope_head_dim
        self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
        self.q_b_proj = nn.Linear(c.q_lora_rank, h * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim,
                                            bias=False)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, h * (c.qk_nope_head_dim + c.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(h * c.v_head_dim, c.hidden_size, bias=False)
        self.scale = qk ** -0.5

    def qkv(self, x, positions):
        """x [B, T, D], positions [B, T] or [T] -> q, k [B, H, T, qk], v [B, H, T, v]."""
        c = self.c
        B, T, _ = x.shape
        H = c.num_attention_heads
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, H, -1).transpose(1, 2)
        q_nope, q_pe = q.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        kv = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv.split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(B, T, H, -1).transpose(1, 2)
        k_nope, v = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        cos, sin = rope_angles(positions, c.qk_rope_head_dim, c.rope_theta)
        if cos.dim() == 3:  # [B, T, d/2] -> broadcast over heads
            cos, sin = cos[:, None], sin[:, None]
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe[:, None], cos, sin).expand(B, H, T, c.qk_rope_head_dim)
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe], dim=-1)
        return q, k, v

    def out(self, o):
        """o [B, H, T, v] -> [B, T, D]."""
        B, H, T, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x, positions, cache=None):
        """Causal attention over x. cache (eval only): a dict holding this
        layer's past k/v; the new rows are appended. With a non-empty cache x
        must be one row per sequence (decode step)."""
        q, k, v = self.qkv(x, positions)
        causal = True
        if cache is not None:
            if "k" in cache:
                assert x.shape[1] == 1, "cached attention takes one new row"
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
                causal = False
            cache["k"], cache["v"] = k, v
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=self.scale)
        return self.out(o)


class MLP(nn.Module):
    def __init__(self, dim, inter):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter, bias=False)
        self.up_proj = nn.Linear(dim, inter, bias=False)
        self.down_proj = nn.Linear(inter, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    """Router: fp32 weight [E, D] and the fp32 selection bias."""

    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.hidden_size))
        self.register_buffer("e_score_correction_bias",
                             torch.zeros(c.n_routed_experts, dtype=torch.float32))

    def forward(self, x):
        """x [N, D] -> (weights [N, k] fp32, indices [N, k])."""
        c = self.c
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores = F.linear(x.float(), self.weight.float()).sigmoid()
        choice = scores.detach() + self.e_score_correction_bias
        N, E = choice.shape
        if c.n_group > 1:
            g = choice.view(N, c.n_group, E // c.n_group)
            gscore = g.topk(min(2, E // c.n_group), dim=-1)[0].sum(-1)
            keep = torch.zeros_like(gscore, dtype=torch.bool)
            keep.scatter_(1, gscore.topk(c.topk_group, dim=-1)[1], True)
            choice = choice.masked_fill(~keep.repeat_interleave(E // c.n_group, dim=1),
                                        float("-inf"))
        idx = choice.topk(c.num_experts_per_tok, dim=-1)[1]
        w = scores.gather(1, idx)
        if c.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return w * c.routed_scaling_factor, idx


class MoE(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        E, D, I = c.n_routed_experts, c.hidden_size, c.moe_intermediate_size
        self.gate = Gate(c)
        self.w_gate = nn.Parameter(torch.empty(E, I, D))
        self.w_up = nn.Parameter(torch.empty(E, I, D))
        self.w_down = nn.Parameter(torch.empty(E, D, I))
        self.shared_experts = MLP(D, I * c.n_shared_experts)
        self.last_load = None  # tokens per expert in the last forward (detached)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        N, D = x.shape
        E, k = self.c.n_routed_experts, self.c.num_experts_per_tok
        w, idx = self.gate(x)
        flat_e = idx.reshape(-1)
        counts = torch.bincount(flat_e, minlength=E)
        self.last_load = counts.detach()
        order = torch.argsort(flat_e, stable=True)
        e_sorted = flat_e[order]
        tok = order // k
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(N * k, device=x.device) - start[e_sorted]
        cap = int(counts.max().item())
        buf = x.new_zeros(E, cap, D)
        buf[e_sorted, slot] = x[tok]
        h = F.silu(torch.bmm(buf, self.w_gate.transpose(1, 2).to(buf.dtype)))
        h = h * torch.bmm(buf, self.w_up.transpose(1, 2).to(buf.dtype))
        o = torch.bmm(h, self.w_down.transpose(1, 2).to(h.dtype))
        y_sorted = o[e_sorted, slot] * w.reshape(-1)[order, None].to(o.dtype)
        y = torch.zeros(N, D, device=x.device, dtype=y_sorted.dtype)
        y.index_add_(0, tok, y_sorted)
        y = y.to(x.dtype) + self.shared_experts(x)
        return y.view(shape)


class Block(nn.Module):
    def __init__(self, c: Config, moe: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = MLA(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MoE(c) if moe else MLP(c.hidden_size, c.intermediate_size)

    def forward(self, x, positions, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), positions, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class SharedHead(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)


class MTPModule(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.enorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.hnorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * c.hidden_size, c.hidden_size, bias=False)
        self.block = Block(c, moe=c.n_routed_experts > 0)
        self.shared_head = SharedHead(c)

    def inputs(self, tokens, hidden, positions):
        """eh_proj(concat[enorm(embed(tokens)), hnorm(hidden)]), the embedding
        zeroed where positions == 0."""
        e = self.embed_tokens(tokens)
        e = torch.where((positions == 0)[..., None], torch.zeros_like(e), e)
        h = self.eh_proj(torch.cat([self.enorm(e), self.hnorm(hidden)], dim=-1))
        return h

    def forward(self, tokens, hidden, positions):
        """tokens [B, T] (t_{p+1}), hidden [B, T, D] (h_p), positions [B, T] or [T]
        -> (state after shared_head.norm [B, T, D], logits [B, T, V])."""
        pos = positions if positions.dim() == 2 else positions[None].expand(tokens.shape)
        x = self.block(self.inputs(tokens, hidden, pos), positions)
        s = self.shared_head.norm(x)
        return s, self.shared_head.head(s)


class DeepseekV3MTP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(
            Block(c, moe=(c.n_routed_experts > 0 and i >= c.first_k_dense_replace))
            for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.mtp = nn.ModuleList(MTPModule(c) for _ in range(c.num_nextn_predict_layers))
        self.reset_parameters()
        self.tie()

    def tie(self):
        """Shares the embedding with lm_head (if tie_word_embeddings) and with
        every MTP module's embed_tokens and shared_head.head (DeepSeek's
        README: the MTP embedding and head share the main model's)."""
        if self.c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        for m in self.mtp:
            m.embed_tokens.weight = self.embed_tokens.weight
            m.shared_head.head.weight = self.lm_head.weight

    def reset_parameters(self):
        std = self.c.initializer_range
        out_std = std / math.sqrt(2 * (self.c.num_hidden_layers + len(self.mtp)))
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or ".enorm." in name or ".hnorm." in name:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight", "w_down")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def moe_layers(self):
        return [m for m in self.modules() if isinstance(m, MoE)]

    def main(self, ids, positions=None, caches=None):
        """ids [B, T] -> (hidden after model.norm [B, T, D], logits [B, T, V]).
        caches: optional list of per-layer dicts (see MLA.forward)."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, None if caches is None else caches[i])
        h = self.norm(x)
        return h, self.lm_head(h)

    def forward(self, ids):
        """ids [B, T] at positions 0..T-1 -> (main logits [B, T, V],
        MTP logits [B, T-1, V]) where MTP row p predicts ids[p+2]."""
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        h, logits = self.main(ids, pos)
        _, mtp_logits = self.mtp[0](ids[:, 1:], h[:, :-1], pos[:-1])
        return logits, mtp_logits


# ---- HF checkpoint I/O ------------------------------------------------------

def _block_tensors(prefix, blk):
    a = blk.self_attn
    out = {
        prefix + "input_layernorm.weight": blk.input_layernorm.weight,
        prefix + "post_attention_layernorm.weight": blk.post_attention_layernorm.weight,
        prefix + "self_attn.q_a_proj.weight": a.q_a_proj.weight,
        prefix + "self_attn.q_a_layernorm.weight": a.q_a_layernorm.weight,
        prefix + "self_attn.q_b_proj.weight": a.q_b_proj.weight,
        prefix + "self_attn.kv_a_proj_with_mqa.weight": a.kv_a_proj_with_mqa.weight,
        prefix + "self_attn.kv_a_layernorm.weight": a.kv_a_layernorm.weight,
        prefix + "self_attn.kv_b_proj.weight": a.kv_b_proj.weight,
        prefix + "self_attn.o_proj.weight": a.o_proj.weight,
    }
    m = blk.mlp
    if isinstance(m, MoE):
        out[prefix + "mlp.gate.weight"] = m.gate.weight
        out[prefix + "mlp.gate.e_score_correction_bias"] = m.gate.e_score_correction_bias
        for j in range(m.w_gate.shape[0]):
            e = f"{prefix}mlp.experts.{j}."
            out[e + "gate_proj.weight"] = m.w_gate[j]
            out[e + "up_proj.weight"] = m.w_up[j]
            out[e + "down_proj.weight"] = m.w_down[j]
        s = m.shared_experts
        out[prefix + "mlp.shared_experts.gate_proj.weight"] = s.gate_proj.weight
        out[prefix + "mlp.shared_experts.up_proj.weight"] = s.up_proj.weight
        out[prefix + "mlp.shared_experts.down_proj.weight"] = s.down_proj.weight
    else:
        out[prefix + "mlp.gate_proj.weight"] = m.gate_proj.weight
        out[prefix + "mlp.up_proj.weight"] = m.up_proj.weight
        out[prefix + "mlp.down_proj.weight"] = m.down_proj.weight
    return out


def hf_tensors(model: DeepseekV3MTP):
    """name -> tensor (live views into the model) with DeepSeek-V3's names.
    lm_head.weight is left out when tie_word_embeddings (as transformers'
    save_pretrained does); the MTP layer's embed_tokens / shared_head.head
    are always written (DeepSeek ships them as copies)."""
    c = model.c
    out = {"model.embed_tokens.weight": model.embed_tokens.weight}
    for i, blk in enumerate(model.layers):
        out.update(_block_tensors(f"model.layers.{i}.", blk))
    out["model.norm.weight"] = model.norm.weight
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for j, m in enumerate(model.mtp):
        p = f"model.layers.{c.num_hidden_layers + j}."
        out[p + "embed_tokens.weight"] = m.embed_tokens.weight
        out[p + "enorm.weight"] = m.enorm.weight
        out[p + "hnorm.weight"] = m.hnorm.weight
        out[p + "eh_proj.weight"] = m.eh_proj.weight
        out.update(_block_tensors(p, m.block))
        out[p + "shared_head.norm.weight"] = m.shared_head.norm.weight
        out[p + "shared_head.head.weight"] = m.shared_head.head.weight
    return out


def hf_state_dict(model):
    """Checkpoint tensors: bf16, except e_score_correction_bias in fp32."""
    sd = {}
    for k, t in hf_tensors(model).items():
        t = t.detach().cpu()
        sd[k] = t.float().contiguous() if k.endswith("e_score_correction_bias") \
            else t.to(torch.bfloat16).contiguous()
    return sd


def save_pretrained(model, out_dir, max_shard_bytes=15 * 1024 * 1024, extra_meta=None):
    """Writes config.json + model.safetensors, or shards of at most
    max_shard_bytes + model.safetensors.index.json."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model.c.hf_dict(), f, indent=2)
    sd = hf_state_dict(model)
    shards, cur, size = [], {}, 0
    for k, t in sd.items():
        nb = t.numel() * t.element_size()
        if cur and size + nb > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = t
        size += nb
    shards.append(cur)
    meta = {"format": "pt"}
    for f in os.listdir(out_dir):
        if f.startswith("model") and f.endswith((".safetensors", ".safetensors.index.json")):
            os.remove(os.path.join(out_dir, f))
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    names, wmap = [], {}
    for i, sh in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, os.path.join(out_dir, name), metadata=meta)
        names.append(name)
        wmap.update({k: name for k in sh})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total, **(extra_meta or {})},
                   "weight_map": wmap}, f, indent=2)
    names.append("model.safetensors.index.json")
    return names


def read_checkpoint(model_dir):
    """All tensors of a HF checkpoint directory (single file or sharded)."""
    from safetensors.torch import load_file
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for fn in files:
        sd.update(load_file(os.path.join(model_dir, fn)))
    return sd


def from_pretrained(model_dir, dtype=torch.float32):
    """Builds a DeepseekV3MTP from a checkpoint directory. Tensors stored as
    separate copies (MTP embed/head) are loaded as such: the module is
    untied where the stored copy differs from the main embedding/head."""
    with open(os.path.join(model_dir, "config.json")) as f:
        c = Config.from_hf(json.load(f))
    sd = read_checkpoint(model_dir)
    model = DeepseekV3MTP(c)
    if c.num_nextn_predict_layers and f"model.layers.{c.num_hidden_layers}.eh_proj.weight" not in sd:
        c.num_nextn_predict_layers = 0
        model.mtp = nn.ModuleList()
    L = c.num_hidden_layers
    for j, m in enumerate(model.mtp):
        p = f"model.layers.{L + j}."
        if not torch.equal(sd[p + "embed_tokens.weight"], sd["model.embed_tokens.weight"]):
            m.embed_tokens.weight = nn.Parameter(torch.empty_like(model.embed_tokens.weight))
        head_ref = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
        if not torch.equal(sd[p + "shared_head.head.weight"], head_ref):
            m.shared_head.head.weight = nn.Parameter(torch.empty_like(model.lm_head.weight))
    live = hf_tensors(model)
    missing = [k for k in live if k not in sd]
    unexpected = [k for k in sd if k not in live and k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {missing[:5]} unexpected {unexpected[:5]}")
    with torch.no_grad():
        for k, t in live.items():
            t.copy_(sd[k].to(t.dtype))
    return model.to(dtype)


def count_params(model):
    """(total, active per token), counting shared tensors once, MTP included
    separately as (mtp_total)."""
    c = model.c
    seen, total, routed = set(), 0, 0
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if name.split(".")[-1] in ("w_gate", "w_up", "w_down"):
            routed += p.numel()
    active = total - routed + routed * c.num_experts_per_tok // max(1, c.n_routed_experts)
    mtp = 0
    mseen = set()
    for m in model.mtp:
        for n, p in m.named_parameters():
            if id(p) in mseen or p is model.embed_tokens.weight or p is model.lm_head.weight:
                continue
            mseen.add(id(p))
            mtp += p.numel()
    return {"total": total, "active": active, "mtp_only": mtp,
            "main_total": total - mtp}
