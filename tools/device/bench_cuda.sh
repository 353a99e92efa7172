#!/usr/bin/env bash
# tools/device/bench_cuda.sh - the one prepared run on the GPU machine
# (issue 14): correctness, then speed, each stage under its own timeout so
# that one hang cannot eat the budget (9 minutes in all by default).
#
#   tools/device/bench_cuda.sh [--dry-run]
#
# Run from the repository root on the GPU machine, with the folder that
# tools/device/prepare.sh made here carried along (build-cuda-run/:
# programs, device tests, the libraries that machine lacks). Writes to
# $OUT (a temporary folder when unset): bench_cuda.md (the summary
# tables), bench_cuda.json, nvidia-smi.txt, logs.tar.gz (every stage's
# log, refreshed after each stage, so a cut-off run still returns them).
#
# Stages, in order: env (nvidia-smi, versions, libraries), info (mtpd
# info --device cuda), unit (the packed device tests: test_kcuda*,
# model_device ..., through tools/device/run_tests.py), parity (device vs
# CPU logits on every checkpoint, greedy spec == plain; cumodel's parity
# program when packed), sanitizer (compute-sanitizer memcheck on a short
# generate), tps_default (tokens/s, k = 0..4 and auto, batch 1, 8, 64, on
# models/mtpd-code-small), kbench (copy and MLA GB/s: the kernel tests'
# --bench, and a torch copy as the ceiling), synth (a ~3.5 GB DeepSeek-V3
# shaped checkpoint with one MTP module, made there by make_synthetic.py),
# tps_synth (the same table on it), peer (transformers'
# DeepseekV3ForCausalLM on both, when torch + transformers import).
#
# --dry-run: every stage with --device cpu and tiny sizes, to check this
# script's logic on a machine without a GPU (tests/test_device_script.py).
#
# Environment: MTPD_RUN_DIR (default build-cuda-run), BENCH_BUDGET_S
# (default 540; dry run 300), MTPD_MODEL (default models/mtpd-code-small).
set -uo pipefail

SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/../.." || exit 1

if [ "${1:-}" = "--stage" ]; then
    STAGE_ONLY=$2
else
    STAGE_ONLY=
    DRY=0
    [ "${1:-}" = "--dry-run" ] && DRY=1
    export DRY
    export RUN=${MTPD_RUN_DIR:-build-cuda-run}
    export MODEL=${MTPD_MODEL:-models/mtpd-code-small}
    if [ -z "${OUT:-}" ]; then
        OUT=$(mktemp -d /tmp/bench_cuda_out.XXXXXX)
        echo "bench_cuda: OUT not set: writing to $OUT"
    fi
    mkdir -p "$OUT"
    export OUT
    LOGS=$(mktemp -d /tmp/bench_cuda_logs.XXXXXX)
    export LOGS
    export SYN=/tmp/bench_cuda_synthetic
    if ((DRY)); then
        export DEV=cpu BATCHES=1,2 KS=0,2,auto TOKENS=8 SYN_PRESET=tiny
        export SYN_TOKENS=8 THREADS=2
        BUDGET=${BENCH_BUDGET_S:-300}
    else
        export DEV=cuda BATCHES=1,8,64 KS=0,1,2,3,4,auto TOKENS=128
        export SYN_PRESET=3g SYN_TOKENS=64 THREADS=16
        BUDGET=${BENCH_BUDGET_S:-540}
    fi
    export MTPD="$RUN/mtpd"
    export ORIG_LD=${LD_LIBRARY_PATH:-}
fi

# ---- one stage per function; each runs as `bench_cuda.sh --stage NAME`
# under `timeout`, with the variables above in its environment ----

py() { python3 "$@"; }

# mtpd and the scripts that run it see the packed libraries (and the
# machine's cuBLASLt, found by find_libs); torch runs with ORIG_LD
mtpd_env() { LD_LIBRARY_PATH="$MTPD_LD" "$@"; }

stage_env() {
    echo "## date: $(date -u)"; uname -a; nproc; free -g 2>/dev/null
    echo "## nvidia-smi"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"
        nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv 2>&1
    else
        echo "no nvidia-smi" | tee "$OUT/nvidia-smi.txt"
    fi
    echo "## nvcc"; (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
    echo "## compute-sanitizer"; compute-sanitizer --version 2>&1 | head -3
    echo "## python"; python3 -c "import sys, numpy; print(sys.version.split()[0], 'numpy', numpy.__version__)" 2>&1
    LD_LIBRARY_PATH="$ORIG_LD" python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" 2>&1 | tail -1
    echo "## packed: $RUN"; cat "$RUN/manifest.json" 2>&1
    echo "## LD_LIBRARY_PATH for mtpd: $MTPD_LD"
    echo "## ldd $MTPD"; mtpd_env ldd "$MTPD" 2>&1
    for f in "$RUN"/lib*.so* ; do [ -e "$f" ] && mtpd_env ldd "$f"; done
    mtpd_env "$MTPD" --version
}

stage_info() {
    mtpd_env "$MTPD" info --model "$MODEL" --device "$DEV" --json \
        > "$LOGS/info.json"
    local rc=$?
    cat "$LOGS/info.json"
    return $rc
}

stage_unit() {
    local t=${STAGE_T:-100}
    mtpd_env py tools/device/run_tests.py "$RUN" --timeout 60 \
        --budget $((t - 5)) --json "$LOGS/unit.json"
}

stage_parity() {
    # the default model (maybe unpacked elsewhere), the other checkpoints
    # of models/ that are there, the golden ones, ../shared's if any
    local models=("$MODEL") m
    for m in models/*/ tests/model/golden/*/ ../shared/models/*/; do
        ls "$m"*.safetensors >/dev/null 2>&1 || continue
        [ "$(readlink -f "$m")" = "$(readlink -f "$MODEL")" ] && continue
        models+=("$m")
    done
    mtpd_env py tools/device/parity.py --mtpd "$MTPD" --device "$DEV" \
        --json "$LOGS/parity.json" "${models[@]}"
    # the CUDA model's own parity program, when packed (cumodel's branch)
    local p
    for p in $(py -c "import json,sys; m=json.load(open(sys.argv[1])); print(' '.join(x for x in m['programs'] if 'parity' in x))" "$RUN/manifest.json" 2>/dev/null); do
        for m in "${models[@]}"; do
            echo "## $p $m"
            mtpd_env timeout 60 "$RUN/$p" "$m" 2>&1 | tail -20
        done
    done > "$LOGS/parity_prog.log" 2>&1
    cat "$LOGS/parity_prog.log"
}

stage_sanitizer() {
    if ((DRY)); then
        echo "dry run: compute-sanitizer needs a GPU; not run"
        return 0
    fi
    if ! command -v compute-sanitizer >/dev/null; then
        echo "compute-sanitizer not installed: not run"
        return 0
    fi
    # memcheck over prefill, drafting, verification and acceptance
    mtpd_env compute-sanitizer --tool memcheck --error-exitcode 9 \
        --print-limit 20 "$MTPD" generate --model "$MODEL" --ids 5,6,7,8,9 \
        --max-tokens 12 --draft-tokens 2 --device "$DEV" --json 2>&1 \
        | tee "$LOGS/sanitizer.log"
    return "${PIPESTATUS[0]}"
}

stage_tps_default() {
    local t=${STAGE_T:-100}
    mtpd_env py tools/device/gen_tps.py --mtpd "$MTPD" --model "$MODEL" \
        --device "$DEV" --batches "$BATCHES" --ks "$KS" \
        --max-tokens "$TOKENS" --threads "$THREADS" --budget $((t - 5)) \
        --json "$LOGS/tps_1default.json"
}

stage_kbench() {
    local p n
    for p in $(py -c "import json,sys; m=json.load(open(sys.argv[1])); print(' '.join(x for x in m['programs'] if 'kcuda' in x))" "$RUN/manifest.json" 2>/dev/null); do
        n=$(basename "$p")
        echo "## $p --bench"
        mtpd_env timeout 25 "$RUN/$p" --bench > "$LOGS/kbench_$n.log" 2>&1
        echo "exit $?"
        tail -25 "$LOGS/kbench_$n.log"
    done
    # the copy ceiling measured by torch, the same way as KINDS.md's 4.3 TB/s
    LD_LIBRARY_PATH="$ORIG_LD" timeout 40 python3 - "$LOGS/torch_copy.json" <<'EOF'
import json, sys, time
try:
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA in torch")
except Exception as e:
    print("torch copy: skipped:", e)
    sys.exit(0)
n = 4 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda")
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
torch.cuda.synchronize()
best = 1e9
for _ in range(10):
    t = time.perf_counter(); b.copy_(a); torch.cuda.synchronize()
    best = min(best, time.perf_counter() - t)
gbps = 2 * n / best / 1e9
print(f"torch copy: {gbps:.0f} GB/s (read + write, {n / 1e9:.1f} GB)")
json.dump({"gbps": gbps, "bytes": n}, open(sys.argv[1], "w"))
EOF
}

stage_synth() {
    rm -rf "$SYN"
    py tools/make_synthetic.py --out "$SYN" --preset "$SYN_PRESET" --mtp 1 \
        2>&1 | tr '\r' '\n' | tail -3
    mtpd_env "$MTPD" info --model "$SYN" --device "$DEV"
}

stage_tps_synth() {
    local t=${STAGE_T:-100}
    [ -f "$SYN/config.json" ] || { echo "no synthetic model"; return 1; }
    mtpd_env py tools/device/gen_tps.py --mtpd "$MTPD" --model "$SYN" \
        --name "synthetic-$SYN_PRESET" --device "$DEV" \
        --batches "$BATCHES" --ks "$KS" --max-tokens "$SYN_TOKENS" \
        --threads "$THREADS" --budget $((t - 5)) \
        --json "$LOGS/tps_2synth.json"
}

stage_peer() {
    local t=${STAGE_T:-70} b=1,8 models=(--model "$MODEL")
    # dry run: transformers on the CPU takes seconds per step of the
    # default model; the tiny synthetic one checks the logic
    ((DRY)) && b=1,2 && models=()
    [ -f "$SYN/config.json" ] && models+=(--model "$SYN=synthetic-$SYN_PRESET")
    # one process: torch and transformers import once
    LD_LIBRARY_PATH="$ORIG_LD" py tools/device/hf_peer.py "${models[@]}" \
        --device "$DEV" --batches "$b" --max-tokens "$SYN_TOKENS" \
        --budget $((t - 15)) --json "$LOGS/peer.json"
}

if [ -n "$STAGE_ONLY" ]; then
    "stage_$STAGE_ONLY"
    exit $?
fi

# ---- the driver ----

# Libraries ldd cannot find (cuBLASLt stays on that machine: ~500 MB):
# look where CUDA and the Python wheels keep them.
find_libs() {
    local ld="$RUN/lib" missing lib d
    missing=$(LD_LIBRARY_PATH="$ld${ORIG_LD:+:$ORIG_LD}" ldd "$MTPD" \
                  "$RUN"/tests/unit/* 2>/dev/null |
              awk '/not found/ {print $1}' | sort -u)
    for lib in $missing; do
        for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
                 /usr/local/cuda-*/lib64 /usr/local/lib /usr/lib/x86_64-linux-gnu \
                 $(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null | xargs -n1 -I{} sh -c 'ls -d {}/nvidia/*/lib 2>/dev/null'); do
            if [ -e "$d/$lib" ]; then
                ld="$ld:$d"
                echo "bench_cuda: $lib from $d"
                break
            fi
        done
    done
    MTPD_LD="$ld${ORIG_LD:+:$ORIG_LD}"
}

T0=$(date +%s)
RESERVE=20 # for the summary
printf '%s\n' "$([ "$DRY" = 1 ] && echo "dry run (--device cpu, tiny sizes)" || echo "device run (--device cuda)")" > "$LOGS/mode"
: > "$LOGS/stages.tsv"

pack_logs() {
    tar -czf "$OUT/logs.tar.gz.tmp" -C "$LOGS" . 2>/dev/null &&
        mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

run_stage() { # NAME CAP_SECONDS
    local name=$1 cap=$2 now left t rc t1 dt note
    now=$(date +%s)
    left=$((BUDGET - (now - T0) - RESERVE))
    t=$((cap < left ? cap : left))
    if ((t < 5)); then
        printf '%s\t-\t0\tskipped: out of time\n' "$name" >> "$LOGS/stages.tsv"
        echo "== $name: skipped (out of time)"
        return
    fi
    echo "== $name (at most $t s)"
    t1=$(date +%s.%N)
    STAGE_T=$t timeout -k 5 "$t" bash "$SELF" --stage "$name" \
        > "$LOGS/$name.log" 2>&1
    rc=$?
    dt=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    note=ok
    ((rc == 124 || rc == 137)) && note="timed out after $t s"
    ((rc != 0 && rc != 124 && rc != 137)) && note="failed"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$note" >> "$LOGS/stages.tsv"
    tail -n 25 "$LOGS/$name.log"
    echo "== $name: exit $rc, $dt s ($note)"
    pack_logs
}

# prepare.sh packs the programs (xz: the kernels make them big)
if [ -f "$RUN/programs.tar.xz" ]; then
    rm -rf /tmp/bench_cuda_run
    python3 - "$RUN/programs.tar.xz" /tmp/bench_cuda_run <<'EOF' || exit 1
import sys, tarfile
with tarfile.open(sys.argv[1]) as tf:
    try:
        tf.extractall(sys.argv[2], filter="tar")
    except TypeError:  # Python < 3.12
        tf.extractall(sys.argv[2])
EOF
    PACKED=$RUN
    RUN=/tmp/bench_cuda_run
    MTPD=$RUN/mtpd
    export RUN MTPD PACKED
    echo "bench_cuda: programs unpacked from $PACKED/programs.tar.xz"
fi
if [ ! -x "$MTPD" ]; then
    echo "bench_cuda: $MTPD missing: run tools/device/prepare.sh here and" \
         "carry $RUN" | tee "$OUT/bench_cuda.md"
    exit 1
fi
find_libs
export MTPD_LD
# the default model, when the checkout here left its shards out and
# prepare.sh --pack-model carried it
packed_model=${PACKED:-$RUN}/model.tar.xz
if ! ls "$MODEL"/*.safetensors >/dev/null 2>&1 && [ -f "$packed_model" ]; then
    MODEL=$(python3 - "$packed_model" /tmp/bench_cuda_model <<'EOF'
import os, sys, tarfile
with tarfile.open(sys.argv[1]) as tf:
    top = tf.getnames()[0].split("/")[0]
    try:
        tf.extractall(sys.argv[2], filter="tar")
    except TypeError:  # Python < 3.12
        tf.extractall(sys.argv[2])
print(os.path.join(sys.argv[2], top))
EOF
)
    echo "bench_cuda: model unpacked from $packed_model: $MODEL"
    export MODEL
fi

# correctness first, then speed; the caps add up to more than the budget
# on purpose: on a fast GPU most stages end early, and whatever is left
# when a stage starts bounds it
run_stage env 20
run_stage info 30
run_stage unit 100
run_stage parity 60
run_stage sanitizer 45
run_stage tps_default 100
run_stage kbench 45
run_stage synth 60
run_stage tps_synth 100
run_stage peer 70

timeout 20 python3 tools/device/summarize.py "$LOGS" "$OUT" ||
    echo "bench_cuda: summarize failed" >> "$OUT/bench_cuda.md"
pack_logs
echo "bench_cuda: $(($(date +%s) - T0)) s; summary in $OUT/bench_cuda.md"
cat "$OUT/bench_cuda.md"
rm -rf "$LOGS" "$SYN" /tmp/bench_cuda_run /tmp/bench_cuda_model
