"""The recipe's ``training`` section → TRL's ``DPOConfig``, checked key by key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ropo.methods import get_method
from ropo.training.recipe import Recipe, RecipeError

if TYPE_CHECKING:
    from trl import DPOConfig

#: Set from the recipe's top level; writing them under ``training`` would be ambiguous.
_RECIPE_OWNED = {"output_dir": "output_dir", "seed": "seed"}


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
    if not get_method(recipe.method).has_adapter:
        # Adapter methods get their reference from TRL's PEFT path (the adapter disabled). Full
        # fine-tuning has no adapter to disable: its reference log-probs are computed from the
        # model before step 1, or TRL would load a second full copy of the model from its path.
        if values.get("precompute_ref_log_probs") is False:
            raise RecipeError(
                f"{source}: method 'full' computes the reference log-probs before training (no second model "
                "in memory), so training.precompute_ref_log_probs must stay true"
            )
        values["precompute_ref_log_probs"] = True
    if "bf16" not in values and "fp16" not in values:
        values["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    values.setdefault("report_to", "none")
    values.setdefault("save_strategy", "steps")
    values.setdefault("logging_nan_inf_filter", False)  # the log shows a NaN loss instead of hiding it
    if not str(recipe.output_dir).strip():
        raise RecipeError(f"{source}: output_dir is empty: name the run's folder (e.g. output_dir=runs/my-run)")
    checkpoints = Path(recipe.output_dir).expanduser() / "checkpoints"
    try:
        config = DPOConfig(output_dir=str(checkpoints), seed=recipe.seed, **values)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{source}: invalid training options: {error}") from None
    check_dpo_values(config, source)
    return config


#: The loss types of TRL's ``DPOTrainer`` (its ``loss_type`` help lists them; a test keeps the two in step).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
#: Loss types that TRL's f-divergence regularisers apply to (others need ``reverse_kl``).
F_DIVERGENCE_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def check_dpo_values(config: DPOConfig, source: str) -> None:
    """Values TRL and transformers accept when the config is made but that fail (or silently
    train something else) once the model and the reference pass have loaded."""

    def refuse(key: str, rule: str) -> None:
        raise RecipeError(f"{source}: training.{key} must be {rule}, got {getattr(config, key)!r}")

    if not config.beta > 0:
        refuse("beta", "> 0 (it weighs the preference; at 0 or below DPO ignores or inverts it)")
    if config.max_steps == 0 or config.max_steps < -1:
        refuse("max_steps", "a positive number of steps (or -1: train num_train_epochs epochs)")
    if config.max_steps == -1 and not config.num_train_epochs > 0:
        refuse("num_train_epochs", "> 0 when max_steps is -1")
    if not config.learning_rate > 0:
        refuse("learning_rate", "> 0")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(config, key) < 1:
            refuse(key, ">= 1")
    for key in ("save_steps", "logging_steps"):
        if not getattr(config, key) > 0:
            refuse(key, "> 0 (a number of steps, or a fraction of the run below 1)")
    if config.eval_steps is not None and not config.eval_steps > 0:
        refuse("eval_steps", "> 0 or null")
    if config.max_length is not None and config.max_length < 2:
        refuse("max_length", "at least 2 tokens, or null")
    for key in ("weight_decay", "max_grad_norm", "label_smoothing"):
        if getattr(config, key) < 0:
            refuse(key, ">= 0")
    if config.dataloader_num_workers < 0:
        refuse("dataloader_num_workers", ">= 0")
    unknown = [loss for loss in config.loss_type if loss not in LOSS_TYPES]
    if unknown or not config.loss_type:
        refuse("loss_type", f"one or more of {list(LOSS_TYPES)}")
    if config.ld_alpha is not None and not 0 <= config.ld_alpha <= 1:
        refuse("ld_alpha", "in [0, 1] or null")
    if config.f_divergence_type not in F_DIVERGENCE_TYPES:
        refuse("f_divergence_type", f"one of {list(F_DIVERGENCE_TYPES)}")
    if config.f_divergence_type != "reverse_kl" and not set(config.loss_type) <= set(F_DIVERGENCE_LOSS_TYPES):
        refuse("f_divergence_type", f"reverse_kl with loss types outside {list(F_DIVERGENCE_LOSS_TYPES)}")
    if "robust" in config.loss_type and not config.label_smoothing < 0.5:
        refuse("label_smoothing", "below 0.5 for loss_type robust (it is the probability that a label is flipped)")
    if "exo_pair" in config.loss_type and config.label_smoothing == 0:
        refuse("label_smoothing", "> 0 for loss_type exo_pair (the EXO paper uses 1e-3)")
