"""``train(recipe)``: one DPO run, from validated inputs to a reloadable adapter."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from datasets import load_from_disk
from torch import nn

from ropo.evaluation.prompts import Prompt
from ropo.io import atomic_directory, atomic_write_text
from ropo.metrics.weights import DEFAULT_TRACKED_MODULES, tracked_layers
from ropo.training.callbacks import EnergyTracker, ProgressBar, RunMonitor
from ropo.training.data import PreferenceData, load_preference_data
from ropo.training.lengths import fit_to_max_length
from ropo.training.loading import load_base_model, load_tokenizer
from ropo.training.methods import prepare_model
from ropo.training.recipe import Recipe, RecipeError
from ropo.training.trl_config import build_dpo_config

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
ENVIRONMENT_FILE = "environment.json"
_PACKAGES = ("ropo", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "safetensors")


def final_weights_dir(run_dir: Path, method: str) -> Path:
    """Adapters go to ``adapter/``; full fine-tuning writes a whole model to ``model/``."""
    return run_dir / ("model" if method == "full" else "adapter")


def environment(recipe: Recipe) -> dict[str, Any]:
    def package_version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {name: package_version(name) for name in _PACKAGES},
        "seed": recipe.seed,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_resumable(run_dir: Path, recipe: Recipe, resume: bool) -> None:
    """Never overwrite a run by accident, and never resume it with a different recipe."""
    saved = run_dir / RECIPE_FILE
    if not resume:
        if (run_dir / "checkpoints").exists() or saved.exists():
            raise RecipeError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another output_dir")
        return
    if not saved.exists():
        raise RecipeError(f"--resume: {run_dir} holds no run to resume")
    changed = recipe_differences(run_dir, recipe)
    if changed:
        raise RecipeError(f"--resume: the recipe differs from the one {run_dir} was started with, in {changed}")


def recipe_differences(run_dir: Path, recipe: Recipe) -> list[str]:
    """The top-level recipe sections in which ``recipe`` differs from the one ``run_dir`` was started with."""
    before = yaml.safe_load((run_dir / RECIPE_FILE).read_text())
    now = recipe.to_dict()
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def last_complete_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint that was written to the end (a killed run can leave a partial one).

    The trainer writes ``trainer_state.json`` last, so its presence marks a complete checkpoint.
    """
    complete = [
        path for path in (run_dir / "checkpoints").glob("checkpoint-*")
        if path.name.removeprefix("checkpoint-").isdigit() and (path / "trainer_state.json").is_file()
    ]
    if not complete:
        raise RecipeError(f"--resume: {run_dir} has no complete checkpoint yet; start the run again without --resume")
    return max(complete, key=lambda path: int(path.name.removeprefix("checkpoint-")))


@dataclass
class TrainResult:
    run_dir: Path
    model: nn.Module


def _sample_prompts(data: PreferenceData, count: int) -> list[Prompt]:
    """The first prompts of ``data`` as single user turns (conversational: the last user message)."""
    prompts = []
    for number, row in enumerate(data.dataset.select(range(min(count, len(data.dataset)))), start=1):
        prompt = row.get("prompt")
        if data.conversational and prompt:
            prompt = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), None)
        if prompt:
            prompts.append(Prompt(id=number, turns=(prompt,), dataset="training-samples"))
    return prompts


def _write_run_files(run_dir: Path, recipe: Recipe, resume: bool, train_data: PreferenceData,
                     eval_data: PreferenceData | None, lengths) -> None:
    """The recipe, the environment, and the validated data as ``datasets`` folders.

    Training reads the data back from disk: TRL caches the reference log-probs next to a
    dataset's files, and an in-memory dataset would put them in a private temporary folder that
    the other DDP processes cannot see. It also keeps the exact rows a run trained on.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_text(run_dir / RECIPE_FILE, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    info = environment(recipe) | {
        "train_data": {"source": train_data.source, "rows": lengths.rows, "truncated_prompts": lengths.truncated_prompts},
    }
    atomic_write_text(run_dir / ENVIRONMENT_FILE, json.dumps(info, indent=2) + "\n")
    for name, data in (("train", train_data), ("eval", eval_data)):
        if data is not None:
            atomic_directory(run_dir / "data" / name, lambda tmp, d=data: d.dataset.save_to_disk(str(tmp)))


def train(recipe: Recipe, resume: bool = False) -> TrainResult:
    """Train ``recipe.method`` with DPO; returns the run directory and the trained model.

    Everything that can be checked without the model (recipe, data rows, lengths) is checked
    before the model loads, so a bad row never stops a run after step 1.
    """
    from transformers import set_seed

    from ropo.training.trainer import RoPODPOTrainer

    run_dir = Path(recipe.output_dir)
    args = build_dpo_config(recipe, "recipe")
    state = PartialState(cpu=args.use_cpu)  # the processes of this run (one, or one per DDP rank)
    _check_resumable(run_dir, recipe, resume)
    state.wait_for_everyone()
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    train_data = load_preference_data(recipe.data.train, recipe.data.split, recipe.data.max_rows)
    train_data, lengths = fit_to_max_length(train_data, tokenizer, args.max_length)
    eval_data = None
    if recipe.data.eval:
        eval_data, _ = fit_to_max_length(load_preference_data(recipe.data.eval, recipe.data.eval_split), tokenizer, args.max_length)

    with state.main_process_first():
        if state.is_main_process:
            _write_run_files(run_dir, recipe, resume, train_data, eval_data, lengths)
        train_dataset = load_from_disk(str(run_dir / "data" / "train"))
        eval_dataset = load_from_disk(str(run_dir / "data" / "eval")) if eval_data else None

    set_seed(recipe.seed)
    model = prepare_model(load_base_model(recipe.model.name_or_path, recipe.model.dtype, recipe.seed), recipe)
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    monitor = RunMonitor(
        run_dir / METRICS_FILE,
        EnergyTracker(model, tracked_layers(model, recipe.adapter.get("target_modules", DEFAULT_TRACKED_MODULES))) if recipe.metrics_every else None,
        tokenizer,
        _sample_prompts(eval_data or train_data, recipe.sample_prompts),
        recipe.sample_every,
        recipe.sample_max_new_tokens,
        recipe.metrics_every,
        {"data_chosen_length_mean": lengths.mean_chosen_tokens, "data_rejected_length_mean": lengths.mean_rejected_tokens},
    )
    started = time.perf_counter()  # includes the reference pass: it is part of DPO's cost
    trainer = RoPODPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[monitor],
    )
    trainer.remove_callback(ProgressBar.__mro__[1])
    trainer.add_callback(ProgressBar)
    trainer.train(resume_from_checkpoint=str(last_complete_checkpoint(run_dir)) if resume else None)
    if trainer.is_world_process_zero():
        _save_final(trainer, tokenizer, final_weights_dir(run_dir, recipe.method))
        summary = {
            "train_seconds": time.perf_counter() - started,
            "global_step": trainer.state.global_step,
            "trainable_params": trainable_params,
        }
        atomic_write_text(run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    return TrainResult(run_dir, trainer.accelerator.unwrap_model(trainer.model))


def _save_final(trainer, tokenizer, directory: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_directory(directory, build)
