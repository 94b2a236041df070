#!/usr/bin/env bash
# The README's CPU figures: each benchmark once, on 1 CPU thread, SmolLM2-shaped models with random
# weights; the JSON files go to OUT and their summary to assets/bench_cpu.json, which
# `python -m calm_mini readme` renders into the README.
#
#     bash benchmarks/cpu.sh [OUT]          # default OUT: runs/bench_cpu; about 10 minutes on 2 cores
#
# Needs only python with torch and transformers; nothing is downloaded.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench_cpu}
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
mkdir -p "$OUT"

run() {  # run NAME SCRIPT ARGS...: one benchmark on the CPU, JSON to OUT/NAME.json
    local name=$1 script=$2
    shift 2
    echo "== $name"
    "$PY" "benchmarks/$script" --device cpu --threads 1 --json "$OUT/$name.json" "$@"
}

run 1_train train_step.py --dtype fp32 --batch 1 --length 128 --repeats 5
run 2_train_ckpt train_step.py --dtype fp32 --batch 1 --length 128 --repeats 5 --gradient-checkpointing
run 3_decode decode.py --dtype fp32 --batch 1 --length 32 --new-tokens 32 --repeats 3
run 4_memory memory.py --dtype bf16 --batch 1 --length 256
run 5_memory_ckpt memory.py --dtype bf16 --batch 1 --length 256 --gradient-checkpointing
run 6_memory_360m memory.py --dtype bf16 --batch 1 --length 256 --anchor smollm2-360m
run 7_memory_long memory.py --dtype bf16 --batch 2 --length 512
"$PY" benchmarks/summary.py "$OUT" --json assets/bench_cpu.json
