"""Hyperspherical energy (HE) of a weight's neurons: what RoPO keeps and DPO/LoRA move."""

from __future__ import annotations

from collections.abc import Iterable
from statistics import fmean

import torch

#: The one name of the HE-change statistic, from the training log to the report and the frontier:
#: the mean over the tracked layers of |relative change| of their HE (and its maximum).
HE_CHANGE = "he_change"
HE_CHANGE_MAX = "he_change_max"


@torch.no_grad()
def hyperspherical_energy(weight: torch.Tensor, chunk_rows: int = 1024) -> float:
    """HE(V) = Σ_{i≠j} 1/‖v̂_i − v̂_j‖ over the rows (neurons) of ``weight``, v̂ = v/‖v‖.

    Computed in float64, ``chunk_rows`` rows at a time so wide layers fit in memory.
    ‖v̂_i − v̂_j‖² = 2 − 2·v̂_i·v̂_j. Two parallel neurons give +inf, as the definition does.
    """
    if weight.dim() != 2 or weight.shape[0] < 2:
        raise ValueError(f"hyperspherical_energy needs a 2-D weight with >= 2 rows, got shape {tuple(weight.shape)}")
    rows = weight.detach().to(torch.float64)
    norms = rows.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"hyperspherical_energy: row {int((norms == 0).nonzero()[0, 0])} is all zeros")
    unit = rows / norms
    total = 0.0
    for start in range(0, unit.shape[0], chunk_rows):
        block = unit[start : start + chunk_rows]
        squared = (2 - 2 * block @ unit.T).clamp_min(0)
        index = torch.arange(block.shape[0], device=block.device)
        squared[index, index + start] = float("inf")  # leave out i == j
        total += float(squared.rsqrt().sum())
    return total


def he_change_summary(relative_changes: Iterable[float]) -> dict[str, float]:
    """``HE_CHANGE`` and ``HE_CHANGE_MAX`` of the per-layer relative HE changes: every row of every
    table (the base's included) takes the same statistic."""
    magnitudes = [abs(change) for change in relative_changes]
    if not magnitudes:
        raise ValueError("he_change_summary needs at least one layer")
    return {HE_CHANGE: fmean(magnitudes), HE_CHANGE_MAX: max(magnitudes)}
