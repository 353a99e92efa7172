#!/bin/bash
# The one prepared run for a lent GPU (see DEVELOPERS.md / the device tool):
# trains the gpu config for BUDGET seconds of wall clock, saves the
# checkpoint (shards < 16 MiB) to $OUT/model and evaluates it on the
# held-out split. Needs, carried from the machine that prepared the data:
#   .work/train/data       token streams   (python3 -m tools.train.data)
#   .work/train/tokenizer  tokenizer files (python3 -m tools.train.tokenizer)
#   .work/train/heldout    heldout.jsonl   (copied from .work/train/corpus)
# $OUT gets: log is written by the caller (tee); model/ holds config.json,
# the shards, the index and train_summary.json (8 files at most in all).
# TRAIN_ARGS / EVAL_ARGS add options (used to rehearse it on a CPU).
set -o pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?OUT must name the output folder}"
BUDGET=${BUDGET:-150}
DEVICE=${DEVICE:-cuda}
cd "$(dirname "$0")/../.." || exit 1
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
python3 -c "import torch, tokenizers, safetensors; print('torch', torch.__version__, 'tokenizers', tokenizers.__version__)" || exit 1
python3 -m tools.train.train --config gpu --device "$DEVICE" --time-budget "$BUDGET" \
    --data .work/train/data --tokenizer .work/train/tokenizer --out "$OUT/model" \
    --no-side-files $TRAIN_ARGS || exit 1
python3 -m tools.train.evaluate --model "$OUT/model" --device "$DEVICE" \
    --tokenizer .work/train/tokenizer/tokenizer.json --corpus .work/train/heldout \
    --lang py,c $EVAL_ARGS
