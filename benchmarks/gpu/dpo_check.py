"""RoPO under TRL's own defaults on a device: the same DPO steps in bf16 autocast and in fp32.

Why: every user trains with ``trl.DPOTrainer(..., args=DPOConfig(...), peft_config=RoPOConfig())``
on a GPU, where TRL's defaults are bf16 autocast and gradient checkpointing and RoPO's rotation
runs through its Triton kernels. This trains a small Llama built from a config twice from the
same seed and data, once with those defaults and once in plain fp32, and checks what must hold:

- step 1's loss is ln 2 in both (the adapter starts at exactly the identity, so policy == reference);
- the two loss curves agree within bf16's tolerance (``LOSS_TOLERANCE``);
- the rotations stay orthogonal (``ORTHOGONALITY_TOLERANCE``) and the neurons' hyperspherical
  energy is unchanged to float precision (``HE_TOLERANCE``), while the adapter did move.

    python benchmarks/gpu/dpo_check.py --device cuda --steps 20 --json dpo.json
    python benchmarks/gpu/dpo_check.py --device cpu --steps 2      # what the CPU test runs

Exit status 0 when every check holds, 1 otherwise; the JSON has every step's loss and time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "configs" / "data" / "tiny_prefs.jsonl"

#: Largest |loss_bf16 − loss_fp32| over the steps: bf16 keeps 8 bits of mantissa, so log-probs of
#: ~100 tokens differ by ~1e-2 between the precisions and the DPO loss (≈ ln 2 here) by less.
LOSS_TOLERANCE = 0.05
#: |step-1 loss − ln 2|: policy and reference compute the same function, so only summation order.
FIRST_STEP_TOLERANCE = 1e-4
#: max |QᵀQ − I| in fp32 (the adapter keeps fp32 parameters under bf16 autocast).
ORTHOGONALITY_TOLERANCE = 1e-5
#: Largest relative HE change of an adapted layer (magnitudes scale rows, rotations keep angles).
HE_TOLERANCE = 1e-4
#: An adapter's usual rate (TRL's default, 1e-6, is a full fine-tune's and would leave the
#: rotation at ~I after 20 steps, so the two precisions could not disagree).
LEARNING_RATE = 1e-3
#: The small Llama: wide enough for several Givens levels and odd-free power-of-two shapes.
MODEL_SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4}


def train(device: str, bf16: bool, steps: int, output_dir: Path) -> dict:
    """``steps`` DPOTrainer steps with ``DPOConfig``'s defaults (``bf16`` as given) on ``device``."""
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    import ropo
    from ropo.metrics.energy import hyperspherical_energy
    from ropo.models.weights import base_weights, effective_weights, tracked_layers
    from ropo.tiny_models import tiny_causal_lm, tiny_tokenizer

    args = DPOConfig(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=4, logging_steps=1,
        report_to="none", save_strategy="no", max_length=128, seed=0, bf16=bf16, learning_rate=LEARNING_RATE,
        use_cpu=device == "cpu",
    )
    assert args.gradient_checkpointing, "TRL's default (gradient checkpointing) changed"
    data = load_dataset("json", data_files=str(DATA), split="train", cache_dir=str(output_dir / "cache"))
    trainer = DPOTrainer(
        model=tiny_causal_lm(vocab_size=262, **MODEL_SHAPE), args=args, train_dataset=data,
        processing_class=tiny_tokenizer(), peft_config=ropo.RoPOConfig(),
    )
    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            step_times.append((time.perf_counter() - self.start) * 1e3)

    trainer.add_callback(StepTimer())
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    layers = tracked_layers(model, "all-linear")
    before, after = base_weights(model, layers), effective_weights(model, layers)
    he_changes = {
        name: abs(hyperspherical_energy(after[name]) / hyperspherical_energy(before[name]) - 1) for name in layers
    }
    moved = max(float(p.detach().abs().max()) for n, p in model.named_parameters() if "angles" in n)
    return {
        "bf16": bf16,
        "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
        "step_ms": step_times,
        "rotation_device": str(next(p for n, p in model.named_parameters() if "angles" in n).device),
        "orthogonality_error": ropo.orthogonality_error(model),
        "he_change_max": max(he_changes.values()),
        "largest_angle": moved,
        "adapted_layers": len(layers),
    }


def checks(bf16: dict, fp32: dict) -> dict[str, bool]:
    """What must hold of the two runs (see the module docstring)."""
    gaps = [abs(a - b) for a, b in zip(bf16["losses"], fp32["losses"])]
    return {
        "same number of logged steps": len(bf16["losses"]) == len(fp32["losses"]) > 0,
        "step-1 loss is ln 2 (bf16)": abs(bf16["losses"][0] - math.log(2)) <= FIRST_STEP_TOLERANCE,
        "step-1 loss is ln 2 (fp32)": abs(fp32["losses"][0] - math.log(2)) <= FIRST_STEP_TOLERANCE,
        f"losses agree within {LOSS_TOLERANCE}": bool(gaps) and max(gaps) <= LOSS_TOLERANCE,
        "every loss finite": all(math.isfinite(v) for v in bf16["losses"] + fp32["losses"]),
        f"orthogonality error <= {ORTHOGONALITY_TOLERANCE}": all(
            r["orthogonality_error"] is not None and r["orthogonality_error"] <= ORTHOGONALITY_TOLERANCE for r in (bf16, fp32)
        ),
        f"HE change <= {HE_TOLERANCE}": all(r["he_change_max"] <= HE_TOLERANCE for r in (bf16, fp32)),
        "the adapter moved": all(r["largest_angle"] > 0 for r in (bf16, fp32)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write both runs and the checks here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        runs = {name: train(args.device, name == "bf16", args.steps, Path(scratch) / name) for name in ("bf16", "fp32")}
    result = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
              "torch": torch.__version__, "steps": args.steps, "model_shape": MODEL_SHAPE, **runs,
              "checks": checks(runs["bf16"], runs["fp32"])}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    gaps = [abs(a - b) for a, b in zip(runs["bf16"]["losses"], runs["fp32"]["losses"])]
    print(f"DPO on {args.device}: {args.steps} steps; step-1 loss bf16 {runs['bf16']['losses'][0]:.6f}, "
          f"fp32 {runs['fp32']['losses'][0]:.6f} (ln 2 = {math.log(2):.6f}); max |Δloss| {max(gaps):.4f}")
    for name, run in runs.items():
        median = sorted(run["step_ms"])[len(run["step_ms"]) // 2]
        print(f"  {name}: final loss {run['losses'][-1]:.4f}, median step {median:.1f} ms, rotation on "
              f"{run['rotation_device']}, orthogonality error {run['orthogonality_error']:.2e}, "
              f"max HE change {run['he_change_max']:.2e}")
    for name, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
