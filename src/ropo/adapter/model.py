"""``RoPOModel``: a causal LM with RoPO adapters, behaving like the model it wraps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.adapter.errors import RoPOLoadError
from ropo.adapter.files import AdapterFiles, read_adapter, read_config, write_adapter
from ropo.adapter.layer import RoPOLinear, check_adaptable, finite_merged_weights
from ropo.adapter.targets import find_target_modules


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _adapter_state(layers: dict[str, RoPOLinear]) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value
        for name, layer in layers.items()
        for key, value in layer.named_parameters()
        if not key.startswith("base_layer.")
    }


class RoPOModel(nn.Module):
    """Wraps a transformers causal LM; every attribute it does not define falls through to it.

    The LM is kept as ``wrapped_model``, not ``base_model``: TRL and transformers expect
    ``model.base_model`` to be the backbone (e.g. ``LlamaModel``), which the fall-through gives.
    """

    def __init__(
        self,
        model: nn.Module,
        config: RoPOConfig,
        layers: dict[str, RoPOLinear] | None = None,
    ) -> None:
        super().__init__()
        if any(isinstance(m, RoPOLinear) for m in model.modules()):
            raise ValueError("this model already has RoPO adapters; wrap the original model once")
        if layers is None:
            layers = {name: RoPOLinear(model.get_submodule(name), config) for name in find_target_modules(model, config)}
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for name, layer in layers.items():
            _set_submodule(model, name, layer)
        self.wrapped_model = model
        self.ropo_config = config

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "wrapped_model":
                raise
            return getattr(self.wrapped_model, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped_model(*args, **kwargs)

    # ----------------------------------------------------------------- adapter layers
    def adapter_layers(self) -> dict[str, RoPOLinear]:
        """The adapted layers by their name in the wrapped model."""
        return {n: m for n, m in self.wrapped_model.named_modules() if isinstance(m, RoPOLinear)}

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within this block the model is exactly the base model (the reference policy for DPO)."""
        layers = self.adapter_layers().values()
        previous = [layer.adapter_enabled for layer in layers]
        for layer in layers:
            layer.adapter_enabled = False
        try:
            yield
        finally:
            for layer, enabled in zip(layers, previous):
                layer.adapter_enabled = enabled

    def orthogonality_error(self) -> float:
        """max over adapted layers of max|QᵀQ − I| (forms each Q densely: a diagnostic)."""
        return max(layer.rotation.orthogonality_error() for layer in self.adapter_layers().values())

    # ----------------------------------------------------------------- merging
    def merge_adapter(self) -> None:
        """Fold the adapters into the weights (fast inference); ``unmerge_adapter`` undoes it exactly.

        The original weights are kept while merged, so the round trip is bit for bit. If any
        merged weight is non-finite nothing is changed.
        """
        layers = {n: l for n, l in self.adapter_layers().items() if not l.merged}
        for name, weight in finite_merged_weights(layers).items():
            layers[name].merge(weight)

    def unmerge_adapter(self) -> None:
        for layer in self.adapter_layers().values():
            layer.unmerge()

    @contextlib.contextmanager
    def merged(self) -> Iterator[None]:
        """Within this block the adapters are folded into the weights, so inference (e.g. token
        by token generation) costs exactly the base model's; afterwards the weights are restored
        bit for bit. Layers that were already merged stay merged."""
        was_merged = {name for name, layer in self.adapter_layers().items() if layer.merged}
        self.merge_adapter()
        try:
            yield
        finally:
            for name, layer in self.adapter_layers().items():
                if name not in was_merged:
                    layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """The wrapped model with merged plain ``nn.Linear`` layers (no ropo code left in it)."""
        layers = self.adapter_layers()
        merged = finite_merged_weights({n: l for n, l in layers.items() if not l.merged})
        for name, layer in layers.items():
            if name in merged:
                layer.base_layer.weight.data = merged[name]
            _set_submodule(self.wrapped_model, name, layer.base_layer)
        return self.wrapped_model

    # ----------------------------------------------------------------- parameters
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts, like PEFT's."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} "
            f"|| trainable%: {100 * trainable / total:.4f}"
        )

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, save_directory: str | Path, **_: Any) -> None:
        """Write the adapter only (``adapter_config.json`` + ``adapter_model.safetensors``)."""
        layers = self.adapter_layers()
        modules = {n: (l.base_layer.out_features, l.base_layer.in_features) for n, l in layers.items()}
        write_adapter(save_directory, AdapterFiles(self.ropo_config, modules, _adapter_state(layers)))

    def load_adapter_weights(self, adapter_directory: str | Path) -> None:
        """Load saved adapter values into this model's existing adapters (e.g. to resume training)."""
        files = read_adapter(adapter_directory)
        _copy_adapter_tensors(_adapter_state(self.adapter_layers()), files.tensors, str(adapter_directory))

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, adapter_directory: str | Path, is_trainable: bool = False
    ) -> RoPOModel:
        """Attach a saved adapter to ``model``; checks everything first, so a failure changes nothing."""
        files = read_adapter(adapter_directory)
        layers = _build_matching_layers(model, files, str(adapter_directory))
        wrapped = cls(model, files.config, layers)
        for parameter in _adapter_state(layers).values():
            parameter.requires_grad_(is_trainable)
        return wrapped


def _build_matching_layers(model: nn.Module, files: AdapterFiles, source: str) -> dict[str, RoPOLinear]:
    """Adapter layers for ``model`` filled from ``files``, or a RoPOLoadError saying what differs."""
    modules = dict(model.named_modules())
    missing = [name for name in files.modules if name not in modules]
    if missing:
        raise RoPOLoadError(
            f"{source}: the base model ({type(model).__name__}) has no module(s) {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + f"; the adapter was made for {files.config.base_model_name_or_path!r}"
        )
    mismatched = []
    for name, (out_features, in_features) in files.modules.items():
        check_adaptable(name, modules[name])
        base = (modules[name].out_features, modules[name].in_features)
        if base != (out_features, in_features):
            mismatched.append(f"{name}: adapter (out, in)={(out_features, in_features)}, base {base}")
    if mismatched:
        raise RoPOLoadError(f"{source}: shapes differ from the base model: " + "; ".join(mismatched[:5]))
    layers = {name: RoPOLinear(modules[name], files.config) for name in files.modules}
    _copy_adapter_tensors(_adapter_state(layers), files.tensors, source)
    return layers


def _copy_adapter_tensors(
    parameters: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str
) -> None:
    """Copy saved tensors into adapter parameters after checking every key and shape."""
    missing = sorted(set(parameters) - set(tensors))
    unexpected = sorted(set(tensors) - set(parameters))
    if missing or unexpected:
        raise RoPOLoadError(
            f"{source}: tensors do not match the adapter: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, parameter in parameters.items():
        if tensors[key].shape != parameter.shape:
            raise RoPOLoadError(
                f"{source}: tensor {key} has shape {tuple(tensors[key].shape)}, expected {tuple(parameter.shape)}"
            )
    with torch.no_grad():
        for key, parameter in parameters.items():
            parameter.copy_(tensors[key])


def get_ropo_model(model: nn.Module, config: RoPOConfig | None = None) -> RoPOModel:
    """Freeze ``model`` and add RoPO adapters to the layers ``config`` selects (identity at init)."""
    return RoPOModel(model, config or RoPOConfig())


class AutoRoPOModelForCausalLM:
    """Load base model and adapter in one call, like PEFT's ``AutoPeftModelForCausalLM``."""

    @staticmethod
    def from_pretrained(adapter_directory: str | Path, is_trainable: bool = False, **model_kwargs: Any) -> RoPOModel:
        from transformers import AutoModelForCausalLM

        config, _ = read_config(adapter_directory)
        if not config.base_model_name_or_path:
            raise RoPOLoadError(
                f"{adapter_directory}: the adapter does not record its base model; "
                "load the base yourself and call RoPOModel.from_pretrained(base, path)"
            )
        base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, **model_kwargs)
        return RoPOModel.from_pretrained(base, adapter_directory, is_trainable=is_trainable)
