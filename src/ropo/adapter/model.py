"""``RoPOModel``: RoPO as a PEFT tuner (``BaseTuner``), plus the checks PEFT's own path lacks.

PEFT does the plumbing (target matching, injection, several adapters, saving, loading, merging
and unloading). ropo adds what its users rely on and PEFT does not check:
- every target is validated before anything is injected (a typo in one name, an output head or
  an unsupported layer type is an error naming the module, and the model is left untouched);
- the adapter records the base architecture and refuses to load onto another;
- loading refuses a checkpoint whose keys or shapes do not match the adapter exactly (PEFT warns
  and carries on, leaving the missing parts at their initial values);
- adapter parameters keep their configured dtype (PEFT upcasts bf16 adapters to fp32).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    _maybe_include_all_linear_layers,
    check_adapters_to_merge,
)
from peft.utils import TRANSFORMERS_MODELS_TO_HRA_TARGET_MODULES_MAPPING
from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.errors import RoPOLoadError, RoPOMergeError, RoPOTargetError
from ropo.adapter.layer import RoPOLayer, RoPOLinear, layer_features


def _architecture(model_config: dict[str, Any]) -> dict[str, Any]:
    """What identifies a base model's shape for an adapter: its type and layer count."""
    keys = ("model_type", "num_hidden_layers")
    return {key: model_config[key] for key in keys if model_config.get(key) is not None}


def _output_modules(model: nn.Module) -> set[int]:
    """ids of the model's output head and embeddings (RoPO rotates layer inputs, not vocabularies)."""
    found = {id(m) for m in model.modules() if isinstance(m, nn.Embedding)}
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return found | ({id(head)} if head is not None else set())


class RoPOModel(BaseTuner):
    """Creates RoPO adapters on a model: use ``peft.get_peft_model(model, RoPOConfig(...))``.

    Attributes: ``model`` (the adapted model), ``peft_config`` (adapter name → ``RoPOConfig``).
    """

    prefix: str = "ropo_"
    tuner_layer_cls = RoPOLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_HRA_TARGET_MODULES_MAPPING

    # ------------------------------------------------------------------ injection
    def _prepare_adapter_config(self, peft_config: RoPOConfig, model_config: dict) -> RoPOConfig:
        peft_config = super()._prepare_adapter_config(peft_config, model_config)
        found = _architecture(model_config)
        recorded = peft_config.base_architecture
        if recorded is None:
            peft_config.base_architecture = found
        elif recorded != found:
            differs = sorted(k for k in set(recorded) | set(found) if recorded.get(k) != found.get(k))
            raise RoPOLoadError(
                f"the adapter was made for a base with {recorded} (from {peft_config.base_model_name_or_path!r}); "
                f"this base has {found}: {', '.join(differs)} differ"
            )
        return peft_config

    def _prepare_model(self, peft_config: RoPOConfig, model: nn.Module) -> None:
        """Validate every target before any is replaced, so that a bad one changes nothing."""
        config = copy.copy(peft_config)
        if isinstance(config.target_modules, str) and config.target_modules.lower() == "all-linear":
            config = _maybe_include_all_linear_layers(config, model)
        modules = dict(model.named_modules())
        inside_tuners = tuple(f"{k}." for k, m in modules.items() if isinstance(m, BaseTunerLayer))
        outputs = _output_modules(model)
        matched = []
        for key, module in modules.items():
            # falsy for non-matches and for excluded modules alike
            if not key or key.startswith(inside_tuners) or not self._check_target_module_exists(config, key):
                continue
            if id(module) in outputs:
                raise RoPOTargetError(
                    f"module {key!r} is the model's output head or an embedding; RoPO adapts the linear layers "
                    "inside the model (leave it out of target_modules, or use modules_to_save to train it fully)"
                )
            if not isinstance(module, RoPOLayer):
                layer_features(key, module)
            matched.append(key)
        if not matched and config.layers_to_transform is not None:
            raise RoPOTargetError(
                f"layers_to_transform={config.layers_to_transform} (layers_pattern={config.layers_pattern!r}) "
                f"leaves none of the modules target_modules={config.target_modules!r} names"
            )
        if isinstance(config.target_modules, (set, list)):
            # a typo is a name no module has; a module that exclude_modules or modules_to_save takes out is no typo
            names = [k for k in modules if k and not k.startswith(inside_tuners)]
            unmatched = sorted(t for t in config.target_modules if not any(k == t or k.endswith("." + t) for k in names))
            if unmatched and config.layers_to_transform is None:
                suffixes = sorted({k.rsplit(".", 1)[-1] for k, m in modules.items() if isinstance(m, nn.Linear)})
                raise RoPOTargetError(
                    f"target_modules {unmatched} match no module of {type(model).__name__}; "
                    f"its linear layers end in {suffixes}"
                )
        if not matched:
            raise RoPOTargetError(f"target_modules {config.target_modules!r} match no module of {type(model).__name__}")

    def _create_and_replace(
        self,
        ropo_config: RoPOConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if current_key is None:
            raise ValueError("Current Key shouldn't be `None`")
        if isinstance(target, RoPOLayer):
            target.update_layer(adapter_name, ropo_config)
            return
        new_module = RoPOLinear(target, adapter_name, config=ropo_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter is not trainable until set_adapter
        self._replace_module(parent, target_name, new_module, target)

    # ------------------------------------------------------------------ merging
    def _check_merge_is_finite(self, adapter_names: list[str] | None) -> None:
        """Every layer's merged weight is checked before any layer changes: PEFT merges layer by
        layer, and a NaN found in the tenth layer would leave nine merged."""
        for name, layer in self.adapter_layers().items():
            names = check_adapters_to_merge(layer, adapter_names)
            if names:
                layer.check_mergeable()
            if names and not torch.isfinite(layer.merged_weight(names)).all():
                raise RoPOMergeError(f"module {name!r}: merged weight has NaN/Inf values; nothing was merged")

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Merge into every layer, or into none: every layer's merged weight is checked finite first, so
        ``safe_merge`` (PEFT's flag for that check) holds whatever its value."""
        self._check_merge_is_finite(adapter_names)
        super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def _unload_and_optionally_merge(self, merge: bool = True, progressbar: bool = False,
                                     safe_merge: bool = False, adapter_names: list[str] | None = None):
        if merge:
            self._check_merge_is_finite(adapter_names)
        return super()._unload_and_optionally_merge(merge, progressbar, safe_merge, adapter_names)

    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """PEFT drops ``adapter_names=`` (mixed adapter batches) silently for tuners without this
        hook; RoPO rotates the whole batch's inputs with one Q per layer, so it refuses instead."""
        if kwargs.get("adapter_names") is not None:
            raise ValueError("RoPO does not support mixed adapter batches (adapter_names=...); use set_adapter()")
        yield

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """No-op: the adapter dtype is ``RoPOConfig.adapter_dtype``, fixed at creation."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: RoPOConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """PEFT's remapping, then a strict check: every adapter tensor present, none unknown, every shape right."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        own = {
            key: value for key, value in model.state_dict().items()
            if f".{cls.prefix}" in key and f".{adapter_name}." in key
        }
        missing = sorted(set(own) - set(remapped))
        unexpected = sorted(k for k in remapped if f".{cls.prefix}" in k and k not in own)
        if missing or unexpected:
            raise RoPOLoadError(
                f"the saved adapter does not match this model: {len(missing)} tensor(s) missing {missing[:3]}, "
                f"{len(unexpected)} unexpected {unexpected[:3]}"
            )
        wrong = [
            f"{key}: saved {tuple(remapped[key].shape)}, model {tuple(value.shape)}"
            for key, value in sorted(own.items()) if remapped[key].shape != value.shape
        ]
        if wrong:
            raise RoPOLoadError("saved adapter shapes differ from the model: " + "; ".join(wrong[:3]))
        return remapped

    # ------------------------------------------------------------------ RoPO's own
    @staticmethod
    def from_pretrained(model: nn.Module, adapter_directory: str | Path, is_trainable: bool = False, **kwargs: Any):
        """ropo 0.1's loader, now ``PeftModel.from_pretrained`` (returns the ``PeftModel``)."""
        from ropo.adapter.api import load_adapter_model

        return load_adapter_model(model, adapter_directory, is_trainable=is_trainable, **kwargs)

    def adapter_layers(self) -> dict[str, RoPOLayer]:
        """The adapted layers by their name in the adapted model."""
        return {name: m for name, m in self.model.named_modules() if isinstance(m, RoPOLayer)}

    @torch.no_grad()
    def orthogonality_error(self) -> float:
        """max |QᵀQ − I| over every active rotation (≈1e-7 in fp32)."""
        return orthogonality_error(self.model)

    def merged_for_inference(self) -> contextlib.AbstractContextManager[None]:
        """See :func:`merged_for_inference` (named apart from a layer's ``merged``, which is a bool)."""
        return merged_for_inference(self.model)


@contextlib.contextmanager
def merged_for_inference(model: nn.Module) -> Iterator[None]:
    """Within this block the RoPO adapters in ``model`` are folded into the weights, so inference
    (token by token generation) costs exactly the base model's; afterwards the weights are
    restored bit for bit. Layers already merged stay merged; other adapters are left alone (their
    unmerge is not exact)."""
    layers = [layer for layer in model.modules() if isinstance(layer, RoPOLayer) and not layer.merged]
    for layer in layers:
        layer.merge()
    try:
        yield
    finally:
        for layer in layers:
            if layer.merged:
                layer.unmerge()


@torch.no_grad()
def orthogonality_error(model: nn.Module) -> float | None:
    """max |QᵀQ − I| over the RoPO rotations in ``model`` (a PEFT model or any module); None if it has none."""
    errors = [
        rotation.orthogonality_error()
        for layer in model.modules() if isinstance(layer, RoPOLayer)
        for name, rotation in layer.ropo_rotation.items() if name in layer.active_adapters
    ]
    return max(errors) if errors else None
