"""The recipe's ``training`` section → TRL's ``DPOConfig``, checked key by key."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TYPE_CHECKING, Any

import torch

from ropo.training.recipe import Recipe, RecipeError

if TYPE_CHECKING:
    from trl import DPOConfig

#: Set from the recipe's top level; writing them under ``training`` would be ambiguous.
_RECIPE_OWNED = {"output_dir": "output_dir", "seed": "seed"}
#: Methods whose reference is the policy itself before training (adapter disabled, or step 0).
PRECOMPUTED_REFERENCE = ("ropo", "full")


_SCALARS = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def _check_value(key: str, value: Any, annotation: Any, source: str) -> None:
    """Catch wrong types now rather than an hour into a run (DPOConfig does not check them).

    Only plain scalar annotations (``bool``, ``int``, ``float``, ``str``, optionally ``| None``)
    are checked; richer ones (lists, unions, enums) are left to TRL.
    """
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else (annotation,)
    scalars = [t for t in options if t is not type(None)]
    if len(scalars) != 1 or scalars[0] not in _SCALARS:
        return
    if value is None and type(None) in options:
        return
    kind = scalars[0]
    if not isinstance(value, _SCALARS[kind]) or (kind is not bool and isinstance(value, bool)):
        raise RecipeError(f"{source}: training.{key} must be {kind.__name__}, got {value!r}")


def build_dpo_config(recipe: Recipe, source: str) -> DPOConfig:
    """A ``DPOConfig`` from ``recipe.training`` with ropo's defaults for what it leaves out."""
    from trl import DPOConfig

    fields = {f.name: f for f in dataclasses.fields(DPOConfig) if f.init}
    annotations = typing.get_type_hints(DPOConfig)
    values = dict(recipe.training)
    for key in values:
        if key in _RECIPE_OWNED:
            raise RecipeError(f"{source}: set {_RECIPE_OWNED[key]} at the top level of the recipe, not under training")
        if key not in fields:
            raise RecipeError(f"{source}: training.{key} is not an option of TRL's DPOConfig")
        _check_value(key, values[key], annotations.get(key), source)
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
