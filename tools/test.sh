#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine:
#   installs dependencies, builds a release build (build/) and an
#   ASan+UBSan debug build (build-asan/), runs the C unit tests and the
#   hostile-input suites under the sanitizers, then every Python
#   golden/parity/integration test against the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

jobs=$(nproc)
[ -d build ] || meson setup build
# the sanitizer build is also the check of the CPU-only configuration
# (-Dcuda=disabled); the release build has CUDA wherever nvcc is
[ -d build-asan ] || meson setup build-asan -Dbuildtype=debug \
    -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled
ninja -C build -j"$jobs"
ninja -C build-asan -j"$jobs"

# a sanitizer finding exits 99, which no test expects
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=99
export ASAN_OPTIONS=detect_leaks=1:exitcode=99
meson test -C build-asan --print-errorlogs

# hostile-input suites under the sanitizers: broken checkpoints, bad
# tokenizer input, generation edge cases
MTPD_BIN="$PWD/build-asan/mtpd" python3 -m pytest -q \
    tests/model/test_bad_checkpoints.py tests/tokenizer/test_cli.py \
    tests/spec/test_spec_edges.py
# quantize and damaged quantized checkpoints under the sanitizers (the
# quality checks run below against the release build)
MTPD_BIN="$PWD/build-asan/mtpd" python3 -m pytest -q \
    tests/model/test_quantize.py -k "not quality and not speculative"

# the daemon under the sanitizers: hostile input, cancel, sessions (a leak
# or a sanitizer report makes its exit status non-zero, which the tests
# check); the full daemon suite runs against the release build below
MTPD_BIN="$PWD/build-asan/mtpd" python3 -m pytest -q \
    tests/daemon/test_serve_hostile.py tests/daemon/test_serve_cancel.py \
    tests/daemon/test_serve_sessions.py tests/daemon/test_http_hostile.py \
    -k "not prefills_in_chunks"

# mtpc (clients/c) under the sanitizers against the release daemon
MTPC_BIN="$PWD/build-asan/clients/c/mtpc" MTPD_BIN="$PWD/build/mtpd" \
    python3 -m pytest -q tests/daemon/test_mtpc.py

# libFuzzer on the daemon's frame decoder + request validation, 20 s from
# the seed corpus (new inputs go to a temporary directory)
if command -v clang >/dev/null; then
    clang -g -O1 -fsanitize=fuzzer,address,undefined -Idaemon -Iinclude/mtpd -Ispec \
        -Imodel tests/fuzz/fuzz_proto.c daemon/frame.c daemon/proto.c \
        $(pkg-config --cflags --libs msgpack) -o build/fuzz_proto
    fuzz_dir=$(mktemp -d)
    build/fuzz_proto -max_total_time=20 -print_final_stats=1 \
        "$fuzz_dir" tests/fuzz/corpus 2>&1 | tail -3
    rm -rf "$fuzz_dir"
fi

# everything against the release build
export MTPD_BIN="$PWD/build/mtpd"
python3 -m pytest -q tests "$@"
