#!/bin/bash
# Regenerates models/mtpd-code-small/README.md from the committed results in
# bench/results/ (corpus-manifest.json is what tools.train.corpus wrote).
cd "$(dirname "$0")/../.." || exit 1
exec python3 -m tools.train.card \
    --summary bench/results/train-h200-run2-150s.summary.json \
    --eval bench/results/eval-mtpd-code-small.json \
    --ref-eval bench/results/eval-pycode-mtp-tiny.json --ref-name pycode-mtp-tiny \
    --manifest bench/results/corpus-manifest.json \
    --model-dir models/mtpd-code-small \
    --note "An earlier run with a 400 s budget overfit (\`bench/results/train-h200-run1-400s.log\`: 2643 steps, 173 M tokens, about 15 epochs). Its held-out main loss was best at step 750 (2.65 nats/token) and rose to 3.67 by the end. The shipped weights come from the second run, which used a 150 s budget." \
    --note "Training's own held-out check (the first 64 windows of 1024 tokens of held-out Python) read 2.63 main / 2.67 MTP at the kept step. The table below uses the evaluator's windows, which are spread over all held-out files." \
    --ref-note "pycode-mtp-tiny's README says it was trained on the Python standard library, and it reports a held-out loss of 2.03 nats/token on its own split. On our held-out Python it scores 1.89, lower than on its own held-out data, which suggests many of our held-out files were in its training split. Its Python row is therefore optimistic. It never saw C, yet its C acceptance is still 74%, because greedy continuations of a weak model fall into loops that are easy to draft; acceptance alone does not measure quality." \
    --out models/mtpd-code-small/README.md
