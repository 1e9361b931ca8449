"""Hyperspherical energy against hand-computed values."""

import math

import pytest
import torch

from ropo import hyperspherical_energy


def test_three_neurons_by_hand():
    # Unit neurons e1, e2, −e1: distances √2 (e1,e2), 2 (e1,−e1), √2 (e2,−e1); each pair counted twice.
    weight = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    assert hyperspherical_energy(weight) == pytest.approx(2 * (2 / math.sqrt(2) + 1 / 2), rel=1e-12)


def test_depends_only_on_directions_and_is_rotation_invariant():
    torch.manual_seed(0)
    weight = torch.randn(7, 5, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    scales = torch.rand(7, 1, dtype=torch.float64) + 0.1
    energy = hyperspherical_energy(weight)
    assert hyperspherical_energy(scales * weight @ q) == pytest.approx(energy, rel=1e-12)
    assert hyperspherical_energy(weight, chunk_rows=2) == pytest.approx(energy, rel=1e-12)


def test_collapsed_neurons_raise_the_energy():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    closer = torch.tensor([[1.0, 0.0], [1.0, 0.2]])
    assert hyperspherical_energy(closer) > hyperspherical_energy(weight)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        hyperspherical_energy(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="2-D weight"):
        hyperspherical_energy(torch.ones(3))


def test_he_change_summary_is_the_mean_and_max_of_magnitudes():
    from ropo.metrics import he_change_summary

    assert he_change_summary([0.1, -0.3]) == pytest.approx({"he_change": 0.2, "he_change_max": 0.3})
    assert he_change_summary([0.0, -0.0]) == {"he_change": 0.0, "he_change_max": 0.0}
    with pytest.raises(ValueError, match="at least one layer"):
        he_change_summary([])
