#!/usr/bin/env python3
"""The peer of the GPU benchmark: Hugging Face transformers'
DeepseekV3ForCausalLM decoding greedily on the same checkpoint, bf16 on
the GPU, at batch 1 and B: tokens/s of the decode (a short warm-up
first; the prompt's prefill timed apart and left out). The issue's
reference: 83 tok/s at batch 1 and 676 at batch 8 for pycode-mtp-tiny on
an H200.

    python3 tools/device/hf_peer.py --model DIR[=NAME]... [--batches 1,8]
        [--max-tokens 64] [--budget S] [--json OUT]

(several --model in one process: torch and transformers import once.)

Needs torch and transformers (the GPU machine's python3 has both); skips
with one line otherwise. MTP layers in the checkpoint are not part of the
transformers model (unused weights, a warning)."""
import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True,
                    help="DIR or DIR=NAME (the label in the results)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    models = [(m.split("=", 1) + [None])[:2] for m in a.model]
    models = [(d, n or os.path.basename(os.path.normpath(d)))
              for d, n in models]
    rows = []

    def done():
        if a.json:
            json.dump(rows, open(a.json, "w"), indent=1)
        return 0
    try:
        import torch
        import transformers
        from transformers import DeepseekV3ForCausalLM
    except Exception as e:  # noqa: BLE001 (any import failure: skip)
        print(f"hf_peer: skipped: torch/transformers not importable "
              f"({type(e).__name__}: {e})", flush=True)
        rows += [{"model": n, "error": "skipped: no torch/transformers"}
                 for _, n in models]
        return done()
    t_end = time.monotonic() + a.budget
    dev = a.device if a.device != "cuda" or torch.cuda.is_available() \
        else "cpu"
    for d, n in models:
        if time.monotonic() > t_end:
            rows.append({"model": n, "error": "no time left"})
            continue
        rows.extend(peer(torch, transformers, DeepseekV3ForCausalLM, d, n,
                         dev, a, t_end))
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
    return done()


def peer(torch, transformers, DeepseekV3ForCausalLM, path, name, dev, a,
         t_end):
    """The rows of one checkpoint."""
    rows = []
    t0 = time.monotonic()
    try:
        try:
            m = DeepseekV3ForCausalLM.from_pretrained(
                path, dtype=torch.bfloat16).to(dev).eval()
        except TypeError:  # older transformers: torch_dtype
            m = DeepseekV3ForCausalLM.from_pretrained(
                path, torch_dtype=torch.bfloat16).to(dev).eval()
    except Exception as e:  # noqa: BLE001
        print(f"hf_peer: {name}: cannot load: {type(e).__name__}: {e}",
              flush=True)
        rows.append({"model": name, "error": f"load: {e}"[:300]})
        return rows
    load_s = time.monotonic() - t0
    cfg = m.config
    v = int(cfg.vocab_size)
    prompt = [(7 + 13 * i) % v for i in range(32)]

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def gen(b, n):
        x = torch.tensor([prompt] * b, device=dev)
        kw = dict(attention_mask=torch.ones_like(x), do_sample=False,
                  pad_token_id=cfg.eos_token_id if cfg.eos_token_id
                  is not None else 0)
        with torch.no_grad():
            sync()
            t = time.monotonic()
            m.generate(x, max_new_tokens=1, min_new_tokens=1, **kw)
            sync()
            t_pre = time.monotonic() - t
            t = time.monotonic()
            m.generate(x, max_new_tokens=n, min_new_tokens=n, **kw)
            sync()
            return time.monotonic() - t, t_pre
    try:
        gen(1, 4)  # warm-up: kernels, allocator
    except Exception as e:  # noqa: BLE001
        print(f"hf_peer: {name}: generate failed: {type(e).__name__}: {e}",
              flush=True)
        rows.append({"model": name, "error": f"generate: {e}"[:300]})
        return rows
    for b in [int(x) for x in a.batches.split(",")]:
        if time.monotonic() > t_end:
            rows.append({"model": name, "batch": b, "error": "no time left"})
            continue
        total, pre = gen(b, a.max_tokens)
        # the decode: all of it less one prefill (+ first token)
        dec = max(total - pre, 1e-9)
        tps = b * (a.max_tokens - 1) / dec
        rows.append({"model": name, "batch": b, "tok_s": round(tps, 1),
                     "ms_per_step": round(1e3 * dec / (a.max_tokens - 1), 3),
                     "device": dev, "load_s": round(load_s, 1),
                     "transformers": transformers.__version__,
                     "torch": torch.__version__})
        print(f"hf_peer: {name} batch {b}: {tps:.1f} tok/s "
              f"({rows[-1]['ms_per_step']} ms per step, {dev})", flush=True)
    del m
    return rows


if __name__ == "__main__":
    sys.exit(main())
