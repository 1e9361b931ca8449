"""One point of a frontier: every metric of one checkpoint (or of the base), with its interval.

Why the metrics are listed once here: the study writes them, the plots draw them, the report
shows them and the tests check them, and a metric renamed in one place but not another would
silently vanish from the others. ``frontier.json`` carries this list, so readers need not import it.

Every answer-level number is computed on the same held-out prompts and samples for every point,
and paired with the base's answer to the same (prompt, turn, sample): the win rates are pairwise
judgements against the base, the retention change is paired over the probe's questions.
Intervals are 95 % percentile-bootstrap intervals over prompts (probe questions for retention),
from ``ropo.evaluation.statistics``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.adapter import merged_for_inference
from ropo.evaluation.drift import DEFAULT_HE_MODULES, Reference, generation_kl, layer_energies
from ropo.evaluation.evaluate import answer_metrics
from ropo.generation import Generation, Prompt, SamplingSettings, generate
from ropo.evaluation.judges import PointwiseJudge
from ropo.evaluation.retention import QAItem, QAResult, qa_probe
from ropo.metrics.catalogue import CATALOGUE, CI_SUFFIX, metric
from ropo.metrics.energy import HE_CHANGE, he_change_summary
from ropo.evaluation.statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Interval,
    bootstrap_mean,
    length_controlled_win_rate,
    preferences,
    win_rate,
)

#: Bumped when what a point holds or how it is computed changes: older cached points are then not reused.
POINT_FORMAT = "ropo-frontier-point/1"
#: The untuned model's method, series and (with step 0) point.
BASE = "base"


#: Every number measured at every point, the base included (declared in the metric catalogue).
METRICS = tuple(CATALOGUE[key] for key in (
    "kl", "judge_score", "win_rate", "lc_win_rate", "mean_length", "hit_limit_rate", "distinct_1", "distinct_2",
    "self_bleu", "repetition", "retention_accuracy", "retention_change", "retention_log_likelihood", "he_change"))
#: TRL's training-side symptoms of over-fitting up to the checkpoint (trained points only; see
#: ``training_symptoms``): chosen and rejected log-probs both falling is DPO's known failure.
TRAINING_METRICS = tuple(CATALOGUE[key] for key in ("logps/chosen", "logps/rejected", "rewards/margins"))
#: ``answer_metrics``' names → the point's.
_ANSWER_KEYS = {key: metric(key).eval_key or key
                for key in ("hit_limit_rate", "distinct_1", "distinct_2", "self_bleu", "repetition")}


@dataclass
class Evaluation:
    """What every point is measured with: the same prompts, sampling, judge and probe."""

    prompts: list[Prompt]
    sampling: SamplingSettings
    judge: PointwiseJudge
    probe: list[QAItem]
    probe_max_new_tokens: int
    he_modules: Sequence[str] = DEFAULT_HE_MODULES

    def describe(self) -> dict[str, Any]:
        """Everything that decides a point's numbers besides the model: part of every cache key."""
        questions = hashlib.sha256(json.dumps([[q.question, *q.answers] for q in self.probe]).encode()).hexdigest()
        return {
            "prompts": [p.id for p in self.prompts], "sampling": self.sampling.as_dict(), "judge": self.judge.name,
            "probe": {"items": len(self.probe), "sha256": questions, "max_new_tokens": self.probe_max_new_tokens},
            "he_modules": list(self.he_modules),
            "bootstrap": {"resamples": DEFAULT_RESAMPLES, "confidence": DEFAULT_CONFIDENCE, "seed": DEFAULT_SEED},
        }


def settings_key(settings: dict[str, Any]) -> str:
    """A point's cache key: the hash of everything that decided it."""
    return hashlib.sha256(json.dumps({"format": POINT_FORMAT, **settings}, sort_keys=True).encode()).hexdigest()


@dataclass
class BaseAnswers:
    """The base model's judged answers and probe result, computed once and paired with every point."""

    answers: list[dict[str, Any]]  # prompt_id, turn, sample, text, num_tokens, score
    probe_correct: list[bool]

    @classmethod
    def measured(cls, generations: Sequence[Generation], scores: Sequence[float], probe: QAResult) -> BaseAnswers:
        answers = [{"prompt_id": g.prompt_id, "turn": g.turn, "sample": g.sample, "text": g.text,
                    "num_tokens": g.num_tokens, "score": s} for g, s in zip(generations, scores)]
        return cls(answers, list(probe.correct))

    def paired(self, generations: Sequence[Generation]) -> list[dict[str, Any]]:
        """The base's answer to the same (prompt, turn, sample) as each of ``generations``."""
        by_key = {(a["prompt_id"], a["turn"], a["sample"]): a for a in self.answers}
        return [by_key[g.prompt_id, g.turn, g.sample] for g in generations]


def _with_interval(point: dict[str, Any], key: str, interval: Interval) -> None:
    point[key], point[key + CI_SUFFIX] = interval.estimate, [interval.low, interval.high]


def point_metrics(
    evaluation: Evaluation,
    generations: Sequence[Generation],
    scores: Sequence[float],
    probe: QAResult,
    base: BaseAnswers,
    kl_values: Sequence[float],
    he_change: float,
) -> dict[str, Any]:
    """Every metric of ``METRICS`` from one model's judged answers, probe result and drift."""
    prompts = [g.prompt_id for g in generations]
    paired = base.paired(generations)
    outcomes = preferences(scores, [a["score"] for a in paired])
    lengths = [g.num_tokens for g in generations]
    point: dict[str, Any] = {}
    _with_interval(point, "kl", bootstrap_mean(kl_values, prompts))
    _with_interval(point, "judge_score", bootstrap_mean(scores, prompts))
    _with_interval(point, "win_rate", win_rate(outcomes, prompts))
    _with_interval(point, "lc_win_rate", length_controlled_win_rate(outcomes, lengths, [a["num_tokens"] for a in paired], prompts))
    _with_interval(point, "mean_length", bootstrap_mean(lengths, prompts))
    answers = answer_metrics(generations, evaluation.sampling.max_new_tokens)
    point.update({key: answers[name] for key, name in _ANSWER_KEYS.items()})
    correct = [float(c) for c in probe.correct]
    _with_interval(point, "retention_accuracy", bootstrap_mean(correct))
    _with_interval(point, "retention_change", bootstrap_mean([c - b for c, b in zip(correct, base.probe_correct)]))
    point["retention_log_likelihood"] = probe.answer_log_likelihood
    point["he_change"] = he_change
    return point


def answer_and_probe(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, evaluation: Evaluation
) -> tuple[list[Generation], list[float], QAResult]:
    """The model's answers to the held-out prompts, their judge scores and its probe result, RoPO
    adapters merged (the same model at the base model's decoding speed; the weights are restored after)."""
    with merged_for_inference(model):
        generations = generate(model, tokenizer, evaluation.prompts, evaluation.sampling, progress=False)
        probe = qa_probe(model, tokenizer, evaluation.probe, evaluation.sampling.batch_size, evaluation.probe_max_new_tokens)
    return generations, evaluation.judge.score([g.conversation() for g in generations]), probe


def measure_base(model: nn.Module, tokenizer: PreTrainedTokenizerBase, evaluation: Evaluation) -> tuple[BaseAnswers, dict[str, Any]]:
    """The base's answers (kept for pairing) and its own point: KL and HE change are 0 by definition,
    its win rates are its answers judged against themselves (every pair a tie)."""
    generations, scores, probe = answer_and_probe(model, tokenizer, evaluation)
    base = BaseAnswers.measured(generations, scores, probe)
    return base, point_metrics(evaluation, generations, scores, probe, base, [0.0] * len(generations), 0.0)


def measure_checkpoint(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    evaluation: Evaluation,
    base: BaseAnswers,
    base_model: nn.Module | None,
) -> dict[str, Any]:
    """A tuned checkpoint's point. ``base_model`` is the untuned model, needed when ``model`` has no
    adapter to disable (full fine-tuning) for the KL reference and the HE change."""
    generations, scores, probe = answer_and_probe(model, tokenizer, evaluation)
    kl_values = generation_kl(model, Reference(model, base_model), generations, evaluation.sampling.batch_size)
    energies = layer_energies(model, base_model, evaluation.he_modules)
    he_change = he_change_summary(e.relative_change for e in energies)[HE_CHANGE]
    return point_metrics(evaluation, generations, scores, probe, base, kl_values, he_change)


def training_symptoms(records: Sequence[dict[str, Any]], step: int, window: int) -> dict[str, float | None]:
    """``TRAINING_METRICS`` averaged over the ``window`` logged training steps up to ``step``.

    Why a window: each step logs one batch of a few pairs, so one step's log-prob swings with the
    pairs it drew; the mean over the steps since the previous checkpoint follows the trend.
    None where the run logged none.
    """
    logged = [r for r in records if step - window < r.get("step", -1) <= step and "loss" in r]
    means = {}
    for metric in TRAINING_METRICS:
        values = [r[metric.key] for r in logged if isinstance(r.get(metric.key), (int, float))]
        means[metric.key] = fmean(values) if values else None
    return means


def read_cached(path: Path, key: str) -> dict[str, Any] | None:
    """A cached point if it was computed with the settings ``key`` names (else None)."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # edited by hand: computed again
    return cached if isinstance(cached, dict) and cached.get("key") == key else None
