"""The methods the benchmark compares, each set up on a fresh copy of the same model.

Baselines come from PEFT with its documented defaults (LoRA/DoRA at r=16); RoPO is the 2025
preset (2 Householder reflections, a bidirectional Givens tree, magnitudes), with the reference
operators (``ropo``) and the fused path (``ropo_fast``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.adapter.errors import RoPOConfigError
from ropo.adapter.model import get_ropo_model

METHODS = ("floor", "lora", "dora", "oft", "hra", "boft", "ropo", "ropo_fast", "full")

#: The settings of each method, recorded in every result row.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "floor": {"description": "frozen model, forward + backward to the inputs, no adapter, no optimizer"},
    "lora": {"peft": "LoraConfig", "r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
    "dora": {"peft": "LoraConfig", "r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "use_dora": True},
    "oft": {"peft": "OFTConfig", "r": 0, "oft_block_size": 32},
    "hra": {"peft": "HRAConfig", "r": 8},
    "boft": {"peft": "BOFTConfig", "boft_block_size": 4, "boft_n_butterfly_factor": 1},
    "ropo": {"preset": "ropo-2025", "rotation_backend": "reference"},
    "ropo_fast": {"preset": "ropo-2025", "rotation_backend": "auto"},
    "full": {"description": "every weight trained"},
}

#: ``--targets`` values and the module names they mean.
TARGETS = {"q,v": ["q_proj", "v_proj"], "all-linear": "all-linear"}


def _peft_config(method: str, targets: list[str] | str):
    from peft import BOFTConfig, HRAConfig, LoraConfig, OFTConfig

    settings = {k: v for k, v in METHOD_SETTINGS[method].items() if k != "peft"}
    kind = {"LoraConfig": LoraConfig, "OFTConfig": OFTConfig, "HRAConfig": HRAConfig, "BOFTConfig": BOFTConfig}
    return kind[METHOD_SETTINGS[method]["peft"]](target_modules=targets, **settings)


def prepare(method: str, model: nn.Module, targets: str) -> nn.Module:
    """``model`` (which it takes over) set up for training with ``method`` on ``targets``."""
    if method not in METHODS:
        raise RoPOConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if targets not in TARGETS:
        raise RoPOConfigError(f"unknown targets {targets!r}; known: {', '.join(TARGETS)}")
    modules = TARGETS[targets]
    if method == "full":
        return model.requires_grad_(True)
    if method == "floor":
        model.requires_grad_(False)
        model.enable_input_require_grads()  # backward runs through every layer, as with an adapter
        return model
    if method in ("ropo", "ropo_fast"):
        backend = METHOD_SETTINGS[method]["rotation_backend"]
        return get_ropo_model(model, RoPOConfig(target_modules=modules, rotation_backend=backend))
    from peft import get_peft_model

    return get_peft_model(model, _peft_config(method, modules))


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
