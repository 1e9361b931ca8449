"""The orthogonal operators: layouts, exact identity at init, orthogonality, gradients."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropo.rotation import OrthogonalRotation, givens_angle_count, givens_stages
from ropo.rotation.operators import apply_householder_pair, householder_pair_vectors


def _connected(dim: int, layout: str) -> bool:
    parent = list(range(dim))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for stage in givens_stages(dim, layout):
        for a, b in zip(stage.first.tolist(), stage.second.tolist()):
            parent[find(a)] = find(b)
    return len({find(i) for i in range(dim)}) == 1


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 64, 100, 576, 1000, 1536])
def test_bidirectional_layout_is_two_spanning_trees(dim):
    assert givens_angle_count(dim, "bidirectional") == 2 * (dim - 1)
    assert _connected(dim, "bidirectional")
    stages = givens_stages(dim, "bidirectional")
    assert len(stages) == 2 * math.ceil(math.log2(dim)) if dim > 1 else len(stages) == 0
    half = len(stages) // 2
    # The first tree alone already reaches every coordinate; the second is the first reversed.
    assert sum(s.size for s in stages[:half]) == dim - 1
    assert [s.first.tolist() for s in stages[half:]] == [s.first.tolist() for s in stages[:half]][::-1]
    for stage in stages:
        touched = stage.first.tolist() + stage.second.tolist()
        assert len(set(touched)) == len(touched), "pairs within a stage must be disjoint"
        assert max(touched) < dim


@pytest.mark.parametrize("dim", [2, 7, 64, 100])
def test_butterfly_layout_is_denser_and_connected(dim):
    assert _connected(dim, "butterfly")
    # Each butterfly stage pairs (nearly) every coordinate: at least as many as one full tree.
    assert givens_angle_count(dim, "butterfly") >= dim - 1
    if dim == 64:
        assert givens_angle_count(dim, "butterfly") == 32 * 6


def test_householder_pair_formula_matches_explicit_reflections():
    torch.manual_seed(0)
    dim = 9
    base, offset = torch.randn(dim, dtype=torch.float64), torch.randn(dim, dtype=torch.float64)
    b, a = householder_pair_vectors(base, offset)
    eye = torch.eye(dim, dtype=torch.float64)
    explicit = (eye - 2 * torch.outer(a, a)) @ (eye - 2 * torch.outer(b, b))
    x = torch.randn(4, dim, dtype=torch.float64)
    torch.testing.assert_close(apply_householder_pair(x, base, offset), x @ explicit.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        apply_householder_pair(x, base, offset, transpose=True), x @ explicit, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("layout", ["bidirectional", "butterfly", "none"])
@pytest.mark.parametrize("dim", [1, 3, 64, 577])
def test_identity_at_init_is_bit_exact(dim, layout):
    rotation = OrthogonalRotation(dim, householder_reflections=2, givens_layout=layout)
    x = torch.randn(5, dim)
    assert torch.equal(rotation(x), x)
    assert torch.equal(rotation.rotate(x, transpose=True), x)


def _randomise(rotation: OrthogonalRotation, scale: float = 1.0) -> OrthogonalRotation:
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, scale)
    return rotation


@pytest.mark.parametrize("dim", [2, 7, 64, 576, 1536])
def test_orthogonality_error_small_for_every_width(dim):
    torch.manual_seed(dim)
    rotation = _randomise(OrthogonalRotation(dim, householder_reflections=4))
    assert rotation.orthogonality_error() <= 1e-5


@pytest.mark.parametrize("dim", [4096, 14336])
def test_wide_rotations_preserve_norms_and_invert(dim):
    """Widths too large for a dense check on a CPU: norm preservation and Qᵀ·Q·x = x on probes."""
    torch.manual_seed(1)
    rotation = _randomise(OrthogonalRotation(dim))
    x = torch.randn(3, dim)
    y = rotation.rotate(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=0)
    torch.testing.assert_close(rotation.rotate(y, transpose=True), x, rtol=0, atol=1e-5)


def test_dense_matches_apply_and_transpose():
    torch.manual_seed(2)
    rotation = _randomise(OrthogonalRotation(13, givens_layout="butterfly"))
    q = rotation.dense()
    x = torch.randn(6, 13)
    torch.testing.assert_close(rotation.rotate(x), x @ q.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotation.rotate(x, transpose=True), x @ q, rtol=0, atol=1e-6)


def test_gradients_of_checkpointed_rotation_are_exact():
    """The memory-saving forward must give the gradients of the plain computation (float64 gradcheck)."""
    torch.manual_seed(3)
    rotation = _randomise(OrthogonalRotation(6, dtype=torch.float64), scale=0.5)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in rotation.named_parameters()]

    def function(x, *values):
        return torch.func.functional_call(rotation, dict(zip(names, values)), (x,))

    inputs = (x,) + tuple(p.detach().clone().requires_grad_() for p in rotation.parameters())
    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-7)


def test_gradient_is_nonzero_at_init():
    """Identity at init must still be trainable: every parameter family moves the output."""
    torch.manual_seed(4)
    rotation = OrthogonalRotation(16)
    x = torch.randn(8, 16)
    target = torch.randn(8, 16)
    ((rotation(x) - target) ** 2).sum().backward()
    assert rotation.angles.grad.abs().sum() > 0
    assert rotation.householder_offset.grad.abs().sum() > 0


def test_adapter_parameters_keep_their_dtype_through_casts():
    rotation = OrthogonalRotation(8)
    rotation.to(torch.bfloat16)
    rotation.half()
    assert all(p.dtype == torch.float32 for p in rotation.parameters())
    moved = rotation.to("meta")
    assert all(p.device.type == "meta" and p.dtype == torch.float32 for p in moved.parameters())


def test_low_precision_input_is_rotated_in_fp32():
    torch.manual_seed(5)
    rotation = _randomise(OrthogonalRotation(32), scale=0.3)
    x = torch.randn(4, 32).to(torch.bfloat16)
    y = rotation(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, rotation(x.float()), rtol=0, atol=0)  # upcast first, not after
    torch.testing.assert_close(y, rotation.rotate(x.float()), rtol=0, atol=1e-6)


def test_odd_householder_count_is_refused():
    with pytest.raises(ValueError, match="even"):
        OrthogonalRotation(8, householder_reflections=3)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(min_value=1, max_value=300),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    reflections=st.sampled_from([0, 2, 4]),
    layout=st.sampled_from(["bidirectional", "butterfly"]),
    scale=st.floats(min_value=1e-3, max_value=10.0),
)
def test_property_orthogonal_and_invertible_for_random_widths(dim, seed, reflections, layout, scale):
    torch.manual_seed(seed)
    rotation = _randomise(OrthogonalRotation(dim, reflections, layout), scale)
    assert rotation.orthogonality_error() <= 1e-5
    x = torch.randn(3, dim)
    torch.testing.assert_close(rotation.rotate(rotation.rotate(x), transpose=True), x, rtol=0, atol=2e-5)
