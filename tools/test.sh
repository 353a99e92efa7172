#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine:
#   installs dependencies, builds a release build (build/) and an
#   ASan+UBSan debug build (build-asan/), runs the C unit tests under the
#   sanitizers, then the Python golden/parity/integration tests against
#   the release binary (and a sanitizer pass of the model parity tests).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

jobs=$(nproc)
[ -d build ] || meson setup build
[ -d build-asan ] || meson setup build-asan -Dbuildtype=debug \
    -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build -j"$jobs"
ninja -C build-asan -j"$jobs"

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
meson test -C build-asan --print-errorlogs

export MTPD_BIN="$PWD/build/mtpd"
export MTPD_ASAN_BIN="$PWD/build-asan/mtpd"
python3 -m pytest -q tests "$@"
