"""``RoPOLinear``: a frozen ``nn.Linear`` whose input is rotated and whose neurons are re-scaled.

    y = s ⊙ (V · (Q x)) + b,   s = exp(g) (so m = ‖V‖_row · s stays positive),
    W' = diag(s) · V · Q      (the merged weight: rows keep their mutual angles, so HE is unchanged)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.adapter.errors import RoPOMergeError, RoPOTargetError
from ropo.rotation import KeepsAdapterDtype, OrthogonalRotation


class NeuronMagnitude(KeepsAdapterDtype):
    """Per-output-neuron scale exp(g), g = 0 at init: positive by construction, so no neuron flips."""

    def __init__(self, out_features: int, dtype: torch.dtype, device: torch.device | str | None):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device))

    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)


def check_adaptable(name: str, module: nn.Module) -> None:
    """Raise if RoPO cannot adapt ``module`` (only plain floating-point ``nn.Linear`` is supported)."""
    if not isinstance(module, nn.Linear):
        raise RoPOTargetError(
            f"module {name!r} is a {type(module).__module__}.{type(module).__name__}; RoPO adapts "
            "torch.nn.Linear layers only (GPT-2's Conv1D, embeddings and convolutions are not supported)"
        )
    if not module.weight.dtype.is_floating_point:
        raise RoPOTargetError(
            f"module {name!r} has a {module.weight.dtype} weight ({type(module).__name__}); "
            "quantised layers are not supported"
        )


class RoPOLinear(nn.Module):
    """Wraps a frozen linear layer; ``base_layer`` is left untouched until merged."""

    def __init__(self, base_layer: nn.Linear, config: RoPOConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        device, dtype = base_layer.weight.device, config.torch_adapter_dtype
        self.rotation = OrthogonalRotation(
            base_layer.in_features,
            householder_reflections=config.householder_reflections,
            givens_layout=config.givens_layout,
            dtype=dtype,
            device=device,
            backend=config.rotation_backend,
        )
        self.magnitude = (
            NeuronMagnitude(base_layer.out_features, dtype, device) if config.magnitude else None
        )
        self.adapter_enabled = True
        self._unmerged_weight: torch.Tensor | None = None

    @property
    def merged(self) -> bool:
        return self._unmerged_weight is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self.adapter_enabled:
            return self.base_layer(x)
        rotated = self.rotation(x).to(x.dtype)
        weight, bias = self.base_layer.weight, self.base_layer.bias
        if self.magnitude is None:
            return F.linear(rotated, weight, bias)
        y = F.linear(rotated, weight) * self.magnitude.scale().to(x.dtype)
        return y if bias is None else y + bias

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """diag(s)·V·Q in the base weight's dtype, computed in the adapter's dtype.

        Row i of V·Q is Qᵀ applied to row i of V, so merging never forms Q densely.
        """
        weight = self.base_layer.weight if not self.merged else self._unmerged_weight
        merged = self.rotation.apply(weight, transpose=True)
        if self.magnitude is not None:
            merged = merged * self.magnitude.scale().unsqueeze(-1)
        return merged.to(weight.dtype)

    @torch.no_grad()
    def merge(self, merged_weight: torch.Tensor) -> None:
        """Install ``merged_weight`` (from ``merged_weight()``), keeping the original for unmerge."""
        if not self.merged:
            self._unmerged_weight = self.base_layer.weight.data
            self.base_layer.weight.data = merged_weight

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the original weight bit for bit."""
        if self.merged:
            self.base_layer.weight.data = self._unmerged_weight
            self._unmerged_weight = None


def finite_merged_weights(layers: dict[str, RoPOLinear]) -> dict[str, torch.Tensor]:
    """Every layer's merged weight, or an error naming the first non-finite one (before any change)."""
    merged = {}
    for name, layer in layers.items():
        weight = layer.merged_weight()
        if not torch.isfinite(weight).all():
            raise RoPOMergeError(f"module {name!r}: merged weight has NaN/Inf values; nothing was merged")
        merged[name] = weight
    return merged
