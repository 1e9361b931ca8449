"""A run folder's layout and loading what a run produced (or a plain model).

Here, below both training (which writes run folders) and evaluation (which reads them), so that
evaluation reads a run without importing the training package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.layout import RECIPE_FILE, RUN_BASE_FILE, RUN_METRICS_FILE
from ropo.models.fingerprint import checked_base
from ropo.adapter.api import load_adapter_model
from ropo.errors import RoPOLoadError
from ropo.methods import get_method
from ropo.models.loading import load_base_model, load_tokenizer



def final_weights_dir(run_dir: Path, method: str) -> Path:
    """Where ``method``'s final weights go (``Method.weights_dir``)."""
    return run_dir / get_method(method).weights_dir


@dataclass
class LoadedRun:
    name: str
    method: str
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    base_name_or_path: str
    metrics: list[dict[str, Any]] = field(default_factory=list)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metric records; a half-written last line (a run killed mid-write) is skipped."""
    from ropo.io import read_jsonl_records

    return read_jsonl_records(run_dir / RUN_METRICS_FILE)


def load_trained(method: str, weights: Path, base_name: str, dtype: str, seed: int = 0,
                 trust_remote_code: bool = False) -> nn.Module:
    """A run's weights (its final folder or a checkpoint): a whole model for a method without an
    adapter, else the base model with the adapter loaded onto it. ``trust_remote_code``: the run's
    own opt-in (its recipe's ``model.trust_remote_code``), never more."""
    if not get_method(method).has_adapter:
        return load_base_model(str(weights), dtype, trust_remote_code=trust_remote_code)
    return load_adapter_model(load_base_model(base_name, dtype, seed, trust_remote_code), weights)


def load_run(path: str | Path) -> LoadedRun:
    """A run directory from ``ropo train``, or a model (folder, hub id, ``default``, ``tiny:<arch>``)."""
    run_dir = Path(path)
    recipe_file = run_dir / RECIPE_FILE
    if not recipe_file.is_file():
        name = str(path)
        return LoadedRun(name=Path(name).name or name, method="base", model=load_base_model(name).eval(),
                         tokenizer=load_tokenizer(name), base_name_or_path=name)
    recipe = yaml.safe_load(recipe_file.read_text())
    method, base_name = recipe["method"], recipe["model"]["name_or_path"]
    base_file = run_dir / RUN_BASE_FILE
    if base_file.is_file():  # runs from before it name the base as written
        base_name = checked_base(json.loads(base_file.read_text()), str(run_dir))
    weights = final_weights_dir(run_dir, method)
    if not weights.is_dir():
        raise RoPOLoadError(f"{run_dir}: no trained weights in {weights.name}/ (did the run finish?)")
    remote_code = bool(recipe["model"].get("trust_remote_code", False))
    model = load_trained(method, weights, base_name, recipe["model"]["dtype"], recipe.get("seed", 0), remote_code)
    return LoadedRun(name=run_dir.name, method=method, model=model.eval(), tokenizer=load_tokenizer(str(weights), remote_code),
                     base_name_or_path=base_name, metrics=read_metrics(run_dir))
