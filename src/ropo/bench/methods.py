"""The methods the benchmark compares, each set up on a fresh copy of the same model.

Every row but the frozen floor is a benchmark variant of a method of the registry
(``ropo.methods``): RoPO twice, with the reference operators (``ropo``) and the fused path
(``ropo_fast``, what training uses), and once merged into the weights (``ropo_merged``, timed in
inference mode only: it must cost exactly what the base model does).
"""

from __future__ import annotations

from typing import Any

from peft import get_peft_model
from torch import nn

from ropo.errors import RoPOConfigError
from ropo.methods import DEFAULT_TARGET_MODULES, REGISTRY, BenchVariant, Method, find_method

#: The frozen model, forward + backward to the inputs: what any method costs at least.
FLOOR = "floor"
#: benchmark name → (registry method, variant), in the order the registry lists them.
VARIANTS: dict[str, tuple[Method, BenchVariant]] = {v.name: (m, v) for m in REGISTRY.values() for v in m.bench}
INFERENCE_ONLY = tuple(name for name, (_, variant) in VARIANTS.items() if variant.merged)
METHODS = (FLOOR, *(name for name in VARIANTS if name not in INFERENCE_ONLY), *INFERENCE_ONLY)


def _variant(name: str) -> tuple[Method, BenchVariant] | None:
    """The registry's variant ``name`` (``lora-r<k>`` included), or None."""
    if name in VARIANTS:
        return VARIANTS[name]
    method = find_method(name)
    return (method, method.bench[0]) if method is not None and method.name == name and method.bench else None


def _settings(method: Method, variant: BenchVariant) -> dict[str, Any]:
    if not method.has_adapter:
        return {"description": variant.description}
    described = {"description": variant.description} if variant.description else {}
    return {"peft": method.config_class, **method.defaults, **variant.options, **described}


#: The settings of each method, recorded in every result row.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    FLOOR: {"description": "frozen model, forward + backward to the inputs, no adapter, no optimizer"},
    **{name: _settings(*pair) for name, pair in VARIANTS.items()},
}

#: ``--targets`` values and the module names they mean.
TARGETS = {"q,v": list(DEFAULT_TARGET_MODULES), "all-linear": "all-linear"}


def is_method(name: str) -> bool:
    return name == FLOOR or _variant(name) is not None


def method_settings(name: str) -> dict[str, Any]:
    """What a result row records about ``name``."""
    return METHOD_SETTINGS[name] if name in METHOD_SETTINGS else _settings(*_variant(name))


def inference_only(name: str) -> bool:
    """Timed in inference mode only (folded into the weights)."""
    return name in INFERENCE_ONLY


def trains_every_weight(name: str) -> bool:
    """A method without an adapter: in inference mode it is the floor again."""
    entry = _variant(name)
    return entry is not None and not entry[0].has_adapter


def prepare(method: str, model: nn.Module, targets: str) -> nn.Module:
    """``model`` (which it takes over) set up for training with ``method`` on ``targets``."""
    if not is_method(method):
        raise RoPOConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}, lora-r<k>")
    if targets not in TARGETS:
        raise RoPOConfigError(f"unknown targets {targets!r}; known: {', '.join(TARGETS)}")
    if method == FLOOR:
        model.requires_grad_(False)
        model.enable_input_require_grads()  # backward runs through every layer, as with an adapter
        return model
    entry, variant = _variant(method)
    if not entry.has_adapter:
        return model.requires_grad_(True)
    config = entry.peft_config({**variant.options, "target_modules": TARGETS[targets]}, source=f"bench {method}")
    peft_model = get_peft_model(model, config)
    return peft_model.merge_and_unload() if variant.merged else peft_model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
