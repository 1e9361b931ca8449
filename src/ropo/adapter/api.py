"""ropo 0.1's entry points, kept as thin names over PEFT's (the objects they return are PEFT's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peft import AutoPeftModelForCausalLM, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.errors import RoPOError, RoPOLoadError
from ropo.paths import is_local_path


def get_ropo_model(model: nn.Module, config: RoPOConfig | None = None, adapter_name: str = "default") -> PeftModel:
    """``peft.get_peft_model`` with a RoPO config: freezes ``model``, adds adapters (identity at init)."""
    return get_peft_model(model, config or RoPOConfig(), adapter_name=adapter_name)


def _check_adapter_files(directory: Path) -> None:
    """Read a local adapter folder's files before PEFT touches the model: PEFT injects the
    adapter layers first and reads the weights after, so a bad file would leave the base changed."""
    config = directory / CONFIG_NAME
    if not config.is_file():
        raise RoPOLoadError(f"{config}: not found (is {directory} an adapter directory?)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RoPOLoadError(f"{config}: not valid JSON ({error})") from None
    weights = directory / SAFETENSORS_WEIGHTS_NAME
    if weights.is_file():
        try:
            load_file(weights)
        except (SafetensorError, OSError, ValueError) as error:
            raise RoPOLoadError(f"{weights}: cannot be read, the file is truncated or corrupt ({error})") from None


def _checked_local_adapter(adapter: str | Path) -> str:
    """A local adapter folder expanded and read (see ``_check_adapter_files``); a hub id as it is."""
    if not is_local_path(adapter):
        return str(adapter)
    directory = Path(adapter).expanduser()
    if not directory.is_dir():
        raise RoPOLoadError(f"{directory}: no such adapter folder")
    _check_adapter_files(directory)
    return str(directory)


def _remove_new_tuner_layers(model: nn.Module, before: set[int]) -> None:
    """Put back the base layers PEFT injected before a load failed (they were never merged)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and id(module) not in before:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if not before and hasattr(model, "peft_config"):
        del model.peft_config


def load_adapter_model(model: nn.Module, adapter: str | Path, is_trainable: bool = False, **kwargs: Any) -> PeftModel:
    """``PeftModel.from_pretrained`` for any adapter (RoPO's or a baseline's) that leaves ``model``
    as it was when the adapter does not fit: a local folder's files are read first, and layers
    injected before a failing check are taken out again. Also ropo 0.1's ``RoPOModel.from_pretrained``."""
    adapter = _checked_local_adapter(adapter)
    before = {id(m) for m in model.modules() if isinstance(m, BaseTunerLayer)}
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=is_trainable, **kwargs)
    except RoPOError:
        _remove_new_tuner_layers(model, before)
        for parameter, requires_grad in trainable:  # PEFT froze the base
            parameter.requires_grad_(requires_grad)
        raise


class AutoRoPOModelForCausalLM:
    """Base model and adapter in one call: ``AutoPeftModelForCausalLM`` under ropo 0.1's name."""

    @staticmethod
    def from_pretrained(adapter_directory: str | Path, is_trainable: bool = False, **kwargs: Any) -> PeftModel:
        adapter = _checked_local_adapter(adapter_directory)
        return AutoPeftModelForCausalLM.from_pretrained(adapter, is_trainable=is_trainable, **kwargs)
