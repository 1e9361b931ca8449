#!/usr/bin/env bash
# One script for a lent GPU (issue 11): native Triton tests (bf16 autocast through TRL included),
# then `ropo bench --device cuda` on the Llama-3.2-1B and Llama-3-8B shapes (q,v and all-linear,
# bf16) against PEFT's LoRA, DoRA, OFT, HRA and the frozen floor. Everything goes to one folder:
#   benchmarks/gpu/run.sh [OUT_DIR]      (default: $OUT, else benchmarks/results/gpu-<date>)
# Budget: under 8 minutes in all on an H100/H200 (each step is bounded by `timeout`).
# On a machine without CUDA it says so and exits 0, so CI and CPU sessions can run it.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu-$(date +%Y%m%d)}}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "benchmarks/gpu/run.sh: no CUDA device here; nothing to measure (skipped)"
    exit 0
fi
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -m pip install -q --no-deps -e . >"$OUT_DIR/install.log" 2>&1 || true
nvidia-smi >"$OUT_DIR/nvidia-smi.txt" 2>&1
status=0
# 1. Triton kernels natively, and RoPO under TRL's defaults (bf16 autocast) on the GPU.
timeout 150 "$PY" -m pytest -q tests/test_triton_rotation.py tests/test_fused.py \
    "tests/test_peft_integration.py::test_trl_default_dpo_config_with_peft_config" \
    "tests/test_peft_integration.py::test_bf16_autocast_forward_and_backward" \
    >"$OUT_DIR/tests.log" 2>&1 || status=1
tail -3 "$OUT_DIR/tests.log"
# 2. Step time and peak memory, bf16, all methods timed round-robin in one process per shape.
for targets in "q,v" "all-linear"; do
    name=$(echo "$targets" | tr ',' '-')
    timeout 150 "$PY" -m ropo.cli bench --device cuda --models llama-3.2-1b llama-3-8b --layers 4 \
        --targets "$targets" --methods floor lora dora oft hra ropo_fast \
        --json "$OUT_DIR/bench-$name.json" >"$OUT_DIR/bench-$name.log" 2>&1 || status=1
    tail -12 "$OUT_DIR/bench-$name.log"
done
echo "results in $OUT_DIR (exit $status)"
exit $status
