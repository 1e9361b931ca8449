"""The methods one harness trains: RoPO, full fine-tuning, and PEFT's LoRA, DoRA, OFT and HRA."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ropo.adapter import RoPOConfig, RoPOError, RoPOModel, get_ropo_model
from ropo.training.recipe import Recipe, RecipeError

#: PEFT baselines with the usual defaults of their papers / PEFT docs; the recipe's ``adapter``
#: section overrides any of them.
PEFT_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
    "dora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "use_dora": True},
    "oft": {"r": 0, "oft_block_size": 32},
    "hra": {"r": 8},
}
DEFAULT_TARGETS = ["q_proj", "v_proj"]


def build_adapter_config(recipe: Recipe, source: str) -> Any:
    """RoPOConfig or a PEFT config for ``recipe.method`` (None for full fine-tuning)."""
    options = dict(recipe.adapter)
    if recipe.method == "full":
        if set(options) - {"target_modules"}:
            raise RecipeError(f"{source}: method 'full' takes no adapter options except target_modules (tracked for HE)")
        return None
    if recipe.method == "ropo":
        try:
            return RoPOConfig.from_dict(options, source=f"{source}: adapter")
        except RoPOError as error:
            raise RecipeError(str(error)) from None
    import peft

    config_class = {"lora": peft.LoraConfig, "dora": peft.LoraConfig, "oft": peft.OFTConfig, "hra": peft.HRAConfig}
    values = {"target_modules": DEFAULT_TARGETS, **PEFT_DEFAULTS[recipe.method], **options, "task_type": "CAUSAL_LM"}
    try:
        return config_class[recipe.method](**values)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{source}: adapter options for {recipe.method!r}: {error}") from None


def prepare_model(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Wrap or unfreeze ``model`` as ``recipe.method`` trains it."""
    config = build_adapter_config(recipe, "recipe")
    if recipe.method == "full":
        return model
    if recipe.method == "ropo":
        return get_ropo_model(model, config)
    from peft import get_peft_model

    return get_peft_model(model, config)


def tracked_module_names(model: nn.Module, recipe: Recipe) -> list[str]:
    """The linear layers whose neuron geometry (HE) is tracked: the adapted ones, or for full
    fine-tuning the ones RoPO would adapt with the recipe's target_modules."""
    if isinstance(model, RoPOModel):
        return list(model.adapter_layers())
    if recipe.method == "full":
        from ropo.adapter.targets import find_target_modules

        targets = recipe.adapter.get("target_modules", DEFAULT_TARGETS)
        return find_target_modules(model, RoPOConfig(target_modules=targets))
    from peft.tuners.tuners_utils import BaseTunerLayer

    inner = model.get_base_model()
    return [name for name, module in inner.named_modules() if isinstance(module, BaseTunerLayer)]


@torch.no_grad()
def effective_weights(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The weight each tracked layer currently computes with, as a dense (out × in) matrix.

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
