"""The methods the benchmark compares, each set up on a fresh copy of the same model.

Adapters come from the one method table (``ropo.methods``). The benchmark adds the frozen
floor, and RoPO twice: with the reference operators (``ropo``) and the fused path
(``ropo_fast``, what training uses).
"""

from __future__ import annotations

from typing import Any

from peft import get_peft_model
from torch import nn

from ropo.adapter.errors import RoPOConfigError
from ropo.methods import ADAPTER_METHODS, FULL, adapter_config

#: benchmark method → (adapter method in ``ropo.methods``, options on top of its defaults).
ADAPTED: dict[str, tuple[str, dict[str, Any]]] = {
    "lora": ("lora", {}),
    "dora": ("dora", {}),
    "oft": ("oft", {}),
    "hra": ("hra", {}),
    "boft": ("boft", {}),
    "ropo": ("ropo", {"preset": "ropo-2025", "rotation_backend": "reference"}),
    "ropo_fast": ("ropo", {"preset": "ropo-2025", "rotation_backend": "auto"}),
}
#: Timed in inference mode only: RoPO folded into the weights (``merge_and_unload``), which must
#: cost exactly what the base model does.
MERGED = "ropo_merged"
INFERENCE_ONLY = (MERGED,)
METHODS = ("floor", *ADAPTED, FULL, *INFERENCE_ONLY)


def _settings(method: str) -> dict[str, Any]:
    adapter, options = ADAPTED[method]
    class_name, defaults = ADAPTER_METHODS[adapter]
    return {"peft": class_name, **defaults, **options}


#: The settings of each method, recorded in every result row.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "floor": {"description": "frozen model, forward + backward to the inputs, no adapter, no optimizer"},
    **{method: _settings(method) for method in ADAPTED},
    FULL: {"description": "every weight trained"},
    MERGED: {**_settings("ropo_fast"), "description": "ropo_fast merged into the weights (merge_and_unload)"},
}

#: ``--targets`` values and the module names they mean.
TARGETS = {"q,v": ["q_proj", "v_proj"], "all-linear": "all-linear"}


def prepare(method: str, model: nn.Module, targets: str) -> nn.Module:
    """``model`` (which it takes over) set up for training with ``method`` on ``targets``."""
    if method not in METHODS:
        raise RoPOConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if targets not in TARGETS:
        raise RoPOConfigError(f"unknown targets {targets!r}; known: {', '.join(TARGETS)}")
    if method == FULL:
        return model.requires_grad_(True)
    if method == "floor":
        model.requires_grad_(False)
        model.enable_input_require_grads()  # backward runs through every layer, as with an adapter
        return model
    if method == MERGED:
        return prepare("ropo_fast", model, targets).merge_and_unload()
    adapter, options = ADAPTED[method]
    return get_peft_model(model, adapter_config(adapter, {**options, "target_modules": TARGETS[targets]}))


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
