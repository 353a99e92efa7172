#!/usr/bin/env python3
"""bench_cuda.sh's summary: reads what its stages left in LOG_DIR and
writes OUT_DIR/bench_cuda.md (markdown tables) and OUT_DIR/bench_cuda.json
(everything, machine-readable). Missing stages show as such.

    python3 tools/device/summarize.py LOG_DIR OUT_DIR"""
import glob
import json
import os
import re
import sys


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def text(path, limit=None):
    try:
        with open(path, errors="replace") as f:
            s = f.read()
    except OSError:
        return ""
    return s[-limit:] if limit else s


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def tps_table(rows, peer, copy_gbps):
    """One table per model: rows batch, columns k; for batch 1, k=0 the
    bytes a decode step reads (info's active_bytes_per_token) per second,
    against the copy ceiling measured in the same run."""
    out = []
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        ks = []
        for r in mine:
            if r["k"] not in ks and r["k"] != "*":
                ks.append(r["k"])
        batches = sorted({r["batch"] for r in mine})
        dev = next((r["device"] for r in mine if r.get("device")), "?")
        out.append(f"\n### tokens/s: {m} (device {dev}, greedy)\n")
        hdr = "| batch | " + " | ".join(f"k={k}" for k in ks) + \
            " | best / k=0 | transformers | best / transformers |"
        out.append(hdr)
        out.append("|" + "---|" * (len(ks) + 4))
        for b in batches:
            cells, base, best = [], None, None
            for k in ks:
                r = next((x for x in mine if x["batch"] == b and
                          x["k"] == k), None)
                if r is None or r.get("tok_s") is None:
                    cells.append("err" if r else "-")
                    continue
                v = r["tok_s"]
                acc = r.get("mean_len")
                cells.append(f"{v:.1f}" + (f" ({acc:.2f})" if acc and
                                           k != "0" else ""))
                if k == "0":
                    base = v
                best = v if best is None or v > best else best
            ratio = f"{best / base:.2f}x" if base and best else "-"
            p = next((x for x in peer if x.get("model") == m and
                      x.get("batch") == b and x.get("tok_s")), None)
            vs = f"{best / p['tok_s']:.1f}x" if p and best else "-"
            out.append(f"| {b} | " + " | ".join(cells) +
                       f" | {ratio} | {fmt(p['tok_s']) if p else '-'} | "
                       f"{vs} |")
        r0 = next((x for x in mine if x["batch"] == 1 and x["k"] == "0"
                   and x.get("tok_s") and x.get("active_bytes_per_token")),
                  None)
        if r0:
            gbps = r0["tok_s"] * r0["active_bytes_per_token"] / 1e9
            of = (f", {100 * gbps / copy_gbps:.0f}% of the {copy_gbps:.0f} "
                  "GB/s copy" if copy_gbps else "")
            out.append(f"\nbatch 1, k=0: {r0['active_bytes_per_token'] / 1e6:.1f} "
                       f"MB read per token -> {gbps:.0f} GB/s of weights{of}")
        errs = sorted({r["error"] for r in mine if r.get("error")})
        for e in errs[:5]:
            out.append(f"\nerror: `{e}`")
    out.append("\n(k=N cells: tok/s (mean accepted length per drafting "
               "pass). Throughput = tokens after each sequence's first / "
               "the step loop's wall time.)")
    return out


def main(argv=None):
    argv = argv if argv is not None else sys.argv[1:]
    logs, out_dir = argv[0], argv[1]
    res = {}
    md = ["# bench_cuda (tools/device/bench_cuda.sh)\n"]
    env = text(os.path.join(logs, "env.log"))
    gpu = re.search(r"(NVIDIA [A-Z0-9][^|\n]*?)\s{2,}", env)
    md.append(f"device: {gpu.group(1).strip() if gpu else 'no GPU seen'}; "
              f"mode: {text(os.path.join(logs, 'mode')).strip() or '?'}\n")

    stages = []
    for ln in text(os.path.join(logs, "stages.tsv")).splitlines():
        p = ln.split("\t")
        if len(p) >= 4:
            stages.append({"stage": p[0], "rc": p[1], "seconds": p[2],
                           "note": p[3]})
    res["stages"] = stages
    md.append("## stages\n\n| stage | exit | seconds | note |\n|---|---|---|---|")
    for s in stages:
        md.append(f"| {s['stage']} | {s['rc']} | {s['seconds']} | "
                  f"{s['note']} |")

    info = load(os.path.join(logs, "info.json"))
    res["info"] = info
    if info:
        md.append(f"\nmtpd info: device `{info.get('device')}`, cuda_build "
                  f"{info.get('cuda_build')}, cuda_devices "
                  f"{info.get('cuda_devices')}")

    unit = load(os.path.join(logs, "unit.json"), [])
    res["unit_tests"] = unit
    md.append("\n## device unit tests\n")
    if unit:
        md.append("| test | status | seconds |\n|---|---|---|")
        for u in unit:
            md.append(f"| {u['name']} | {u['status']} | {u['seconds']} |")
    else:
        md.append("none ran (none packed, or the stage did not run)")

    par = load(os.path.join(logs, "parity.json"), [])
    res["parity"] = par
    md.append("\n## parity: device vs CPU (`mtpd logits`), greedy spec vs "
              "plain on the device\n")
    if par:
        md.append("| model | check | ok | rel err | MTP rel err | note |\n"
                  "|---|---|---|---|---|---|")
        for p in par:
            md.append(f"| {p['model']} | {p['check']} | "
                      f"{'yes' if p.get('ok') else 'NO'} | "
                      f"{format(p['rel_err'], '.2e') if 'rel_err' in p else '-'} | "
                      f"{format(p['mtp_rel_err'], '.2e') if 'mtp_rel_err' in p else '-'} | "
                      f"{p.get('error', '')} |")
    else:
        md.append("did not run")
    extra = text(os.path.join(logs, "parity_prog.log"), 3000).strip()
    if extra:
        md.append("\nparity program (cumodel):\n\n```\n" + extra + "\n```")

    san = text(os.path.join(logs, "sanitizer.log"), 2500).strip()
    md.append("\n## compute-sanitizer (memcheck, short generate)\n")
    md.append("```\n" + (san or "did not run") + "\n```")

    md.append("\n## bandwidth\n")
    copy = load(os.path.join(logs, "torch_copy.json"))
    res["torch_copy"] = copy
    if copy:
        md.append(f"- device copy through torch (read + write): "
                  f"{copy.get('gbps', 0):.0f} GB/s over "
                  f"{copy.get('bytes', 0) / 1e9:.1f} GB")
    kb = []
    for p in sorted(glob.glob(os.path.join(logs, "kbench_*.log"))):
        lines = [ln for ln in text(p).splitlines()
                 if re.search(r"GB/s|TB/s|\|", ln)]
        kb.append((os.path.basename(p)[7:-4], lines[:40]))
    res["kernel_bench"] = {n: ls for n, ls in kb}
    for n, ls in kb:
        md.append(f"\n`{n} --bench`:\n\n```\n" + ("\n".join(ls) or
                  "(no GB/s lines)") + "\n```")
    if not copy and not kb:
        md.append("no bandwidth measured")

    tps = []
    for p in sorted(glob.glob(os.path.join(logs, "tps_*.json"))):
        tps += load(p, [])
    peer = []
    for p in sorted(glob.glob(os.path.join(logs, "peer*.json"))):
        peer += load(p, [])
    res["tokens_per_s"] = tps
    res["peer"] = peer
    md.append("\n## decode speed")
    if tps:
        md += tps_table(tps, peer, (copy or {}).get("gbps"))
    else:
        md.append("\ndid not run")
    perr = sorted({p["error"] for p in peer if p.get("error")})
    for e in perr:
        md.append(f"\ntransformers peer: {e}")
    md.append("")
    with open(os.path.join(out_dir, "bench_cuda.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out_dir, "bench_cuda.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
