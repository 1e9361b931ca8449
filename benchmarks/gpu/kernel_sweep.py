"""The Triton rotation alone on a GPU: time per pass over the activations, for launch shapes.

Why: a RoPO layer's rotation is a few passes over its fp32 activations, so its floor is memory
bandwidth; this times forward and forward + backward of one rotation (the ropo-2025 preset: one
reflection pair and the bidirectional Givens tree) on 4096 rows of the widths an 8B model's
adapted layers see, for several launch shapes of the kernels (``LEVEL_COORDINATES``: slots of a
level per program; ``PAIR_ROW_TILE``: rows per reflection-pair program), next to a plain copy of
the same fp32 tensor (one read and one write: one "pass"). Each shape is checked against the
fused torch path first.

    python benchmarks/gpu/kernel_sweep.py --json kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from ropo.rotation import triton_rotation
from ropo.rotation.fused import fused_operands, fused_rotate, givens_plan
from ropo.rotation.module import OrthogonalRotation

#: (LEVEL_COORDINATES, PAIR_ROW_TILE): the first is the launch shape of the kernels' first GPU
#: run (one group per program, 32 rows per pair program).
SHAPES = ((8, 32), (64, 8), (128, 8), (64, 32), (32, 8))
WIDTHS = (4096, 14336)
ROWS = 4096


def _time_ms(function, repeats: int = 20, warmup: int = 3) -> float:
    """Median of ``repeats`` timed calls (CUDA events), after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def measure(width: int, shape: tuple[int, int]) -> dict:
    triton_rotation.LEVEL_COORDINATES, triton_rotation.PAIR_ROW_TILE = shape
    torch.manual_seed(width)
    rotation = OrthogonalRotation(width, 2, "bidirectional", device="cuda")
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, 0.1)
    plan = givens_plan(width, "bidirectional", "cuda")
    operands = fused_operands(rotation.angles, rotation.householder_base, rotation.householder_offset, plan)
    x = torch.randn(ROWS, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(ROWS, width, device="cuda")
    fast = triton_rotation.triton_rotate(x, plan, *operands)
    reference = fused_rotate(x, plan, *operands)
    error = float((fast - reference).detach().norm() / reference.detach().norm())

    def forward():
        with torch.no_grad():
            triton_rotation.triton_rotate(x, plan, *operands)

    def both():
        triton_rotation.triton_rotate(x, plan, *operands).backward(grad, retain_graph=True)

    plain = torch.randn(ROWS, width, device="cuda")
    copy_ms = _time_ms(lambda: plain.clone())
    forward_ms, both_ms = _time_ms(forward), _time_ms(both)
    return {"width": width, "rows": ROWS, "level_coordinates": shape[0], "pair_row_tile": shape[1],
            "relative_error_vs_fused": error, "copy_ms": copy_ms, "forward_ms": forward_ms,
            "forward_backward_ms": both_ms, "forward_passes": forward_ms / copy_ms,
            "forward_backward_passes": both_ms / copy_ms, "levels": len(plan.levels)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_sweep.py: no CUDA device here (skipped)")
        return 0
    defaults = (triton_rotation.LEVEL_COORDINATES, triton_rotation.PAIR_ROW_TILE)
    rows = [measure(width, shape) for width in WIDTHS for shape in SHAPES]
    triton_rotation.LEVEL_COORDINATES, triton_rotation.PAIR_ROW_TILE = defaults
    print("| width | level coords | pair rows | rel. error | copy ms | fwd ms | fwd passes | fwd+bwd ms | fwd+bwd passes |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['width']} | {r['level_coordinates']} | {r['pair_row_tile']} | {r['relative_error_vs_fused']:.1e} "
              f"| {r['copy_ms']:.3f} | {r['forward_ms']:.3f} | {r['forward_passes']:.1f} "
              f"| {r['forward_backward_ms']:.3f} | {r['forward_backward_passes']:.1f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
