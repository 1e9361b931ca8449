"""The weight each tracked layer computes with, whatever the method (RoPO, PEFT, full)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ropo.adapter import RoPOConfig, RoPOModel
from ropo.adapter.targets import find_target_modules

#: Layers tracked in models without adapters (full fine-tuning): the ones the papers adapt.
DEFAULT_TRACKED_MODULES = ("q_proj", "v_proj")


def tracked_layers(model: nn.Module, modules: Sequence[str] = DEFAULT_TRACKED_MODULES) -> list[str]:
    """The adapted layers of a RoPO/PEFT model; for a plain model the linear layers ``modules`` name."""
    if isinstance(model, RoPOModel):
        return list(model.adapter_layers())
    if hasattr(model, "get_base_model"):
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [n for n, m in model.get_base_model().named_modules() if isinstance(m, BaseTunerLayer)]
    return find_target_modules(model, RoPOConfig(target_modules=list(modules)))


@torch.no_grad()
def effective_weights(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weight each named layer currently computes with, as a dense (out × in) matrix.

    RoPO: diag(s)·V·Q; PEFT: the layer merged on a copy (PEFT's unmerge is not exact, so the
    live layer is never merged); full fine-tuning: the weight itself.
    """
    if isinstance(model, RoPOModel):
        layers = model.adapter_layers()
        return {name: layers[name].merged_weight() for name in names}
    if hasattr(model, "get_base_model"):
        inner = model.get_base_model()
        weights = {}
        for name in names:
            layer = copy.deepcopy(inner.get_submodule(name))
            layer.merge()
            weights[name] = layer.get_base_layer().weight.detach()
        return weights
    return {name: model.get_submodule(name).weight.detach() for name in names}
