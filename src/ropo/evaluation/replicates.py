"""Every metric of a measured model as bootstrap replicates over the same resampled items.

Why one set of draws for everything: two models answered the same prompts and the same probe items,
so their difference is measured best on the same resample of them (a paired bootstrap). The draws
(``Draws``) depend only on how many prompts, probe items and passages there are and on the seed, so
every point of a study shares them: row r of any metric, at any point, was computed on the same
resampled prompts, items and passages. Row 0 weights everything once: the estimate itself. A point's
interval is the percentile interval of its rows 1..R; a difference between two points (or two
curves at matched KL, ``ropo.frontier.comparisons``) is taken row by row before its interval.

Prompts are clusters: all answers to one prompt (its samples) are drawn together, as in
``ropo.evaluation.statistics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sacrebleu

from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.statistics import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Interval,
    bootstrap_weights,
    length_controlled_rates,
    percentile_interval,
    preferences,
)
from ropo.metrics.diversity import ngrams

#: Each knowledge measure (``ropo.evaluation.knowledge.KnowledgeItems``) → its metric key.
KNOWLEDGE_METRICS = {
    "brevity_correct": "brevity_accuracy",
    "plain_correct": "plain_accuracy",
    "choice_correct": "choice_accuracy",
    "answer_log_likelihood": "answer_log_likelihood",
    "off_language": "off_language_rate",
    "evasive": "evasion_rate",
}
ANSWER_METRICS = ("kl", "judge_score", "win_rate", "lc_win_rate", "mean_length", "distinct_2", "self_bleu")
TEXT_METRIC = "text_log_likelihood"
#: Every metric with replicates, in the order points list them.
REPLICATED_METRICS = (*ANSWER_METRICS, *KNOWLEDGE_METRICS.values(), TEXT_METRIC)


@dataclass(frozen=True)
class Draws:
    """(R + 1, n) weights per unit: row 0 all ones (the estimate), rows 1..R bootstrap draws."""

    prompts: np.ndarray
    items: np.ndarray
    passages: np.ndarray

    @classmethod
    def shared(cls, prompts: int, items: int, passages: int, resamples: int = DEFAULT_RESAMPLES,
               seed: int = DEFAULT_SEED) -> Draws:
        def rows(size: int, offset: int) -> np.ndarray:
            return np.vstack([np.ones(size), bootstrap_weights(size, None, resamples, seed + offset)])

        return cls(rows(prompts, 0), rows(items, 1), rows(passages, 2))

    @property
    def resamples(self) -> int:
        return self.prompts.shape[0] - 1


def _weighted_mean(weights: np.ndarray, values: Sequence[float]) -> np.ndarray:
    return weights @ np.asarray(values, dtype=np.float64) / weights.sum(axis=1)


def _distinct(weights: np.ndarray, grams_per_prompt: Sequence[list[tuple]]) -> np.ndarray:
    """Distinct n-grams over all n-grams of the prompts a row drew, each drawn prompt's answers
    pooled once: pooling a prompt drawn twice twice would repeat every one of its n-grams and pull
    every replicate down (a tiny model's all-distinct answers, 1.000, got an interval down to 0.43).
    A replicate then pools about 63 % of the prompts; paired rows see the same prompts."""
    vocabulary: dict[tuple, int] = {}
    columns = [[vocabulary.setdefault(g, len(vocabulary)) for g in set(grams)] for grams in grams_per_prompt]
    incidence = np.zeros((len(grams_per_prompt), len(vocabulary)))
    for row, cols in enumerate(columns):
        incidence[row, cols] = 1.0
    totals = np.array([len(grams) for grams in grams_per_prompt], dtype=np.float64)
    drawn = (weights > 0).astype(np.float64)
    distinct = ((drawn @ incidence) > 0).sum(axis=1)
    return distinct / np.maximum(drawn @ totals, 1.0)


def _self_bleu_per_prompt(texts_per_prompt: Sequence[list[str]]) -> np.ndarray:
    """Per prompt, the mean sentence BLEU of each sample against the prompt's other samples."""
    return np.array([
        np.mean([sacrebleu.sentence_bleu(t, [o for j, o in enumerate(texts) if j != i]).score for i, t in enumerate(texts)])
        if len(texts) >= 2 else np.nan
        for texts in texts_per_prompt
    ])


def _outcomes(answers: Sequence[dict[str, Any]], paired: Sequence[dict[str, Any]] | None) -> np.ndarray | None:
    """Each answer's result against its baseline answer (1 win, ``TIE``, 0 loss): a pairwise judge's
    stored preference, else the two judge scores compared; None without a judge or a baseline."""
    if paired is None:
        return None
    if all("preference" in a for a in answers):
        return np.array([a["preference"] for a in answers], dtype=np.float64)
    if not all("score" in a for a in (*answers, *paired)):
        return None
    return np.array(preferences([a["score"] for a in answers], [b["score"] for b in paired]), dtype=np.float64)


def _paired(answers: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if base is None:
        return None
    by_key = {(a["prompt_id"], a["turn"], a["sample"]): a for a in base}
    keys = [(a["prompt_id"], a["turn"], a["sample"]) for a in answers]
    missing = [key for key in keys if key not in by_key]
    if missing:
        raise EvaluationError(f"the baseline has no answer for (prompt, turn, sample) {tuple(missing[0])}")
    return [by_key[key] for key in keys]


def _self_bleu_rows(answers: Sequence[dict[str, Any]], index: dict, weights: np.ndarray) -> np.ndarray:
    texts: dict[tuple, list[str]] = {}
    for a in answers:
        texts.setdefault((a["prompt_id"], a["turn"]), []).append(a["text"])
    bleu_keys = list(texts)
    bleu = _self_bleu_per_prompt([texts[k] for k in bleu_keys])
    known = ~np.isnan(bleu)
    bleu_weights = weights[:, [index[pid] for pid, _ in bleu_keys]][:, known]
    return _weighted_mean(bleu_weights, bleu[known]) if known.any() else np.full(weights.shape[0], np.nan)


def answer_rows(answers: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]] | None, prompt_ids: Sequence,
                weights: np.ndarray) -> dict[str, np.ndarray]:
    """``ANSWER_METRICS`` rows from a model's answers (``prompt_id, turn, sample, text, num_tokens``,
    and where measured ``score``, ``preference``, ``kl``), the win rates paired with the baseline's
    answers to the same (prompt, turn, sample) (``base`` None: no win rates). A metric that was not
    measured is absent."""
    index = {pid: i for i, pid in enumerate(prompt_ids)}
    per_answer = weights[:, [index[a["prompt_id"]] for a in answers]]
    lengths = np.array([a["num_tokens"] for a in answers], dtype=np.float64)
    grams: list[list[tuple]] = [[] for _ in prompt_ids]
    for a in answers:
        grams[index[a["prompt_id"]]].extend(ngrams(a["text"].split(), 2))
    rows = {"mean_length": _weighted_mean(per_answer, lengths), "distinct_2": _distinct(weights, grams),
            "self_bleu": _self_bleu_rows(answers, index, weights)}
    if all("kl" in a for a in answers):
        rows["kl"] = _weighted_mean(per_answer, [a["kl"] for a in answers])
    if all("score" in a for a in answers):
        rows["judge_score"] = _weighted_mean(per_answer, [a["score"] for a in answers])
    paired = _paired(answers, base)
    outcomes = _outcomes(answers, paired)
    if outcomes is not None:
        differences = lengths - np.array([b["num_tokens"] for b in paired], dtype=np.float64)
        rows["win_rate"] = _weighted_mean(per_answer, outcomes)
        rows["lc_win_rate"] = length_controlled_rates(outcomes, differences, per_answer)
    return {key: rows[key] for key in ANSWER_METRICS if key in rows and not np.isnan(rows[key][0])}


def point_rows(items: dict[str, Any], base_answers: Sequence[dict[str, Any]] | None, prompt_ids: Sequence,
               draws: Draws) -> dict[str, np.ndarray]:
    """Every ``REPLICATED_METRICS`` row of one point from its stored items (``answers``, and where
    measured ``knowledge`` and ``text``)."""
    rows = answer_rows(items["answers"], base_answers, prompt_ids, draws.prompts)
    if "knowledge" in items:
        for field, key in KNOWLEDGE_METRICS.items():
            rows[key] = _weighted_mean(draws.items, [float(v) for v in items["knowledge"][field]])
    if "text" in items:
        rows[TEXT_METRIC] = _weighted_mean(draws.passages, items["text"])
    return rows


def interval(rows: np.ndarray) -> Interval:
    """Row 0 with the percentile interval of rows 1..R."""
    return percentile_interval(float(rows[0]), rows[1:])
