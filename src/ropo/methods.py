"""The one table of the methods ropo trains and benchmarks against each other.

Every adapter method is a PEFT config: RoPO's own and PEFT's baselines with the usual defaults
of their papers / PEFT's docs (LoRA/DoRA at r=16). ``full`` (plain DPO) trains every weight.
``ropo train`` and ``ropo bench`` both read this table, so a baseline means the same thing in
both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peft import PeftConfig

from ropo.adapter import RoPOConfig, RoPOError

#: Full fine-tuning: no adapter, every weight trained.
FULL = "full"

#: method → (PEFT config class name, its defaults). Options given by the user override them.
ADAPTER_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ropo": ("RoPOConfig", {}),
    "lora": ("LoraConfig", {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}),
    "dora": ("LoraConfig", {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "use_dora": True}),
    "oft": ("OFTConfig", {"r": 0, "oft_block_size": 32}),
    "hra": ("HRAConfig", {"r": 8}),
    "boft": ("BOFTConfig", {"boft_block_size": 4, "boft_n_butterfly_factor": 1}),
}

#: The layers adapted when nothing else is said (and tracked for HE in full fine-tuning): the
#: ones the papers adapt.
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")


class MethodError(RoPOError, ValueError):
    """An unknown method or an option its config does not take."""


def config_class(name: str) -> type[PeftConfig]:
    """The config class ``ADAPTER_METHODS`` names (RoPO's or one of PEFT's)."""
    if name == "RoPOConfig":
        return RoPOConfig
    import peft

    return getattr(peft, name)


def adapter_config(method: str, options: Mapping[str, Any] | None = None, source: str = "adapter") -> PeftConfig:
    """The PEFT config of ``method`` with its defaults, overridden by ``options``; errors name ``source``."""
    if method not in ADAPTER_METHODS:
        raise MethodError(f"{source}: unknown adapter method {method!r}; known: {', '.join(ADAPTER_METHODS)}")
    class_name, defaults = ADAPTER_METHODS[method]
    values = {"target_modules": list(DEFAULT_TARGET_MODULES), **defaults, **(options or {}), "task_type": "CAUSAL_LM"}
    if method == "ropo":
        try:
            return RoPOConfig.from_options(values, source=source)
        except RoPOError as error:
            raise MethodError(str(error)) from None
    try:
        return config_class(class_name)(**values)
    except (TypeError, ValueError) as error:
        raise MethodError(f"{source}: options for {method!r} ({class_name}): {error}") from None
