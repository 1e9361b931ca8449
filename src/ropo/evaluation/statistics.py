"""Confidence intervals and win rates for evaluations over a few dozen prompts.

Why: a checkpoint is judged on a few dozen held-out prompts, where one answer moves a win rate by
several points; a number without its interval cannot say whether two methods differ. Every figure
here comes with a 95 % percentile-bootstrap interval over *prompts*: the prompts are the sample
drawn from the population of possible prompts. When a prompt has several answers (several samples,
or several judged pairs), they are not independent draws, so a prompt is resampled with all of its
answers (a cluster bootstrap) and the interval keeps the width that the number of prompts allows.

Resampling is written as integer weights: a bootstrap replicate that draws prompt j k times gives
each of j's answers weight k. Every replicate of a statistic is then one weighted computation, done
for all replicates at once with numpy.

The length-controlled win rate follows AlpacaEval 2 (Dubois et al. 2024, arXiv 2404.04475): a
logistic model of the judge's preference on the length difference, read off at zero difference.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np

from ropo.evaluation.errors import EvaluationError

#: Bootstrap replicates: enough that the 2.5 % and 97.5 % quantiles move by well under a point.
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
#: What a tie counts in a win rate (and as the target of the length-controlled model).
TIE = 0.5
#: L2 penalty on the logistic model's two coefficients, relative to the data's total weight: small
#: enough to leave ordinary fits alone, large enough that separable data (every answer wins, or the
#: longer answer always wins) still has a finite optimum.
LC_L2_PENALTY = 1e-3
LC_MAX_ITERATIONS = 100
LC_TOLERANCE = 1e-10


class Interval(NamedTuple):
    """A statistic's value on the data and its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise EvaluationError(f"{what}: need a non-empty sequence of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise EvaluationError(f"{what}: every value must be finite")
    return array


def _cluster_index(size: int, groups: Sequence[Hashable] | None) -> tuple[np.ndarray, int]:
    """(the cluster of each observation, number of clusters); no groups: one cluster per observation."""
    if groups is None:
        return np.arange(size), size
    if len(groups) != size:
        raise EvaluationError(f"groups: need one group per value ({len(groups)} groups for {size} values)")
    clusters: dict[Hashable, int] = {}
    index = np.array([clusters.setdefault(group, len(clusters)) for group in groups])
    return index, len(clusters)


def bootstrap_weights(
    size: int,
    groups: Sequence[Hashable] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """(resamples, size) weights: how many times each observation's cluster was drawn in each replicate.

    A replicate draws as many clusters as there are, with replacement, uniformly: the same seed and
    the same cluster count give the same draws, whatever the statistic.
    """
    if resamples < 1:
        raise EvaluationError(f"resamples must be at least 1, got {resamples}")
    index, clusters = _cluster_index(size, groups)
    draws = np.random.default_rng(seed).integers(0, clusters, size=(resamples, clusters))
    counts = np.zeros((resamples, clusters))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts[:, index]


def percentile_interval(estimate: float, replicates: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """``estimate`` with the central ``confidence`` quantiles of its bootstrap ``replicates``."""
    if not 0.0 < confidence < 1.0:
        raise EvaluationError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_mean(
    values: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The mean of ``values`` with a percentile-bootstrap interval over prompts.

    ``groups`` names the prompt of each value (None: every value is its own prompt). The estimate is
    the mean over all values; a replicate is the mean over the values of the prompts it drew, each
    prompt as often as drawn. One prompt gives a zero-width interval: nothing varies between prompts.
    """
    array = _as_array(values, "bootstrap_mean")
    weights = bootstrap_weights(array.size, groups, resamples, seed)
    replicates = weights @ array / weights.sum(axis=1)
    return percentile_interval(float(array.mean()), replicates, confidence)


def preferences(candidate_scores: Sequence[float], baseline_scores: Sequence[float]) -> list[float]:
    """1 where the candidate's score is higher, 0 where lower, ``TIE`` where equal (pairwise, in order)."""
    if len(candidate_scores) != len(baseline_scores):
        raise EvaluationError(f"preferences: {len(candidate_scores)} candidate scores for {len(baseline_scores)} baseline scores")
    return [1.0 if a > b else 0.0 if a < b else TIE for a, b in zip(candidate_scores, baseline_scores)]


def _check_preferences(outcomes: Sequence[float], what: str) -> np.ndarray:
    array = _as_array(outcomes, what)
    if ((array < 0.0) | (array > 1.0)).any():
        raise EvaluationError(f"{what}: preferences must lie in [0, 1] (1 win, {TIE} tie, 0 loss)")
    return array


def win_rate(
    outcomes: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The mean preference for the candidate (1 win, ``TIE`` tie, 0 loss) with its interval over prompts.

    ``outcomes`` is one judged pair (candidate answer vs the base's answer) per entry, e.g. from
    ``preferences`` or a judge's ``compare``; ``groups`` names each pair's prompt.
    """
    array = _check_preferences(outcomes, "win_rate")
    return bootstrap_mean(array, groups, resamples, confidence, seed)


def length_feature(length_differences: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """tanh(Δ / sd(Δ)) per replicate row of ``weights`` (shape (R, n)), as AlpacaEval 2 does.

    Why this scaling: dividing by the standard deviation makes the coefficient independent of the
    length unit (tokens, words, characters); tanh bounds the influence of a few very long answers,
    so one runaway answer does not decide the fit. Δ is scaled but not centred: zero difference
    stays at zero, which is where the win rate is read off. The weighted sd uses Bessel's
    correction (as pandas' ``std``, which AlpacaEval calls); equal lengths everywhere give 0.
    """
    total = weights.sum(axis=1, keepdims=True)
    mean = weights @ length_differences / total[:, 0]
    squares = (weights * (length_differences[None, :] - mean[:, None]) ** 2).sum(axis=1, keepdims=True)
    scale = np.sqrt(squares / np.maximum(total - 1.0, 1.0))
    safe = np.where(scale > 0.0, scale, 1.0)
    return np.where(scale > 0.0, np.tanh(length_differences[None, :] / safe), 0.0)


def fit_length_logistic(targets: np.ndarray, feature: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R, 2) coefficients (intercept, slope) of p = σ(a + b·x), one weighted fit per row, by Newton.

    Maximises Σ w·[y log p + (1 − y) log(1 − p)] − ½·λ·W·(a² + b²) with W = Σ w and
    λ = ``LC_L2_PENALTY``: fractional targets (ties at ``TIE``) are the usual quasi-likelihood, and
    the penalty makes the objective strictly concave, so Newton converges from zero even where the
    data are separable. Rows are fitted together; a row stops moving once its step is below
    ``LC_TOLERANCE``.
    """
    resamples = weights.shape[0]
    penalty = LC_L2_PENALTY * weights.sum(axis=1)
    coefficients = np.zeros((resamples, 2))
    for _ in range(LC_MAX_ITERATIONS):
        p = 1.0 / (1.0 + np.exp(-(coefficients[:, :1] + coefficients[:, 1:] * feature)))
        residual = weights * (targets[None, :] - p)
        gradient = np.stack([residual.sum(axis=1), (residual * feature).sum(axis=1)], axis=1)
        gradient -= penalty[:, None] * coefficients
        curvature = weights * p * (1.0 - p)
        hessian = np.empty((resamples, 2, 2))
        hessian[:, 0, 0] = curvature.sum(axis=1) + penalty
        hessian[:, 0, 1] = hessian[:, 1, 0] = (curvature * feature).sum(axis=1)
        hessian[:, 1, 1] = (curvature * feature**2).sum(axis=1) + penalty
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        coefficients += step
        if np.abs(step).max() < LC_TOLERANCE:
            break
    return coefficients


def length_controlled_win_rate(
    outcomes: Sequence[float],
    candidate_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The win rate the judge would give if the two answers were equally long, with its interval.

    Why: a judge that favours longer answers rewards a policy that only grew verbose. AlpacaEval 2
    fits the preference as σ(a + b·tanh(Δ/sd Δ)), Δ the candidate's length minus the base's, and
    reports σ(a): the modelled win rate at zero length difference. If length alone decides, a ≈ 0
    and the result is about 50 %; if length plays no part, b ≈ 0 and it is about the raw win rate.
    (AlpacaEval's full model also has a per-instruction difficulty term; with one baseline and one
    judge per prompt that term is left out.) The interval refits the whole model, scaling included,
    on each resample of prompts.
    """
    targets = _check_preferences(outcomes, "length_controlled_win_rate")
    lengths = _as_array(candidate_lengths, "candidate_lengths"), _as_array(baseline_lengths, "baseline_lengths")
    if not lengths[0].size == lengths[1].size == targets.size:
        raise EvaluationError(
            f"length_controlled_win_rate: {targets.size} outcomes, {lengths[0].size} candidate and "
            f"{lengths[1].size} baseline lengths; need one of each per pair"
        )
    weights = np.vstack([np.ones(targets.size), bootstrap_weights(targets.size, groups, resamples, seed)])
    rates = length_controlled_rates(targets, lengths[0] - lengths[1], weights)
    return percentile_interval(float(rates[0]), rates[1:], confidence)


def length_controlled_rates(outcomes: np.ndarray, length_differences: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """σ(a) of the length model fitted on each row of ``weights`` ((R, n): one weight per pair):
    what ``length_controlled_win_rate`` and the shared-draw replicates both compute."""
    intercepts = fit_length_logistic(outcomes, length_feature(length_differences, weights), weights)[:, 0]
    return 1.0 / (1.0 + np.exp(-intercepts))
