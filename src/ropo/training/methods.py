"""The methods one harness trains: RoPO, full fine-tuning, and PEFT's LoRA, DoRA, OFT and HRA."""

from __future__ import annotations

from typing import Any

from torch import nn

from ropo.adapter import RoPOConfig, RoPOError, get_ropo_model
from ropo.metrics.weights import DEFAULT_TRACKED_MODULES
from ropo.training.recipe import Recipe, RecipeError

#: PEFT baselines with the usual defaults of their papers / PEFT docs; the recipe's ``adapter``
#: section overrides any of them.
PEFT_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
    "dora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "use_dora": True},
    "oft": {"r": 0, "oft_block_size": 32},
    "hra": {"r": 8},
}


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
    values = {"target_modules": list(DEFAULT_TRACKED_MODULES), **PEFT_DEFAULTS[recipe.method], **options, "task_type": "CAUSAL_LM"}
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
