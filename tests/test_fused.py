"""The fused rotation path and the native CPU kernels: the reference's Q and gradients, a valid
level plan, only x saved."""

import pytest
import torch

from ropo import RoPOConfig, RoPOConfigError, get_ropo_model
from ropo.rotation import OrthogonalRotation, givens_stages
from ropo.rotation import fused as fused_module
from ropo.rotation.fused import fused_operands, fused_rotate, givens_plan
from ropo.tiny_models import tiny_causal_lm

from conftest import saved_activations


#: The two engines that compute the reference's Q and gradients without saving more than x.
ENGINES = ("fused", "native")


def _pair(dim: int, layout: str, reflections: int, seed: int, dtype=torch.float32, backend: str = "fused"):
    """A randomised reference rotation and a ``backend`` one with the very same parameters."""
    torch.manual_seed(seed)
    reference = OrthogonalRotation(dim, reflections, layout, dtype=dtype, backend="reference")
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.normal_(0, 0.5)
    fused = OrthogonalRotation(dim, reflections, layout, dtype=dtype, backend=backend)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _output_and_grads(rotation: OrthogonalRotation, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_()
    y = rotation(x)
    y.backward(grad)
    grads = {name: p.grad for name, p in rotation.named_parameters()}
    return y.detach(), x.grad, grads


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    if expected is None:  # a parameter with no entries (e.g. no Givens angles at width 1)
        assert actual is None or actual.numel() == 0, what
        return
    actual, expected = actual.double(), expected.double()
    scale = max(float(expected.abs().max()), 1.0) if expected.numel() else 1.0
    error = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:.1g} × {scale:.3g}"


def _assert_matches_reference(rotation, reference, x, grad) -> None:
    """fp32: output, input gradient and every parameter gradient as the reference's."""
    y, gx, grads = _output_and_grads(rotation, x, grad)
    y_ref, gx_ref, grads_ref = _output_and_grads(reference, x, grad)
    _assert_close(y, y_ref, 1e-5, "output")
    _assert_close(gx, gx_ref, 1e-5, "input gradient")
    for name, expected in grads_ref.items():
        _assert_close(grads[name], expected, 2e-5, name)


@pytest.mark.parametrize("layout", ["bidirectional", "butterfly", "none"])
@pytest.mark.parametrize("dim", [1, 2, 5, 64, 576, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ENGINES)
def test_fused_matches_reference_outputs_and_gradients(dim, layout, dtype, backend):
    reference, fused = _pair(dim, layout, reflections=2, seed=dim, backend=backend)
    x = torch.randn(3, 7, dim).to(dtype)
    grad = torch.randn(3, 7, dim)
    y_ref, gx_ref, grads_ref = _output_and_grads(reference, x, grad)
    y, gx, grads = _output_and_grads(fused, x, grad)
    assert y.dtype == torch.float32 and gx.dtype == dtype and y.shape == x.shape
    _assert_close(y, y_ref, 1e-5, "output")
    # The input gradient is rounded to the input's dtype: allow one bf16 rounding step.
    _assert_close(gx, gx_ref, 1e-5 if dtype == torch.float32 else 8e-3, "input gradient")
    for name, expected in grads_ref.items():
        _assert_close(grads[name], expected, 2e-5, name)


@pytest.mark.parametrize("reflections", [0, 4])
@pytest.mark.parametrize("backend", ENGINES)
def test_fused_matches_reference_for_other_reflection_counts(reflections, backend):
    reference, fused = _pair(96, "bidirectional", reflections, seed=7, backend=backend)
    x, grad = torch.randn(10, 96), torch.randn(10, 96)
    _assert_matches_reference(fused, reference, x, grad)


@pytest.mark.parametrize("layout", ["bidirectional", "butterfly"])
def test_fused_gradients_pass_gradcheck_in_float64(layout):
    rotation = _pair(13, layout, reflections=4, seed=3, dtype=torch.float64)[1]
    plan = givens_plan(13, layout)
    x = torch.randn(4, 13, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in rotation.parameters())

    def function(x, angles, base, offset):
        return fused_rotate(x, plan, *fused_operands(angles, base, offset, plan))

    assert torch.autograd.gradcheck(function, (x, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("layout", ["bidirectional", "butterfly", "none"])
@pytest.mark.parametrize("backend", ENGINES)
def test_fused_is_exactly_identity_at_init_and_still_trainable(layout, backend):
    rotation = OrthogonalRotation(100, householder_reflections=2, givens_layout=layout, backend=backend)
    x = torch.randn(6, 100)
    y = rotation(x)
    assert torch.equal(y, x)
    ((y - torch.randn_like(y)) ** 2).sum().backward()
    assert rotation.householder_offset.grad.abs().sum() > 0
    if layout != "none":
        assert rotation.angles.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ENGINES)
def test_fused_handles_strided_inputs_and_frozen_inputs(backend):
    reference, fused = _pair(48, "bidirectional", 2, seed=11, backend=backend)
    x = torch.randn(48, 20).T  # non-contiguous rows
    grad = torch.randn(20, 48)
    assert torch.allclose(fused(x), reference(x), atol=1e-5)
    # An input that needs no gradient (e.g. the first layer's): the parameters still get theirs.
    fused(x).backward(grad)
    reference(x).backward(grad)
    for (name, p), q in zip(fused.named_parameters(), reference.parameters()):
        _assert_close(p.grad, q.grad, 2e-5, name)
    with torch.no_grad():
        assert torch.allclose(fused(x), reference(x), atol=1e-5)


def test_tiled_rows_match_reference(monkeypatch):
    """Rows go through in cache-sized tiles on CPU: tiles must cover every row exactly once."""
    monkeypatch.setattr(fused_module, "TILE_BYTES", 16 * 1024)
    x = torch.randn(333, 96)
    tiles = fused_module._tiles(x)
    assert len(tiles) == 5 and tiles[0][0] == 0 and tiles[-1][1] == 333
    assert all(a[1] == b[0] for a, b in zip(tiles, tiles[1:]))
    assert all(stop - start >= fused_module.MIN_TILE_ROWS for start, stop in tiles)
    reference, rotation = _pair(96, "bidirectional", 4, seed=9)
    grad = torch.randn(333, 96)
    _assert_matches_reference(rotation, reference, x, grad)


@pytest.mark.parametrize("layout", ["bidirectional", "butterfly"])
@pytest.mark.parametrize("dim", [2, 5, 64, 576, 1000, 1536])
def test_level_plan_covers_every_stage_once_within_block_size(dim, layout):
    stages = givens_stages(dim, layout)
    levels = givens_plan(dim, layout).levels
    assert sum(level.stages for level in levels) == len(stages)
    starts = [level.angle_start for level in levels]
    stops = [level.angle_stop for level in levels]
    assert starts[0] == 0 and stops[-1] == sum(s.size for s in stages) and starts[1:] == stops[:-1]
    for level in levels:
        assert 2 <= level.block <= 16
        written = level.real_coords.tolist()
        assert len(set(written)) == len(written), "a coordinate written twice by one level"
    # Full-width levels read the activations in place (no gather): at least the first one here.
    if dim % 8 == 0:
        assert levels[0].coords is None


@pytest.mark.parametrize("backend", ENGINES)
def test_fused_saves_only_its_input(backend):
    rotation = _pair(256, "bidirectional", 2, seed=5, backend=backend)[1]
    x = torch.randn(64, 256, requires_grad=True)
    saved = saved_activations(lambda: rotation(x), x)
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


def test_config_rotation_backend_is_validated_passed_through_and_saved():
    with pytest.raises(RoPOConfigError, match="rotation_backend"):
        RoPOConfig(rotation_backend="triton-please")
    config = RoPOConfig(target_modules=["q_proj"], rotation_backend="reference")
    assert RoPOConfig.from_peft_type(**config.to_dict()).rotation_backend == "reference"
    model = get_ropo_model(tiny_causal_lm(), config)
    assert {layer.ropo_rotation["default"].backend for layer in model.adapter_layers().values()} == {"reference"}
    assert RoPOConfig().rotation_backend == "auto"


@pytest.mark.parametrize("backend", ENGINES)
def test_both_backends_train_a_model_identically(token_ids, backend):
    """A few SGD steps through whole models: same losses and parameters either way.

    (SGD, not Adam: Adam turns rounding noise in gradients that are 0 at init into full steps.)"""
    models = {}
    for name in ("reference", backend):
        torch.manual_seed(0)
        config = RoPOConfig(target_modules="all-linear", rotation_backend=name)
        model = get_ropo_model(tiny_causal_lm(), config)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        losses = []
        for _ in range(3):
            loss = model(input_ids=token_ids, labels=token_ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        models[name] = (model, losses)
    (reference, ref_losses), (fused, fused_losses) = models["reference"], models[backend]
    assert fused_losses == pytest.approx(ref_losses, rel=1e-5)
    assert ref_losses[-1] < ref_losses[0]
    for (name, a), b in zip(fused.named_parameters(), reference.parameters()):
        if a.requires_grad:
            assert torch.allclose(a, b, atol=1e-5), name
    assert all(layer.ropo_rotation["default"].angles.abs().max() > 0 for layer in fused.adapter_layers().values())


@pytest.mark.parametrize("layout", ["bidirectional", "butterfly"])
@pytest.mark.parametrize("backend", ["reference", *ENGINES])
def test_a_rotation_first_run_under_inference_mode_still_trains(layout, backend):
    """The cached plans are built outside inference mode: measure a model under
    ``torch.inference_mode()``, then train one of the same width in the same process (a study does
    that), and the training step's backward works and matches the reference's."""
    from ropo.rotation.layout import givens_pairs

    for cached in (givens_stages, givens_pairs, givens_plan):
        cached.cache_clear()  # so that the inference-mode call below is the one that builds them
    reference, rotation = _pair(48, layout, 2, seed=17, backend=backend)
    with torch.inference_mode():
        rotation(torch.randn(2, 48))
    x, grad = torch.randn(3, 48), torch.randn(3, 48)
    _assert_matches_reference(rotation, reference, x, grad)


@pytest.mark.parametrize("backend", ENGINES)
def test_inference_operands_follow_writes_to_the_parameters(backend):
    """Without grad the operands are cached (decoding): a write through ``.data`` (as loaders and
    trainers do) must still be seen by the next call."""
    reference, rotation = _pair(64, "bidirectional", 2, seed=13, backend=backend)
    x = torch.randn(1, 64)
    with torch.no_grad():
        _assert_close(rotation(x), reference(x), 1e-5, "before the write")
        assert rotation(x).equal(rotation(x))  # the cached operands give the same Q
        for moved, parameter in zip(rotation.parameters(), reference.parameters()):
            moved.data.add_(0.1)
            parameter.data.add_(0.1)
        _assert_close(rotation(x), reference(x), 1e-5, "after the write")
