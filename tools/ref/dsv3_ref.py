"""Independent numpy reference forward of DeepSeek-V3 (+ MTP modules).

Written from the DeepSeek-V3 paper / inference code and transformers'
DeepseekV3ForCausalLM semantics; numpy only, float64 compute. Conventions
(see docs/reference.md for the full list):

- MLA with interleaved RoPE on the qk_rope_head_dim part (pairs (2i, 2i+1)),
  YaRN as transformers computes it (always applied when rope_scaling is yarn).
- MoE: noaux_tc routing with sigmoid scores, e_score_correction_bias for the
  choice only, group score = sum of the top-2 biased scores, experts of
  non-selected groups masked with -inf; weights = unbiased scores of the
  chosen experts (normalized when norm_topk_prob) * routed_scaling_factor;
  shared experts added unscaled. Layer i is MoE when n_routed_experts > 0,
  i >= first_k_dense_replace and i % moe_layer_freq == 0 (MTP layers use
  their absolute index num_hidden_layers + m).
- MTP module m (checkpoint layer num_hidden_layers + m): row p combines the
  hidden h_p and token t_{p+1}:
      x = eh_proj(concat[enorm(embed(t_{p+1})), hnorm(h_p)])
  with the embedding zeroed at absolute position 0, then one decoder block
  (own causal attention, RoPE position p), shared_head.norm, shared_head.head.
- argmax ties go to the lowest token id.
"""
import math
import os

import numpy as np

from . import ckpt


# ---- config ----------------------------------------------------------------

class Config:
    """DeepseekV3Config fields with transformers' defaults."""

    def __init__(self, d):
        self.raw = dict(d)
        g = d.get
        self.vocab_size = int(d["vocab_size"])
        self.hidden_size = int(d["hidden_size"])
        self.intermediate_size = int(g("intermediate_size", 18432))
        self.moe_intermediate_size = int(g("moe_intermediate_size", 2048))
        self.num_hidden_layers = int(d["num_hidden_layers"])
        self.num_attention_heads = int(d["num_attention_heads"])
        self.q_lora_rank = g("q_lora_rank", 1536)
        self.kv_lora_rank = int(g("kv_lora_rank", 512))
        self.qk_nope_head_dim = int(g("qk_nope_head_dim", 128))
        self.qk_rope_head_dim = int(g("qk_rope_head_dim", 64))
        self.v_head_dim = int(g("v_head_dim", 128))
        self.n_routed_experts = g("n_routed_experts", 256) or 0
        self.n_shared_experts = g("n_shared_experts", 1) or 0
        self.num_experts_per_tok = g("num_experts_per_tok", 8)
        self.first_k_dense_replace = int(g("first_k_dense_replace", 3) or 0)
        self.moe_layer_freq = int(g("moe_layer_freq", 1) or 1)
        self.n_group = int(g("n_group", 8) or 1)
        self.topk_group = int(g("topk_group", 4) or 1)
        self.norm_topk_prob = bool(g("norm_topk_prob", True))
        self.routed_scaling_factor = float(g("routed_scaling_factor", 2.5))
        self.topk_method = g("topk_method", "noaux_tc")
        self.scoring_func = g("scoring_func", "sigmoid")
        self.hidden_act = g("hidden_act", "silu")
        self.rms_norm_eps = float(g("rms_norm_eps", 1e-6))
        self.rope_theta = float(g("rope_theta", 10000.0))
        self.rope_interleave = bool(g("rope_interleave", True))
        self.max_position_embeddings = int(g("max_position_embeddings", 4096))
        self.rope_scaling = g("rope_scaling") or g("rope_parameters")
        self.tie_word_embeddings = bool(g("tie_word_embeddings", False))
        self.num_nextn_predict_layers = int(g("num_nextn_predict_layers", 0) or 0)
        self.bos_token_id = g("bos_token_id")
        self.eos_token_id = g("eos_token_id")
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.n_routed_experts:
            if self.topk_method != "noaux_tc" or self.scoring_func != "sigmoid":
                raise NotImplementedError(
                    f"routing {self.topk_method}/{self.scoring_func}: only "
                    "noaux_tc/sigmoid (DeepSeek-V3) is implemented")
            if self.n_routed_experts % self.n_group:
                raise ValueError("n_routed_experts not divisible by n_group")
        if self.hidden_act != "silu":
            raise NotImplementedError(f"hidden_act {self.hidden_act}")

    def is_moe_layer(self, idx):
        return (self.n_routed_experts > 0 and idx >= self.first_k_dense_replace
                and idx % self.moe_layer_freq == 0)

    def is_yarn(self):
        rs = self.rope_scaling
        return bool(rs) and (rs.get("type") or rs.get("rope_type")) == "yarn"


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def rope_params(cfg):
    """-> (inv_freq [rope_dim/2] float64, cos/sin scale, softmax scale).

    YaRN as transformers' _compute_yarn_parameters: inv_freq blends the
    interpolated (1/(factor*base^(2i/d))) and extrapolated frequencies with a
    linear ramp between the beta_fast/beta_slow correction dims (floored /
    ceiled); cos/sin are scaled by attention_factor = mscale(f, mscale) /
    mscale(f, mscale_all_dim) (or mscale(f) when either is missing); the
    softmax scale is qk_head_dim^-0.5 * mscale(f, mscale_all_dim)^2 when
    mscale_all_dim is set."""
    dim = cfg.qk_rope_head_dim
    base = cfg.rope_theta
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    inv_freq = 1.0 / pos_freqs
    scale = cfg.qk_head_dim ** -0.5
    if not cfg.is_yarn():
        return inv_freq, 1.0, scale
    rs = cfg.rope_scaling
    orig = rs.get("original_max_position_embeddings") or cfg.max_position_embeddings
    factor = rs.get("factor")
    if factor is None:
        factor = cfg.max_position_embeddings / orig
    factor = float(factor)
    mscale = rs.get("mscale")
    mscale_all_dim = rs.get("mscale_all_dim")
    attn_factor = rs.get("attention_factor")
    if attn_factor is None:
        if mscale and mscale_all_dim:
            attn_factor = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        else:
            attn_factor = yarn_get_mscale(factor)
    beta_fast = rs.get("beta_fast") or 32
    beta_slow = rs.get("beta_slow") or 1

    def corr_dim(rot):
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrap = 1.0 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrap) + (1.0 / pos_freqs) * extrap
    if mscale_all_dim:
        m = yarn_get_mscale(factor, mscale_all_dim)
        scale = scale * m * m
    return inv_freq, float(attn_factor), scale


# ---- building blocks ---------------------------------------------------------

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def apply_rope(x, pos, inv_freq, attn_factor, interleave=True):
    """x [..., n, d] with positions pos [n]: rotate pairs by pos*inv_freq[i].
    Interleaved pairs (2i, 2i+1) (DeepSeek layout) or, when interleave is
    False, half-split pairs (i, i + d/2)."""
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.cos(ang) * attn_factor
    sin = np.sin(ang) * attn_factor
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
    r1 = x1 * cos - x2 * sin
    r2 = x2 * cos + x1 * sin
    out = np.empty_like(x)
    if interleave:
        out[..., 0::2], out[..., 1::2] = r1, r2
    else:
        h = x.shape[-1] // 2
        out[..., :h], out[..., h:] = r1, r2
    return out


class RouteStats:
    """Smallest routing decision margins seen (how close a tie was)."""

    def __init__(self):
        self.expert_margin = math.inf  # k-th vs (k+1)-th masked biased score
        self.group_margin = math.inf   # topk_group-th vs next group score
        self.min_biased_score = math.inf


# ---- the model ---------------------------------------------------------------

class Model:
    """Weights (float64) + forward passes. Build with Model.load(dir)."""

    def __init__(self, config, weights):
        self.cfg = Config(config)
        self.w = weights
        c = self.cfg
        self.inv_freq, self.attn_factor, self.softmax_scale = rope_params(c)
        self.embed = self._get("model.embed_tokens.weight")
        if "lm_head.weight" in weights:
            self.lm_head = weights["lm_head.weight"]
        elif c.tie_word_embeddings:
            self.lm_head = self.embed
        else:
            raise KeyError("lm_head.weight missing and tie_word_embeddings is false")
        self.n_mtp = 0
        for m in range(c.num_nextn_predict_layers):
            if f"model.layers.{c.num_hidden_layers + m}.enorm.weight" not in weights:
                break
            self.n_mtp += 1
        self.stats = RouteStats()

    @classmethod
    def load(cls, model_dir):
        cfg, w = ckpt.load_float_weights(model_dir, np.float64)
        return cls(cfg, w)

    def _get(self, name):
        if name not in self.w:
            raise KeyError(f"missing tensor {name}")
        return self.w[name]

    # -- layers --

    def _attention(self, p, x, pos):
        c = self.cfg
        w = self.w
        n = x.shape[0]
        H = c.num_attention_heads
        if c.q_lora_rank is None:
            q = x @ w[p + "q_proj.weight"].T
        else:
            qa = rms_norm(x @ w[p + "q_a_proj.weight"].T,
                          w[p + "q_a_layernorm.weight"], c.rms_norm_eps)
            q = qa @ w[p + "q_b_proj.weight"].T
        q = q.reshape(n, H, c.qk_head_dim).transpose(1, 0, 2)  # [H, n, d]
        q_nope, q_pe = q[..., :c.qk_nope_head_dim], q[..., c.qk_nope_head_dim:]
        ckv = x @ w[p + "kv_a_proj_with_mqa.weight"].T
        c_kv = rms_norm(ckv[:, :c.kv_lora_rank], w[p + "kv_a_layernorm.weight"],
                        c.rms_norm_eps)
        k_pe = ckv[:, c.kv_lora_rank:]
        kv = (c_kv @ w[p + "kv_b_proj.weight"].T).reshape(
            n, H, c.qk_nope_head_dim + c.v_head_dim).transpose(1, 0, 2)
        k_nope, v = kv[..., :c.qk_nope_head_dim], kv[..., c.qk_nope_head_dim:]
        q_pe = apply_rope(q_pe, pos, self.inv_freq, self.attn_factor, c.rope_interleave)
        k_pe = apply_rope(k_pe, pos, self.inv_freq, self.attn_factor, c.rope_interleave)
        s = (q_nope @ k_nope.transpose(0, 2, 1) + q_pe @ k_pe.T[None]) * self.softmax_scale
        s = s + np.triu(np.full((n, n), -np.inf), 1)[None]
        o = softmax(s) @ v  # [H, n, v]
        o = o.transpose(1, 0, 2).reshape(n, H * c.v_head_dim)
        return o @ w[p + "o_proj.weight"].T

    def _mlp(self, p, x):
        w = self.w
        g = x @ w[p + "gate_proj.weight"].T
        u = x @ w[p + "up_proj.weight"].T
        return (silu(g) * u) @ w[p + "down_proj.weight"].T

    def route(self, p, x):
        """-> (topk expert ids [n, k], weights [n, k]) for the MoE at prefix p."""
        c = self.cfg
        E, G, K = c.n_routed_experts, c.n_group, c.num_experts_per_tok
        logits = x @ self.w[p + "gate.weight"].T
        scores = sigmoid(logits)
        bias_name = p + "gate.e_score_correction_bias"
        bias = self.w[bias_name] if bias_name in self.w else np.zeros(E)
        biased = scores + bias
        st = self.stats
        st.min_biased_score = min(st.min_biased_score, float(biased.min()))
        n = x.shape[0]
        if G > 1:
            grp = np.sort(biased.reshape(n, G, E // G), axis=-1)[..., -2:].sum(-1)
            order = np.argsort(-grp, axis=-1, kind="stable")
            keep = order[:, :c.topk_group]
            if c.topk_group < G:
                gs = np.take_along_axis(grp, order, -1)
                st.group_margin = min(st.group_margin, float(
                    (gs[:, c.topk_group - 1] - gs[:, c.topk_group]).min()))
            gmask = np.zeros((n, G), dtype=bool)
            np.put_along_axis(gmask, keep, True, -1)
            emask = np.repeat(gmask, E // G, axis=1)
            choice = np.where(emask, biased, -np.inf)
        else:
            choice = biased
        order = np.argsort(-choice, axis=-1, kind="stable")
        idx = order[:, :K]
        if K < E:
            cs = np.take_along_axis(choice, order, -1)
            gap = cs[:, K - 1] - cs[:, K]
            gap = gap[np.isfinite(gap)]
            if gap.size:
                st.expert_margin = min(st.expert_margin, float(gap.min()))
        wts = np.take_along_axis(scores, idx, -1)
        if c.norm_topk_prob:
            wts = wts / (wts.sum(-1, keepdims=True) + 1e-20)
        return idx, wts * c.routed_scaling_factor

    def _moe(self, p, x):
        c = self.cfg
        idx, wts = self.route(p, x)
        out = np.zeros_like(x)
        for e in np.unique(idx):
            rows, slot = np.nonzero(idx == e)
            y = self._mlp(f"{p}experts.{e}.", x[rows])
            out[rows] += y * wts[rows, slot][:, None]
        if c.n_shared_experts:
            out += self._mlp(p + "shared_experts.", x)
        return out

    def _block(self, layer_idx, x, pos):
        c = self.cfg
        p = f"model.layers.{layer_idx}."
        h = rms_norm(x, self.w[p + "input_layernorm.weight"], c.rms_norm_eps)
        x = x + self._attention(p + "self_attn.", h, pos)
        h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
        if c.is_moe_layer(layer_idx):
            return x + self._moe(p + "mlp.", h)
        return x + self._mlp(p + "mlp.", h)

    # -- public forward passes --

    def forward(self, ids, logits_from=0):
        """Main model over ids (positions 0..n-1).
        -> (logits [n - logits_from, vocab], hidden [n, hidden]) where hidden
        is the state after model.norm at every position."""
        c = self.cfg
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError("ids must be a non-empty 1-D sequence")
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise ValueError("token id out of range")
        pos = np.arange(len(ids))
        x = self.embed[ids].copy()
        for i in range(c.num_hidden_layers):
            x = self._block(i, x, pos)
        h = rms_norm(x, self.w["model.norm.weight"], c.rms_norm_eps)
        return h[logits_from:] @ self.lm_head.T, h

    def mtp_forward(self, module, hidden_in, tokens, logits_from=0):
        """MTP module `module` over rows r = 0..R-1 at positions r (a full
        causal sequence from position 0): row r combines hidden_in[r] (h_r)
        with tokens[r] (t_{r+1}); the embedding of row 0 is zeroed.
        -> (logits [R - logits_from, vocab], hidden after shared_head.norm [R, H])."""
        c = self.cfg
        if not 0 <= module < self.n_mtp:
            raise ValueError(f"MTP module {module} not present (model has {self.n_mtp})")
        L = c.num_hidden_layers + module
        p = f"model.layers.{L}."
        w = self.w
        tokens = np.asarray(tokens, dtype=np.int64)
        hidden_in = np.asarray(hidden_in, dtype=np.float64)
        R = len(tokens)
        emb_w = w.get(p + "embed_tokens.weight", self.embed)
        head_w = w.get(p + "shared_head.head.weight", self.lm_head)
        e = emb_w[tokens].copy()
        pos = np.arange(R)
        e[pos == 0] = 0.0  # vLLM convention: no embedding at absolute position 0
        e = rms_norm(e, w[p + "enorm.weight"], c.rms_norm_eps)
        hn = rms_norm(hidden_in, w[p + "hnorm.weight"], c.rms_norm_eps)
        x = np.concatenate([e, hn], axis=1) @ w[p + "eh_proj.weight"].T
        x = self._block(L, x, pos)
        h = rms_norm(x, w[p + "shared_head.norm.weight"], c.rms_norm_eps)
        return h[logits_from:] @ head_w.T, h

    def mtp_last_logits(self, ids, module=0):
        """What `mtpd logits --mtp` reports: module's logits at the last MTP
        row p = n-2 over rows (h_p, ids[p+1]), p = 0..n-2 (predicts the
        token at position n)."""
        if len(ids) < 2:
            raise ValueError("--mtp needs at least 2 ids")
        _, h = self.forward(ids, logits_from=len(ids))
        lg, _ = self.mtp_forward(module, h[:-1], ids[1:], logits_from=len(ids) - 2)
        return lg[-1]


# ---- generation --------------------------------------------------------------

def argmax(v):
    return int(np.argmax(v))  # first (lowest id) maximum wins ties


def greedy_generate(model, ids, max_new, eos_id=None):
    """Main-model greedy decoding: up to max_new tokens, stopping after
    eos_id if given. -> list of generated ids."""
    seq = list(ids)
    out = []
    for _ in range(max_new):
        lg, _ = model.forward(seq, logits_from=len(seq) - 1)
        t = argmax(lg[-1])
        out.append(t)
        seq.append(t)
        if eos_id is not None and t == eos_id:
            break
    return out


def draft_tokens(model, seq, h, k):
    """Greedy MTP drafts of k tokens after the committed sequence seq
    (length N; the main model's post-norm hidden h covers positions
    0..N-2 at least; seq[-1] has not been through the main model yet).

    Depth j (0-based) runs module m = min(j, n_mtp - 1) at row P = N-2+j
    and predicts the token at position N+j. Every module runs over a full
    causal row sequence from position 0 (recomputed from scratch here; an
    engine keeps each module's KV):
      module 0:  rows q <= N-2: (h_q, seq[q+1]) from the main model;
      module m first used at depth m >= 1: row 0 = (zeros, x[1]), rows
                 1..P = (out_{m-1}[q-1], x[q+1]) where out_{m-1} is module
                 m-1's output rows (incl. its draft row) and x = seq + drafts;
      a module reused at depth j (j > m): appends row P = (its own output at
                 row P-1, the latest draft).
    With one module this is the usual recursion: rows 0..N-2 from the main
    model, then rows (previous MTP output, previous draft).
    -> (drafts [k], mtp logits of each depth [k, vocab])."""
    M = model.n_mtp
    if M == 0:
        raise ValueError("model has no MTP module")
    N = len(seq)
    x = list(seq)
    H_in = {0: [h[q] for q in range(N - 1)]}
    T_in = {0: [x[q + 1] for q in range(N - 1)]}
    outs = {}
    drafts, dlogits = [], []
    for j in range(k):
        m = min(j, M - 1)
        P = N - 2 + j
        if j > 0:
            if m == j:  # first use of module m >= 1
                prev = outs[m - 1]
                H_in[m] = [np.zeros_like(prev[0])] + [prev[q - 1] for q in range(1, P + 1)]
                T_in[m] = [x[q + 1] for q in range(P + 1)]
            else:  # reuse: own previous output row + latest draft
                H_in[m].append(outs[m][P - 1])
                T_in[m].append(x[P + 1])
        lg, hid = model.mtp_forward(m, np.array(H_in[m]), T_in[m], logits_from=P)
        outs[m] = hid
        d = argmax(lg[-1])
        drafts.append(d)
        dlogits.append(lg[-1])
        x.append(d)
    return drafts, np.array(dlogits)


def spec_sim(model, prompt_ids, k, max_new, eos_id=None, trace=False):
    """Greedy speculative decoding simulation. Prefill the prompt and take
    the main model's argmax as the first token; then per pass draft
    k' = min(k, tokens still wanted - 1) tokens (draft_tokens), verify them
    in one main-model pass over [last committed token, d_1..d_k'], accept
    the longest prefix equal to the main model's argmax at each position,
    and append the main model's token at the first mismatch (the bonus
    token when all k' are accepted). A pass never produces more than the
    max_new budget, so k' shrinks (to 0: a plain decode step) at the end.
    Stops after max_new tokens or right after eos_id.
    -> (generated ids, accepted count per pass), or with trace=True
       (generated ids, [[k', accepted] per pass]) like `mtpd generate --trace`."""
    seq = list(prompt_ids)
    lg, h = model.forward(seq, logits_from=len(seq) - 1)
    gen = [argmax(lg[-1])]
    seq.append(gen[0])
    passes = []
    while len(gen) < max_new and not (eos_id is not None and gen[-1] == eos_id):
        N = len(seq)
        kk = min(k, max_new - len(gen) - 1)
        drafts = draft_tokens(model, seq, h, kk)[0] if kk > 0 else []
        lg, hv = model.forward(seq + drafts, logits_from=N - 1)
        target = [argmax(r) for r in lg]  # target[i] predicts position N+i
        a = 0
        while a < kk and drafts[a] == target[a]:
            a += 1
        passes.append([kk, a])
        h = hv[:N + a]  # main hidden of the committed positions 0..N-1+a
        for t in drafts[:a] + [target[a]]:
            gen.append(t)
            seq.append(t)
            if eos_id is not None and t == eos_id:
                break
    return gen, (passes if trace else [a for _, a in passes])


def logit_gaps(logits):
    """top-1 minus top-2 logit per row."""
    s = np.sort(np.asarray(logits), axis=-1)
    return s[..., -1] - s[..., -2]


def load(model_dir):
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(model_dir)
    return Model.load(model_dir)
