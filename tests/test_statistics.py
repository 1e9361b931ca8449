"""Evaluation statistics against exact enumeration and hand-worked values."""

import itertools

import numpy as np
import pytest

from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.statistics import (
    TIE,
    bootstrap_mean,
    bootstrap_weights,
    length_controlled_win_rate,
    preferences,
    win_rate,
)

#: Enough replicates that Monte-Carlo quantiles sit within a few tenths of a percent of the exact ones.
MANY = 20_000
#: Allowed distance between the Monte-Carlo and the exact tail probability at an interval's end.
TAIL_TOLERANCE = 0.005


def _exact_bootstrap_means(values: list[float]) -> np.ndarray:
    """Every one of the n**n equally likely ordered resamples of ``values``, by its mean."""
    return np.array([np.mean(draw) for draw in itertools.product(values, repeat=len(values))])


def _assert_is_quantile(point: float, exact: np.ndarray, level: float) -> None:
    """``point`` is a ``level`` quantile of the exact distribution: P(X < point) ≤ level ≤ P(X ≤ point)."""
    assert np.mean(exact < point - 1e-12) <= level + TAIL_TOLERANCE
    assert np.mean(exact <= point + 1e-12) >= level - TAIL_TOLERANCE


def test_bootstrap_mean_matches_exact_enumeration():
    sample = [0.0, 1.0, 3.0, 7.0]  # mean 11 / 4; 4**4 = 256 resamples
    exact = _exact_bootstrap_means(sample)
    estimate, low, high = bootstrap_mean(sample, resamples=MANY, seed=1)
    assert estimate == 2.75
    _assert_is_quantile(low, exact, 0.025)
    _assert_is_quantile(high, exact, 0.975)
    assert low < estimate < high


def test_clustered_bootstrap_resamples_prompts_not_answers():
    # Prompt A has three answers worth 1, prompt B one worth 0: the estimate is 3 / 4. The four
    # ordered draws of two prompts give 1 (AA), 3/4 (AB, BA), 0 (BB): the 95 % interval is [0, 1].
    values, groups = [1.0, 1.0, 1.0, 0.0], ["A", "A", "A", "B"]
    estimate, low, high = bootstrap_mean(values, groups, resamples=MANY)
    assert (estimate, low, high) == (0.75, 0.0, 1.0)
    # Five copies of every answer within its prompt add no information: the same interval.
    rng = np.random.default_rng(0)
    per_prompt = rng.normal(size=12)
    flat = bootstrap_mean(per_prompt, seed=3)
    copied = bootstrap_mean(np.repeat(per_prompt, 5), groups=np.repeat(np.arange(12), 5).tolist(), seed=3)
    assert copied == pytest.approx(flat, rel=1e-12)
    # … whereas treating the copies as independent answers would shrink it.
    naive = bootstrap_mean(np.repeat(per_prompt, 5), seed=3)
    assert naive.high - naive.low < 0.6 * (flat.high - flat.low)


def test_bootstrap_weights_draw_whole_clusters():
    weights = bootstrap_weights(5, groups=[0, 0, 1, 1, 1], resamples=50, seed=0)
    assert weights.shape == (50, 5)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 2] == weights[:, 4]).all()
    assert (weights[:, [0, 2]].sum(axis=1) == 2).all()  # two clusters drawn per replicate


def test_preferences_and_win_rate_count_ties_as_half():
    outcomes = preferences([3.0, 1.0, 2.0, 0.5], [1.0, 1.0, 5.0, 0.0])
    assert outcomes == [1.0, TIE, 0.0, 1.0]
    estimate, low, high = win_rate(outcomes, resamples=MANY)
    assert estimate == pytest.approx(2.5 / 4)
    exact = _exact_bootstrap_means(outcomes)
    _assert_is_quantile(low, exact, 0.025)
    _assert_is_quantile(high, exact, 0.975)


@pytest.mark.parametrize("seed", range(5))
def test_intervals_contain_their_estimates(seed):
    rng = np.random.default_rng(seed)
    prompts = 30
    groups = np.repeat(np.arange(prompts), 4).tolist()
    scores = rng.normal(size=prompts * 4)
    outcomes = rng.choice([0.0, TIE, 1.0], size=prompts * 4, p=[0.3, 0.1, 0.6])
    lengths = rng.integers(5, 200, size=(2, prompts * 4))
    for interval in (
        bootstrap_mean(scores, groups, seed=seed),
        win_rate(outcomes, groups, seed=seed),
        length_controlled_win_rate(outcomes, lengths[0], lengths[1], groups, seed=seed),
    ):
        assert all(np.isfinite(interval))
        assert interval.low <= interval.estimate <= interval.high


def test_same_seed_same_interval():
    values = np.random.default_rng(0).normal(size=20)
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)
    assert bootstrap_mean(values, seed=7) != bootstrap_mean(values, seed=8)


def _judgements(length_weight: float, quality_logit: float, pairs: int = 2000, seed: int = 0):
    """Synthetic pairwise judgements: the candidate wins with probability
    σ(quality_logit + length_weight·tanh(Δ/sd Δ)); candidates run about 20 tokens longer."""
    rng = np.random.default_rng(seed)
    baseline = rng.integers(40, 120, size=pairs).astype(float)
    difference = rng.normal(20.0, 30.0, size=pairs)
    feature = np.tanh(difference / difference.std(ddof=1))
    p_win = 1.0 / (1.0 + np.exp(-(quality_logit + length_weight * feature)))
    outcomes = (rng.random(pairs) < p_win).astype(float)
    return outcomes, baseline + difference, baseline


def test_length_controlled_win_rate_is_half_when_length_alone_decides():
    outcomes, candidate, baseline = _judgements(length_weight=4.0, quality_logit=0.0)
    raw = outcomes.mean()
    assert raw > 0.65  # the longer candidates win most pairs …
    lc = length_controlled_win_rate(outcomes, candidate, baseline, resamples=200)
    assert lc.estimate == pytest.approx(0.5, abs=0.05)  # … but not at equal length


def test_length_controlled_win_rate_is_the_raw_rate_when_quality_alone_decides():
    outcomes, candidate, baseline = _judgements(length_weight=0.0, quality_logit=1.0)
    raw = outcomes.mean()
    assert raw == pytest.approx(0.73, abs=0.03)  # σ(1) = 0.731
    lc = length_controlled_win_rate(outcomes, candidate, baseline, resamples=200)
    assert lc.estimate == pytest.approx(raw, abs=0.02)


def test_length_controlled_win_rate_when_every_length_is_equal_or_every_answer_ties():
    outcomes = [1.0, 1.0, 0.0, TIE, 1.0, 0.0, 1.0, 1.0]
    same = [10.0] * len(outcomes)
    assert length_controlled_win_rate(outcomes, same, same).estimate == pytest.approx(np.mean(outcomes), abs=1e-3)
    ties = [TIE] * 6
    assert length_controlled_win_rate(ties, [1, 5, 9, 2, 3, 4], [4, 4, 4, 4, 4, 4]) == pytest.approx((0.5, 0.5, 0.5))


def test_degenerate_inputs_give_finite_values():
    rng = np.random.default_rng(0)
    wins = np.ones(40)
    longer = rng.integers(1, 50, size=40).astype(float)
    # Every answer wins, and is longer: separable data, kept finite by the penalty.
    lc = length_controlled_win_rate(wins, 100.0 + longer, np.full(40, 100.0))
    assert all(np.isfinite(lc)) and 0.9 < lc.low <= lc.estimate <= lc.high < 1.0
    assert win_rate(wins) == (1.0, 1.0, 1.0)
    # One prompt: nothing varies between prompts, so the interval has no width.
    one = bootstrap_mean([0.2, 0.4, 0.9], groups=["p", "p", "p"])
    assert one == pytest.approx((0.5, 0.5, 0.5))
    lc_one = length_controlled_win_rate([1.0, 0.0], [30, 10], [10, 30], groups=["p", "p"])
    assert all(np.isfinite(lc_one)) and lc_one.low == lc_one.estimate == lc_one.high
    assert bootstrap_mean([3.0]) == (3.0, 3.0, 3.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_mean([]), "non-empty"),
        (lambda: bootstrap_mean([1.0, float("nan")]), "finite"),
        (lambda: bootstrap_mean([1.0, 2.0], groups=["a"]), "one group per value"),
        (lambda: bootstrap_mean([1.0], resamples=0), "resamples"),
        (lambda: bootstrap_mean([1.0], confidence=1.0), "confidence"),
        (lambda: win_rate([1.0, 2.0]), r"\[0, 1\]"),
        (lambda: preferences([1.0], [1.0, 2.0]), "baseline scores"),
        (lambda: length_controlled_win_rate([1.0, 0.0], [1.0], [1.0, 2.0]), "one of each per pair"),
    ],
)
def test_bad_inputs_raise_a_clear_error(call, message):
    with pytest.raises(EvaluationError, match=message):
        call()
