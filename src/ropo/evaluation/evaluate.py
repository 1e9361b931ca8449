"""``evaluate_models``: measure each model with the measurement core, one at a time, and write the results.

A driver over ``ropo.evaluation.measure`` (as the frontier is): every model gets the same metrics,
under the catalogue's keys, with their 95 % intervals. Models come in as already-loaded
``Candidate`` objects (an iterable, so a caller can load each one only when it is its turn);
``commands.py`` is the thin CLI over this.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.layout import EVAL_FILE
from ropo.adapter import orthogonality_error
from ropo.evaluation.drift import Reference
from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.export import write_exports
from ropo.evaluation.measure import Evaluation, Measured, judge_pairs, measure_energy, measure_items, summarize
from ropo.evaluation.replicates import Draws
from ropo.generation import Generation, Prompt
from ropo.io import atomic_write_text

#: Version 3: the measurement core's metrics, with intervals (``key_ci``); version 2 had the old
#: brevity probe's ``retention_*`` and no intervals, version 1 other names (kl_to_reference, …).
FORMAT = "ropo-eval/3"


@dataclass
class Candidate:
    """A loaded model to evaluate. ``base_model`` is what it was tuned from, needed for the
    base-relative metrics when the model has no adapter to disable (full fine-tuning)."""

    name: str
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    source: str = ""
    method: str | None = None
    base_model: nn.Module | None = None
    #: The base the model was tuned from, as loaded (a run's resolved and checked base), recorded in eval.json.
    base: str | None = None


@dataclass
class ModelEvaluation:
    name: str
    source: str
    method: str | None
    role: str  # "candidate" or "baseline"
    base: str | None = None  # the base it was tuned from, as loaded
    metrics: dict[str, Any] = field(default_factory=dict)  # catalogue keys; ``key_ci``: [low, high]
    he_layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not measured, and why
    generations: list[Generation] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "generations"}


def safe_name(name: str) -> str:
    """``name`` usable as a file name (AlpacaEval's generator and MT-Bench's model_id use it too)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not cleaned:
        raise EvaluationError(f"model name {name!r} has no character usable in a file name")
    return cleaned


def _reference(candidate: Candidate) -> Reference | None:
    try:
        return Reference(candidate.model, candidate.base_model)
    except EvaluationError:
        return None


def _base_answers(reference: Reference, candidate: Candidate, evaluation: Evaluation, progress: bool) -> Measured:
    """The base's answers to the same prompts: what the candidate's win rates pair with (the
    base's knowledge is not needed for that, so it is not measured)."""
    answers_only = dataclasses.replace(evaluation, probe=(), text_passages=0, lm_eval_tasks=())
    with reference.model() as base:
        return measure_items(base, candidate.tokenizer, answers_only, is_base=True, progress=progress,
                             label=f"{candidate.name} (base)")


def evaluate_candidate(candidate: Candidate, evaluation: Evaluation, draws: Draws, baseline: Measured | None = None,
                       progress: bool = True) -> ModelEvaluation:
    """Every metric for one tuned model. Without ``baseline`` the judge compares with the model's base."""
    result = ModelEvaluation(candidate.name, candidate.source, candidate.method, "candidate", candidate.base)
    reference = _reference(candidate)
    if reference is None:
        result.notes.append("no base model: KL, base-relative retention and HE change not measured (pass --base)")
    measured = measure_items(candidate.model, candidate.tokenizer, evaluation, reference, progress=progress,
                             label=candidate.name)
    if evaluation.judge is not None and baseline is None and reference is not None:
        baseline = _base_answers(reference, candidate, evaluation, progress)
    if evaluation.judge is not None and baseline is None:
        result.notes.append("no baseline or base model to compare with: win rate not measured")
    if baseline is not None:
        judge_pairs(evaluation, measured, baseline)
    result.generations = measured.generations
    result.metrics.update(summarize(measured.items, baseline and baseline.items["answers"], evaluation, draws).metrics)
    if reference is not None:
        energy, result.he_layers = measure_energy(candidate.model, candidate.base_model, evaluation)
        result.metrics.update(energy)
    result.metrics["orthogonality_error"] = orthogonality_error(candidate.model)
    return result


def evaluate_baseline(candidate: Candidate, evaluation: Evaluation, draws: Draws,
                      progress: bool = True) -> tuple[ModelEvaluation, Measured]:
    """The fixed model every candidate is compared with, measured as they are; its win rates are
    against its own answers (every pair a tie), the line the candidates' are read against."""
    result = ModelEvaluation(candidate.name, candidate.source, candidate.method, "baseline", candidate.base)
    measured = measure_items(candidate.model, candidate.tokenizer, evaluation, progress=progress,
                             label=f"{candidate.name} (baseline)")
    judge_pairs(evaluation, measured, measured)
    result.generations = measured.generations
    result.metrics.update(summarize(measured.items, measured.items["answers"], evaluation, draws).metrics)
    return result, measured


def _generation_lines(generations: Sequence[Generation]) -> str:
    keep = ("prompt_id", "turn", "sample", "messages", "text", "num_tokens", "hit_limit")
    return "".join(json.dumps({k: getattr(g, k) for k in keep}, ensure_ascii=False) + "\n" for g in generations)


def evaluate_models(
    candidates: Iterable[Candidate],
    evaluation: Evaluation,
    output_dir: str | Path,
    baseline: Candidate | None = None,
    prompt_source: str = "",
    progress: bool = True,
) -> list[ModelEvaluation]:
    """Evaluate ``baseline`` (if given) then each candidate; after each model rewrite ``eval.json``
    and write its generations and AlpacaEval / MT-Bench files under ``output_dir``."""
    output_dir = Path(output_dir)
    document: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prompts": {"source": prompt_source, "count": len(evaluation.prompts)},
        "sampling": {**evaluation.sampling.as_dict(), "seeding": "torch.manual_seed(seed + batch index) per batch"},
        "judge": getattr(evaluation.judge, "name", None),
        "baseline": baseline.name if baseline is not None else "each model's base (adapter disabled or --base)",
        "intervals": "95 % percentile bootstrap over prompts (probe items, text passages for those metrics)",
        "models": [],
    }
    draws = evaluation.draws()
    results: list[ModelEvaluation] = []
    baseline_measured = None
    if baseline is not None:
        result, baseline_measured = evaluate_baseline(baseline, evaluation, draws, progress)
        results.append(result)
        _write(output_dir, document, results, evaluation.prompts)
    for candidate in candidates:
        if safe_name(candidate.name) in {safe_name(r.name) for r in results}:
            raise EvaluationError(f"two models are named {candidate.name!r}; give them distinct names")
        results.append(evaluate_candidate(candidate, evaluation, draws, baseline_measured, progress))
        _write(output_dir, document, results, evaluation.prompts)
    return results


def _write(
    output_dir: Path, document: dict[str, Any], results: Sequence[ModelEvaluation], prompts: Sequence[Prompt]
) -> None:
    """The latest model's generations and benchmark files, then eval.json with every model so far."""
    latest, name = results[-1], safe_name(results[-1].name)
    atomic_write_text(output_dir / "generations" / f"{name}.jsonl", _generation_lines(latest.generations))
    write_exports(output_dir, name, prompts, latest.generations)
    document["models"] = [r.as_dict() for r in results]
    atomic_write_text(output_dir / EVAL_FILE, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
