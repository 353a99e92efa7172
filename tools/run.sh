#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh Debian 12
# machine: installs dependencies, builds, and completes a piece of Python
# with MTP speculative decoding (sampled at temperature 0.6: greedy output
# of a model this small loops quickly), printing the acceptance statistics.
#   tools/run.sh ["PROMPT" [mtpd generate options...]]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build mtpd >/dev/null

model=models/mtpd-code-small
prompt=${1:-'def read_config(filename):
    with open(filename) as f:
'}
shift || true
echo "== mtpd generate --model $model (temperature 0.6, top-p 0.95, draft tokens: auto)" >&2
printf '%s' "$prompt"
build/mtpd generate --model "$model" --prompt "$prompt" --max-tokens 200 \
    --draft-tokens auto --temperature 0.6 --top-p 0.95 --seed 1 "$@"
