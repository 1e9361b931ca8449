"""``OrthogonalRotation``: the one rotation abstraction every path uses.

Training applies Q to activations, merging applies Qᵀ to weight rows, diagnostics apply Q to the
identity; all three go through ``OrthogonalRotation.rotate``. Q is never formed densely in
training: its cost is O(rows · d · (#reflection pairs + #Givens stages)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ropo.rotation.fused import (
    FUSED_ENGINE, AngleEngine, RotationEngine, fused_operands, givens_plan, householder_updates, rotate_by_angles,
    rotate_with, without_autocast,
)
from ropo.errors import RoPOConfigError
from ropo.rotation.layout import GivensStage, givens_angle_count, givens_stages
from ropo.rotation.native import NATIVE_ENGINE, native_applies, native_or_fallback, native_unavailable_reason
from ropo.rotation.operators import apply_givens_stage, apply_householder_pair
from ropo.rotation.triton_rotation import TRITON_ENGINE, triton_available
from ropo.rotation.triton_tree import TREE_ENGINE, tree_applies

#: How ``OrthogonalRotation.forward`` computes Q·x (the same Q and gradients, only x saved):
#: ``native`` the C++ kernels (CPU tensors, fp32 adapter; compiled on first use), ``fused`` batched
#: block matmuls (any device), ``triton`` the Triton kernels (CUDA tensors, or Triton's
#: interpreter): the tree kernels where they apply (``triton_tree.tree_applies``: the default
#: layout), the level kernels otherwise, ``triton-levels`` the level kernels always (for
#: comparison), ``auto`` Triton on CUDA when triton is installed, native on the CPU when it
#: builds, fused otherwise, ``reference`` the plain per-stage operators (slow; the definition the
#: others are tested against).
ROTATION_BACKENDS = ("auto", "native", "fused", "triton", "triton-levels", "reference")

T = TypeVar("T")


class KeepsAdapterDtype(nn.Module):
    """A module whose parameters keep their dtype through ``.to(dtype)``, ``.half()`` etc.

    Users cast whole models to bf16; the adapter must stay in its configured dtype (fp32 by
    default) or its small angles and scales lose their precision. Device moves still apply.
    """

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):
        def move_only(tensor: torch.Tensor) -> torch.Tensor:
            probe = fn(tensor.new_empty(0))
            if probe.dtype == tensor.dtype:
                return fn(tensor)
            return tensor.to(device=probe.device)

        return super()._apply(move_only, recurse)


class OrthogonalRotation(KeepsAdapterDtype):
    """Q = G_K ⋯ G_1 · P_M ⋯ P_1 on vectors of width ``dim``, exactly I at initialisation.

    P_j are pairs of Householder reflections (global: each touches every coordinate), G_k are
    stages of Givens rotations (fine-grained: each rotates disjoint coordinate pairs).

    Parameters:
      angles            all Givens angles, stage after stage (zeros at init)
      householder_base  one vector per reflection pair, random at init
      householder_offset  moves the pair's second reflection away from its first (zeros at init)

    ``backend`` picks how ``forward`` computes Q·x (see ``ROTATION_BACKENDS``); ``rotate``, used for
    merging and diagnostics, is always the reference.
    """

    def __init__(
        self,
        dim: int,
        householder_reflections: int = 2,
        givens_layout: str = "bidirectional",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in ROTATION_BACKENDS:
            raise ValueError(f"rotation backend must be one of {ROTATION_BACKENDS}, got {backend!r}")
        self.backend = backend
        if householder_reflections < 0 or householder_reflections % 2:
            raise ValueError(
                "householder_reflections must be an even number >= 0 (reflections come in pairs "
                f"so that their product starts at exactly I), got {householder_reflections}"
            )
        self.dim = dim
        self.givens_layout = givens_layout
        pairs = householder_reflections // 2
        self._add_parameter("angles", torch.zeros(givens_angle_count(dim, givens_layout), dtype=dtype, device=device))
        self._add_parameter("householder_base", torch.randn(pairs, dim, dtype=dtype, device=device))
        self._add_parameter("householder_offset", torch.zeros(pairs, dim, dtype=dtype, device=device))

    def _add_parameter(self, name: str, value: torch.Tensor) -> None:
        """A trainable parameter, or, for a part the layout leaves out (no reflections, no Givens
        stages), an empty buffer: an empty "trainable" tensor never gets a gradient, which
        optimizers and PEFT's checks of what training changed would trip over."""
        if value.numel():
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, householder_reflections={2 * self.householder_base.shape[0]}, "
            f"givens_layout={self.givens_layout!r}, givens_angles={self.angles.numel()}, "
            f"backend={self.backend!r}"
        )

    def _stages(self) -> tuple[GivensStage, ...]:
        return givens_stages(self.dim, self.givens_layout, str(self.angles.device))

    def rotate(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """Q·x (or Qᵀ·x) for every row of ``x`` (..., dim), computed in the adapter's dtype.

        Returns a new tensor in the adapter's dtype; autograd flows through every parameter.
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"rotation of width {self.dim} got input of width {x.shape[-1]}")
        x = x.to(dtype=self.angles.dtype, copy=True)
        reflections = list(zip(self.householder_base, self.householder_offset))
        stages = list(zip(self._stages(), self.angles.split([s.size for s in self._stages()])))
        if transpose:
            for stage, angles in reversed(stages):
                x = apply_givens_stage(x, stage, angles, transpose=True)
            for base, offset in reversed(reflections):
                x = apply_householder_pair(x, base, offset, transpose=True)
            return x
        for base, offset in reflections:
            x = apply_householder_pair(x, base, offset)
        for stage, angles in stages:
            x = apply_givens_stage(x, stage, angles)
        return x

    def forward(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Q·x for activations, in ``dtype`` (default: the adapter's), saving only ``x`` for backward.

        Left to autograd, every stage would keep its own copy of the activations; recomputing the
        stages in backward keeps one tensor per layer, and that tensor is the layer input, which
        sibling layers (q/k/v) share. Every backend but ``reference`` does this; ``auto`` is several
        times faster. The arithmetic is in the adapter's dtype whatever ``dtype`` is: a layer asks
        for its input's dtype, which the tree kernels write directly (no separate cast, and its
        gradient comes back in that dtype); the other paths cast their result.
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"rotation of width {self.dim} got input of width {x.shape[-1]}")
        # Under bf16/fp16 autocast the rotation still computes in the adapter's dtype: autocast
        # would run its matmuls in half precision and mix dtypes inside the fused kernels.
        with without_autocast(x.device.type):
            return self._rotate(x, dtype or self.angles.dtype)

    def _rotate(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.backend == "reference":
            if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
                return checkpoint(self.rotate, x, use_reentrant=False).to(dtype)
            return self.rotate(x).to(dtype)
        engine = self._angle_engine(x)
        if engine is not None:
            (updates,) = self._operands("updates", lambda angles, base, offset: (householder_updates(base, offset),))
            return rotate_by_angles(engine, x, updates, self.angles, self.givens_layout, dtype)
        plan = givens_plan(self.dim, self.givens_layout, str(self.angles.device))
        operands = self._operands("fused", lambda angles, base, offset: fused_operands(angles, base, offset, plan))
        return rotate_with(self._engine(x), x, plan, *operands).to(dtype)

    def _angle_engine(self, x: torch.Tensor) -> AngleEngine | None:
        """The engine taking the angles that ``backend`` means for ``x``, if any: the native kernels
        (``native``; ``auto`` on the CPU when they build) or the Triton tree kernels (``triton``;
        ``auto`` on CUDA) where they cover the rotation."""
        if self._uses_native(x):
            return NATIVE_ENGINE
        pairs = self.householder_base.shape[0]
        if (
            self.backend in ("auto", "triton")
            and self._engine(x) is TRITON_ENGINE
            and tree_applies(self.dim, self.givens_layout, pairs, self.angles.dtype)
        ):
            return TREE_ENGINE
        return None

    def _uses_native(self, x: torch.Tensor) -> bool:
        """Whether ``backend`` means the native kernels for ``x`` (``auto``: on the CPU, when they build)."""
        if self.backend == "auto":
            return native_or_fallback(x, self.angles.dtype)
        if self.backend != "native":
            return False
        if not native_applies(x, self.angles.dtype):
            raise RoPOConfigError(
                f"rotation backend 'native' needs a CPU tensor and a float32 adapter, got a {x.device.type} tensor "
                f"and a {self.angles.dtype} adapter: use rotation_backend='auto' or 'fused'"
            )
        reason = native_unavailable_reason()
        if reason is not None:
            raise RoPOConfigError(f"rotation backend 'native' could not be built ({reason}): use rotation_backend='fused'")
        return True

    def _engine(self, x: torch.Tensor) -> RotationEngine:
        """The block-matrix engine ``backend`` names for ``x`` (``auto``: Triton where it can run)."""
        if self.backend == "fused" or (self.backend == "auto" and not (x.is_cuda and triton_available(x))):
            return FUSED_ENGINE
        if not triton_available(x):
            raise RoPOConfigError(
                f"rotation backend {self.backend!r} needs triton and a CUDA tensor (or TRITON_INTERPRET=1), got a "
                f"{x.device.type} tensor: use rotation_backend='auto' or 'fused'"
            )
        return TRITON_ENGINE

    def _operands(self, kind: str, build: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], T]) -> T:
        """The small tensors an engine multiplies by (``kind``: its name), built from the angles,
        Householder base and offset by ``build``: the fused path's update vectors and block
        matrices, the native kernels' update vectors.

        In training they are rebuilt every forward (autograd needs the graph). Without grad they
        are cached for as long as the parameters hold the values they were built from: decoding
        runs one token at a time, where rebuilding them per call would cost more than the
        rotation itself (native, one token at d = 576: 95 µs rebuilt, 22 µs cached). The values
        are compared, not version counters, because trainers and loaders also write through
        ``.data``, which no counter sees.
        """
        parameters = (self.angles, self.householder_base, self.householder_offset)
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return build(*parameters)
        caches = self.__dict__.setdefault("_inference_operands", {})
        cached = caches.get(kind)
        if cached is None or not all(
            built.dtype == p.dtype and built.device == p.device and torch.equal(built, p)
            for built, p in zip(cached[0], parameters)
        ):
            with torch.no_grad():
                cached = (tuple(p.detach().clone() for p in parameters), build(*parameters))
            caches[kind] = cached
        return cached[1]

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        """Q as a dense (dim × dim) matrix. For diagnostics and tests only."""
        eye = torch.eye(self.dim, dtype=self.angles.dtype, device=self.angles.device)
        return self.rotate(eye).T

    @torch.no_grad()
    def orthogonality_error(self) -> float:
        """max |QᵀQ − I|, with the product taken in float64 so it measures Q, not the check."""
        q = self.dense().double()
        eye = torch.eye(self.dim, dtype=q.dtype, device=q.device)
        return float((q.T @ q - eye).abs().max())
