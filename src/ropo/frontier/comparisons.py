"""RoPO against each rival at matched KL: paired differences with intervals over items and seeds.

Why paired: every point answered the same prompts and probe items, so the difference between two
methods varies far less from item to item than either method does; resampling the same items for
both (``ropo.evaluation.replicates.Draws``) gives intervals several times tighter than setting two
per-point intervals side by side, and still honest. Why at matched KL: methods move away from the
base at different speeds, so they are compared where they have moved equally far.

How, row by row of the bootstrap (row 0 is the estimate itself):
1. each curve (a series at one seed, the base as its step-0 point) is read at common values of
   sqrt(KL), linearly between its checkpoints (points sorted by their sqrt(KL) in that row);
2. the curves of the drawn seeds are averaged (seeds are drawn with replacement, the same draw for
   both methods: seed k of each was trained on the same data order);
3. the difference reference − rival is taken; its interval is the 2.5–97.5 % percentiles of rows 1..R.

The common values: ``GRID_FRACTIONS`` of the largest sqrt(KL) that every curve of both methods
reaches (its last point's, in row 0), so every value lies inside every curve's measured range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ropo.evaluation.statistics import DEFAULT_SEED, percentile_interval

#: The metrics compared (each a key of ``ropo.evaluation.replicates.REPLICATED_METRICS``).
COMPARED_METRICS = (
    "judge_score", "lc_win_rate", "mean_length", "distinct_2", "self_bleu",
    "plain_accuracy", "choice_accuracy", "answer_log_likelihood", "text_log_likelihood",
    "brevity_accuracy", "off_language_rate", "evasion_rate",
)
GRID_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Curve:
    """One series at one seed: per metric, (R + 1, points) rows, the base's first (KL 0)."""

    seed: int
    rows: Mapping[str, np.ndarray]

    @property
    def root_kl(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.rows["kl"], 0.0))


def read_at(curve: Curve, metric: str, grid: np.ndarray) -> np.ndarray:
    """(R + 1, len(grid)): ``metric`` along ``curve`` at each sqrt(KL) of ``grid``, row by row."""
    x, y = curve.root_kl, curve.rows[metric]
    out = np.empty((x.shape[0], grid.size))
    for row in range(x.shape[0]):
        order = np.argsort(x[row], kind="stable")
        out[row] = np.interp(grid, x[row, order], y[row, order])
    return out


def matched_grid(curves: Sequence[Curve], fractions: Sequence[float] = GRID_FRACTIONS) -> np.ndarray:
    """sqrt(KL) values every curve reaches (row 0): ``fractions`` of the smallest curve end."""
    reach = min(float(curve.root_kl[0].max()) for curve in curves)
    return reach * np.asarray(fractions, dtype=np.float64)


def seed_draws(seeds: int, resamples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(R + 1, seeds) weights: row 0 every seed once, then seeds drawn with replacement."""
    draws = np.random.default_rng(seed + 3).integers(0, seeds, size=(resamples, seeds))
    counts = np.zeros((resamples, seeds))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return np.vstack([np.ones(seeds), counts])


def paired_difference(reference: Sequence[Curve], rival: Sequence[Curve], metric: str,
                      grid: np.ndarray) -> list[tuple[float, float, float]]:
    """(difference, low, high) of reference − rival in ``metric`` at each value of ``grid``.

    The curves are paired by seed (the same seeds on both sides, in the same order)."""
    if [c.seed for c in reference] != [c.seed for c in rival]:
        raise ValueError(f"paired curves need the same seeds: {[c.seed for c in reference]} vs {[c.seed for c in rival]}")
    ours = np.stack([read_at(c, metric, grid) for c in reference])  # (S, R + 1, G)
    theirs = np.stack([read_at(c, metric, grid) for c in rival])
    weights = seed_draws(len(reference), ours.shape[1] - 1)  # (R + 1, S)
    mean = lambda values: np.einsum("rs,srg->rg", weights, values) / weights.sum(axis=1)[:, None]  # noqa: E731
    difference = mean(ours) - mean(theirs)
    return [tuple(percentile_interval(float(difference[0, g]), difference[1:, g])) for g in range(grid.size)]


def compare(curves: Mapping[str, Sequence[Curve]], reference: str,
            metrics: Sequence[str] = COMPARED_METRICS) -> list[dict]:
    """``reference`` against every other series of ``curves`` that shares seeds with it: one entry
    per (rival, metric, sqrt(KL) value), as ``frontier.json``'s ``comparisons`` holds them."""
    entries = []
    ours_by_seed = {c.seed: c for c in curves.get(reference, ())}
    for rival, theirs in curves.items():
        seeds = sorted(set(ours_by_seed) & {c.seed for c in theirs})
        if rival == reference or not seeds:
            continue
        theirs_by_seed = {c.seed: c for c in theirs}
        ours_paired, theirs_paired = [ours_by_seed[s] for s in seeds], [theirs_by_seed[s] for s in seeds]
        grid = matched_grid([*ours_paired, *theirs_paired])
        for metric in metrics:
            for root_kl, (difference, low, high) in zip(grid, paired_difference(ours_paired, theirs_paired, metric, grid)):
                entries.append({"reference": reference, "rival": rival, "metric": metric, "sqrt_kl": float(root_kl),
                                "difference": difference, "ci": [low, high], "seeds": seeds})
    return entries
