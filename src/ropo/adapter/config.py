"""``RoPOConfig``: a ``peft.PeftConfig``; every choice the papers leave open is a documented option."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from peft.config import PeftConfig

from ropo.errors import RoPOConfigError, RoPOLoadError
from ropo.adapter.peft_type import ROPO_PEFT_TYPE
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

#: The command that turns an adapter of the pre-PEFT format (ropo 0.1) into this one.
CONVERT_COMMAND = "ropo convert-adapter OLD_DIR NEW_DIR"


@dataclass
class RoPOConfig(PeftConfig):
    """Configuration of a RoPO adapter: y = s ⊙ (V · Q x) + b with Q orthogonal, s > 0.

    ``preset`` fills ``householder_reflections``, ``givens_layout`` and ``magnitude`` where they
    are left as ``None``; any explicit value wins.
    """

    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={
            "help": "Layers to adapt: a list of names (a module matches if its name equals an entry or ends with "
            "'.' + entry), a regex matched against the whole name, or 'all-linear' (every linear layer except "
            "the output head). None: PEFT's default for the architecture (q_proj and v_proj for Llama-like models).",
        },
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Names or a regex of modules never to adapt."}
    )
    preset: str = field(
        default="ropo-2025",
        metadata={"help": f"Which paper's settings fill the options left as None: one of {sorted(PRESETS)}."},
    )
    householder_reflections: Optional[int] = field(
        default=None,
        metadata={"help": "Global Householder reflections per layer; even, as equal pairs start at exactly I."},
    )
    givens_layout: Optional[str] = field(
        default=None,
        metadata={
            "help": "'bidirectional' (a d-1 rotation tree and the same tree reversed: 2(d-1) angles), "
            "'butterfly' (about d/2·log2 d angles) or 'none'."
        },
    )
    magnitude: Optional[bool] = field(
        default=None,
        metadata={"help": "Learn a positive per-neuron scale exp(g), g = 0 at init (no neuron can flip)."},
    )
    adapter_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of the adapter parameters and of the rotation arithmetic. It stays fixed when the model "
            "is cast (.to(bfloat16), autocast): small angles and scales need it."
        },
    )
    rotation_backend: str = field(
        default="auto",
        metadata={
            "help": "How Q·x is computed; every backend gives the same Q and gradients and saves only each "
            "layer's input. 'auto': 'triton' on CUDA when triton is installed, 'native' on the CPU when it can be "
            "built, else 'fused'. 'native': C++ kernels for the CPU, compiled on first use (needs a C++ compiler). "
            "'fused': batched block matmuls, any device. 'triton': the Triton kernels (CUDA): one kernel per "
            "rotation for the default layout with at most one reflection pair (the tree kernels), else one per "
            "level. 'triton-levels': the level kernels always, for comparison. 'reference': the plain per-stage "
            "operators, for checking."
        },
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "True: the adapter starts at exactly the identity (the model equals its base, DPO's rewards start "
            "at 0). False: random angles, unpaired reflections and perturbed magnitudes, for tests that need an "
            "adapter that changes the model."
        },
    )
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None, metadata={"help": "Only adapt these layer indices (an int or a list); None: all."}
    )
    layers_pattern: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Name of the module list holding the layers (e.g. 'layers', 'h'); with layers_to_transform."},
    )
    modules_to_save: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Modules besides the adapted layers to train fully and save (e.g. a classifier head)."},
    )
    base_architecture: Optional[dict[str, Any]] = field(
        default=None,
        metadata={
            "help": "The base model's type and layer count, recorded when the adapter is created and checked when "
            "it is loaded: an adapter for one architecture must not load silently onto another."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = ROPO_PEFT_TYPE
        if self.preset not in PRESETS:
            raise RoPOConfigError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if isinstance(self.layers_to_transform, int) and not isinstance(self.layers_to_transform, bool):
            self.layers_to_transform = [self.layers_to_transform]
        self._validate()
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)

    def _validate(self) -> None:
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                raise RoPOConfigError("target_modules: an empty string matches nothing")
            try:
                re.compile(targets)
            except re.error as error:
                raise RoPOConfigError(f"target_modules regex {targets!r} is invalid: {error}") from None
        elif targets is not None and not (
            isinstance(targets, (list, set)) and targets and all(isinstance(t, str) and t for t in targets)
        ):
            raise RoPOConfigError(
                f"target_modules must be a non-empty list of names, a regex or 'all-linear', got {targets!r}"
            )
        reflections = self.householder_reflections
        if not isinstance(reflections, int) or isinstance(reflections, bool) or reflections < 0 or reflections % 2:
            raise RoPOConfigError(
                f"householder_reflections must be an even integer >= 0 (pairs start at exactly I), got {reflections!r}"
            )
        if self.givens_layout not in GIVENS_LAYOUTS:
            raise RoPOConfigError(f"givens_layout must be one of {GIVENS_LAYOUTS}, got {self.givens_layout!r}")
        if reflections == 0 and self.givens_layout == "none":
            raise RoPOConfigError("householder_reflections=0 with givens_layout='none' leaves no rotation")
        for key in ("magnitude", "init_weights"):
            if not isinstance(getattr(self, key), bool):
                raise RoPOConfigError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise RoPOConfigError(f"adapter_dtype must be one of {sorted(ADAPTER_DTYPES)}, got {self.adapter_dtype!r}")
        if self.rotation_backend not in ROTATION_BACKENDS:
            raise RoPOConfigError(
                f"rotation_backend must be one of {ROTATION_BACKENDS}, got {self.rotation_backend!r}"
            )
        layers = self.layers_to_transform
        if layers is not None and not (
            isinstance(layers, list)
            and layers
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        ):
            raise RoPOConfigError(f"layers_to_transform must be a layer index or a non-empty list of them, got {layers!r}")
        if isinstance(targets, str) and (layers is not None or self.layers_pattern is not None):
            raise RoPOConfigError("layers_to_transform / layers_pattern cannot be used when target_modules is a regex")
        if self.layers_pattern and layers is None:
            raise RoPOConfigError("layers_pattern needs layers_to_transform")

    @property
    def torch_adapter_dtype(self) -> torch.dtype:
        return ADAPTER_DTYPES[self.adapter_dtype]

    @classmethod
    def check_kwargs(cls, **kwargs: Any) -> dict[str, Any]:
        """Called by PEFT on a saved config before it is built. Refuses ropo 0.1's format by name
        (its ``modules`` manifest) and unknown keys, which PEFT would otherwise drop with a
        warning (for ropo 0.1's files, then loading no tensors at all)."""
        if "modules" in kwargs:
            raise RoPOLoadError(
                "this adapter was saved in ropo 0.1's format, which PEFT cannot read; convert it once with "
                f"`{CONVERT_COMMAND}`"
            )
        unknown = sorted(set(kwargs) - set(cls.__dataclass_fields__))
        if unknown:  # PEFT would drop them with a warning: a typo must not pass silently
            raise RoPOLoadError(
                f"adapter_config.json: unknown key(s) {unknown}; known keys are {sorted(cls.__dataclass_fields__)}"
            )
        return super().check_kwargs(**kwargs)

    @classmethod
    def from_options(cls, values: dict[str, Any], source: str = "config") -> RoPOConfig:
        """Build a config from user options (a recipe section), refusing keys it does not know."""
        known = set(cls.__dataclass_fields__) - {"peft_type", "auto_mapping", "revision"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RoPOConfigError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**values)
        except RoPOConfigError as error:
            raise RoPOConfigError(f"{source}: {error}") from None
