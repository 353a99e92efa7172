"""Quality of a quantized checkpoint against its source: held-out text
(files the default model was not trained on, tools/train/corpus.py's
split), logits from `mtpd logits` over windows of it, top-1 agreement and
logit differences. Shared by tests/model/test_quantize.py and
tools/bench_quant.py."""
import importlib
import json
import os
import subprocess

import numpy as np

# held-out stdlib modules of models/mtpd-code-small (sha256 split, 4%)
HELDOUT_MODULES = ["http.client", "optparse", "socketserver", "webbrowser",
                   "unittest.util", "dbm.dumb"]


def heldout_texts(n):
    out = []
    for name in HELDOUT_MODULES[:n]:
        mod = importlib.import_module(name)
        with open(mod.__file__, encoding="utf-8") as f:
            out.append(f.read())
    return out


def tokenize(mtpd, model_dir, text):
    r = subprocess.run([mtpd, "tokenize", "--model", model_dir],
                       input=json.dumps({"text": text}) + "\n",
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["ids"]


def windows(mtpd, model_dir, n_windows=4, n_tokens=256, skip=200):
    """n_windows lists of n_tokens ids, one per held-out file, from token
    `skip` on (past the license headers)."""
    out = []
    for text in heldout_texts(n_windows):
        ids = tokenize(mtpd, model_dir, text)
        out.append(ids[skip:skip + n_tokens])
    return out


def logits(mtpd, model_dir, ids, threads=2, extra=()):
    r = subprocess.run([mtpd, "logits", "--model", model_dir, "--ids",
                        ",".join(map(str, ids)), "--last", str(len(ids)),
                        "--threads", str(threads), *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return np.array(json.loads(r.stdout)["logits"], dtype=np.float64)


def compare(mtpd, ref_dir, model_dir, wins, extra=()):
    """-> dict: top1 (agreement with ref's argmax over every position),
    mean_abs and max_abs logit difference, nll of the next token under
    each (ref_nll, nll; nats per token). extra: more `mtpd logits`
    options for model_dir (e.g. --act-dtype bf16)."""
    agree = n = 0
    dsum = dmax = 0.0
    nll_ref = nll = 0.0
    for ids in wins:
        a = logits(mtpd, ref_dir, ids)
        b = logits(mtpd, model_dir, ids, extra=extra)
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        n += a.shape[0]
        d = np.abs(a - b)
        dsum += float(d.sum())
        dmax = max(dmax, float(d.max()))
        nxt = np.array(ids[1:])
        for lg, acc in ((a, "ref"), (b, "q")):
            x = lg[:-1]
            m = x.max(1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(x - m).sum(1)))
            v = float((lse - x[np.arange(len(nxt)), nxt]).sum())
            if acc == "ref":
                nll_ref += v
            else:
                nll += v
    npred = sum(len(w) - 1 for w in wins)
    return {"top1": agree / n, "mean_abs": dsum / (n * a.shape[1]),
            "max_abs": dmax, "ref_nll": nll_ref / npred, "nll": nll / npred,
            "positions": n}
