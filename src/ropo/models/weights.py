"""The weight each tracked layer computes with, whatever the method: a PEFT adapter (RoPO's or a
baseline's) or full fine-tuning. HE is measured on these (rows as neurons)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.integrations import gather_params_ctx
from torch import nn

from ropo.adapter.layer import RoPOLayer


def unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (module names as in the base model)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _rows(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """A layer's weight as (out × in) rows: GPT-2's ``Conv1D`` stores the transpose."""
    return weight.T if type(layer).__name__ == "Conv1D" else weight


def tracked_layers(model: nn.Module, modules: Sequence[str] | str) -> list[str]:
    """The adapted layers of a PEFT model; for a plain model the linear layers ``modules`` name
    (a list of names or suffixes, or ``"all-linear"``)."""
    inner = unwrapped(model)
    adapted = [name for name, m in inner.named_modules() if isinstance(m, BaseTunerLayer)]
    if adapted:
        return adapted
    linear = [name for name, m in inner.named_modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]
    if modules == "all-linear":
        head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        return [name for name in linear if inner.get_submodule(name) is not head]
    return [name for name in linear if any(name == m or name.endswith("." + m) for m in modules)]


@torch.no_grad()
def effective_weights(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weight each named layer currently computes with, as a dense (out × in) matrix.

    Adapter layers are merged on a copy (so the live model is never touched and a merge that is
    not exactly undone, as LoRA's, cannot leak into it); RoPO layers compute theirs without a
    copy; plain layers give their weight. Weights partitioned by DeepSpeed ZeRO-3 are gathered.
    """
    inner = unwrapped(model)
    weights = {}
    for name in names:
        layer = inner.get_submodule(name)
        if isinstance(layer, RoPOLayer):
            weights[name] = layer.merged_weight()
            continue
        if isinstance(layer, BaseTunerLayer):
            layer = copy.deepcopy(layer)
            layer.merge()
            layer = layer.get_base_layer()
        with gather_params_ctx(layer.weight, modifier_rank=None):
            weights[name] = _rows(layer, layer.weight.detach()).clone()
    return weights


@torch.no_grad()
def base_weights(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The frozen weight under each named adapter layer (what it was before tuning)."""
    inner = unwrapped(model)
    weights = {}
    for name in names:
        layer = inner.get_submodule(name)
        if not isinstance(layer, BaseTunerLayer):
            raise ValueError(f"layer {name!r} has no adapter: its weight before tuning needs the base model")
        if layer.merged:
            raise ValueError(f"layer {name!r}: the adapter is merged; unmerge it or pass the base model")
        base = layer.get_base_layer()
        with gather_params_ctx(base.weight, modifier_rank=None):
            weights[name] = _rows(base, base.weight.detach()).clone()
    return weights
