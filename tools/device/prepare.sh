#!/usr/bin/env bash
# tools/device/prepare.sh - run HERE (the machine without a GPU) before a
# device call: a release build with CUDA (build-cuda/, nvcc needed), then
# the folder the GPU machine gets (build-cuda-run/programs.tar.xz: mtpd,
# the device tests, the shared libraries that machine lacks) and a check
# of what the call would send against the device tool's 64 MiB.
#
#   tools/device/prepare.sh [--pack-model] [BUILD_DIR [RUN_DIR]]
#
# --pack-model: also put models/mtpd-code-small in RUN_DIR/model.tar.xz
# (bench_cuda.sh unpacks it when the checkout there lacks the shards: the
# tracked files alone are over the tool's 64 MiB, docs/cuda.md).
#
# Then (docs/cuda.md, "Running the device script": the tracked files alone
# are over 64 MiB, so the call needs a sparse checkout first):
#   run(carry: ["build-cuda-run"], timeout_s: 600,
#       command: "tools/device/bench_cuda.sh")
set -euo pipefail
cd "$(dirname "$0")/../.."
pack=()
if [ "${1:-}" = "--pack-model" ]; then
    pack=(--pack-model models/mtpd-code-small)
    shift
fi
build=${1:-build-cuda}
run=${2:-build-cuda-run}
case "$run" in build*) ;; *)
    echo "prepare: RUN_DIR must be ignored by git (build*/): $run" >&2
    exit 2 ;;
esac
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || {
    echo "prepare: nvcc not found: the GPU build needs the CUDA toolkit" >&2
    exit 1; }
[ -d "$build" ] || meson setup "$build" -Dcuda=enabled -Dbuildtype=release
# the device tests are built by default with the rest; -j2: shared machine
nice -n 10 ninja -C "$build" -j"${JOBS:-2}"
python3 tools/device/pack_run.py "$build" "$run" "${pack[@]}"
echo "prepare: $run ready; the device call: see docs/cuda.md"
