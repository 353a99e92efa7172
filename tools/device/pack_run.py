#!/usr/bin/env python3
"""Packs a built CUDA build directory into the folder the GPU machine gets
(the `carry` of the device tool): the programs bench_cuda.sh runs, the
meson test list with the paths it needs, and the shared libraries that
machine lacks. Then checks what would travel against the 64 MiB limit.

    python3 tools/device/pack_run.py BUILD_DIR RUN_DIR [--filter REGEX]
        [--plain] [--pack-model DIR]

RUN_DIR/programs.tar.xz holds (same relative paths as in BUILD_DIR; xz
because every program linking libmtpd carries all the kernels' sm_90 code
and PTX: ~70 MB of programs pack to ~15 MB); bench_cuda.sh unpacks it
there. With --plain RUN_DIR holds them as they are (the dry run here):
  mtpd                         the command
  tests/...                    the meson tests whose name matches --filter
                               (the device tests), and any built program
                               named *kcuda*, *cuda*parity* or *dev_parity*
  meson-info/intro-tests.json  meson's test list (run_tests.py reads it)
  manifest.json                the source and build roots it was made in,
                               so run_tests.py can map the tests' paths
  lib/                         NEEDED libraries outside glibc, libstdc++
                               and the big CUDA ones: libevent, msgpack-c,
                               jemalloc, PCRE2, and libcudart (small) as a
                               fallback. cuBLASLt (~500 MB) stays behind:
                               bench_cuda.sh finds the machine's own.
  model.tar.xz                 with --pack-model DIR: that checkpoint,
                               xz-compressed (~78%), for a call from a
                               checkout whose working tree leaves the
                               model's shards out (docs/cuda.md: the
                               tracked tree alone is over 64 MiB)
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LIMIT = 64 << 20
DEFAULT_FILTER = r"cuda|kcuda|device|gpu|parity|step_plan"
# not copied: the system's (every Linux has them) and cuBLAS (too big)
SKIP_LIBS = re.compile(r"^(libc|libm|libdl|libpthread|librt|libgcc_s|"
                       r"libstdc\+\+|ld-linux[-a-z0-9_]*|linux-vdso|"
                       r"libcublas|libcublasLt|libcuda)\.so")
PROGRAMS = ["mtpd"]
NAMED = re.compile(r"kcuda|cuda.*parity|parity.*cuda|dev_parity")


def needed_libs(path):
    """{soname: resolved path} of what ldd reports for path."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    out = {}
    for ln in r.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(", ln)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def tree_bytes(path):
    n = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                n += os.path.getsize(p)
    return n


def git_files(args):
    r = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"] + args,
                       capture_output=True, text=True, check=True)
    return [f for f in r.stdout.split("\0") if f]


def travel_report(run_dir, extra_carry=()):
    """Bytes that a device call from this checkout would send, by part."""
    parts = {}
    tracked = git_files([])
    others = git_files(["--others", "--exclude-standard"])

    def size(files):
        return sum(os.path.getsize(os.path.join(ROOT, f)) for f in files
                   if os.path.isfile(os.path.join(ROOT, f)) and
                   not os.path.islink(os.path.join(ROOT, f)))
    parts["tracked files"] = size(tracked)
    parts["untracked, not ignored"] = size(others)
    if os.path.isdir(os.path.join(ROOT, "shared")):
        parts["shared/"] = tree_bytes(os.path.join(ROOT, "shared"))
    parts[os.path.relpath(run_dir, ROOT) + "/ (carry)"] = tree_bytes(run_dir)
    for c in extra_carry:
        parts[c + " (carry)"] = tree_bytes(os.path.join(ROOT, c))
    biggest = sorted(((os.path.getsize(os.path.join(ROOT, f)), f)
                      for f in tracked
                      if os.path.isfile(os.path.join(ROOT, f))),
                     reverse=True)[:5]
    return parts, biggest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("run_dir")
    ap.add_argument("--filter", default=DEFAULT_FILTER,
                    help="meson test names to take (regex, default "
                         f"{DEFAULT_FILTER!r})")
    ap.add_argument("--plain", action="store_true",
                    help="leave the files as they are (no programs.tar.xz)")
    ap.add_argument("--pack-model", metavar="DIR",
                    help="also put this checkpoint in RUN_DIR/model.tar.xz")
    ap.add_argument("--carry", action="append", default=[],
                    help="other carried paths, counted in the size check")
    a = ap.parse_args(argv)
    build = os.path.abspath(a.build_dir)
    run = os.path.abspath(a.run_dir)
    if os.path.exists(run):
        shutil.rmtree(run)
    os.makedirs(os.path.join(run, "meson-info"))
    os.makedirs(os.path.join(run, "lib"))

    tests_json = os.path.join(build, "meson-info", "intro-tests.json")
    tests = json.load(open(tests_json))
    pick = re.compile(a.filter)
    chosen = [t for t in tests if pick.search(t["name"])]
    progs = set(os.path.join(build, p) for p in PROGRAMS)
    progs.update(t["cmd"][0] for t in chosen)
    for root, _, files in os.walk(build):
        if "meson-" in root or ".p" in os.path.basename(root):
            continue
        for f in files:
            p = os.path.join(root, f)
            if NAMED.search(f) and os.access(p, os.X_OK) and \
                    not f.endswith((".so", ".a", ".o")) and \
                    os.path.isfile(p):
                progs.add(p)
    copied = []
    for p in sorted(progs):
        if not os.path.exists(p):
            print(f"pack_run: {p} not built", file=sys.stderr)
            continue
        rel = os.path.relpath(p, build)
        if rel.startswith(".."):
            continue  # a test command outside the build (python3 ...)
        dst = os.path.join(run, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(p, dst)
        copied.append(rel)
    with open(os.path.join(run, "meson-info", "intro-tests.json"), "w") as f:
        json.dump(chosen, f, indent=1)
    json.dump({"source_root": ROOT, "build_root": build,
               "programs": copied, "filter": a.filter},
              open(os.path.join(run, "manifest.json"), "w"), indent=1)

    libs = {}
    for rel in copied:
        libs.update(needed_libs(os.path.join(run, rel)))
    # libmtpd's own needs (libcudart) appear only through the static link
    for so in ("libcudart.so.13",):
        r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
        for ln in r.stdout.splitlines():
            if ln.strip().startswith(so + " ") and "x86-64" in ln:
                libs.setdefault(so, ln.split("=>")[-1].strip())
    for so, path in sorted(libs.items()):
        if SKIP_LIBS.match(so) or path == "not" or not os.path.exists(path):
            continue
        shutil.copy2(os.path.realpath(path), os.path.join(run, "lib", so))
        print(f"pack_run: lib/{so} <- {path}")

    if not a.plain:
        names = os.listdir(run)
        dst = os.path.join(run, "programs.tar.xz")
        with tarfile.open(dst, "w:xz", preset=6) as tf:
            for n in names:
                tf.add(os.path.join(run, n), arcname=n)
        for n in names:
            p = os.path.join(run, n)
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
        print(f"pack_run: programs.tar.xz "
              f"({os.path.getsize(dst) / 2**20:.1f} MiB)")
    if a.pack_model:
        src = os.path.abspath(a.pack_model)
        dst = os.path.join(run, "model.tar.xz")
        with tarfile.open(dst, "w:xz", preset=6) as tf:
            tf.add(src, arcname=os.path.basename(src))
        print(f"pack_run: {a.pack_model} -> model.tar.xz "
              f"({os.path.getsize(dst) / 2**20:.1f} MiB)")
    print(f"pack_run: {len(copied)} programs, {len(chosen)} meson tests "
          f"({', '.join(t['name'] for t in chosen) or 'none'})")
    parts, biggest = travel_report(run, a.carry)
    total = sum(parts.values())
    print("\nWhat a device call from this checkout sends (limit 64 MiB):")
    for k, v in parts.items():
        print(f"  {v / 2**20:8.1f} MiB  {k}")
    print(f"  {total / 2**20:8.1f} MiB  total")
    # the working tree docs/cuda.md's sparse checkout leaves for the call
    sparse = [f for f in git_files([]) if f == ".gitignore" or
              f.startswith(("tools/", "tests/model/golden/")) or
              (f.startswith("models/mtpd-code-small/") and
               f.endswith((".json", ".txt")))]
    slim = sum(os.path.getsize(os.path.join(ROOT, f)) for f in sparse
               if os.path.isfile(os.path.join(ROOT, f)))
    slim += parts[os.path.relpath(run, ROOT) + "/ (carry)"]
    print(f"  {slim / 2**20:8.1f} MiB  with docs/cuda.md's sparse checkout "
          f"({'fits' if slim <= LIMIT else 'over the limit too'}"
          f"{'' if a.pack_model else '; the model then needs --pack-model'})")
    if total > LIMIT:
        print("\npack_run: OVER the device tool's 64 MiB limit: the call "
              "would be refused. Largest tracked files:", file=sys.stderr)
        for n, f in biggest:
            print(f"  {n / 2**20:8.1f} MiB  {f}", file=sys.stderr)
        print("See docs/cuda.md (\"Running the device script\") for ways "
              "to send less.", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
