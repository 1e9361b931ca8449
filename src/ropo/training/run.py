"""``train(spec)``: one DPO run, from a resolved run specification to reloadable weights."""

from __future__ import annotations

import contextlib
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
from datasets import Dataset, load_from_disk
from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.layout import (
    DIVERGED_FILE,
    ENVIRONMENT_FILE,
    LOCK_FILE,
    RECIPE_FILE,
    RUN_DATA_SPLITS,
    RUN_BASE_FILE,
    RUN_MARKER,
    RUN_METRICS_FILE,
    TRAIN_SUMMARY_FILE,
)
from ropo.generation import Prompt
from ropo.io import atomic_directory, atomic_write_text, drop_partial_last_line, is_disk_full
from ropo.paths import DiskFullError, FolderLock, check_output_dir, check_writable, output_path
from ropo.training import guards
from ropo.models.weights import tracked_layers
from ropo.training.callbacks import EnergyTracker, ProgressBar, RunMonitor
from ropo.training.data import PreferenceData, load_preference_data
from ropo.training.lengths import LengthReport, fit_to_max_length
from ropo.models.loading import load_base_model, load_tokenizer
from ropo.models.fingerprint import base_record
from ropo.models.runs import final_weights_dir
from ropo.training.recipe import Recipe, RecipeError
from ropo.training.spec import RunSpec, resolve

#: What a run writes into its folder: all ``--restart`` removes (anything else there is kept,
#: the user's own files in ``data/`` too).
RUN_ENTRIES = (
    RECIPE_FILE, RUN_METRICS_FILE, ENVIRONMENT_FILE, TRAIN_SUMMARY_FILE, DIVERGED_FILE, RUN_BASE_FILE,
    *(f"data/{split}" for split in RUN_DATA_SPLITS), "checkpoints", "adapter", "model",
)
_PACKAGES = ("ropo", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "safetensors")


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


def _check_run_dir(run_dir: Path, recipe: Recipe, resume: bool, force: bool, restart: bool,
                   max_steps: int) -> tuple[str, list[str]]:
    """What to do with ``run_dir`` (``new``, ``resume``, ``restart`` or ``finished``: nothing to do),
    and the recipe's changes since the run started (``recipe_changes``; none unless resuming).

    Never overwrites a run (or a folder of anything else) by accident, and never resumes a run
    with a different recipe unless ``force``.
    """
    if resume and restart:
        raise RecipeError("pass either --resume (continue the run) or --restart (start it again), not both")
    if not is_run(run_dir):
        if resume or restart:
            flag = "--resume" if resume else "--restart"
            raise RecipeError(f"{flag}: {run_dir} is not a ropo run (no {RUN_MARKER} in it); nothing was changed")
        check_output_dir(run_dir, "output_dir", force=force, ignored={LOCK_FILE})
        _refuse_to_overwrite(run_dir)
        return "new", []
    if not (run_dir / RECIPE_FILE).is_file():  # marked, then stopped before writing its recipe
        if resume:
            raise RecipeError(f"--resume: {run_dir} has no complete checkpoint yet; pass --restart to start it again from step 0")
        return ("restart" if restart else "new"), []
    if restart:
        return "restart", []
    if not resume:
        if run_finished(run_dir, recipe.method, max_steps):
            raise RecipeError(f"{run_dir} already holds a run, and it finished: pass --restart to discard it and "
                              "train again from step 0, or choose another output_dir")
        raise RecipeError(
            f"{run_dir} already holds a run: pass --resume to continue it, --restart to discard it and start "
            "again from step 0, or choose another output_dir"
        )
    changed = recipe_changes(run_dir, recipe)
    if changed and not force:
        raise RecipeError(
            f"--resume: the recipe differs from the one {run_dir} was started with, in {', '.join(changed)}; "
            "put it back, or pass --force to continue the run with the new recipe"
        )
    if run_finished(run_dir, recipe.method, max_steps):
        return "finished", changed
    last_complete_checkpoint(run_dir)  # or an error that says to --restart
    return "resume", changed


def run_finished(run_dir: Path, method: str, max_steps: int) -> bool:
    """A run whose final weights and summary were written, at ``max_steps`` (when it is set)."""
    summary = run_dir / TRAIN_SUMMARY_FILE
    if not (final_weights_dir(run_dir, method).is_dir() and summary.is_file()):
        return False
    try:
        step = json.loads(summary.read_text())["global_step"]
    except (ValueError, KeyError, TypeError):
        return False
    return max_steps <= 0 or step >= max_steps


def is_run(run_dir: Path) -> bool:
    """Whether ropo made ``run_dir``: its marker, or (runs from before the marker) its recipe
    beside the environment record only ropo writes."""
    if (run_dir / RUN_MARKER).is_file():
        return True
    try:
        environment_record = json.loads((run_dir / ENVIRONMENT_FILE).read_text())
    except (OSError, ValueError):
        return False
    written_by_ropo = isinstance(environment_record, dict) and set(environment(Recipe())) <= set(environment_record)
    return (run_dir / RECIPE_FILE).is_file() and written_by_ropo


def _refuse_to_overwrite(run_dir: Path) -> None:
    """A new run into a folder that holds files under the names a run writes (a user's own
    ``recipe.yaml``, ``data/train``): refused even with ``--force``, since they would be replaced."""
    taken = [name for name in RUN_ENTRIES if (run_dir / name).exists() or (run_dir / name).is_symlink()]
    if taken:
        raise RecipeError(
            f"output_dir {run_dir} holds {', '.join(taken)}, which a run writes; they are not a ropo run's "
            f"and would be replaced: choose another output_dir (e.g. {run_dir / 'run'})"
        )


def mark_run(run_dir: Path) -> None:
    """Write the marker that makes ``run_dir`` a run (before any of the run's own files)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_MARKER, "a ropo training run: `ropo train --restart` removes only "
                      + ", ".join(RUN_ENTRIES) + "\n")


def _restart(run_dir: Path, recipe: Recipe) -> None:
    """Remove what an earlier run wrote into ``run_dir``, and nothing else; refused (nothing
    removed) when the recipe reads its data from one of those entries."""
    import shutil

    entries = [run_dir / name for name in RUN_ENTRIES]
    for data in filter(None, (recipe.data.train, recipe.data.eval)):
        source = Path(data).expanduser().resolve()
        inside = [entry for entry in entries if entry.resolve() == source or entry.resolve() in source.parents]
        if inside:
            raise RecipeError(f"--restart: the recipe's data {data} lies in {inside[0]}, which a restart removes; "
                              "nothing was changed: move the data out of the run folder first")
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    data_dir = run_dir / "data"
    if data_dir.is_dir() and not any(data_dir.iterdir()):
        data_dir.rmdir()


def recipe_changes(run_dir: Path, recipe: Recipe) -> list[str]:
    """Each recipe value that differs from the one ``run_dir`` was started with, as
    ``key (was X, now Y)``. ``output_dir`` is left out: the folder is the run, wherever it moved."""
    before = _flatten(yaml.safe_load((run_dir / RECIPE_FILE).read_text()) or {})
    now = _flatten(recipe.to_dict())
    keys = sorted(k for k in set(before) | set(now) if k != "output_dir" and before.get(k) != now.get(k))
    return [f"{k} (was {before.get(k)!r}, now {now.get(k)!r})" for k in keys]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changed_data(run_dir: Path, name: str, data: PreferenceData) -> str | None:
    """How ``data`` differs from the rows the run saved under ``data/<name>`` (None: the same)."""
    saved_dir = run_dir / "data" / name
    if not saved_dir.is_dir():
        return f"data.{name}: the run saved no {name} rows"
    saved = load_from_disk(str(saved_dir)).to_list()
    rows = data.dataset.to_list()
    if len(saved) != len(rows):
        return f"data.{name} ({data.source}): {len(rows)} rows, the run started with {len(saved)}"
    for number, (before, now) in enumerate(zip(saved, rows), start=1):
        if before != now:
            return f"data.{name} ({data.source}): row {number} differs from the one the run started with"
    return None


def recipe_differences(run_dir: Path, recipe: Recipe) -> list[str]:
    """The top-level recipe sections in which ``recipe`` differs from the one ``run_dir`` was started with."""
    before = yaml.safe_load((run_dir / RECIPE_FILE).read_text())
    now = recipe.to_dict()
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def _checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    found = [path for path in (run_dir / "checkpoints").glob("checkpoint-*") if path.name.removeprefix("checkpoint-").isdigit()]
    return sorted(found, key=_step_in_name)


def _checkpoint_defects(run_dir: Path) -> list[tuple[Path, str | None]]:
    """Every checkpoint, oldest first, with its ``checkpoint_defect`` (None: complete)."""
    return [(path, checkpoint_defect(path)) for path in _checkpoints(run_dir)]


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints written to the end (see ``checkpoint_defect``), oldest first."""
    return [path for path, defect in _checkpoint_defects(run_dir) if defect is None]


#: The files of a checkpoint that resuming reads (weights, optimizer, scheduler, RNG states, configs);
#: an empty one of these is damage, an empty model card is not.
_RESUMED_FILE_TYPES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".json"})


def checkpoint_defect(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, in words, or None.

    Why these checks: the trainer writes ``trainer_state.json`` last, so a kill while it writes
    leaves that file cut short; a power loss can leave any file empty, or a safetensors file whose
    header is cut (resuming from either ends in a SafetensorError or JSONDecodeError traceback).
    """
    if not _state_is_whole(checkpoint / "trainer_state.json"):
        return "its trainer_state.json is missing or cut short"
    for path in sorted(checkpoint.iterdir()):
        if path.suffix in _RESUMED_FILE_TYPES and path.is_file() and path.stat().st_size == 0:
            return f"its {path.name} is empty"
        if path.suffix == ".safetensors" and not _safetensors_header_reads(path):
            return f"its {path.name} is cut short"
    return None


def _safetensors_header_reads(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as tensors:
            tensors.keys()
    except Exception:  # safetensors raises its own error type for every kind of damage
        return False
    return True


def _state_is_whole(state: Path) -> bool:
    try:
        return isinstance(json.loads(state.read_text()).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def skipped_checkpoints(run_dir: Path) -> list[str]:
    """What ``--resume`` passes over, in words: each checkpoint newer than the last complete one, and why."""
    defects = _checkpoint_defects(run_dir)
    newer = next((i for i in range(len(defects), 0, -1) if defects[i - 1][1] is None), 0)
    return [f"{path.name} ({defect})" for path, defect in defects[newer:]]


def _step_in_name(checkpoint: Path) -> int:
    """The step in a checkpoint folder's name (readable when its files are not)."""
    return int(checkpoint.name.removeprefix("checkpoint-"))


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint written to the end, or None."""
    complete = _complete_checkpoints(run_dir) if run_dir.is_dir() else []
    return complete[-1] if complete else None


def last_complete_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint that was written to the end (a killed run can leave a partial one)."""
    newest = newest_complete_checkpoint(run_dir)
    if newest is None:
        skipped = "; ".join(skipped_checkpoints(run_dir)) or "none was written"
        raise RecipeError(f"--resume: {run_dir} has no complete checkpoint ({skipped}); "
                          "pass --restart to start it again from step 0")
    return newest


@dataclass
class TrainResult:
    run_dir: Path
    #: None when the run had already finished and was left as it was (``finished``).
    model: nn.Module | None
    finished: bool = False


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


def _record_base(run_dir: Path, recipe: Recipe, resume: bool) -> None:
    """Write which base the run trains on (``RUN_BASE_FILE``); a resumed run must find the same one:
    a relative path read from another folder, or other weights at the same path, is refused."""
    record = base_record(recipe.model.name_or_path)
    saved = run_dir / RUN_BASE_FILE
    if resume and saved.is_file():
        before = json.loads(saved.read_text())
        if (record["resolved"], record["fingerprint"]) != (before["resolved"], before["fingerprint"]):
            raise RecipeError(f"--resume: {run_dir} was trained on the base {before['resolved']}; "
                              f"{recipe.model.name_or_path!r} now means {record['resolved']}, whose weights differ "
                              "or cannot be compared: point model.name_or_path at the run's base")
        return
    atomic_write_text(saved, json.dumps(record, indent=2) + "\n")


def _write_run_files(run_dir: Path, recipe: Recipe, resume: bool, train_data: PreferenceData,
                     eval_data: PreferenceData | None, lengths, changes: list[str] = ()) -> None:
    """The recipe, the environment, and the validated data as ``datasets`` folders.

    A resumed run keeps what it started with; only what ``--force`` accepted as ``changes`` is
    written again (and listed under ``resumed`` in the environment, with the resuming command).

    Training reads the data back from disk: TRL caches the reference log-probs next to a
    dataset's files, and an in-memory dataset would put them in a private temporary folder that
    the other DDP processes cannot see. It also keeps the exact rows a run trained on.
    """
    mark_run(run_dir)  # first: from here on the folder is a run (every process has checked it)
    _record_base(run_dir, recipe, resume)
    if not resume or any(not change.startswith("data.") for change in changes):
        atomic_write_text(run_dir / RECIPE_FILE, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    info = environment(recipe) | {
        "train_data": {"source": train_data.source, "rows": lengths.rows, "truncated_prompts": lengths.truncated_prompts},
    }
    if resume and (run_dir / ENVIRONMENT_FILE).is_file():
        first = json.loads((run_dir / ENVIRONMENT_FILE).read_text())
        resumed = {"started": info["started"], "command": info["command"], "packages": info["packages"], "changes": list(changes)}
        info = first | {"resumed": [*first.get("resumed", []), resumed]}
    atomic_write_text(run_dir / ENVIRONMENT_FILE, json.dumps(info, indent=2) + "\n")
    for name, data in (("train", train_data), ("eval", eval_data)):
        if data is not None and (not resume or any(c.startswith(f"data.{name}") for c in changes)):
            atomic_directory(run_dir / "data" / name, lambda tmp, d=data: d.dataset.save_to_disk(str(tmp)))


def train(spec: RunSpec | Recipe, resume: bool = False, force: bool = False, restart: bool = False) -> TrainResult:
    """Train ``spec`` (a recipe is resolved first) with DPO; returns the run directory and the trained model.

    Everything that can be checked without the model (recipe, output folder, data rows,
    lengths) is checked before the model loads, so a bad row never stops a run after step 1.
    ``resume`` continues the run in ``output_dir`` (a finished one is left as it is);
    ``restart`` discards it and starts again; ``force`` writes into a non-empty folder that
    holds no run, or resumes although the recipe or the data changed.
    """
    spec = spec if isinstance(spec, RunSpec) else resolve(spec)
    recipe = spec.recipe
    run_dir = output_path(recipe.output_dir, "output_dir")
    with contextlib.ExitStack() as held:
        try:
            return _train(spec, run_dir, resume, force, restart, held)
        except guards.NonFiniteError as error:
            raise guards.NonFiniteError(f"{error}; {_what_was_kept(run_dir, recipe.method)}") from None
        except (OSError, RuntimeError) as error:
            if not is_disk_full(error, run_dir if run_dir.exists() else None):
                raise
            raise DiskFullError(f"output_dir {run_dir}: no space left on device; {_what_was_kept(run_dir, recipe.method)}. "
                                "Free some space, then continue with --resume") from None


def _what_was_kept(run_dir: Path, method: str) -> str:
    """What a stopped run leaves for ``--resume``, in words."""
    weights = final_weights_dir(run_dir, method)
    newest = newest_complete_checkpoint(run_dir)
    if newest is not None:
        kept = f"the complete checkpoints up to {newest.name} are kept (--resume ignores an unfinished newer one)"
    else:
        kept = "no checkpoint was complete yet"
    return f"{kept}; the final {weights.name}/ was {'kept as it was' if weights.is_dir() else 'not written'}"


def _train(spec: RunSpec, run_dir: Path, resume: bool, force: bool, restart: bool,
           held: contextlib.ExitStack) -> TrainResult:
    """The phases of a run, in order: run folder, data, trainer, fit, save."""
    from transformers import set_seed

    state = PartialState(cpu=spec.dpo_config.use_cpu)  # the processes of this run (one, or one per DDP rank)
    plan, changes = _prepare_folder(spec, run_dir, resume, force, restart, held, state)
    if plan == "finished":
        return TrainResult(run_dir, None, finished=True)
    data = _prepare_data(spec, run_dir, plan == "resume", force, state, changes)
    tokenizer = data.tokenizer
    set_seed(spec.recipe.seed)
    started = time.perf_counter()  # includes the reference pass: it is part of DPO's cost
    trainer, trainable_params = _build_trainer(spec, run_dir, data, tokenizer)
    _fit(trainer, run_dir, spec.dpo_config.max_steps, plan == "resume")
    if trainer.is_world_process_zero():
        _save_final(trainer, tokenizer, final_weights_dir(run_dir, spec.recipe.method))
        summary = {
            "train_seconds": time.perf_counter() - started,
            "global_step": trainer.state.global_step,
            "trainable_params": trainable_params,
        }
        atomic_write_text(run_dir / TRAIN_SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return TrainResult(run_dir, trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False))


def _prepare_folder(spec: RunSpec, run_dir: Path, resume: bool, force: bool, restart: bool,
                    held: contextlib.ExitStack, state: PartialState) -> tuple[str, list[str]]:
    """Lock the run folder and decide what to do in it (``_check_run_dir``); a restart clears it first."""
    check_writable(run_dir, "output_dir")
    if state.is_main_process:
        held.enter_context(FolderLock(run_dir, "output_dir", LOCK_FILE))
    plan, changes = _check_run_dir(run_dir, spec.recipe, resume, force, restart, spec.dpo_config.max_steps)
    if state.is_main_process and plan in ("resume", "restart"):
        _remove_unfinished_saves(run_dir)
        if plan == "restart":
            _restart(run_dir, spec.recipe)
    return plan, changes


def _remove_unfinished_saves(run_dir: Path) -> None:
    """The hidden folders a save stopped midway leaves (``atomic_directory`` builds the final
    weights as ``.adapter.XXXX`` beside ``adapter/`` and renames it at the end)."""
    import shutil

    for name in ("adapter", "model"):
        for leftover in run_dir.glob(f".{name}.*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)


@dataclass
class _RunData:
    """What the data phase hands the trainer: the tokenizer, the fitted rows and the datasets written."""

    tokenizer: PreTrainedTokenizerBase
    train: PreferenceData
    eval: PreferenceData | None
    lengths: LengthReport
    train_dataset: Dataset
    eval_dataset: Dataset | None


def _prepare_data(spec: RunSpec, run_dir: Path, resume: bool, force: bool, state: PartialState,
                  changes: list[str]) -> _RunData:
    """Load and fit the rows, check them against a resumed run's, and write the run's files."""
    recipe, max_length = spec.recipe, spec.dpo_config.max_length
    changes = list(changes)
    state.wait_for_everyone()
    tokenizer = load_tokenizer(recipe.model.name_or_path, recipe.model.trust_remote_code)
    train_data = load_preference_data(recipe.data.train, recipe.data.split, recipe.data.max_rows)
    train_data, lengths = fit_to_max_length(train_data, tokenizer, max_length)
    eval_data = None
    if recipe.data.eval:
        eval_data, _ = fit_to_max_length(load_preference_data(recipe.data.eval, recipe.data.eval_split), tokenizer, max_length)
    if resume:
        changes += _check_same_data(run_dir, train_data, eval_data, force)
    with state.main_process_first():
        if state.is_main_process:
            _write_run_files(run_dir, recipe, resume, train_data, eval_data, lengths, changes)
            if resume:
                drop_partial_last_line(run_dir / RUN_METRICS_FILE)  # a killed run can leave half a record
        train_dataset = load_from_disk(str(run_dir / "data" / "train"))
        eval_dataset = load_from_disk(str(run_dir / "data" / "eval")) if eval_data else None
    return _RunData(tokenizer, train_data, eval_data, lengths, train_dataset, eval_dataset)


def _build_trainer(spec: RunSpec, run_dir: Path, data: _RunData, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, int]:
    """TRL's trainer with the run's monitor and guards, and its count of trainable parameters."""
    from trl import DPOTrainer

    recipe, args = spec.recipe, spec.dpo_config
    # TRL's own PEFT path for every adapter method: it wraps the model, uses the adapter-disabled
    # model as the reference (no second copy) and saves adapter-only checkpoints.
    trainer = DPOTrainer(
        model=load_base_model(recipe.model.name_or_path, recipe.model.dtype, recipe.seed, recipe.model.trust_remote_code),
        args=args,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        peft_config=spec.peft_config,
    )
    model = trainer.model
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Built before train() loads a checkpoint, so HE changes are measured from the base weights.
    monitor = RunMonitor(
        run_dir / RUN_METRICS_FILE,
        EnergyTracker(model, tracked_layers(model, spec.tracked_modules)) if recipe.metrics_every else None,
        tokenizer,
        _sample_prompts(data.eval or data.train, recipe.sample_prompts),
        recipe.sample_every,
        recipe.sample_max_new_tokens,
        recipe.metrics_every,
        {"data_chosen_mean_length": data.lengths.mean_chosen_tokens, "data_rejected_mean_length": data.lengths.mean_rejected_tokens},
    )
    trainer.add_callback(monitor)
    trainer.remove_callback(ProgressBar.__mro__[1])
    trainer.add_callback(ProgressBar)
    guards.install(trainer, magnitudes=spec.method.guards_magnitudes, hint=f"; try a lower training.learning_rate (now {args.learning_rate:g})")
    return trainer, trainable_params


def _fit(trainer, run_dir: Path, max_steps: int, resume: bool) -> None:
    """Train, from the last complete checkpoint when resuming."""
    checkpoint = last_complete_checkpoint(run_dir) if resume else None
    if checkpoint is not None and trainer.is_world_process_zero():
        for skipped in skipped_checkpoints(run_dir):
            print(f"--resume: skipping {skipped}; continuing from {checkpoint.name}", file=sys.stderr)
    if checkpoint is not None and 0 < max_steps <= checkpoint_step(checkpoint):
        _load_last_checkpoint(trainer, checkpoint)  # trained to the end, the final save failed: no extra step
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def _load_last_checkpoint(trainer, checkpoint: Path) -> None:
    """The weights and state of a checkpoint of the last step, for the final save only."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def _check_same_data(run_dir: Path, train_data: PreferenceData, eval_data: PreferenceData | None, force: bool) -> list[str]:
    """On resume, the rows must be the ones the run started with (or ``force`` accepts new ones)."""
    changed = [
        change for name, data in (("train", train_data), ("eval", eval_data))
        if data is not None and (change := _changed_data(run_dir, name, data))
    ]
    if changed and not force:
        raise RecipeError(f"--resume: {'; '.join(changed)}; put the data back, or pass --force to continue on the new rows")
    return changed


#: Added to a RoPO adapter's model card: without ``import ropo`` PEFT does not know the method,
#: and its error (``KeyError: 'ROPO'``) does not say what is missing.
LOADING_NOTE = """
## Loading this adapter

This is a RoPO adapter (PEFT type `ROPO`), trained with [ropo](https://pypi.org/project/ropo/).
PEFT knows the method once ropo is imported: `pip install ropo`, then `import ropo` before
`PeftModel.from_pretrained(base, path)`, `AutoPeftModelForCausalLM.from_pretrained(path)` or
`model.load_adapter(path)`. Without it PEFT stops with `KeyError: 'ROPO'`.
"""


def _save_final(trainer, tokenizer, directory: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = tmp / "README.md"
        if (tmp / "adapter_config.json").is_file() and card.is_file():
            card.write_text(card.read_text() + LOADING_NOTE)

    atomic_directory(directory, build)

