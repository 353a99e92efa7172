#!/usr/bin/env bash
# Installs what building and testing mtpd needs on Debian 12 (apt + pip),
# skipping whatever is already present. Used by tools/run.sh and
# tools/test.sh; safe to run again.
set -euo pipefail

apt_pkgs=(build-essential pkg-config meson ninja-build libevent-dev
          libmsgpack-dev libjemalloc-dev libpcre2-dev python3 python3-pip
          clang libclang-rt-14-dev neovim chromium
          libedit-dev gnuplot-nox)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Light Python packages only: tests compare against committed goldens, so
# torch/transformers/tokenizers are not needed here. safetensors: our
# checkpoint writer is checked against the reference reader (test_ref.py).
py_missing=()
# openai and prometheus_client: the HTTP tests' clients (the official
# OpenAI SDK, Prometheus' own text parser); wheel: `pip install
# --no-build-isolation ./clients/python` (its test) works offline
for m in numpy pytest msgpack safetensors openai prometheus_client wheel; do
    python3 -c "import $m" 2>/dev/null || py_missing+=("$m")
done
if ((${#py_missing[@]})); then
    echo "setup: pip installing ${py_missing[*]}" >&2
    python3 -m pip install -q "${py_missing[@]}" \
        || python3 -m pip install -q --break-system-packages "${py_missing[@]}"
fi
