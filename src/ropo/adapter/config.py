"""``RoPOConfig``: every choice the papers leave open is an explicit, documented option."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ropo.adapter.errors import RoPOConfigError
from ropo.rotation.layout import GIVENS_LAYOUTS
from ropo.rotation.module import ROTATION_BACKENDS

#: Settings that reproduce each paper; explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # arXiv 2409.14836: bidirectional integrated Givens rotations + neuron magnitudes.
    "ropo-2024": {"householder_reflections": 0, "givens_layout": "bidirectional", "magnitude": True},
    # arXiv 2508.17637 (EMNLP 2025): adds global Householder reflections (multi-granularity).
    "ropo-2025": {"householder_reflections": 2, "givens_layout": "bidirectional", "magnitude": True},
}

ADAPTER_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class RoPOConfig:
    """Configuration of a RoPO adapter.

    Args:
        target_modules: which ``nn.Linear`` layers to adapt. A list of names (a module matches if
            its full name equals an entry or ends with ``"." + entry``), a regular expression
            (matched against the whole module name), or ``"all-linear"`` (every linear layer
            except the output head).
        preset: ``"ropo-2025"`` (default: Householder + Givens + magnitude) or ``"ropo-2024"``
            (Givens + magnitude). Fills the three options below when they are left as ``None``.
        householder_reflections: number of global Householder reflections per layer; even, since
            they are initialised as equal pairs whose product is exactly I.
        givens_layout: ``"bidirectional"`` (a d−1 rotation tree and the same tree reversed,
            2(d−1) angles), ``"butterfly"`` (denser, about d/2·log2 d angles) or ``"none"``.
        magnitude: learn a positive per-neuron magnitude m = ‖v_i‖·exp(g_i), g_i = 0 at init.
        adapter_dtype: dtype of the adapter parameters and of the rotation arithmetic; it stays
            fixed when the model is cast (``float32`` by default, also for bf16/fp16 models).
        rotation_backend: how training applies the rotation: ``"auto"`` (default) uses the fused
            path (the same Q and gradients, saving only each layer's input: Triton kernels on a
            CUDA device when triton is installed, a few batched matmuls elsewhere);
            ``"reference"`` the plain per-stage operators (slower; for checking).
        layers_to_transform: only adapt these layer indices (an int or a list); ``None`` = all.
        layers_pattern: the name of the module list holding the layers (e.g. ``"layers"``, ``"h"``);
            ``None`` recognises the usual names.
        base_model_name_or_path: where the base model came from; filled in by ``get_ropo_model``
            from ``model.name_or_path`` so that an adapter directory can load its own base.
    """

    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])
    preset: str = "ropo-2025"
    householder_reflections: int | None = None
    givens_layout: str | None = None
    magnitude: bool | None = None
    adapter_dtype: str = "float32"
    rotation_backend: str = "auto"
    layers_to_transform: list[int] | int | None = None
    layers_pattern: str | None = None
    base_model_name_or_path: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise RoPOConfigError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self._validate()

    def _validate(self) -> None:
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                raise RoPOConfigError("target_modules: an empty string matches nothing")
        elif not (
            isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
        ):
            raise RoPOConfigError(
                f"target_modules must be a non-empty list of names, a regex or 'all-linear', got {targets!r}"
            )
        if (
            not isinstance(self.householder_reflections, int)
            or isinstance(self.householder_reflections, bool)
            or self.householder_reflections < 0
            or self.householder_reflections % 2
        ):
            raise RoPOConfigError(
                "householder_reflections must be an even integer >= 0 (pairs start at exactly I), "
                f"got {self.householder_reflections!r}"
            )
        if self.givens_layout not in GIVENS_LAYOUTS:
            raise RoPOConfigError(
                f"givens_layout must be one of {GIVENS_LAYOUTS}, got {self.givens_layout!r}"
            )
        if self.householder_reflections == 0 and self.givens_layout == "none":
            raise RoPOConfigError("householder_reflections=0 with givens_layout='none' leaves no rotation")
        if not isinstance(self.magnitude, bool):
            raise RoPOConfigError(f"magnitude must be true or false, got {self.magnitude!r}")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise RoPOConfigError(
                f"adapter_dtype must be one of {sorted(ADAPTER_DTYPES)}, got {self.adapter_dtype!r}"
            )
        if self.rotation_backend not in ROTATION_BACKENDS:
            raise RoPOConfigError(
                f"rotation_backend must be one of {ROTATION_BACKENDS}, got {self.rotation_backend!r}"
            )
        layers = self.layers_to_transform
        if isinstance(layers, int) and not isinstance(layers, bool):
            self.layers_to_transform = layers = [layers]
        if layers is not None and not (
            isinstance(layers, list)
            and layers
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        ):
            raise RoPOConfigError(
                f"layers_to_transform must be a layer index or a non-empty list of them, got {layers!r}"
            )

    @property
    def torch_adapter_dtype(self) -> torch.dtype:
        return ADAPTER_DTYPES[self.adapter_dtype]

    def to_dict(self) -> dict[str, Any]:
        return {"peft_type": "ROPO", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RoPOConfig:
        """Build a config, refusing keys it does not know (a typo must not pass silently)."""
        values = dict(values)
        peft_type = values.pop("peft_type", "ROPO")
        if peft_type != "ROPO":
            raise RoPOConfigError(f"{source}: peft_type is {peft_type!r}, not a RoPO adapter")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RoPOConfigError(
                f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        try:
            return cls(**values)
        except RoPOConfigError as error:
            raise RoPOConfigError(f"{source}: {error}") from None
