"""The RoPO tuner layer: a frozen base layer whose input is rotated and whose neurons are re-scaled.

    y = s ⊙ (V · (Q x)) + b,   s = exp(g) > 0,
    W' = diag(s) · V · Q      (the merged weight: rows keep their mutual angles, so HE is unchanged)

The base layer is called on Q·x, never re-implemented, so any layer computing V·x + b works as a
base: ``nn.Linear``, GPT-2's ``Conv1D`` (V stored transposed) and bitsandbytes' 4/8-bit layers
(QLoRA-style training; those cannot be merged). Its output already holds s-free V·Qx + b, so the
magnitude is applied as s ⊙ out + (1 − s) ⊙ b: the same two elementwise passes as scaling V·Qx
and then adding b.

Outside forward (injection, merging, HE), the base weight is read through PEFT's
``gather_params_ctx``, as PEFT's DoRA does: under DeepSpeed ZeRO-3 a weight is partitioned
outside a gather (``weight.shape`` is empty; its real shape is ``weight.ds_shape``).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from peft.utils.integrations import gather_params_ctx
from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.errors import RoPOMergeError, RoPOTargetError
from ropo.rotation import KeepsAdapterDtype, OrthogonalRotation

#: Spread of the random adapter ``init_weights=False`` makes (angles, reflection offsets,
#: log-magnitudes): large enough to change every output, small enough to stay well conditioned.
RANDOM_INIT_STD = 0.1


class NeuronMagnitude(KeepsAdapterDtype):
    """Per-output-neuron scale exp(g), g = 0 at init: positive by construction, so no neuron flips."""

    def __init__(self, out_features: int, dtype: torch.dtype, device: torch.device | str | None):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device))

    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)


def _is_conv1d(layer: nn.Module) -> bool:
    """GPT-2's ``Conv1D``: a linear layer whose weight is stored (in, out)."""
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")


def full_shape(weight: torch.Tensor) -> torch.Size:
    """A weight's shape, also when DeepSpeed ZeRO-3 has partitioned it (then in ``ds_shape``)."""
    return getattr(weight, "ds_shape", weight.shape)


def layer_features(name: str, layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a layer RoPO can adapt, or an error naming the module."""
    if _is_conv1d(layer):
        rows, columns = full_shape(layer.weight)
        return rows, columns
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    raise RoPOTargetError(
        f"module {name!r} is a {type(layer).__module__}.{type(layer).__name__}; RoPO adapts linear layers "
        "(torch.nn.Linear, GPT-2's Conv1D, bitsandbytes Linear4bit/Linear8bitLt), not embeddings or convolutions"
    )


class RoPOLayer(BaseTunerLayer):
    """Per-adapter rotations and magnitudes around one base layer (PEFT's tuner-layer protocol)."""

    adapter_layer_names = ("ropo_rotation", "ropo_magnitude")
    other_param_names = ()

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.ropo_rotation = nn.ModuleDict({})
        self.ropo_magnitude = nn.ModuleDict({})
        # The weight before merging, restored bit for bit by unmerge (a merge is not undone by
        # arithmetic); a buffer so that it follows the model's device and dtype moves.
        self.register_buffer("ropo_unmerged_weight", None, persistent=False)
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs
        self.in_features, self.out_features = layer_features(type(base_layer).__name__, self.get_base_layer())

    def update_layer(self, adapter_name: str, config: RoPOConfig) -> None:
        """Add adapter ``adapter_name``: exactly the identity, or random with ``init_weights=False``."""
        base = self.get_base_layer()
        device, dtype = base.weight.device, config.torch_adapter_dtype
        rotation = OrthogonalRotation(
            self.in_features,
            householder_reflections=config.householder_reflections,
            givens_layout=config.givens_layout,
            dtype=dtype,
            device=device,
            backend=config.rotation_backend,
        )
        magnitude = NeuronMagnitude(self.out_features, dtype, device) if config.magnitude else None
        if not config.init_weights:
            with torch.no_grad():
                for parameter in (rotation.angles, rotation.householder_offset):
                    parameter.normal_(0.0, RANDOM_INIT_STD)
                if magnitude is not None:
                    magnitude.log_scale.normal_(0.0, RANDOM_INIT_STD)
        self.ropo_rotation[adapter_name] = rotation
        if magnitude is not None:
            self.ropo_magnitude[adapter_name] = magnitude
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    # ------------------------------------------------------------------ merging
    def _weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The base weight as (out, in) rows (``Conv1D`` stores its transpose)."""
        return weight.T if _is_conv1d(self.get_base_layer()) else weight

    def _merged_rows(self, adapter_name: str, rows: torch.Tensor) -> torch.Tensor:
        """diag(s)·W·Q in the adapter's dtype: row i of W·Q is Qᵀ applied to row i of W, so Q is never formed."""
        merged = self.ropo_rotation[adapter_name].rotate(rows, transpose=True)
        if adapter_name in self.ropo_magnitude:
            merged = merged * self.ropo_magnitude[adapter_name].scale().unsqueeze(-1)
        return merged

    @torch.no_grad()
    def merged_weight(self, adapter_names: Optional[list[str]] = None) -> torch.Tensor:
        """The (out × in) weight the layer computes with for ``adapter_names`` (default: the active ones).

        A new tensor, so that it outlives the gather of a partitioned base weight.
        """
        names = self.active_adapters if adapter_names is None else adapter_names
        base = self.get_base_layer().weight
        with gather_params_ctx(base, modifier_rank=None):
            rows = self._weight_rows(self.ropo_unmerged_weight if self.merged else base)
            merged = rows.clone()
            for name in names:
                if name in self.ropo_rotation:
                    merged = self._merged_rows(name, merged)
        return merged

    def check_mergeable(self) -> None:
        """Refuse a quantized base: its packed weight cannot hold diag(s)·V·Q."""
        base = self.get_base_layer()
        if not base.weight.dtype.is_floating_point:
            raise RoPOMergeError(
                f"{type(base).__name__} holds a quantized {base.weight.dtype} weight; RoPO cannot merge into it. "
                "Load the base in a float dtype to merge, or keep the adapter unmerged"
            )

    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Fold the adapters into the base weight. ``safe_merge`` is honoured whatever its value: every
        merge checks the merged weight for NaN/Inf before the layer changes (PEFT's meaning of the flag)."""
        names = [n for n in check_adapters_to_merge(self, adapter_names) if n in self.ropo_rotation]
        if not names:
            return
        self.check_mergeable()
        base = self.get_base_layer()
        weight = base.weight
        with gather_params_ctx(weight, modifier_rank=0):  # rank 0's merged weight is re-partitioned
            rows = self._weight_rows(weight)
            for name in names:
                rows = self._merged_rows(name, rows)
            if not torch.isfinite(rows).all():
                raise RoPOMergeError(f"adapter(s) {names}: merged weight has NaN/Inf values; nothing was merged")
            if not self.merged:
                self.ropo_unmerged_weight = weight.data
            merged = rows.to(weight.dtype)
            weight.data = merged.T.contiguous() if _is_conv1d(base) else merged.contiguous()
        self.merged_adapters = self.merged_adapters + names

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the weight from before the first merge, bit for bit."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        weight = self.get_base_layer().weight
        with gather_params_ctx(weight, modifier_rank=0):
            weight.data = self.ropo_unmerged_weight
        self.ropo_unmerged_weight = None
        self.merged_adapters = []

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """diag(s)·V·Q − V (PEFT's name for what merging adds), in the adapter's dtype."""
        base = self.get_base_layer().weight
        merged = self.merged_weight([adapter_name])
        with gather_params_ctx(base, modifier_rank=None):
            return merged - self._weight_rows(base).to(merged.dtype)

    def _active(self) -> list[str]:
        return [name for name in self.active_adapters if name in self.ropo_rotation]


class RoPOLinear(nn.Module, RoPOLayer):
    """RoPO around a linear base layer (``nn.Linear``, ``Conv1D`` or a bitsandbytes linear)."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: RoPOConfig, **kwargs: Any) -> None:
        super().__init__()
        RoPOLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        active = [] if self.merged else self._active()
        if not active:
            return self.base_layer(x, *args, **kwargs)
        # The merged weight of adapters [a1, a2] is diag(s1 s2)·V·Q1·Q2: the last rotates x first.
        rotated = x
        for number, name in enumerate(reversed(active)):
            # The last rotation hands the base layer its input's dtype (the tree kernels write it
            # directly); between stacked adapters the adapter's dtype is kept.
            rotated = self.ropo_rotation[name](rotated, dtype=x.dtype if number == len(active) - 1 else None)
        result = self.base_layer(rotated, *args, **kwargs)
        scales = [self.ropo_magnitude[name].scale() for name in active if name in self.ropo_magnitude]
        if not scales:
            return result
        scale = torch.stack(scales).prod(0) if len(scales) > 1 else scales[0]
        bias = self.get_base_layer().bias
        scaled = result * scale.to(result.dtype)
        if bias is None:
            return scaled
        return scaled + (bias.to(scale.dtype) * (1 - scale)).to(result.dtype)

    def __repr__(self) -> str:
        return "ropo." + super().__repr__()
