"""Trains the DeepSeek-V3 + MTP model from scratch and saves it in HF format.

  python3 -m tools.train.train --config cpu --out DIR
  python3 -m tools.train.train --config gpu --out DIR

Loss: CE(main head, t+1) + mtp_lambda * CE(MTP head, t+2), mtp_lambda 0.3
(DeepSeek-V3 paper). Aux-loss-free balancing (paper's rule): after every
optimizer step each MoE layer's e_score_correction_bias moves by
gamma * sign(mean load - load_e), load_e = tokens routed to expert e in the
step. The paper's gamma is 1e-3; our runs are a few thousand steps at a
high learning rate, and with 1e-3 the routers collapsed onto two experts
per layer (max/mean load 3.9 of a possible 4.0 after 75 steps of the cpu
config) because the router logits move faster than the bias can follow;
gamma 1e-2 brought the same run to 1.45 max / 1.35 mean by step 75, so
the cpu and gpu configs use 1e-2 (--bias-gamma overrides). AdamW, linear warmup then cosine decay to min_lr_frac * lr; bf16
autocast on CUDA. The schedule runs on progress = max(step / max_steps,
elapsed / time_budget), so a wall-clock budget still ends with a full decay.

Inputs come from tools.train.data (token streams, FIM already applied) and
the tokenizer from tools.train.tokenizer. The output directory gets
config.json, the safetensors shards (each < 16 MiB), tokenizer files,
generation_config.json and train_summary.json (what tools.train.card uses
for the model card).
"""
import argparse
import copy
import json
import math
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

from tools.train import data as D
from tools.train import model as M

CONFIGS = {
    # Smoke test only: a few seconds on a CPU.
    "tiny": dict(model=dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                            num_hidden_layers=2, num_attention_heads=2, q_lora_rank=32,
                            kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                            v_head_dim=16, n_routed_experts=8, n_group=4, topk_group=2),
                 seq_len=32, batch=2, lr=1e-3, warmup=1, max_steps=2, eval_every=0,
                 eval_windows=2),
    # Under 60 minutes on 2 CPU cores (see README for the measured rate).
    "cpu": dict(model=dict(hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
                           num_hidden_layers=4, num_attention_heads=4, q_lora_rank=128,
                           kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
                           v_head_dim=32, n_routed_experts=8, n_group=4, topk_group=2),
                seq_len=256, batch=16, lr=2e-3, warmup=50, max_steps=1200,
                time_budget=55 * 60, eval_every=200, eval_windows=16, bias_gamma=1e-2),
    # One H200 (433k tokens/s measured): 150 s is about 5.6 epochs of the
    # corpus; held-out loss is best near 4 epochs (a 400 s run overfit:
    # bench/results/train-h200-run1-400s.log). Model dims: Config's defaults.
    "gpu": dict(model=dict(), seq_len=1024, batch=64, lr=2e-3, warmup=150, max_steps=20000,
                time_budget=150, eval_every=250, eval_windows=64, bias_gamma=1e-2),
}


def lr_at(progress, step, cfg):
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    mn = cfg["lr"] * cfg.get("min_lr_frac", 0.1)
    return mn + 0.5 * (cfg["lr"] - mn) * (1 + math.cos(math.pi * min(1.0, progress)))


def losses(model, ids, mtp_lambda):
    """ids [B, T+1]. Returns (total, main CE, MTP CE)."""
    x, y = ids[:, :-1], ids[:, 1:]
    logits, mtp_logits = model(x)
    V = logits.shape[-1]
    main = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
    # MTP row p sees (h_p, x[p+1]) and predicts x[p+2] = y[p+1]
    mtp = F.cross_entropy(mtp_logits.float().reshape(-1, V), y[:, 1:].reshape(-1))
    return main + mtp_lambda * mtp, main, mtp


def update_bias(model, loads, gamma):
    """Aux-loss-free balancing step; loads: per-MoE-layer token counts."""
    with torch.no_grad():
        for moe, load in zip(model.moe_layers(), loads):
            load = load.float()
            moe.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)


@torch.no_grad()
def heldout_loss(model, windows, device, amp, batch=8):
    model.eval()
    tot_main = tot_mtp = 0.0
    n = 0
    for i in range(0, windows.shape[0], batch):
        ids = windows[i:i + batch].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            _, main, mtp = losses(model, ids, 0.0)
        tot_main += main.item() * ids.shape[0]
        tot_mtp += mtp.item() * ids.shape[0]
        n += ids.shape[0]
    model.train()
    return tot_main / n, tot_mtp / n


def write_side_files(out, tok_dir, c):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(out, f))
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"_from_model_config": True, "bos_token_id": c.bos_token_id,
                   "eos_token_id": c.eos_token_id, "do_sample": False}, f, indent=2)


def train(cfg, data_dir, tok_dir, out, device, seed=0, log=print, amp=None,
          side_files=True):
    torch.manual_seed(seed)
    from tools.train import tokenizer as T
    tok = T.load(os.path.join(tok_dir, "tokenizer.json"))
    mc = M.Config(vocab_size=tok.get_vocab_size(),
                  bos_token_id=T.token_id(tok, T.BOS), eos_token_id=T.token_id(tok, T.EOS),
                  **cfg["model"])
    model = M.DeepseekV3MTP(mc).to(device)
    n = M.count_params(model)
    log(f"params: {n}")
    stream = np.load(os.path.join(data_dir, "train.npy"))
    win = D.Windows(stream, cfg["seq_len"], seed)
    held = D.heldout_windows(np.load(os.path.join(data_dir, "heldout_py.npy")),
                             cfg["seq_len"], cfg["eval_windows"])
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.get("weight_decay", 0.1)},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8, fused=fused)
    if amp is None:
        amp = device.type == "cuda"
    gamma, lam = cfg.get("bias_gamma", 1e-3), cfg.get("mtp_lambda", 0.3)
    budget = cfg.get("time_budget") or float("inf")
    t0 = time.time()
    step, tokens, hist = 0, 0, []
    best = None  # (heldout main loss, step, state) of the best evaluation
    while True:
        elapsed = time.time() - t0
        progress = max(step / cfg["max_steps"], elapsed / budget)
        if progress >= 1.0:
            break
        lr = lr_at(progress, step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        ids = win.batch(cfg["batch"]).to(device, non_blocking=True)
        try:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss, main, mtp = losses(model, ids, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("clip", 1.0))
            if not torch.isfinite(gn):
                raise FloatingPointError(f"gradient norm {gn.item()} at step {step}")
            opt.step()
        except (RuntimeError, FloatingPointError) as e:
            # Keep what was trained so far (a lent GPU's minutes are scarce).
            if step == 0:
                raise
            log(f"training stopped at step {step}: {e}")
            break
        loads = [m.last_load for m in model.moe_layers()]
        update_bias(model, loads, gamma)
        step += 1
        tokens += ids.shape[0] * (ids.shape[1] - 1)
        if step % 25 == 0 or step <= 3:
            imbs = [(l.max().float() / l.float().mean()).item() for l in loads]
            imb = f"{max(imbs):.2f}/{sum(imbs) / len(imbs):.2f}"
            el = time.time() - t0
            log(f"step {step} lr {lr:.2e} loss {loss.item():.4f} main {main.item():.4f} "
                f"mtp {mtp.item():.4f} gnorm {gn.item():.2f} max_load/mean max/avg {imb} "
                f"tok/s {tokens / el:.0f} elapsed {el:.0f}s")
        if cfg["eval_every"] and step % cfg["eval_every"] == 0:
            hm, ht = heldout_loss(model, held, device, amp)
            hist.append({"step": step, "tokens": tokens, "heldout_main": hm, "heldout_mtp": ht,
                         "elapsed_s": time.time() - t0})
            log(f"eval step {step} heldout main {hm:.4f} mtp {ht:.4f}")
            if best is None or hm < best[0]:
                best = (hm, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
    train_s = time.time() - t0
    hm, ht = heldout_loss(model, held, device, amp)
    hist.append({"step": step, "tokens": tokens, "heldout_main": hm, "heldout_mtp": ht,
                 "elapsed_s": train_s})
    log(f"final step {step} tokens {tokens} heldout main {hm:.4f} mtp {ht:.4f} "
        f"train time {train_s:.0f}s ({step / train_s:.2f} steps/s, {tokens / train_s:.0f} tok/s)")
    kept = step
    if best is not None and best[0] < hm:
        # Held-out loss went up at the end (too many epochs): keep the best.
        model.load_state_dict(best[2])
        kept = best[1]
        log(f"keeping the weights of step {kept} (held-out main {best[0]:.4f} < {hm:.4f})")
    best = None
    model = model.float().cpu()
    files = M.save_pretrained(model, out)
    if side_files:
        write_side_files(out, tok_dir, mc)
    summary = {"config": {k: v for k, v in cfg.items() if k != "model"},
               "model": mc.hf_dict(), "params": n, "steps": step, "kept_step": kept,
               "tokens_seen": tokens,
               "train_seconds": train_s, "device": str(device),
               "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "history": hist,
               "data": json.load(open(os.path.join(data_dir, "data.json")))}
    with open(os.path.join(out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(f"saved {files} -> {out}")
    return model, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--data", default=".work/train/data")
    ap.add_argument("--tokenizer", default=".work/train/tokenizer")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--time-budget", type=float, help="seconds of training")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--bias-gamma", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                    help="bf16 autocast (auto: on CUDA only)")
    ap.add_argument("--no-side-files", action="store_true",
                    help="write only config, weights and train_summary.json")
    a = ap.parse_args(argv)
    cfg = copy.deepcopy(CONFIGS[a.config])
    for k in ("max_steps", "time_budget", "batch", "seq_len", "eval_every", "bias_gamma"):
        if getattr(a, k) is not None:
            cfg[k] = getattr(a, k)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    amp = {"auto": None, "on": True, "off": False}[a.amp]
    train(cfg, a.data, a.tokenizer, a.out, torch.device(a.device), a.seed,
          log=lambda s: print(s, flush=True), amp=amp, side_files=not a.no_side_files)


if __name__ == "__main__":
    main()
