#!/usr/bin/env python3
"""Runs the meson tests packed by pack_run.py on a machine where the build
directory is not (the GPU machine): each test's program and arguments are
mapped from the roots they were built with to the repository root (the
current directory) and the packed folder, and each runs under its own
timeout. Exit code 77 is a skip (meson's convention).

    python3 tools/device/run_tests.py RUN_DIR [--filter REGEX]
        [--timeout S] [--json OUT.json] [--device cuda|cpu]

Prints one line per test; --json writes [{name, rc, status, seconds,
tail}]. Exits 0 (the caller reads the statuses)."""
import argparse
import json
import os
import re
import subprocess
import sys
import time


def remap(s, src, build, root, run):
    # the build root first: it may sit inside the source root
    return s.replace(build, run).replace(src, root)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--filter", default=".")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="cap on each test's own timeout (seconds)")
    ap.add_argument("--budget", type=float, default=1e9,
                    help="seconds for all of them; later tests skip")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    root = os.getcwd()
    run = os.path.abspath(a.run_dir)
    man = json.load(open(os.path.join(run, "manifest.json")))
    tests = json.load(open(os.path.join(run, "meson-info",
                                        "intro-tests.json")))
    pick = re.compile(a.filter)
    env = dict(os.environ)
    t_end = time.monotonic() + a.budget
    results = []
    for t in tests:
        if not pick.search(t["name"]):
            continue
        cmd = [remap(c, man["source_root"], man["build_root"], root, run)
               for c in t["cmd"]]
        wd = t.get("workdir")
        wd = remap(wd, man["source_root"], man["build_root"], root, run) \
            if wd else root
        left = t_end - time.monotonic()
        tmo = min(float(t.get("timeout") or a.timeout), a.timeout, left)
        res = {"name": t["name"], "cmd": cmd}
        if not os.path.exists(cmd[0]):
            res.update(status="missing", rc=None, seconds=0.0,
                       tail=f"{cmd[0]} not packed")
        elif left < 3:
            res.update(status="no time", rc=None, seconds=0.0, tail="")
        else:
            t0 = time.monotonic()
            try:
                r = subprocess.run(cmd, cwd=wd, env=dict(env, **t.get("env", {})),
                                   capture_output=True, text=True,
                                   timeout=tmo, errors="replace")
                rc = r.returncode
                out = r.stdout + r.stderr
                status = ("pass" if rc == 0 else "skip" if rc == 77
                          else "crash" if rc < 0 else "fail")
            except subprocess.TimeoutExpired as e:
                rc = None
                out = ((e.stdout or b"").decode(errors="replace") if
                       isinstance(e.stdout, bytes) else (e.stdout or "")) + \
                      ((e.stderr or b"").decode(errors="replace") if
                       isinstance(e.stderr, bytes) else (e.stderr or ""))
                status = "timeout"
            res.update(status=status, rc=rc,
                       seconds=round(time.monotonic() - t0, 2),
                       tail=out[-3000:])
        results.append(res)
        print(f"run_tests: {res['status']:8s} {res['seconds']:7.2f} s  "
              f"{t['name']}", flush=True)
        if res["status"] not in ("pass", "skip"):
            print("  " + "\n  ".join(res["tail"].splitlines()[-15:]),
                  flush=True)
    if not results:
        print(f"run_tests: no test matches {a.filter!r}", flush=True)
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
