#!/usr/bin/env bash
# The GPU kit's one run (issue 18): everything a lent GPU must check and time, in one call.
#   benchmarks/gpu/run.sh [OUT_DIR]      (default: $OUT, else benchmarks/results/gpu-<date>)
# Before the call, on a CPU machine: `python benchmarks/gpu/kit.py download` and `... check`; the
# device call carries .whl (the wheels the machine lacks). Steps, each bounded by `timeout` and all
# together by RUN_BUDGET seconds (default 540), so the summary always prints:
#   1. the Triton and fused-path tests natively (every dtype, autocast, odd widths);
#   2. 20 TRL DPOTrainer steps with DPOConfig's defaults (bf16, gradient checkpointing) and
#      peft_config=RoPOConfig(), and the same in fp32 (benchmarks/gpu/dpo_check.py);
#   3. `ropo bench --device cuda`, bf16, Llama-3.2-1B and Llama-3-8B shapes, q,v and all linear,
#      4 × 1024 tokens a step: floor, LoRA, DoRA, OFT, HRA, RoPO reference and fused; peak memory;
#   4. inference (unmerged and merged) on the same shapes;
#   5. one rotation alone against a plain copy: the tree kernels at several launch shapes and the
#      level kernels (benchmarks/gpu/kernel_sweep.py), and a profile of one RoPO and one LoRA step
#      (benchmarks/gpu/profile_step.py); last, as what the rows above need comes first.
# KIT_TRAIN_METHODS="floor lora ropo_fast" times fewer methods. Seven files go to OUT_DIR (the bench
# rows end up in one bench.json); the summary table prints last. Without CUDA it says so, exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu-$(date +%Y%m%d)}}"
BUDGET="${RUN_BUDGET:-540}"
# The sizes measured. KIT_SMOKE=1 runs every step on the CPU at toy sizes instead: it checks the
# script itself (steps, files, summary) where there is no GPU (tests/test_gpu_kit.py).
DEVICE=cuda MODEL_A=llama-3.2-1b LAYERS_A=4 MODEL_B=llama-3-8b LAYERS_B=2
SIZE=(--batch-size 4 --seq-len 1024) TRAIN_STEPS=(--steps 8 --warmup 2) INFER_STEPS=(--steps 10 --warmup 3)
DPO_STEPS=20 TEST_ARGS=() MEMORY=()
read -r -a TRAIN_METHODS <<<"${KIT_TRAIN_METHODS:-floor lora dora oft hra ropo ropo_fast}"
if [ "${KIT_SMOKE:-0}" = 1 ]; then
    DEVICE=cpu MODEL_A=smollm2-135m LAYERS_A=1 MODEL_B=smollm2-135m LAYERS_B=1
    SIZE=(--batch-size 1 --seq-len 32) TRAIN_STEPS=(--steps 1 --warmup 0) INFER_STEPS=(--steps 1 --warmup 0)
    DPO_STEPS=2 TEST_ARGS=(--collect-only) TRAIN_METHODS=(floor lora ropo_fast) MEMORY=(--no-memory)
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "benchmarks/gpu/run.sh: no CUDA device here; nothing to measure (skipped)"
    exit 0
fi
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
{ date -u; nvidia-smi; echo; "$PY" --version; "$PY" -m pip list --format=freeze 2>/dev/null; } >"$OUT_DIR/environment.txt" 2>&1
if [ -d .whl ] && [ "${KIT_SMOKE:-0}" != 1 ]; then  # the machine's own packages stay; the kit's shadow them (README of the device tool)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ropo-kit .whl/*.whl \
        >>"$OUT_DIR/environment.txt" 2>&1 || echo "kit install failed (see environment.txt)"
    export PYTHONPATH="/tmp/ropo-kit:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import ropo, peft, trl, datasets, transformers, torch, triton; print('versions: torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__, 'triton', triton.__version__)" 2>&1 | tail -1 | tee -a "$OUT_DIR/environment.txt"

status=0
# step NAME CAP LINES COMMAND...: COMMAND bounded by CAP seconds and by what is left of BUDGET; its
# output goes to run.log and its last LINES lines (progress bars left out) to the screen.
step() {
    local name=$1 cap=$2 lines=$3 left code
    shift 3
    left=$((BUDGET - SECONDS - 25))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 10 ]; then echo "== $name: skipped, out of time"; status=1; return; fi
    echo "== $name (at ${SECONDS}s, at most ${cap}s)" | tee -a "$OUT_DIR/run.log"
    timeout "$cap" "$@" >/tmp/ropo-step.log 2>&1
    code=$?
    tr '\r' '\n' </tmp/ropo-step.log | grep -v "it/s\]\|s/it\]\|step/s\|s/step" >>"$OUT_DIR/run.log"
    tr '\r' '\n' </tmp/ropo-step.log | grep -v "it/s\]\|s/it\]\|step/s\|s/step\|^\s*$" | tail -n "$lines"
    [ "$code" -eq 0 ] || { echo "   $name: exit $code$([ $code -eq 124 ] && echo ' (timed out)')"; status=1; }
}
BENCH=(-m ropo.cli bench --device "$DEVICE" --dtype bfloat16 "${SIZE[@]}" "${MEMORY[@]}" --targets q,v all-linear)

# The native CPU kernels' own tests are CPU tests (run by make test); the bf16 test's 'auto' still
# builds them here once (about 30 s). The tree kernels compile once per shape (seconds each; the
# model widths' shapes are then cached on disk for the steps after), hence 200 s.
step tests 200 4 "$PY" -m pytest -q -p no:cacheprovider "${TEST_ARGS[@]}" -k "not native" tests/test_triton_rotation.py \
    tests/test_fused.py "tests/test_peft_integration.py::test_bf16_autocast_forward_and_backward"
step dpo 120 12 "$PY" benchmarks/gpu/dpo_check.py --device "$DEVICE" --steps "$DPO_STEPS" --json "$OUT_DIR/dpo.json"
step bench-a 100 3 "$PY" "${BENCH[@]}" --models "$MODEL_A" --layers "$LAYERS_A" "${TRAIN_STEPS[@]}" \
    --methods "${TRAIN_METHODS[@]}" --json "$OUT_DIR/bench-train-a.json"
step bench-b 120 3 "$PY" "${BENCH[@]}" --models "$MODEL_B" --layers "$LAYERS_B" "${TRAIN_STEPS[@]}" \
    --methods "${TRAIN_METHODS[@]}" --json "$OUT_DIR/bench-train-b.json"
step inference 70 3 "$PY" "${BENCH[@]}" --inference --models "$MODEL_A" "$MODEL_B" \
    --layers "$MODEL_A=$LAYERS_A" "$MODEL_B=$LAYERS_B" "${INFER_STEPS[@]}" \
    --methods floor lora oft ropo_fast ropo_merged --json "$OUT_DIR/bench-inference.json"
step kernels 100 16 "$PY" benchmarks/gpu/kernel_sweep.py --json "$OUT_DIR/kernels.json"
step profile 50 3 "$PY" benchmarks/gpu/profile_step.py --out "$OUT_DIR/profile.txt"
"$PY" benchmarks/gpu/summarize.py "$OUT_DIR" | tee "$OUT_DIR/summary.md"
echo "results in $OUT_DIR: $(ls "$OUT_DIR" | wc -l) files (exit $status, ${SECONDS}s)"
exit $status
