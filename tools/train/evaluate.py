"""Held-out quality and greedy MTP acceptance of a DeepSeek-V3 + MTP checkpoint.

  python3 -m tools.train.evaluate --model DIR [--corpus .work/train/corpus]

The held-out documents (corpus heldout.jsonl, one language at a time) are
tokenized with the model's own tokenizer.json, as BOS + text + EOS, and cut
into non-overlapping windows of --seq-len + 1 tokens, --max-windows of them
spread evenly over the stream. Reported:

  loss_main   mean CE of the main head on token t+1 (nats/token)
  loss_mtp    mean CE of the MTP head on token t+2 (nats/token)
  bpb_*       the same in bits per UTF-8 byte of the text, which does not
              depend on the tokenizer (so models with different vocabularies
              compare)
  tf_depth1   teacher forced: on the real text, the fraction of positions
              where the MTP draft for t+2 equals the main model's greedy
              token for t+2 given the real prefix (exactly what a verifier
              decides for a first draft token)

Greedy speculative decoding, simulated exactly ("acceptance"): from
--prompts held-out prompts of --prompt-len tokens the main model decodes
--gen-len tokens greedily (KV cache). For every position p whose next
drafts fall in the generated part, one MTP module drafts recursively:
depth 1 from (h_p, y_{p+1}) at position p, depth j > 1 from (the previous
depth's state after shared_head.norm, its drafted token) at position
p + j - 1, attending to the MTP layer's cache of main-model rows 0..p plus
its own earlier draft rows, as an engine's draft loop does. Draft j is
accepted when it equals y_{p+1+j}, the main model's greedy token there.
  accept_uncond[j]  fraction of chains whose drafts 1..j all match
  accept_cond[j]    accept_uncond[j] / accept_uncond[j-1]
  tokens_per_step   1 + sum_j accept_uncond[j] (k = 3 drafts, greedy)
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from tools.train import corpus as C
from tools.train import model as M


def token_bytes(tok):
    """UTF-8 bytes each token id stands for (ByteLevel: one char = one byte;
    added tokens count as 0: they are not text)."""
    vocab = tok.get_vocab(with_added_tokens=False)
    n = tok.get_vocab_size()
    out = np.zeros(n, dtype=np.int64)
    for s, i in vocab.items():
        out[i] = len(s)
    return out


def heldout_stream(tok, texts, bos, eos):
    ids = []
    for e in tok.encode_batch(texts, add_special_tokens=False):
        ids += [bos] + e.ids + [eos]
    return np.asarray(ids, dtype=np.int64)


def windows(stream, seq_len, max_windows):
    """Up to max_windows non-overlapping windows of seq_len + 1 tokens, spread
    evenly over the whole stream (so every part of the held-out set counts,
    not just its first files)."""
    total = (len(stream) - 1) // seq_len
    n = min(max_windows, total)
    picks = np.unique(np.linspace(0, total - 1, n).round().astype(np.int64))
    return torch.from_numpy(np.stack([stream[i * seq_len: i * seq_len + seq_len + 1]
                                      for i in picks]))


@torch.no_grad()
def heldout_metrics(model, wins, nbytes, device, batch=8):
    """Losses, bits per byte and teacher-forced depth-1 agreement."""
    sums = {"main": 0.0, "mtp": 0.0, "n_main": 0, "n_mtp": 0, "b_main": 0, "b_mtp": 0,
            "agree": 0, "top1_main": 0}
    nb = torch.from_numpy(nbytes)
    for i in range(0, wins.shape[0], batch):
        ids = wins[i:i + batch].to(device)
        x, y = ids[:, :-1], ids[:, 1:]
        logits, mtp_logits = model(x)
        V = logits.shape[-1]
        sums["main"] += F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1),
                                        reduction="sum").item()
        sums["mtp"] += F.cross_entropy(mtp_logits.float().reshape(-1, V), y[:, 1:].reshape(-1),
                                       reduction="sum").item()
        sums["n_main"] += y.numel()
        sums["n_mtp"] += y[:, 1:].numel()
        sums["b_main"] += int(nb[y.cpu()].sum())
        sums["b_mtp"] += int(nb[y[:, 1:].cpu()].sum())
        g = logits.argmax(-1)
        sums["top1_main"] += int((g == y).sum())
        sums["agree"] += int((mtp_logits.argmax(-1) == g[:, 1:]).sum())
    ln2 = math.log(2)
    return {"tokens": sums["n_main"], "loss_main": sums["main"] / sums["n_main"],
            "loss_mtp": sums["mtp"] / sums["n_mtp"],
            "bpb_main": sums["main"] / ln2 / max(1, sums["b_main"]),
            "bpb_mtp": sums["mtp"] / ln2 / max(1, sums["b_mtp"]),
            "top1_main": sums["top1_main"] / sums["n_main"],
            "tf_depth1": sums["agree"] / sums["n_mtp"]}


@torch.no_grad()
def greedy_generate(model, prompts, n_new):
    """prompts [B, P] -> [B, P + n_new], main model greedy, KV cache."""
    caches = [dict() for _ in model.layers]
    P = prompts.shape[1]
    _, logits = model.main(prompts, torch.arange(P, device=prompts.device), caches)
    out = [prompts, logits[:, -1:].argmax(-1)]
    for t in range(n_new - 1):
        pos = torch.tensor([P + t], device=prompts.device)
        _, logits = model.main(out[-1], pos, caches)
        out.append(logits[:, -1:].argmax(-1))
    return torch.cat(out, dim=1)


def mtp_rows(mtp, tokens, hidden, positions, base, extras):
    """One MTP step for every chain at once.

    Row i of sequence b belongs to the chain that started at position i. Its
    attention keys are base[k, v] at positions 0..i (the MTP cache filled from
    main-model rows), then extras (this chain's earlier draft rows, each
    [B, H, T, d], row i attends to row i only), then itself.
    Returns (state after shared_head.norm, logits, (k, v) of these rows).
    """
    blk = mtp.block
    a = blk.self_attn
    x_in = mtp.inputs(tokens, hidden, positions)
    q, k, v = a.qkv(blk.input_layernorm(x_in), positions)
    T = q.shape[2]
    if base is None:  # depth 1: the rows are the cache
        base = (k, v)
        own = None
    else:
        own = (k, v)
    kb, vb = base
    s_base = torch.einsum("bhid,bhjd->bhij", q, kb) * a.scale
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    s_base = s_base.masked_fill(~causal, float("-inf"))
    rows = list(extras) + ([own] if own is not None else [])
    s_rows = [(q * kr).sum(-1, keepdim=True) * a.scale for kr, _ in rows]
    p = torch.softmax(torch.cat([s_base] + s_rows, dim=-1).float(), dim=-1).to(q.dtype)
    o = torch.einsum("bhij,bhjd->bhid", p[..., :T], vb)
    for r, (_, vr) in enumerate(rows):
        o = o + p[..., T + r:T + r + 1] * vr
    x = x_in + a.out(o)
    x = x + blk.mlp(blk.post_attention_layernorm(x))
    s = mtp.shared_head.norm(x)
    return s, mtp.shared_head.head(s), (k, v)


@torch.no_grad()
def acceptance(model, prompts, n_new, depth=3):
    """Simulated greedy speculative decoding; see the module docstring."""
    y = greedy_generate(model, prompts, n_new)
    B, n = y.shape
    P = prompts.shape[1]
    pos = torch.arange(n, device=y.device)
    h, logits = model.main(y, pos)
    consistent = (logits[:, P - 1:-1].argmax(-1) == y[:, P:]).float().mean().item()
    mtp = model.mtp[0]
    # depth 1 for every p in 0..n-2: (h_p, y_{p+1}) at position p
    tok = y[:, 1:]
    s, lg, base = mtp_rows(mtp, tok, h[:, :-1], pos[:-1], None, [])
    drafts = [lg.argmax(-1)]            # drafts[j-1][:, p] = depth-j draft of chain p
    extras = []                         # (k, v) of depths 2..j-1, row p = chain p
    for j in range(2, depth + 1):
        s, lg, kv = mtp_rows(mtp, drafts[-1], s, pos[:-1] + (j - 1), base, extras)
        extras.append(kv)
        drafts.append(lg.argmax(-1))
    # chain p is scored when its first target y_{p+2} was generated and
    # y_{p+1+depth} exists: p in [P-2, n-2-depth]
    lo, hi = P - 2, n - 1 - depth
    ok = torch.ones(B, hi - lo, dtype=torch.bool, device=y.device)
    uncond, cond = [], []
    prev = 1.0
    for j in range(1, depth + 1):
        d = drafts[j - 1][:, lo:hi]
        target = y[:, lo + 1 + j: hi + 1 + j]
        ok = ok & (d == target)
        u = ok.float().mean().item()
        uncond.append(u)
        cond.append(u / prev if prev > 0 else 0.0)
        prev = u
    return {"chains": B * (hi - lo), "accept_uncond": uncond, "accept_cond": cond,
            "tokens_per_step": 1 + sum(uncond), "greedy_consistency": consistent}


def evaluate(model_dir, corpus_dir, lang, seq_len=512, max_windows=128, n_prompts=48,
             prompt_len=128, gen_len=48, device="cpu", seed=0, tokenizer_json=None):
    from tools.train import tokenizer as T
    tok = T.load(tokenizer_json or os.path.join(model_dir, "tokenizer.json"))
    model = M.from_pretrained(model_dir).to(device).eval()
    c = model.c
    docs = [d["text"] for d in C.read_jsonl(os.path.join(corpus_dir, "heldout.jsonl"))
            if d["lang"] == lang]
    stream = heldout_stream(tok, docs, c.bos_token_id, c.eos_token_id)
    res = {"model": os.path.abspath(model_dir), "lang": lang, "heldout_docs": len(docs),
           "seq_len": seq_len, "params": M.count_params(model)}
    res.update(heldout_metrics(model, windows(stream, seq_len, max_windows), token_bytes(tok),
                               device))
    if len(model.mtp):
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.choice(len(stream) - prompt_len, n_prompts, replace=False))
        prompts = torch.from_numpy(np.stack([stream[s:s + prompt_len] for s in starts]))
        res["greedy"] = {"prompts": n_prompts, "prompt_len": prompt_len, "gen_len": gen_len}
        res["greedy"].update(acceptance(model, prompts.to(device), gen_len))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default=".work/train/corpus")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: the model's)")
    ap.add_argument("--lang", default="py", help="comma list of py,c")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = []
    for lang in a.lang.split(","):
        r = evaluate(a.model, a.corpus, lang, a.seq_len, a.max_windows, a.prompts,
                     a.prompt_len, a.gen_len, a.device, tokenizer_json=a.tokenizer)
        print(json.dumps(r), flush=True)
        out.append(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
