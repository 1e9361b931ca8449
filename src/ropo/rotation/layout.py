"""Which coordinate pairs each Givens stage rotates.

A *stage* is a set of disjoint coordinate pairs, so all its rotations commute and can be applied
at once. Layouts work for any width d, not only powers of two.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

GIVENS_LAYOUTS = ("bidirectional", "butterfly", "none")

_Factory = TypeVar("_Factory", bound=Callable)


def tensor_cache(factory: _Factory) -> _Factory:
    """``functools.lru_cache`` for the functions that build a rotation's constant tensors (index
    plans, identities), which build them outside inference mode. Built first under
    ``torch.inference_mode()`` (an evaluation, decoding), they would be inference tensors for the rest
    of the process, and a later training step that saves one for backward would fail ("Inference
    tensors cannot be saved for backward"): a study that measures one RoPO run and then trains the next
    in the same process did."""

    @functools.lru_cache(maxsize=None)
    @functools.wraps(factory)
    def cached(*args, **kwargs):
        with torch.inference_mode(False):
            return factory(*args, **kwargs)

    return cached  # type: ignore[return-value]


@dataclass(frozen=True)
class GivensStage:
    """One parallel stage: rotate coordinate ``first[k]`` with ``second[k]`` for every k."""

    first: torch.Tensor
    second: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.first.numel())


def _stride_pairs(dim: int, stride: int, butterfly: bool) -> list[int]:
    """Left members of the pairs (i, i + stride) of one stage.

    Tree: i runs over multiples of 2·stride, so each stage merges neighbouring groups and the
    whole tree has exactly dim − 1 rotations. Butterfly: every i whose bit for ``stride`` is 0.
    """
    if butterfly:
        return [i for i in range(dim) if not i & stride and i + stride < dim]
    return [i for i in range(0, dim, 2 * stride) if i + stride < dim]


def _stages(dim: int, butterfly: bool) -> list[tuple[list[int], list[int]]]:
    stages = []
    stride = 1
    while stride < dim:
        first = _stride_pairs(dim, stride, butterfly)
        stages.append((first, [i + stride for i in first]))
        stride *= 2
    return stages


@tensor_cache
def givens_stages(dim: int, layout: str, device: str = "cpu") -> tuple[GivensStage, ...]:
    """The stages of ``layout`` for width ``dim``, cached per device.

    - ``bidirectional`` (the 2024 paper's "bidirectional integrated Givens"): a log-depth tree of
      dim − 1 rotations that connects every coordinate, followed by the same tree in reverse
      order; 2(dim − 1) angles.
    - ``butterfly``: a denser FFT-like pattern, about (dim / 2)·log2(dim) angles.
    - ``none``: no Givens rotations (Householder reflections only).
    """
    if layout not in GIVENS_LAYOUTS:
        raise ValueError(f"givens_layout must be one of {GIVENS_LAYOUTS}, got {layout!r}")
    if dim < 1:
        raise ValueError(f"rotation width must be positive, got {dim}")
    if layout == "none":
        pairs = []
    elif layout == "butterfly":
        pairs = _stages(dim, butterfly=True)
    else:
        tree = _stages(dim, butterfly=False)
        pairs = tree + tree[::-1]
    return tuple(
        GivensStage(
            torch.tensor(first, dtype=torch.long, device=device),
            torch.tensor(second, dtype=torch.long, device=device),
        )
        for first, second in pairs
    )


def givens_angle_count(dim: int, layout: str) -> int:
    """Number of trainable angles ``layout`` gives a width-``dim`` rotation."""
    return sum(stage.size for stage in givens_stages(dim, layout))


@tensor_cache
def givens_pairs(dim: int, layout: str, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The two coordinates each angle rotates, in angle order (stage after stage), as int32: the
    native kernels walk them one rotation at a time."""
    stages = givens_stages(dim, layout, device)
    if not stages:
        empty = torch.zeros(0, dtype=torch.int32, device=device)
        return empty, empty
    return tuple(torch.cat([getattr(s, side) for s in stages]).to(torch.int32).contiguous() for side in ("first", "second"))
