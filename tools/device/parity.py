#!/usr/bin/env python3
"""Device against CPU from the command line, for every checkpoint given:
`mtpd logits` on sequences of several lengths with --device D and with
--device cpu (main model, and MTP module 0 where there is one): max |a-b|
/ max |b| per length; and greedy speculative decoding on the device
(k = 3) against greedy plain decoding on the device (k = 0), which must
give the same tokens.

    python3 tools/device/parity.py --mtpd BIN --device cuda DIR... \
        [--bound 2e-2] [--json OUT]

Prints one line per check; a relative error above --bound or a token
mismatch is marked FAIL (exit 0 all the same: the summary reads them)."""
import argparse
import json
import os
import subprocess
import sys

LENGTHS = (3, 17, 70)


def logits(mtpd, model, ids, device, mtp):
    cmd = [mtpd, "logits", "--model", model, "--ids",
           ",".join(map(str, ids)), "--last", "3", "--device", device]
    if mtp:
        cmd.append("--mtp")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(r.stdout)


def rel_err(a, b):
    num = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    den = max(abs(y) for rb in b for y in rb) or 1.0
    return num / den


def generate(mtpd, model, ids, device, k):
    cmd = [mtpd, "generate", "--model", model, "--ids",
           ",".join(map(str, ids)), "--max-tokens", "48", "--ignore-eos",
           "--draft-tokens", str(k), "--device", device, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(r.stdout)["ids"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtpd", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bound", type=float, default=2e-2)
    ap.add_argument("--json")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args(argv)
    rows = []
    for model in a.models:
        if not os.path.exists(os.path.join(model, "config.json")):
            continue
        name = os.path.basename(os.path.normpath(model))
        cfg = json.load(open(os.path.join(model, "config.json")))
        v = int(cfg["vocab_size"])
        has_mtp = int(cfg.get("num_nextn_predict_layers") or 0) > 0
        for n in LENGTHS:
            ids = [(11 + 7 * i * i) % v for i in range(n)]
            row = {"model": name, "check": f"logits n={n}"}
            try:
                d = logits(a.mtpd, model, ids, a.device, has_mtp)
                c = logits(a.mtpd, model, ids, "cpu", has_mtp)
                row["rel_err"] = rel_err(d["logits"], c["logits"])
                if has_mtp:
                    row["mtp_rel_err"] = rel_err([d["mtp_logits"]],
                                                 [c["mtp_logits"]])
                worst = max(row["rel_err"], row.get("mtp_rel_err", 0.0))
                row["ok"] = worst <= a.bound
            except Exception as e:  # one line, then the next check
                row.update(ok=False, error=str(e))
            rows.append(row)
        if has_mtp:
            ids = [(5 + 3 * i) % v for i in range(12)]
            row = {"model": name, "check": "greedy k=3 == k=0"}
            try:
                plain = generate(a.mtpd, model, ids, a.device, 0)
                spec = generate(a.mtpd, model, ids, a.device, 3)
                row["ok"] = plain == spec
                if not row["ok"]:
                    row["error"] = next(
                        f"first difference at token {i}" for i in
                        range(min(len(plain), len(spec)) + 1)
                        if i == min(len(plain), len(spec)) or
                        plain[i] != spec[i])
            except Exception as e:
                row.update(ok=False, error=str(e))
            rows.append(row)
    for r in rows:
        detail = r.get("error") or " ".join(
            f"{k} {r[k]:.2e}" for k in ("rel_err", "mtp_rel_err") if k in r)
        print(f"parity: {'ok  ' if r['ok'] else 'FAIL'} {r['model']}: "
              f"{r['check']}: {detail}", flush=True)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
