"""A RoPO model is an ordinary ``nn.Module`` to the code that walks, copies, compiles or
materialises modules: ``model.apply(fn)`` (transformers' weight init, distributed wrappers),
``copy.deepcopy``, ``torch.compile`` and a base built on the meta device."""

import copy

import pytest
import torch
from peft import get_peft_model

import ropo  # noqa: F401  (registers the RoPO PEFT method)
from conftest import train_steps
from ropo import RoPOConfig
from ropo.rotation import OrthogonalRotation
from ropo.tiny_models import tiny_causal_lm


def _model(target_modules="all-linear", **config):
    return get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules=target_modules, init_weights=False, **config))


def _logits(model, token_ids):
    with torch.no_grad():
        return model(token_ids).logits


def test_module_apply_visits_every_module_including_rotations():
    model = _model()
    visited = []
    assert model.apply(visited.append) is model
    rotations = [m for m in visited if isinstance(m, OrthogonalRotation)]
    assert len(rotations) == len(model.adapter_layers()) > 0
    assert visited[-1] is model


def test_deepcopy_is_an_independent_model_with_the_same_outputs(token_ids):
    model = _model()
    clone = copy.deepcopy(model)
    torch.testing.assert_close(_logits(clone, token_ids), _logits(model, token_ids), rtol=0, atol=0)
    train_steps(clone, token_ids, steps=1)
    assert not torch.equal(_logits(clone, token_ids), _logits(model, token_ids))


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_torch_compile_matches_eager_and_trains(token_ids, backend):
    """Through dynamo and AOTAutograd (``aot_eager``: inductor's C++ build would cost a minute of CI).

    q/v only: each distinct layer width is one more dynamo recompile of the fused path.
    """
    model = _model(target_modules=["q_proj", "v_proj"], rotation_backend=backend)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(_logits(compiled, token_ids), _logits(model, token_ids), rtol=1e-5, atol=1e-5)

    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_steps(compiled, token_ids, steps=1, lr=1e-2)
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(moved) == len(before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_meta_device_base_wraps_and_materialises(token_ids):
    reference = _model()
    with torch.device("meta"):
        base = tiny_causal_lm()
    model = get_peft_model(base, RoPOConfig(target_modules="all-linear", init_weights=False))
    assert {p.device.type for p in model.parameters()} == {"meta"}
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict(), strict=True)
    buffers = dict(reference.named_buffers())  # non-persistent ones too (rotary inv_freq)
    for name, buffer in model.named_buffers():
        buffer.copy_(buffers[name])
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "ropo_" in n)
    torch.testing.assert_close(_logits(model, token_ids), _logits(reference, token_ids), rtol=0, atol=0)
