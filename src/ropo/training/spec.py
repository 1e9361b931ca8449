"""A parsed recipe resolved once into what a run trains: the recipe, its PEFT config and its ``DPOConfig``.

The middle step of ``ropo train`` (parse → resolve → train): both configs are built here, before
any model loads, so that every error a value can cause is raised first, and then handed to
``ropo.training.run.train`` as they are rather than built again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peft import PeftConfig

from ropo.methods import Method, MethodError, get_method
from ropo.training.recipe import Recipe, RecipeError, parse_recipe
from ropo.training.trl_config import build_dpo_config

if TYPE_CHECKING:
    from trl import DPOConfig


@dataclass(frozen=True)
class RunSpec:
    """Everything one run trains with, checked."""

    recipe: Recipe
    method: Method
    peft_config: PeftConfig | None  # None: no adapter, every weight trains
    dpo_config: DPOConfig

    @property
    def tracked_modules(self) -> tuple[str, ...] | str:
        """The layers whose hyperspherical energy the run tracks."""
        return self.method.tracked_modules(self.recipe.adapter)


def resolve(recipe: Recipe, source: str = "recipe") -> RunSpec:
    """The run specification of ``recipe``; a ``RecipeError`` naming the key and ``source`` otherwise."""
    method = get_method(recipe.method, source)
    try:
        peft_config = method.peft_config(recipe.adapter, f"{source}: adapter" if method.has_adapter else source)
    except MethodError as error:
        raise RecipeError(str(error)) from None
    return RunSpec(recipe, method, peft_config, build_dpo_config(recipe, source))


def load_spec(path: str | Path | None, overrides: list[str] = (), settings: Mapping[str, Any] | None = None) -> RunSpec:
    """A recipe file (or the defaults) plus typed ``settings`` and ``key=value`` overrides, parsed and resolved."""
    return resolve(*parse_recipe(path, overrides, settings))


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """A recipe file plus overrides, checked as completely as resolving it checks it."""
    return load_spec(path, overrides).recipe
