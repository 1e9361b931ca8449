"""``evaluate_models``: generate, judge and measure each model, one at a time, and write the results.

Models come in as already-loaded ``Candidate`` objects (an iterable, so a caller can load each
one only when it is its turn); ``commands.py`` is the thin CLI over this.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.layout import EVAL_FILE
from ropo.adapter import merged_for_inference, orthogonality_error
from ropo.evaluation.drift import DEFAULT_HE_MODULES, Reference, generation_kl, layer_energies
from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.export import write_exports
from ropo.generation import Generation, Prompt, SamplingSettings, generate
from ropo.evaluation.judges import Judge, judged_preferences
from ropo.evaluation.statistics import win_rate
from ropo.evaluation.retention import QAItem, lm_eval_scores, qa_probe
from ropo.io import atomic_write_text
from ropo.metrics import distinct_n, he_change_summary, length_stats, repetition_rate, self_bleu
from ropo.metrics.catalogue import REPETITION_N

#: Version 2: every metric under its catalogue key (version 1 wrote kl_to_reference, qa_accuracy, …).
FORMAT = "ropo-eval/2"


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
class EvalOptions:
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    judge: Judge | None = None
    qa_items: Sequence[QAItem] = ()  # empty: no retention probe
    lm_eval_tasks: Sequence[str] = ()
    lm_eval_limit: int | None = None
    lm_eval_chat_template: bool = False
    he_modules: Sequence[str] = DEFAULT_HE_MODULES
    progress: bool = True


@dataclass
class ModelEvaluation:
    name: str
    source: str
    method: str | None
    role: str  # "candidate" or "baseline"
    base: str | None = None  # the base it was tuned from, as loaded
    metrics: dict[str, float | None] = field(default_factory=dict)
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


def answer_metrics(generations: Sequence[Generation], max_new_tokens: int) -> dict[str, float | None]:
    """Length and diversity of a model's answers (all turns and samples)."""
    lengths = length_stats([g.num_tokens for g in generations], max_new_tokens)
    texts = [g.text for g in generations]
    groups: dict[tuple, list[str]] = defaultdict(list)
    for g in generations:
        groups[g.prompt_id, g.turn].append(g.text)
    return {
        "mean_length": lengths.mean,
        "length_median": lengths.median,
        "hit_limit_rate": lengths.hit_limit_rate,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "self_bleu": self_bleu(list(groups.values())),
        "repetition": repetition_rate(texts, REPETITION_N),
    }


def _paired(candidates: Sequence[Generation], baselines: Sequence[Generation]) -> tuple[list, list]:
    by_key = {(g.prompt_id, g.turn, g.sample): g for g in baselines}
    missing = [(g.prompt_id, g.turn, g.sample) for g in candidates if (g.prompt_id, g.turn, g.sample) not in by_key]
    if missing:
        raise EvaluationError(f"the baseline has no answer for (prompt, turn, sample) {missing[0]}")
    return [g.conversation() for g in candidates], [by_key[g.prompt_id, g.turn, g.sample].conversation() for g in candidates]


def _reference(candidate: Candidate) -> Reference | None:
    try:
        return Reference(candidate.model, candidate.base_model)
    except EvaluationError:
        return None


def evaluate_candidate(
    candidate: Candidate, prompts: Sequence[Prompt], options: EvalOptions, baseline: Sequence[Generation] | None = None
) -> ModelEvaluation:
    """Every metric for one tuned model. Without ``baseline`` the judge compares with the model's base."""
    settings, model, tokenizer = options.settings, candidate.model, candidate.tokenizer
    result = ModelEvaluation(candidate.name, candidate.source, candidate.method, "candidate", candidate.base)
    # RoPO adapters answer merged: the same model, at the base model's speed.
    with merged_for_inference(model):
        result.generations = generate(model, tokenizer, prompts, settings, options.progress, candidate.name)
    result.metrics.update(answer_metrics(result.generations, settings.max_new_tokens))
    reference = _reference(candidate)
    if reference is None:
        result.notes.append("no base model: KL, base-relative retention and HE change not measured (pass --base)")

    if options.judge is not None:
        if baseline is None and reference is not None:
            with reference.model() as base:
                baseline = generate(base, tokenizer, prompts, settings, options.progress, f"{candidate.name} (base)")
        if baseline is None:
            result.notes.append("no baseline or base model to compare with: win rate not measured")
        else:
            ours, theirs = _paired(result.generations, baseline)
            result.metrics["win_rate"] = win_rate(judged_preferences(options.judge, ours, theirs)).estimate
        if hasattr(options.judge, "score"):
            result.metrics["judge_score"] = fmean(options.judge.score([g.conversation() for g in result.generations]))

    if reference is not None:
        result.metrics["kl"] = fmean(generation_kl(model, reference, result.generations, settings.batch_size))
        energies = layer_energies(model, candidate.base_model, options.he_modules)
        result.he_layers = [e.as_dict() for e in energies]
        result.metrics.update(he_change_summary(e.relative_change for e in energies))
    result.metrics["orthogonality_error"] = orthogonality_error(model)

    if options.qa_items:
        probe = qa_probe(model, tokenizer, options.qa_items, settings.batch_size)
        result.metrics["retention_accuracy"] = probe.accuracy
        result.metrics["retention_logprob"] = probe.answer_log_likelihood
        if reference is not None:
            with reference.model() as base:
                base_probe = qa_probe(base, tokenizer, options.qa_items, settings.batch_size)
            result.metrics["qa_accuracy_base"] = base_probe.accuracy
            result.metrics["retention_logprob_change"] = probe.answer_log_likelihood - base_probe.answer_log_likelihood
    if options.lm_eval_tasks:
        result.metrics.update(lm_eval_scores(
            model, tokenizer, options.lm_eval_tasks, options.lm_eval_limit, settings.batch_size, options.lm_eval_chat_template
        ))
    return result


def evaluate_baseline(candidate: Candidate, prompts: Sequence[Prompt], options: EvalOptions) -> ModelEvaluation:
    """The fixed model every candidate is compared with: its answers' length, diversity and score."""
    result = ModelEvaluation(candidate.name, candidate.source, candidate.method, "baseline", candidate.base)
    result.generations = generate(
        candidate.model, candidate.tokenizer, prompts, options.settings, options.progress, f"{candidate.name} (baseline)"
    )
    result.metrics.update(answer_metrics(result.generations, options.settings.max_new_tokens))
    if options.judge is not None and hasattr(options.judge, "score"):
        result.metrics["judge_score"] = fmean(options.judge.score([g.conversation() for g in result.generations]))
    return result


def _generation_lines(generations: Sequence[Generation]) -> str:
    keep = ("prompt_id", "turn", "sample", "messages", "text", "num_tokens", "hit_limit")
    return "".join(json.dumps({k: getattr(g, k) for k in keep}, ensure_ascii=False) + "\n" for g in generations)


def evaluate_models(
    candidates: Iterable[Candidate],
    prompts: Sequence[Prompt],
    options: EvalOptions,
    output_dir: str | Path,
    baseline: Candidate | None = None,
    prompt_source: str = "",
) -> list[ModelEvaluation]:
    """Evaluate ``baseline`` (if given) then each candidate; after each model rewrite ``eval.json``
    and write its generations and AlpacaEval / MT-Bench files under ``output_dir``."""
    output_dir = Path(output_dir)
    document: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prompts": {"source": prompt_source, "count": len(prompts)},
        "sampling": {**options.settings.as_dict(), "seeding": "torch.manual_seed(seed + batch index) per batch"},
        "judge": getattr(options.judge, "name", None),
        "baseline": baseline.name if baseline is not None else "each model's base (adapter disabled or --base)",
        "models": [],
    }
    results: list[ModelEvaluation] = []
    baseline_generations = None
    if baseline is not None:
        results.append(evaluate_baseline(baseline, prompts, options))
        baseline_generations = results[-1].generations
        _write(output_dir, document, results, prompts)
    for candidate in candidates:
        if safe_name(candidate.name) in {safe_name(r.name) for r in results}:
            raise EvaluationError(f"two models are named {candidate.name!r}; give them distinct names")
        results.append(evaluate_candidate(candidate, prompts, options, baseline_generations))
        _write(output_dir, document, results, prompts)
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
