"""Helpers of the tests/spec pytest files (imported by name: pytest puts
this directory on sys.path)."""
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.ref import dsv3_ref, random_ckpt  # noqa: E402

SHARED_MODEL = os.path.join(ROOT, "..", "shared", "models", "pycode-mtp-tiny")
DEFAULT_MODEL = os.path.join(ROOT, "models", "mtpd-code-small")
GOLDEN_DIR = os.path.join(ROOT, "tests", "model", "golden")


def make_tiny_vocab(out_dir, vocab=16, seed=3):
    """bf16-agree with a 16-token vocabulary (F32 weights): the main model's
    next-token distributions are cheap to enumerate exactly."""
    cfg, opts = random_ckpt.make_config("bf16-agree")
    cfg.update(vocab_size=vocab, bos_token_id=0, eos_token_id=1,
               torch_dtype="float32", max_position_embeddings=64)
    opts = dict(opts, dtype="F32")
    tensors = random_ckpt.make_tensors(cfg, opts, seed)
    random_ckpt.write_checkpoint(out_dir, cfg,
                                 random_ckpt.encode_tensors(tensors, opts), 1)
    return out_dir


def ids_arg(ids):
    return ",".join(str(int(i)) for i in ids)


def generate(binary, model_dir, ids, max_tokens, k, *extra, env=None,
             expect_rc=0, timeout=300):
    """Runs `mtpd generate --json`; -> parsed JSON (or the CompletedProcess
    when expect_rc is not 0)."""
    args = [binary, "generate", "--model", model_dir, "--ids",
            ids if isinstance(ids, str) else ids_arg(ids),
            "--max-tokens", str(max_tokens), "--draft-tokens", str(k),
            "--json"] + [str(a) for a in extra]
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run(args, capture_output=True, text=True, env=e,
                       timeout=timeout)
    assert r.returncode == expect_rc, \
        f"{' '.join(args)} -> rc {r.returncode}\n{r.stderr}"
    return json.loads(r.stdout) if expect_rc == 0 else r


def generate_prompt(binary, model_dir, text, n, k, *extra):
    """`mtpd generate --prompt TEXT --json` (needs the tokenizer)."""
    r = subprocess.run([binary, "generate", "--model", model_dir, "--prompt", text,
                        "--max-tokens", str(n), "--draft-tokens", str(k), "--json"]
                       + [str(a) for a in extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
