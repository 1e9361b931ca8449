"""The elementary orthogonal operators, applied to the last dimension of a batch of rows.

Every operator takes ``transpose`` so that the same code applies Q (to activations in training),
Qᵀ (to weight rows when merging) and Q⁻¹ = Qᵀ (to undo a stage). Each is orthogonal by
construction: angles enter only through cos/sin, reflections only through unit vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ropo.rotation.layout import GivensStage


def apply_givens_stage(
    x: torch.Tensor, stage: GivensStage, angles: torch.Tensor, transpose: bool = False
) -> torch.Tensor:
    """Rotate each coordinate pair of ``stage`` by its angle, in place on ``x``; returns ``x``.

    (a, b) ↦ (a·cos θ − b·sin θ, a·sin θ + b·cos θ). At θ = 0 this is exactly the identity.
    """
    cos, sin = torch.cos(angles), torch.sin(angles)
    if transpose:
        sin = -sin
    a = x.index_select(-1, stage.first)
    b = x.index_select(-1, stage.second)
    x.index_copy_(-1, stage.first, a * cos - b * sin)
    x.index_copy_(-1, stage.second, a * sin + b * cos)
    return x


def householder_pair_vectors(
    base: torch.Tensor, offset: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors (b, a) of a reflection pair H(a)·H(b), b applied first.

    b = base/‖base‖ and a = (base + offset)/‖base + offset‖: with the offset at 0 the two
    reflections coincide bit for bit, so a − b is exactly 0 and the pair is exactly I.
    """
    return F.normalize(base, dim=-1), F.normalize(base + offset, dim=-1)


def apply_householder_pair(
    x: torch.Tensor, base: torch.Tensor, offset: torch.Tensor, transpose: bool = False
) -> torch.Tensor:
    """Apply the pair of reflections H(a)·H(b) (or its transpose H(b)·H(a)) to the rows of ``x``.

    Written in terms of e = a − b (see ``householder_pair_vectors``) so that the correction to x
    is a multiple of e and vanishes exactly at initialisation:
        H(a)H(b)x = x + 2e·(s − g + 2hs) + 2b·(2hs − g),  s = b·x, g = e·x, h = e·b.
    The transpose is the same formula with the roles of a and b swapped (base a, difference −e).
    Returns a new tensor.
    """
    first, second = householder_pair_vectors(base, offset)
    if transpose:
        first, second = second, first
    diff = second - first
    s = x @ first
    g = x @ diff
    h = torch.dot(diff, first)
    hs2 = 2 * h * s
    return (
        x
        + 2 * (s - g + hs2).unsqueeze(-1) * diff
        + 2 * (hs2 - g).unsqueeze(-1) * first
    )
