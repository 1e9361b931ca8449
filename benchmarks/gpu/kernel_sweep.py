"""One rotation on a GPU, by kernel and launch shape, against a plain copy of its input.

Why: a RoPO layer's rotation should cost a few passes over its activations, so its floor is memory
bandwidth; this times forward and forward + backward of one rotation (the ropo-2025 preset: one
reflection pair and the bidirectional Givens tree) on 4096 rows of the widths an 8B model's
adapted layers see: the tree kernels (``triton_tree``, what ``auto`` runs) for several launch
shapes (rows and warps per program) and the level kernels (``triton-levels``, their launch shape
as committed), next to a plain copy of the same fp32 tensor (one read and one write: one "pass").
Each is checked against the fused torch path first.

    python benchmarks/gpu/kernel_sweep.py --json kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from ropo.rotation import triton_tree
from ropo.rotation.module import OrthogonalRotation

#: (ROWS, WARPS) of the tree kernels; the first is the committed default (each other shape is one
#: more compilation per width, seconds each, inside the kit's few minutes).
TREE_SHAPES = ((16, 8), (16, 4))
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


def _rotation(width: int, backend: str) -> OrthogonalRotation:
    torch.manual_seed(width)
    rotation = OrthogonalRotation(width, 2, "bidirectional", device="cuda", backend=backend)
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, 0.1)
    return rotation


def measure(width: int, backend: str, shape: tuple[int, int] | None, copy_ms: float) -> dict:
    """One row: ``backend`` ('triton' with the tree kernels at ``shape``, or 'triton-levels')."""
    if shape is not None:
        triton_tree.ROWS, triton_tree.WARPS = shape
    rotation = _rotation(width, backend)
    x = torch.randn(ROWS, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(ROWS, width, device="cuda", dtype=torch.bfloat16)
    fast = rotation(x, dtype=x.dtype)
    rotation.backend = "fused"
    reference = rotation(x, dtype=x.dtype)
    rotation.backend = backend
    error = float((fast.float() - reference.float()).detach().norm() / reference.float().detach().norm())

    # As a layer calls it: bf16 in and out, the gradient in bf16.
    def forward():
        with torch.no_grad():
            rotation(x, dtype=x.dtype)

    def both():
        rotation(x, dtype=x.dtype).backward(grad)

    forward_ms, both_ms = _time_ms(forward), _time_ms(both)
    return {"width": width, "rows": ROWS, "kernels": "tree" if shape else "levels",
            "rows_per_program": shape[0] if shape else None, "warps": shape[1] if shape else None,
            "relative_error_vs_fused": error, "copy_ms": copy_ms, "forward_ms": forward_ms,
            "forward_backward_ms": both_ms, "forward_passes": forward_ms / copy_ms,
            "forward_backward_passes": both_ms / copy_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_sweep.py: no CUDA device here (skipped)")
        return 0
    defaults = (triton_tree.ROWS, triton_tree.WARPS)
    rows = []
    for width in WIDTHS:
        plain = torch.randn(ROWS, width, device="cuda")
        copy_ms = _time_ms(lambda: plain.clone())
        for shape in TREE_SHAPES:
            rows.append(measure(width, "triton", shape, copy_ms))
        triton_tree.ROWS, triton_tree.WARPS = defaults
        rows.append(measure(width, "triton-levels", None, copy_ms))
    print("| width | kernels | rows | warps | rel. error | copy ms | fwd ms | fwd passes | fwd+bwd ms | fwd+bwd passes |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['width']} | {r['kernels']} | {r['rows_per_program'] or ''} | {r['warps'] or ''} "
              f"| {r['relative_error_vs_fused']:.1e} | {r['copy_ms']:.3f} | {r['forward_ms']:.3f} "
              f"| {r['forward_passes']:.1f} | {r['forward_backward_ms']:.3f} | {r['forward_backward_passes']:.1f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
