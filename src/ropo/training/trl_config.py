"""The recipe's ``training`` section → TRL's ``DPOConfig``, checked key by key."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from ropo.training.recipe import Recipe, RecipeError

if TYPE_CHECKING:
    from trl import DPOConfig

#: Set from the recipe's top level; writing them under ``training`` would be ambiguous.
_RECIPE_OWNED = {"output_dir": "output_dir", "seed": "seed"}
#: Methods whose reference is the policy itself before training (adapter disabled, or step 0).
PRECOMPUTED_REFERENCE = ("ropo", "full")


def _check_value(key: str, value: Any, default: Any, source: str) -> None:
    """Catch wrong types now rather than an hour into a run (DPOConfig does not check them)."""
    if value is None or default is None or default is dataclasses.MISSING:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            ok = value.is_integer()
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise RecipeError(f"{source}: training.{key} must be like {default!r}, got {value!r}")


def build_dpo_config(recipe: Recipe, source: str) -> DPOConfig:
    """A ``DPOConfig`` from ``recipe.training`` with ropo's defaults for what it leaves out."""
    from trl import DPOConfig

    fields = {f.name: f for f in dataclasses.fields(DPOConfig) if f.init}
    values = dict(recipe.training)
    for key in values:
        if key in _RECIPE_OWNED:
            raise RecipeError(f"{source}: set {_RECIPE_OWNED[key]} at the top level of the recipe, not under training")
        if key not in fields:
            raise RecipeError(f"{source}: training.{key} is not an option of TRL's DPOConfig")
        default = fields[key].default
        if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
            default = fields[key].default_factory()
        _check_value(key, values[key], default, source)
    if recipe.method in PRECOMPUTED_REFERENCE:
        if values.get("precompute_ref_log_probs") is False:
            raise RecipeError(
                f"{source}: method {recipe.method!r} computes the reference log-probs before training "
                "(from the base with the adapter off), so training.precompute_ref_log_probs must stay true"
            )
        values["precompute_ref_log_probs"] = True
    if "bf16" not in values and "fp16" not in values:
        values["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    values.setdefault("report_to", "none")
    values.setdefault("save_strategy", "steps")
    try:
        return DPOConfig(output_dir=f"{recipe.output_dir}/checkpoints", seed=recipe.seed, **values)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{source}: invalid training options: {error}") from None
