"""A recipe's method as what TRL's ``DPOTrainer`` takes: a PEFT config, or None for full fine-tuning."""

from __future__ import annotations

from peft import PeftConfig

from ropo.methods import DEFAULT_TARGET_MODULES, FULL, MethodError, adapter_config
from ropo.training.recipe import Recipe, RecipeError


def build_adapter_config(recipe: Recipe, source: str) -> PeftConfig | None:
    """The ``peft_config`` for ``recipe.method`` (None for ``full``), checked without a model."""
    if recipe.method == FULL:
        if set(recipe.adapter) - {"target_modules"}:
            raise RecipeError(f"{source}: method 'full' takes no adapter options except target_modules (tracked for HE)")
        return None
    try:
        return adapter_config(recipe.method, recipe.adapter, f"{source}: adapter")
    except MethodError as error:
        raise RecipeError(str(error)) from None


def tracked_module_names(recipe: Recipe) -> tuple[str, ...] | str:
    """The layers whose HE a full fine-tuning run tracks (adapter runs track their adapted layers)."""
    return recipe.adapter.get("target_modules", DEFAULT_TARGET_MODULES)
