"""One training step of RoPO and of LoRA under torch's profiler: where a RoPO step's GPU time goes.

Why: if RoPO misses its GPU targets, the lease has no time for a second look, so the kit's run
already records, per method, the GPU time of every kernel (top ``ROWS`` by total) and the share
spent in RoPO's own kernels (the Triton rotation kernels, named after their functions in
``ropo.rotation.triton_rotation``), to plan the fix on a CPU machine.

    python benchmarks/gpu/profile_step.py --out profile.txt [--model llama-3-8b --layers 2 --targets all-linear]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ropo.bench.measure import RunSettings, Trainee, base_model, batch

#: Kernels listed per method.
ROWS = 25
#: Name fragments of RoPO's Triton kernels.
ROTATION_KERNELS = ("pair_forward", "pair_coefficients", "pair_backward", "level_forward", "level_backward")
METHODS = ("lora", "ropo_fast")


def device_time_us(event) -> float:
    """An event's own GPU time (the attribute's name changed across torch releases)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_method(method: str, settings: RunSettings, base: torch.nn.Module, ids: torch.Tensor) -> str:
    trainee = Trainee(method, copy.deepcopy(base), settings)
    for _ in range(2):  # warm-up: kernels compiled, allocator settled
        trainee.step(ids)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        trainee.step(ids)
        torch.cuda.synchronize()
    events = profiler.key_averages()
    total = sum(device_time_us(e) for e in events)
    rotation = sum(device_time_us(e) for e in events if any(k in e.key for k in ROTATION_KERNELS))
    sort_key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    return (
        f"## {method}: GPU time {total / 1e3:.2f} ms in kernels, of which RoPO's rotation kernels "
        f"{rotation / 1e3:.2f} ms ({100 * rotation / max(total, 1e-9):.1f} %)\n\n"
        + events.table(sort_by=sort_key, row_limit=ROWS)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--targets", default="all-linear")
    parser.add_argument("--tokens", type=int, default=1024, help="sequence length (batch of 4)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_step.py: no CUDA device here (skipped)")
        return 0
    settings = RunSettings(args.model, args.layers, args.targets, 4, args.tokens, 1, 2, "cuda", "bfloat16")
    base, ids = base_model(settings), batch(settings)
    sections = [profile_method(method, settings, base, ids) for method in METHODS]
    header = f"# One training step, {args.model} shape ({args.layers} layers), {args.targets}, 4 x {args.tokens} tokens, bf16, {torch.cuda.get_device_name()}\n"
    args.out.write_text(header + "\n\n".join(sections) + "\n")
    for section in sections:
        print(section.splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
