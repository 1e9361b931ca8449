"""The rotation backends by name (issue 18): users and the bench can pick one, each computes the
reference's Q and gradients, and one that cannot run here says what to use instead."""

import os

import pytest
import torch

from ropo.errors import RoPOConfigError
from ropo.rotation import OrthogonalRotation
from ropo.rotation.module import ROTATION_BACKENDS


def _rotation(backend: str) -> OrthogonalRotation:
    torch.manual_seed(0)
    rotation = OrthogonalRotation(48, 2, "bidirectional", backend=backend)
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, 0.3)
    return rotation


def test_every_backend_is_named():
    assert set(ROTATION_BACKENDS) == {"auto", "fused", "triton", "reference"}


@pytest.mark.parametrize("backend", ["auto", "fused"])
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
def test_triton_where_it_cannot_run_names_the_alternatives():
    with pytest.raises(RoPOConfigError, match="rotation backend 'triton' needs triton and a CUDA tensor.*'auto' or 'fused'"):
        _rotation("triton")(torch.randn(3, 48))


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="rotation backend must be one of"):
        OrthogonalRotation(8, 2, backend="fast")
