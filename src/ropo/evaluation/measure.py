"""The measurement core: every metric of one model against its reference, per item, then with intervals.

Why one core: ``ropo eval``, the demo and the frontier measure the same things (the answers, their
judge scores and KL to the reference, knowledge, text log-likelihood, energy) under the catalogue's
names and with the same 95 % bootstrap intervals. The drivers differ only in what they keep between
the two steps below: ``ropo.evaluation.evaluate`` (``ropo eval`` and the demo) summarises each model
at once and writes ``eval.json``; ``ropo.frontier.study`` caches each checkpoint's items and
summarises them when the study is assembled, every point on one set of draws, since its paired
comparisons subtract the rows of two points.

1. ``measure_items``: what the model produced, per item (JSON-ready: what a frontier point caches);
2. ``summarize``: the ``Point`` (metrics, intervals and bootstrap rows) from the items, each answer
   paired with the baseline's answer to the same (prompt, turn, sample) for the win rates.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.adapter import merged_for_inference
from ropo.evaluation import knowledge
from ropo.evaluation.drift import DEFAULT_HE_MODULES, Reference, generation_kl, layer_energies
from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.judges import Judge, judged_preferences
from ropo.evaluation.replicates import REPLICATED_METRICS, Draws, interval, point_rows
from ropo.evaluation.retention import QAItem, lm_eval_scores
from ropo.evaluation.statistics import DEFAULT_RESAMPLES, DEFAULT_SEED
from ropo.generation import Generation, Prompt, SamplingSettings, generate
from ropo.metrics.catalogue import CI_SUFFIX, REPETITION_N
from ropo.metrics.diversity import distinct_n, repetition_rate
from ropo.metrics.energy import he_change_summary
from ropo.metrics.lengths import length_stats


@dataclass
class Evaluation:
    """What every model is measured with: the same prompts, sampling, judge, probe and text.

    ``judge`` None: no judge score or win rate; a judge without ``score`` (pairwise) gives win rates
    through ``judge_pairs``. An empty ``probe`` or no ``text_passages``: those metrics not measured.
    """

    prompts: list[Prompt]
    sampling: SamplingSettings
    judge: Judge | None
    probe: Sequence[QAItem]
    probe_max_new_tokens: int
    text_passages: int
    he_modules: Sequence[str] = DEFAULT_HE_MODULES
    #: lm-evaluation-harness tasks scored on every model (``lm_eval/<task>/<metric>``, no interval).
    lm_eval_tasks: Sequence[str] = ()
    lm_eval_limit: int | None = None
    lm_eval_chat_template: bool = False

    def __post_init__(self) -> None:
        # Every probe question needs its multiple-choice distractors: checked before any model loads.
        for index in range(len(self.probe)):
            knowledge.choices(self.probe, index)

    def describe(self) -> dict[str, Any]:
        """Everything that decides a model's items besides the model: part of every frontier cache key."""
        questions = hashlib.sha256(json.dumps([[q.question, *q.answers] for q in self.probe]).encode()).hexdigest()
        harness = {"tasks": list(self.lm_eval_tasks), "limit": self.lm_eval_limit,
                   **({"chat_template": True} if self.lm_eval_chat_template else {})}
        return {
            "prompts": [p.id for p in self.prompts], "sampling": self.sampling.as_dict(),
            "judge": getattr(self.judge, "name", None),
            "probe": {"items": len(self.probe), "sha256": questions, "max_new_tokens": self.probe_max_new_tokens,
                      "plain_max_new_tokens": knowledge.PLAIN_MAX_NEW_TOKENS, "context": knowledge.NEUTRAL_CONTEXT,
                      "choices": knowledge.CHOICES},
            "text": {"passages": len(knowledge.text_passages(self.text_passages)), "tokens": knowledge.TEXT_TOKENS,
                     "sha256": knowledge.text_fingerprint(self.text_passages), "python": sys.version.split()[0]},
            "he_modules": list(self.he_modules),
            # Only when asked for: a study without lm-eval tasks keeps the cache keys it had.
            **({"lm_eval": harness} if self.lm_eval_tasks else {}),
        }

    def draws(self, resamples: int = DEFAULT_RESAMPLES) -> Draws:
        """The bootstrap draws every model measured with this evaluation shares (paired rows)."""
        return Draws.shared(len(self.prompts), len(self.probe), len(knowledge.text_passages(self.text_passages)),
                            resamples, DEFAULT_SEED)


@dataclass
class Measured:
    """One model's items (JSON-ready; what a frontier point caches) and its answers as generated."""

    items: dict[str, Any]
    generations: list[Generation]


@dataclass
class Point:
    """One model's metrics under catalogue keys (``key + CI_SUFFIX``: its 95 % interval), and each
    replicated metric's bootstrap rows (row 0: the estimate), which paired comparisons subtract."""

    metrics: dict[str, Any]
    rows: dict[str, np.ndarray]


def _scores(judge: Judge | None) -> bool:
    return callable(getattr(judge, "score", None))


def measure_items(model: nn.Module, tokenizer: PreTrainedTokenizerBase, evaluation: Evaluation,
                  reference: Reference | None = None, is_base: bool = False, progress: bool = False,
                  label: str = "generating") -> Measured:
    """What ``model`` produced, per item: its answers with their judge scores and KL to ``reference``
    (0 for the base itself; none without a reference), its knowledge measures, its text
    log-likelihoods; RoPO adapters merged (the same model at the base model's decoding speed; the
    weights are restored after)."""
    batch = evaluation.sampling.batch_size
    measured: dict[str, Any] = {}
    with merged_for_inference(model):
        generations = generate(model, tokenizer, evaluation.prompts, evaluation.sampling, progress, label)
        if evaluation.probe:
            measured["knowledge"] = knowledge.knowledge_items(
                model, tokenizer, evaluation.probe, batch, evaluation.probe_max_new_tokens).as_dict()
        if evaluation.text_passages:
            measured["text"] = knowledge.text_log_likelihoods(model, tokenizer, evaluation.text_passages, batch)
        if evaluation.lm_eval_tasks:
            measured["lm_eval"] = lm_eval_scores(model, tokenizer, evaluation.lm_eval_tasks, evaluation.lm_eval_limit,
                                                 batch, evaluation.lm_eval_chat_template)
    answers = [{"prompt_id": g.prompt_id, "turn": g.turn, "sample": g.sample, "text": g.text,
                "num_tokens": g.num_tokens} for g in generations]
    if _scores(evaluation.judge):
        for answer, score in zip(answers, evaluation.judge.score([g.conversation() for g in generations])):
            answer["score"] = score
    if is_base or reference is not None:
        kl = [0.0] * len(generations) if is_base else generation_kl(model, reference, generations, batch)
        for answer, value in zip(answers, kl):
            answer["kl"] = value
    return Measured({"answers": answers, **measured}, generations)


def judge_pairs(evaluation: Evaluation, measured: Measured, baseline: Measured) -> None:
    """A pairwise judge's preference for each answer over the baseline's answer to the same (prompt,
    turn, sample), stored with the answer. Nothing to do without a judge, or for one that scores
    answers (``summarize`` compares the scores)."""
    if evaluation.judge is None or _scores(evaluation.judge):
        return
    by_key = {(g.prompt_id, g.turn, g.sample): g for g in baseline.generations}
    keys = [(g.prompt_id, g.turn, g.sample) for g in measured.generations]
    missing = [key for key in keys if key not in by_key]
    if missing:
        raise EvaluationError(f"the baseline has no answer for (prompt, turn, sample) {missing[0]}")
    preferences = judged_preferences(evaluation.judge, [g.conversation() for g in measured.generations],
                                     [by_key[key].conversation() for key in keys])
    for answer, preference in zip(measured.items["answers"], preferences):
        answer["preference"] = preference


def measure_energy(model: nn.Module, base_model: nn.Module | None,
                   evaluation: Evaluation) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(``he_change`` and ``he_change_max``, each tracked layer's energies) of ``model`` against its
    base (``base_model`` None: the model's own adapter disabled)."""
    energies = layer_energies(model, base_model, evaluation.he_modules)
    return he_change_summary(e.relative_change for e in energies), [e.as_dict() for e in energies]


def summarize(items: dict[str, Any], baseline_answers: Sequence[dict[str, Any]] | None, evaluation: Evaluation,
              draws: Draws) -> Point:
    """The point of ``items``: every measured metric with its interval where it has one
    (``baseline_answers`` None: no win rates)."""
    rows = point_rows(items, baseline_answers, [p.id for p in evaluation.prompts], draws)
    metrics: dict[str, Any] = {}
    for key in (k for k in REPLICATED_METRICS if k in rows):
        estimate = interval(rows[key])
        metrics[key], metrics[key + CI_SUFFIX] = estimate.estimate, [estimate.low, estimate.high]
    texts = [a["text"] for a in items["answers"]]
    lengths = length_stats([a["num_tokens"] for a in items["answers"]], evaluation.sampling.max_new_tokens)
    metrics.update(hit_limit_rate=lengths.hit_limit_rate, distinct_1=distinct_n(texts, 1),
                   repetition=repetition_rate(texts, REPETITION_N), **items.get("lm_eval", {}))
    return Point(metrics, rows)
