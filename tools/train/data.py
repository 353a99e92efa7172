"""Turns the corpus into token streams and serves training windows.

Each document becomes BOS + tokens + EOS. With probability fim_rate a
training document is rewritten as fill-in-the-middle in PSM order (two cut
points drawn uniformly over its characters; each piece tokenized alone):

  BOS <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜> middle EOS

The training stream repeats every Python document py_repeat times (each
copy with its own FIM draw) so the mix is about half Python, half C; the
documents are shuffled with a fixed seed. The held-out streams have no FIM.

Files written into --out (default .work/train/data, git-ignored):
  train.npy, heldout_py.npy, heldout_c.npy   uint16 token streams
  data.json                                  counts and settings
"""
import argparse
import json
import os
import random

import numpy as np

from tools.train import corpus, tokenizer


def fim_pieces(text, rng):
    """Splits text at two uniform character positions: (prefix, middle, suffix)."""
    i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    return text[:i], text[i:j], text[j:]


def encode_docs(tok, docs, fim_rate, seed):
    """Returns a list of token-id lists, one per document, FIM applied to a
    fim_rate fraction (decided by a seeded RNG, so runs are reproducible)."""
    rng = random.Random(seed)
    bos, eos = tokenizer.token_id(tok, tokenizer.BOS), tokenizer.token_id(tok, tokenizer.EOS)
    fb, fh, fe = (tokenizer.token_id(tok, t) for t in
                  (tokenizer.FIM_BEGIN, tokenizer.FIM_HOLE, tokenizer.FIM_END))
    plain, fim = [], []
    plan = []
    for d in docs:
        if fim_rate > 0 and rng.random() < fim_rate:
            plan.append(("fim", len(fim)))
            fim.extend(fim_pieces(d, rng))
        else:
            plan.append(("plain", len(plain)))
            plain.append(d)
    enc_plain = [e.ids for e in tok.encode_batch(plain, add_special_tokens=False)] if plain else []
    enc_fim = [e.ids for e in tok.encode_batch(fim, add_special_tokens=False)] if fim else []
    out = []
    for kind, k in plan:
        if kind == "plain":
            out.append([bos] + enc_plain[k] + [eos])
        else:
            pre, mid, suf = enc_fim[k], enc_fim[k + 1], enc_fim[k + 2]
            out.append([bos, fb] + pre + [fh] + suf + [fe] + mid + [eos])
    return out


def build(corpus_dir, tok_path, out_dir, fim_rate=0.15, py_repeat=2, seed=1234):
    tok = tokenizer.load(tok_path)
    assert tok.get_vocab_size() <= 65535
    train_docs = corpus.read_jsonl(os.path.join(corpus_dir, "train.jsonl"))
    held_docs = corpus.read_jsonl(os.path.join(corpus_dir, "heldout.jsonl"))
    texts = []
    for d in train_docs:
        texts += [d["text"]] * (py_repeat if d["lang"] == "py" else 1)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    texts = [texts[i] for i in order]
    seqs = encode_docs(tok, texts, fim_rate, seed + 1)
    os.makedirs(out_dir, exist_ok=True)
    info = {"fim_rate": fim_rate, "py_repeat": py_repeat, "seed": seed,
            "train_docs": len(seqs), "train_tokens": int(sum(len(s) for s in seqs))}
    np.save(os.path.join(out_dir, "train.npy"),
            np.fromiter((t for s in seqs for t in s), dtype=np.uint16))
    for lang in ("py", "c"):
        docs = [d["text"] for d in held_docs if d["lang"] == lang]
        hs = encode_docs(tok, docs, 0.0, seed)
        arr = np.fromiter((t for s in hs for t in s), dtype=np.uint16)
        np.save(os.path.join(out_dir, f"heldout_{lang}.npy"), arr)
        info[f"heldout_{lang}_tokens"] = int(arr.size)
        info[f"heldout_{lang}_docs"] = len(docs)
    with open(os.path.join(out_dir, "data.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


class Windows:
    """Random windows of seq_len + 1 tokens from a uint16 stream (numpy)."""

    def __init__(self, stream, seq_len, seed):
        import torch
        self.data = torch.from_numpy(stream.astype(np.int64))
        self.seq_len = seq_len
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, batch_size):
        import torch
        hi = self.data.numel() - self.seq_len - 1
        starts = torch.randint(0, hi, (batch_size,), generator=self.gen)
        idx = starts[:, None] + torch.arange(self.seq_len + 1)[None, :]
        return self.data[idx]


def heldout_windows(stream, seq_len, max_windows):
    """Non-overlapping consecutive windows of seq_len + 1 tokens (for eval),
    at most max_windows of them, as an int64 tensor [n, seq_len + 1]."""
    import torch
    n = min(max_windows, (stream.size - 1) // seq_len)
    rows = [stream[i * seq_len: i * seq_len + seq_len + 1] for i in range(n)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=".work/train/corpus")
    ap.add_argument("--tokenizer", default=".work/train/tokenizer/tokenizer.json")
    ap.add_argument("--out", default=".work/train/data")
    ap.add_argument("--fim-rate", type=float, default=0.15)
    ap.add_argument("--py-repeat", type=int, default=2)
    a = ap.parse_args(argv)
    print(json.dumps(build(a.corpus, a.tokenizer, a.out, a.fim_rate, a.py_repeat), indent=1))


if __name__ == "__main__":
    main()
