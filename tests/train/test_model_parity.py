"""The training model is DeepSeek-V3: transformers' DeepseekV3ForCausalLM
loads our checkpoint and gives the same main-model logits; the MTP module and
the evaluator's batched recursive drafting agree with a plain sequential
run; the tokenizer's pipeline is DeepSeek-V3's.

Skips when torch (or, per test, transformers / the shared files) is missing.
"""
import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from tools.train import evaluate as E  # noqa: E402
from tools.train import model as M  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(REPO, "..", "shared")


def _small(**kw):
    base = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                num_hidden_layers=3, num_attention_heads=4, q_lora_rank=32, kv_lora_rank=32,
                qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, vocab_size=300,
                n_routed_experts=8, n_group=4, topk_group=2)
    base.update(kw)
    return M.Config(**base)


def _randomized(c, seed=0, scale=8.0):
    """A model whose weights are large enough that attention is far from
    uniform and routing depends on the input (so layout bugs show)."""
    torch.manual_seed(seed)
    m = M.DeepseekV3MTP(c)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
            elif "proj" in n or "w_" in n or "embed" in n:
                p.mul_(scale)
        for moe in m.moe_layers():
            moe.gate.e_score_correction_bias.copy_(0.02 * torch.randn(c.n_routed_experts))
    return m.eval()


def test_transformers_loads_checkpoint_with_same_logits(tmp_path):
    tf = pytest.importorskip("transformers")
    m = _randomized(_small())
    M.save_pretrained(m, str(tmp_path), max_shard_bytes=200_000)
    ours = M.from_pretrained(str(tmp_path))  # bf16-rounded weights, fp32 math
    hf = tf.DeepseekV3ForCausalLM.from_pretrained(str(tmp_path), torch_dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (2, 41), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(ids).logits
        _, got = ours.main(ids)
    err = ((got - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-4, err


def test_layout_bug_would_show(tmp_path, monkeypatch):
    """Guards the parity test itself: a NeoX half-split RoPE must fail it."""
    tf = pytest.importorskip("transformers")
    m = _randomized(_small())
    M.save_pretrained(m, str(tmp_path))
    hf = tf.DeepseekV3ForCausalLM.from_pretrained(str(tmp_path), torch_dtype=torch.float32).eval()
    ours = M.from_pretrained(str(tmp_path))

    def half_split(x, cos, sin):
        d = x.shape[-1] // 2
        x1, x2 = x[..., :d].float(), x[..., d:].float()
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1).to(x.dtype)

    monkeypatch.setattr(M, "apply_rope", half_split)
    ids = torch.randint(0, 300, (1, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        err = ((ours.main(ids)[1] - hf(ids).logits).abs().max()).item()
    assert err > 1e-2


def test_group_limited_routing_masks_groups():
    c = _small()
    g = M.Gate(c)
    with torch.no_grad():
        g.weight.zero_()
        # expert scores: 8 experts in 4 groups of 2; bias makes group 3 win
        g.e_score_correction_bias.copy_(torch.tensor([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.2]))
    w, idx = g(torch.zeros(1, c.hidden_size))
    # group sums: g0 .3, g3 .4 win; top-2 experts among {0,1,6,7}: 0, then 6 or 7
    assert 0 in idx[0].tolist() and set(idx[0].tolist()) <= {0, 1, 6, 7}
    # weights come from the unbiased scores (all 0.5): normalized, times 2.5
    assert torch.allclose(w, torch.full_like(w, 0.5 * c.routed_scaling_factor))


def test_mtp_uses_embedding_first_and_zeroes_position_0():
    c = _small()
    m = _randomized(c)
    mtp = m.mtp[0]
    ids = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        h, _ = m.main(ids)
        x = mtp.inputs(ids[:, 1:], h[:, :-1], torch.arange(5)[None])
        D = c.hidden_size
        W = mtp.eh_proj.weight
        e = mtp.embed_tokens(ids[:, 1:])
        want = mtp.enorm(e) @ W[:, :D].T + mtp.hnorm(h[:, :-1]) @ W[:, D:].T
        want0 = mtp.hnorm(h[:, :1]) @ W[:, D:].T  # embedding zeroed at position 0
    assert torch.allclose(x[:, 1:], want[:, 1:], atol=1e-5)
    assert torch.allclose(x[:, :1], want0, atol=1e-5)


def test_batched_recursive_drafts_match_sequential():
    c = _small(vocab_size=50)
    m = _randomized(c, seed=1, scale=10.0)
    prompts = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(6))
    y = E.greedy_generate(m, prompts, 12)
    with torch.no_grad():
        z = prompts
        for _ in range(12):
            z = torch.cat([z, m.main(z)[1][:, -1:].argmax(-1)], 1)
        assert torch.equal(z, y)  # KV-cached greedy == recomputed greedy
        n = y.shape[1]
        pos = torch.arange(n)
        h, _ = m.main(y)
        mtp = m.mtp[0]
        s1, l1, base = E.mtp_rows(mtp, y[:, 1:], h[:, :-1], pos[:-1], None, [])
        assert torch.allclose(l1, mtp(y[:, 1:], h[:, :-1], pos[:-1])[1], atol=1e-4)
        s2, l2, kv2 = E.mtp_rows(mtp, l1.argmax(-1), s1, pos[:-1] + 1, base, [])
        s3, l3, _ = E.mtp_rows(mtp, l2.argmax(-1), s2, pos[:-1] + 2, base, [kv2])
        for p in (0, 4, n - 4):
            # the chain run as one causal sequence through the MTP module
            toks, hid = y[:, 1:p + 2], h[:, :p + 1]
            sa, la = mtp(toks, hid, torch.arange(p + 1))
            toks = torch.cat([toks, la[:, -1:].argmax(-1)], 1)
            hid = torch.cat([hid, sa[:, -1:]], 1)
            sb, lb = mtp(toks, hid, torch.arange(p + 2))
            toks = torch.cat([toks, lb[:, -1:].argmax(-1)], 1)
            hid = torch.cat([hid, sb[:, -1:]], 1)
            _, lc = mtp(toks, hid, torch.arange(p + 3))
            assert torch.allclose(lb[:, -1], l2[:, p], atol=1e-4)
            assert torch.allclose(lc[:, -1], l3[:, p], atol=1e-4)
    r = E.acceptance(m, prompts, 12)
    assert r["greedy_consistency"] == 1.0
    u, cnd = r["accept_uncond"], r["accept_cond"]
    assert u[0] >= u[1] >= u[2] and all(0 <= x <= 1 for x in u + cnd)


def test_tokenizer_pipeline_is_deepseeks():
    pytest.importorskip("tokenizers")
    from tools.train import tokenizer as T
    j = T.train(["def f(x):\n    return x + 1\n" * 50, "int main(void) { return 0; }\n" * 50],
                vocab_size=300)
    ids = {a["content"]: a["id"] for a in j["added_tokens"]}
    assert ids[T.BOS] == 0 and ids[T.EOS] == 1 and len(ids) == 7
    ds = os.path.join(SHARED, "tokenizers", "deepseek-v3", "tokenizer.json")
    if not os.path.exists(ds):
        pytest.skip("../shared/tokenizers/deepseek-v3 not present")
    with open(ds, encoding="utf-8") as f:
        ref = json.load(f)
    for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert j[k] == ref[k], k
    ref_added = {a["content"] for a in ref["added_tokens"]}
    assert set(ids) <= ref_added
