"""tools/device/: the prepared GPU run (bench_cuda.sh) and its helpers,
checked where there is no GPU. The cheap parts always run: the scripts
parse, run_tests.py maps the packed tests' paths and reads their exit
codes, summarize.py makes its tables, pack_run.py packs a build. The whole
script in --dry-run mode (every stage with --device cpu and tiny sizes,
about a minute, more with torch + transformers for the peer stage) runs
only with MTPD_DEVICE_DRY_RUN=1:

    MTPD_DEVICE_DRY_RUN=1 python3 -m pytest -q tests/test_device_script.py
"""
import glob
import json
import os
import py_compile
import re
import stat
import subprocess
import sys

import pytest

from tools.ref.testutil import mtpd_bin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV = os.path.join(ROOT, "tools", "device")


def test_scripts_parse():
    for sh in glob.glob(os.path.join(DEV, "*.sh")):
        r = subprocess.run(["bash", "-n", sh], capture_output=True,
                           text=True)
        assert r.returncode == 0, sh + r.stderr
        assert os.stat(sh).st_mode & stat.S_IXUSR, f"{sh} not executable"
    for py in glob.glob(os.path.join(DEV, "*.py")):
        py_compile.compile(py, doraise=True)


def write_prog(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)


def test_run_tests_maps_paths_and_reads_exit_codes(tmp_path):
    run = tmp_path / "run"
    src, bld = "/nonexistent/src-root", "/nonexistent/src-root/build-x"
    # arguments name files of the source tree and of the build as they
    # were where it was built; run_tests.py must point them here
    write_prog(str(run / "tests" / "unit" / "t_ok"),
               '[ -f "$1" ] && [ -x "$2" ] || exit 1; exit 0')
    write_prog(str(run / "tests" / "unit" / "t_skip"), "exit 77")
    write_prog(str(run / "tests" / "unit" / "t_fail"), "echo boom; exit 3")
    write_prog(str(run / "tests" / "unit" / "t_hang"), "sleep 30")
    tests = [
        {"name": "kcuda_ok", "cmd": [bld + "/tests/unit/t_ok",
                                     src + "/tools/device/bench_cuda.sh",
                                     bld + "/tests/unit/t_ok"],
         "timeout": 60, "env": {}, "workdir": None},
        {"name": "kcuda_skip", "cmd": [bld + "/tests/unit/t_skip"],
         "timeout": 60, "env": {}, "workdir": src},
        {"name": "kcuda_fail", "cmd": [bld + "/tests/unit/t_fail"],
         "timeout": 60, "env": {}, "workdir": None},
        {"name": "kcuda_hang", "cmd": [bld + "/tests/unit/t_hang"],
         "timeout": 1, "env": {}, "workdir": None},
        {"name": "kcuda_gone", "cmd": [bld + "/tests/unit/t_gone"],
         "timeout": 60, "env": {}, "workdir": None},
        {"name": "other", "cmd": [bld + "/tests/unit/t_fail"],
         "timeout": 60, "env": {}, "workdir": None},
    ]
    (run / "meson-info").mkdir()
    (run / "meson-info" / "intro-tests.json").write_text(json.dumps(tests))
    (run / "manifest.json").write_text(json.dumps(
        {"source_root": src, "build_root": bld, "programs": []}))
    out = tmp_path / "unit.json"
    r = subprocess.run([sys.executable, os.path.join(DEV, "run_tests.py"),
                        str(run), "--filter", "kcuda", "--timeout", "5",
                        "--json", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = {t["name"]: t["status"] for t in json.loads(out.read_text())}
    assert got == {"kcuda_ok": "pass", "kcuda_skip": "skip",
                   "kcuda_fail": "fail", "kcuda_hang": "timeout",
                   "kcuda_gone": "missing"}, r.stdout
    assert "boom" in r.stdout  # a failure's output is shown


def test_summarize_tables(tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    (logs / "mode").write_text("device run (--device cuda)\n")
    (logs / "stages.tsv").write_text("env\t0\t1.0\tok\n"
                                     "peer\t124\t70.0\ttimed out after 70 s\n")
    rows = []
    for b in (1, 8):
        for k, v in (("0", 100.0 * b), ("2", 180.0 * b), ("auto", 150.0 * b)):
            rows.append({"model": "m", "batch": b, "k": k, "device": "cuda:0",
                         "tok_s": v, "mean_len": 2.5 if k != "0" else 0.0,
                         "active_bytes_per_token": 2e9, "error": None})
    (logs / "tps_1default.json").write_text(json.dumps(rows))
    (logs / "peer_1default.json").write_text(json.dumps(
        [{"model": "m", "batch": 1, "tok_s": 10.0}]))
    (logs / "torch_copy.json").write_text(json.dumps({"gbps": 4000.0,
                                                      "bytes": 4e9}))
    (logs / "parity.json").write_text(json.dumps(
        [{"model": "m", "check": "logits n=3", "ok": False,
          "rel_err": 0.5}]))
    (logs / "kbench_test_kcuda.log").write_text("copy 4100 GB/s\nnoise\n")
    r = subprocess.run([sys.executable, os.path.join(DEV, "summarize.py"),
                        str(logs), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    md = (out / "bench_cuda.md").read_text()
    assert "| 1 | 100.0 | 180.0 (2.50) | 150.0 (2.50) | 1.80x | 10.0 | 18.0x |" in md, md
    assert "| 8 | 800.0 | 1440.0 (2.50) | 1200.0 (2.50) | 1.80x | - | - |" in md, md
    # batch 1, k=0: 100 tok/s x 2 GB = 200 GB/s, 5% of the 4000 GB/s copy
    assert "200 GB/s of weights, 5% of the 4000 GB/s copy" in md, md
    assert "| peer | 124 | 70.0 | timed out after 70 s |" in md
    assert "| m | logits n=3 | NO | 5.00e-01 |" in md
    assert "copy 4100 GB/s" in md and "noise" not in md
    assert json.loads((out / "bench_cuda.json").read_text())["parity"]


def build_dir():
    d = os.path.dirname(os.path.abspath(mtpd_bin()))
    if not os.path.isdir(os.path.join(d, "meson-info")):
        pytest.skip(f"{d} is not a meson build directory (MTPD_BIN)")
    return d


def test_pack_run(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, os.path.join(DEV, "pack_run.py"),
                        build_dir(), str(run), "--plain"],
                       capture_output=True, text=True, timeout=120)
    # 3: packed, but the checkout is over the device tool's 64 MiB
    assert r.returncode in (0, 3), r.stderr
    assert "limit 64 MiB" in r.stdout and "total" in r.stdout
    assert os.access(run / "mtpd", os.X_OK)
    man = json.loads((run / "manifest.json").read_text())
    assert man["source_root"] == ROOT and "mtpd" in man["programs"]
    tests = json.loads((run / "meson-info" / "intro-tests.json").read_text())
    assert all(re.search(man["filter"], t["name"]) for t in tests)
    libs = os.listdir(run / "lib")
    # what the GPU machine lacks travels; glibc and libstdc++ do not
    assert any(n.startswith("libmsgpackc") for n in libs), libs
    assert not any(n.startswith(("libc.so", "libm.so", "libstdc++"))
                   for n in libs), libs
    # the packed mtpd runs with only the packed libraries added
    env = dict(os.environ, LD_LIBRARY_PATH=str(run / "lib"))
    r = subprocess.run([str(run / "mtpd"), "--version"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mtpd ")


@pytest.mark.skipif(os.environ.get("MTPD_DEVICE_DRY_RUN") != "1",
                    reason="the whole dry run takes a minute or more: "
                           "MTPD_DEVICE_DRY_RUN=1 runs it")
def test_bench_cuda_dry_run(tmp_path):
    run = tmp_path / "run"
    # packed as for the GPU machine: programs.tar.xz, unpacked there
    subprocess.run([sys.executable, os.path.join(DEV, "pack_run.py"),
                    build_dir(), str(run)], capture_output=True, timeout=600)
    assert (run / "programs.tar.xz").exists()
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OUT=str(out), MTPD_RUN_DIR=str(run),
               BENCH_BUDGET_S="300")
    r = subprocess.run([os.path.join(DEV, "bench_cuda.sh"), "--dry-run"],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=420)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(os.listdir(out))
    # the device tool returns at most 8 files, named in [A-Za-z0-9._-]
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f)
                                   for f in files), files
    assert {"bench_cuda.md", "bench_cuda.json", "logs.tar.gz"} <= set(files)
    res = json.loads((out / "bench_cuda.json").read_text())
    stages = {s["stage"]: s for s in res["stages"]}
    for name in ("env", "info", "unit", "parity", "sanitizer", "tps_default",
                 "kbench", "synth", "tps_synth", "peer"):
        assert name in stages, name
        assert stages[name]["rc"] == "0", (name, stages[name])
    assert res["info"]["device"] == "cpu"
    assert all(p["ok"] for p in res["parity"]), res["parity"]
    models = {t["model"] for t in res["tokens_per_s"] if t.get("tok_s")}
    assert models == {"mtpd-code-small", "synthetic-tiny"}, \
        res["tokens_per_s"]
    md = (out / "bench_cuda.md").read_text()
    assert "### tokens/s: mtpd-code-small (device cpu, greedy)" in md
