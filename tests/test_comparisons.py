"""Paired comparisons at matched KL (``ropo.frontier.comparisons``) on synthetic curves with a known
answer: identical curves differ by 0; a curve shifted by a constant differs by that constant, and
the paired interval (the same resampled items for both) is narrower than the unpaired one."""

import numpy as np
import pytest

from ropo.evaluation.replicates import Draws
from ropo.frontier.comparisons import Curve, compare, matched_grid, paired_difference, read_at

ITEMS, PROMPTS, STEPS = 300, 32, (1, 2, 3)


def _curve(seed: int, draws: Draws, item_values: np.ndarray, kl_per_prompt: np.ndarray) -> Curve:
    """Base (KL 0) then one point per step: the metric is the mean of per-item values that fall by
    0.05 per step; KL grows as step² on every prompt (so sqrt(KL) = step times a per-prompt factor)."""
    def mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
        return weights @ values / weights.sum(axis=1)

    kl = [np.zeros(draws.prompts.shape[0])] + [mean(draws.prompts, kl_per_prompt * s**2) for s in STEPS]
    metric = [mean(draws.items, item_values)] + [mean(draws.items, item_values - 0.05 * s) for s in STEPS]
    return Curve(seed, {"kl": np.column_stack(kl), "plain_accuracy": np.column_stack(metric)})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    items = rng.normal(0.5, 0.3, size=ITEMS)  # items differ much more than the methods do
    kl = rng.uniform(0.8, 1.2, size=PROMPTS)
    return items, kl, rng


def test_interpolation_reads_a_curve_between_its_checkpoints():
    curve = Curve(0, {"kl": np.array([[0.0, 1.0, 4.0]]), "plain_accuracy": np.array([[0.5, 0.4, 0.2]])})
    assert read_at(curve, "plain_accuracy", np.array([0.5, 1.5])) == pytest.approx(np.array([[0.45, 0.3]]))
    assert matched_grid([curve]) == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_identical_curves_differ_by_zero(data):
    items, kl, _ = data
    draws = Draws.shared(PROMPTS, ITEMS, 1, resamples=500)
    curves = [_curve(seed, draws, items, kl) for seed in (0, 1)]
    grid = matched_grid(curves)
    for difference, low, high in paired_difference(curves, curves, "plain_accuracy", grid):
        assert difference == 0.0 and low <= 0.0 <= high


def test_a_shifted_curve_differs_by_the_shift_and_pairing_narrows_the_interval(data):
    items, kl, rng = data
    shift = 0.04
    noise = [rng.normal(0.0, 0.05, size=ITEMS) for _ in (0, 1)]
    draws = Draws.shared(PROMPTS, ITEMS, 1, resamples=1000)
    other = Draws.shared(PROMPTS, ITEMS, 1, resamples=1000, seed=11)  # independent items: unpaired
    reference = [_curve(seed, draws, items + shift + noise[seed], kl) for seed in (0, 1)]
    paired_rival = [_curve(seed, draws, items, kl) for seed in (0, 1)]
    unpaired_rival = [_curve(seed, other, items, kl) for seed in (0, 1)]
    grid = matched_grid([*reference, *paired_rival])
    paired = paired_difference(reference, paired_rival, "plain_accuracy", grid)
    unpaired = paired_difference(reference, unpaired_rival, "plain_accuracy", grid)
    for (difference, low, high), (_, unpaired_low, unpaired_high) in zip(paired, unpaired):
        assert low <= shift <= high and difference == pytest.approx(shift, abs=0.02)
        assert (high - low) < (unpaired_high - unpaired_low) / 2


def test_compare_writes_one_entry_per_rival_metric_and_kl(data):
    items, kl, _ = data
    draws = Draws.shared(PROMPTS, ITEMS, 1, resamples=200)
    curves = {"ropo-2025": [_curve(s, draws, items, kl) for s in (0, 1)],
              "lora": [_curve(s, draws, items - 0.1, kl) for s in (0, 1)],
              "ablation": [_curve(0, draws, items, kl)]}  # one seed: compared on that seed only
    entries = compare(curves, "ropo-2025", metrics=["plain_accuracy"])
    assert {(e["rival"], tuple(e["seeds"])) for e in entries} == {("lora", (0, 1)), ("ablation", (0,))}
    lora = [e for e in entries if e["rival"] == "lora"]
    assert len(lora) >= 3 and all(e["ci"][0] <= e["difference"] <= e["ci"][1] for e in lora)
    assert all(e["difference"] == pytest.approx(0.1) for e in lora)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(curves["ropo-2025"], curves["lora"][:1], "plain_accuracy", np.array([1.0]))
