"""Rotation-only sweeps: how a RoPO rotation's step time grows with width and with depth.

DESIGN.md's cost model is O(tokens · d · (#reflections + #Givens stages)). Each point is the
forward + backward of one ``OrthogonalRotation`` on ``tokens`` rows (median of ``repeats``,
backends measured round-robin), with a frozen d × d linear layer and a LoRA r = 16 adapter on the
same rows as yardsticks in the width sweep.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ropo.rotation import OrthogonalRotation, givens_stages
from ropo.rotation.fused import givens_plan

WIDTHS = (512, 1024, 2048, 4096, 8192)
DEPTH_WIDTH = 2048
REFLECTIONS = (0, 2, 4, 8, 16)
LAYOUTS = ("none", "bidirectional", "butterfly")


def _rotation_case(dim: int, reflections: int, layout: str, backend: str, tokens: int, device: str):
    torch.manual_seed(dim)
    rotation = OrthogonalRotation(dim, reflections, layout, device=device, backend=backend)
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, 0.1)
    x = torch.randn(tokens, dim, device=device, requires_grad=True)
    grad = torch.randn(tokens, dim, device=device)
    return lambda: rotation(x).backward(grad)


def _linear_case(dim: int, tokens: int, device: str, rank: int | None):
    weight = torch.randn(dim, dim, device=device) / dim**0.5
    x = torch.randn(tokens, dim, device=device, requires_grad=True)
    grad = torch.randn(tokens, dim, device=device)
    if rank is None:
        return lambda: F.linear(x, weight).backward(grad)
    a = (torch.randn(rank, dim, device=device) / dim**0.5).requires_grad_()
    b = torch.zeros(dim, rank, device=device, requires_grad=True)
    return lambda: F.linear(F.linear(x, a), b).backward(grad)


def _time(cases: dict[str, Callable[[], None]], repeats: int, device: str, bar: tqdm) -> dict[str, float]:
    """Median ms of each case, measured round-robin after one warm-up call each."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_index in range(repeats + 1):
        for name, case in cases.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            case()
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            if round_index:
                times[name].append((time.perf_counter() - start) * 1e3)
        bar.update(1)
    return {name: statistics.median(values) for name, values in times.items()}


def _structure(dim: int, layout: str) -> dict:
    return {"givens_stages": len(givens_stages(dim, layout)), "fused_levels": len(givens_plan(dim, layout).levels)}


def width_sweep(tokens: int, repeats: int, device: str = "cpu", widths=WIDTHS) -> list[dict]:
    """Rotation (both backends), frozen linear and LoRA adapter fwd+bwd vs d (2 reflections, tree)."""
    rows = []
    with tqdm(total=len(widths) * (repeats + 1), desc="width sweep", file=sys.stderr) as bar:
        for dim in widths:
            cases = {
                backend: _rotation_case(dim, 2, "bidirectional", backend, tokens, device)
                for backend in ("reference", "auto")
            }
            cases["linear"] = _linear_case(dim, tokens, device, rank=None)
            cases["lora_r16"] = _linear_case(dim, tokens, device, rank=16)
            structure = {"reflections": 2, "givens_layout": "bidirectional", **_structure(dim, "bidirectional")}
            for name, ms in _time(cases, repeats, device, bar).items():
                rotation = name in ("reference", "auto")
                rows.append({
                    "sweep": "width", "case": name, "dim": dim, "tokens": tokens, "device": device,
                    **{key: value if rotation else None for key, value in structure.items()},
                    "ms_fwd_bwd": ms, "ns_per_token_coordinate": ms * 1e6 / (tokens * dim),
                })
    return rows


def depth_sweep(tokens: int, repeats: int, device: str = "cpu", dim: int = DEPTH_WIDTH) -> list[dict]:
    """Rotation fwd+bwd vs number of reflections (tree layout) and vs Givens layout (2 reflections)."""
    points = [(r, "bidirectional") for r in REFLECTIONS] + [(2, layout) for layout in LAYOUTS if layout != "bidirectional"]
    rows = []
    with tqdm(total=len(points) * (repeats + 1), desc="depth sweep", file=sys.stderr) as bar:
        for reflections, layout in points:
            cases = {
                backend: _rotation_case(dim, reflections, layout, backend, tokens, device)
                for backend in ("reference", "auto")
            }
            for name, ms in _time(cases, repeats, device, bar).items():
                rows.append({
                    "sweep": "depth", "case": name, "dim": dim, "tokens": tokens, "device": device,
                    "reflections": reflections, "givens_layout": layout, **_structure(dim, layout),
                    "ms_fwd_bwd": ms, "ns_per_token_coordinate": ms * 1e6 / (tokens * dim),
                })
    return rows


def sweep_table(rows: list[dict]) -> str:
    """A markdown table of sweep rows."""
    lines = [
        "| sweep | case | d | reflections | layout | stages | fused levels | ms fwd+bwd | ns / (token·coordinate) |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [row[key] if row[key] is not None else "–" for key in ("reflections", "givens_layout", "givens_stages", "fused_levels")]
        lines.append(
            f"| {row['sweep']} | {row['case']} | {row['dim']} | {cells[0]} | {cells[1]} "
            f"| {cells[2]} | {cells[3]} | {row['ms_fwd_bwd']:.2f} "
            f"| {row['ns_per_token_coordinate']:.2f} |"
        )
    return "\n".join(lines)
