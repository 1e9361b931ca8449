"""The rotation backends by name (issue 18): users and the bench can pick one, each computes the
reference's Q and gradients, and one that cannot run here says what to use instead."""

import os

import pytest
import torch

from ropo.errors import RoPOConfigError
from ropo.rotation import OrthogonalRotation
from ropo.rotation import native
from ropo.rotation.module import ROTATION_BACKENDS


def _rotation(backend: str) -> OrthogonalRotation:
    torch.manual_seed(0)
    rotation = OrthogonalRotation(48, 2, "bidirectional", backend=backend)
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, 0.3)
    return rotation


def test_every_backend_is_named():
    assert set(ROTATION_BACKENDS) == {"auto", "native", "fused", "triton", "triton-levels", "reference"}


@pytest.mark.parametrize("backend", ["auto", "native", "fused"])
def test_named_backends_match_the_reference(backend):
    x = torch.randn(5, 48, requires_grad=True)
    results = []
    for name in (backend, "reference"):
        rotation = _rotation(name)
        x.grad = None
        y = rotation(x)
        y.square().sum().backward()
        results.append((y.detach(), x.grad.clone(), [p.grad for p in rotation.parameters()]))
    (y, gx, grads), (y_ref, gx_ref, grads_ref) = results
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-4)
    for grad, reference in zip(grads, grads_ref):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="triton can run here")
@pytest.mark.parametrize("backend", ["triton", "triton-levels"])
def test_triton_where_it_cannot_run_names_the_alternatives(backend):
    with pytest.raises(RoPOConfigError, match=f"rotation backend '{backend}' needs triton and a CUDA tensor.*'auto' or 'fused'"):
        _rotation(backend)(torch.randn(3, 48))


def _engine(y: torch.Tensor) -> str:
    """The name of the engine that computed ``y`` (its autograd node, under the reshapes around it)."""
    node = y.grad_fn
    while not hasattr(node, "engine"):
        node = node.next_functions[0][0]
    return node.engine.name


def test_auto_uses_the_native_kernels_on_the_cpu():
    assert _engine(_rotation("auto")(torch.randn(6, 48, requires_grad=True))) == "native"


def test_native_where_it_cannot_run_names_the_alternatives():
    rotation = OrthogonalRotation(48, 2, "bidirectional", dtype=torch.float64, backend="native")
    with pytest.raises(RoPOConfigError, match="'native' needs a CPU tensor and a float32 adapter.*'auto' or 'fused'"):
        rotation(torch.randn(3, 48, dtype=torch.float64))


def test_kernels_that_cannot_be_built_leave_auto_on_the_fused_path(monkeypatch):
    """No compiler: ``auto`` warns once and computes the same Q by the fused path; ``native`` refuses."""
    monkeypatch.setattr(native, "_extension", lambda: "CalledProcessError: no C++ compiler")
    native._warn_fallback.cache_clear()
    x = torch.randn(5, 48)
    with pytest.warns(UserWarning, match="could not be built \\(CalledProcessError: no C\\+\\+ compiler\\).*'fused'"):
        y = _rotation("auto")(x.requires_grad_())
    assert _engine(y) == "fused"
    torch.testing.assert_close(y, _rotation("reference")(x), rtol=0, atol=1e-5)
    with pytest.raises(RoPOConfigError, match="'native' could not be built.*no C\\+\\+ compiler.*'fused'"):
        _rotation("native")(x)
    native._warn_fallback.cache_clear()


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="rotation backend must be one of"):
        OrthogonalRotation(8, 2, backend="fast")
