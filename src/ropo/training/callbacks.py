"""What a run shows and records while it trains: a progress bar and a JSONL metrics log with
TRL's metrics plus RoPO's own (orthogonality error, hyperspherical-energy drift, lengths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from ropo.adapter import orthogonality_error
from ropo.io import atomic_write_text, follow_umask, read_jsonl_records
from ropo.metrics import he_change_summary, hyperspherical_energy
from ropo.generation import Prompt, SamplingSettings, generate
from ropo.metrics.lengths import LengthStats, length_stats
from ropo.models.weights import effective_weights


class ProgressBar(ProgressCallback):
    """The usual step bar with ETA, showing loss and reward margin instead of printing dicts."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {"loss": logs.get("loss"), "margin": logs.get("rewards/margins")}
            self.training_bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items() if v is not None})


class EnergyTracker:
    """Hyperspherical energy of the tracked layers, relative to their values before training."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.names = names
        self.base = {n: hyperspherical_energy(w) for n, w in effective_weights(model, names).items()}

    def changes(self, model: nn.Module) -> dict[str, float]:
        now = {n: hyperspherical_energy(w) for n, w in effective_weights(model, self.names).items()}
        return {n: (now[n] - self.base[n]) / self.base[n] for n in self.names}


def sample_lengths(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], max_new_tokens: int
) -> LengthStats:
    """Length of greedy answers to ``prompts`` (counted as ``ropo eval`` counts them)."""
    was_training = model.training
    settings = SamplingSettings(max_new_tokens=max_new_tokens, do_sample=False, samples_per_prompt=1)
    try:
        answers = generate(model, tokenizer, prompts, settings, progress=False)
    finally:
        model.train(was_training)
    return length_stats([answer.num_tokens for answer in answers], max_new_tokens)


class RunMonitor(TrainerCallback):
    """Appends one JSON object per logging step to ``metrics.jsonl`` (only on the main process).

    Every ``metrics_every`` steps it adds the orthogonality error (RoPO) and the relative HE
    change of each tracked layer; every ``sample_every`` steps the mean length of greedy answers
    to a few fixed prompts. The first record carries the data's mean chosen/rejected lengths.
    """

    def __init__(
        self,
        path: Path,
        energy: EnergyTracker | None,
        tokenizer: PreTrainedTokenizerBase,
        sample_prompts: list[Prompt],
        sample_every: int,
        sample_max_new_tokens: int,
        metrics_every: int,
        data_lengths: dict[str, float],
    ) -> None:
        self.path = path
        self.energy = energy
        self.tokenizer = tokenizer
        self.sample_prompts = sample_prompts
        self.sample_every = sample_every
        self.sample_max_new_tokens = sample_max_new_tokens
        self.metrics_every = metrics_every
        self.data_lengths = data_lengths

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                follow_umask(checkpoint)

    def on_train_begin(self, args, state, control, **kwargs):
        """On resume, drop records past the checkpoint so the log has each step once."""
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = [record for record in read_jsonl_records(self.path) if record["step"] <= state.global_step]
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def _due(self, every: int, state) -> bool:
        return every > 0 and (state.global_step % every == 0 or state.global_step >= state.max_steps)

    def extra_metrics(self, model: nn.Module, state) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if state.global_step <= max(1, state.logging_steps):
            record.update(self.data_lengths)
        if self.energy is not None and self._due(self.metrics_every, state):
            error = orthogonality_error(model)
            if error is not None:
                record["orthogonality_error"] = error
            changes = self.energy.changes(model)
            record.update(he_change_summary(changes.values()))
            record.update({f"he_change/{name}": value for name, value in changes.items()})
        if self.sample_prompts and self._due(self.sample_every, state):
            lengths = sample_lengths(model, self.tokenizer, self.sample_prompts, self.sample_max_new_tokens)
            record["sample_mean_length"] = lengths.mean
            record["sample_hit_limit"] = lengths.hit_limit_rate
        return record

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **logs}
        if "loss" in logs:  # a training step's log, not the closing summary or an evaluation
            record.update(self.extra_metrics(model, state))
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
