"""Scale-out beyond DDP, on a CPU.

- FSDP2: torch's ``fully_shard`` per decoder layer and on the root, 2 processes over gloo,
  trains a tiny RoPO model to the same parameters as one process on the whole batch.
- DeepSpeed ZeRO-3 (which needs CUDA) partitions base weights: outside a gather ``weight`` is
  empty and its shape is in ``ds_shape``. A stand-in partitioned parameter, gathered by a
  stand-in ``deepspeed.zero.GatheredParameters``, checks that every read of a base weight outside
  forward (shapes at injection, merging, HE) goes through PEFT's ``gather_params_ctx``.
"""

import contextlib
import sys
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from peft import get_peft_model
from peft.utils import integrations
from torch import nn

import ropo  # noqa: F401
from ropo import RoPOConfig, hyperspherical_energy
from ropo.models.weights import base_weights, effective_weights
from ropo.tiny_models import tiny_causal_lm

WORLD_SIZE, STEPS, LR = 2, 3, 1e-2


def _batch() -> torch.Tensor:
    return torch.randint(0, 128, (4, 12), generator=torch.Generator().manual_seed(7))


def _trained(rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
    """Adapter parameters after STEPS AdamW steps; each rank trains on its share of the batch."""
    model = get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear", init_weights=False))
    if world_size > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world_size,))
        for layer in model.get_base_model().model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    rows = _batch()[rank::world_size]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=LR, weight_decay=0.0)
    model.train()
    for _ in range(STEPS):
        model(input_ids=rows, labels=rows).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in trainable}


def _fsdp_worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        parameters = _trained(rank, WORLD_SIZE)
        if rank == 0:
            torch.save(parameters, out)
    finally:
        dist.destroy_process_group()


def test_fsdp2_two_cpu_processes_match_one_process(tmp_path):
    out = tmp_path / "fsdp.pt"
    mp.spawn(_fsdp_worker, args=(str(tmp_path / "init"), str(out)), nprocs=WORLD_SIZE, join=True)
    sharded, single = torch.load(out), _trained()
    assert sharded.keys() == single.keys() and len(single) > 0
    initial = get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear", init_weights=False))
    moved = [n for n, p in initial.named_parameters() if n in single and not torch.equal(p, single[n])]
    assert len(moved) == len(single)  # training moved every adapter parameter
    for name in single:
        torch.testing.assert_close(sharded[name], single[name], rtol=0, atol=1e-5, msg=name)


# --------------------------------------------------------------- a stand-in for ZeRO-3 partitioning
def _partition(parameter: nn.Parameter) -> None:
    """As ZeRO-3 leaves a parameter outside a gather: empty data, real shape in ``ds_shape``."""
    parameter.ds_shape = parameter.shape
    parameter.ds_full = parameter.data
    parameter.data = torch.empty(0, dtype=parameter.dtype)


@contextlib.contextmanager
def _gathered(params, modifier_rank=None, fwd_module=None):
    """Stand-in for ``deepspeed.zero.GatheredParameters`` on one rank: restores the full data,
    keeps the modifier's writes, partitions again on exit. Like DeepSpeed, it leaves parameters
    that are not partitioned alone."""
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    params = [p for p in params if hasattr(p, "ds_full")]
    for p in params:
        p.data = p.ds_full
    try:
        yield
    finally:
        for p in params:
            if modifier_rank is not None:
                p.ds_full = p.data
            p.data = torch.empty(0, dtype=p.dtype)


@pytest.fixture
def zero3(monkeypatch):
    deepspeed = types.ModuleType("deepspeed")
    deepspeed.zero = types.SimpleNamespace(GatheredParameters=_gathered)
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    monkeypatch.setattr(integrations, "check_deepspeed_zero3_enabled", lambda: True)


def _adapted_gpt2(partitioned: bool):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    if partitioned:
        for name, parameter in base.named_parameters():
            if name.endswith(("c_attn.weight", "c_proj.weight")):
                _partition(parameter)
    torch.manual_seed(1)
    return get_peft_model(base, RoPOConfig(target_modules=["c_attn", "c_proj"], init_weights=False))


def test_reads_of_partitioned_base_weights_are_gathered(zero3):
    reference, model = _adapted_gpt2(partitioned=False), _adapted_gpt2(partitioned=True)
    layers = model.adapter_layers()
    names = sorted(layers)
    weight = layers[names[0]].get_base_layer().weight
    assert weight.numel() == 0 and len(weight.ds_shape) == 2  # partitioned outside a gather

    # shapes at injection (Conv1D reads them from the weight)
    for name in names:
        assert (layers[name].in_features, layers[name].out_features) == (
            reference.adapter_layers()[name].in_features, reference.adapter_layers()[name].out_features)
    # HE and the delta weight
    expected = effective_weights(reference, names)
    got = effective_weights(model, names)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
        assert hyperspherical_energy(got[name]) == hyperspherical_energy(expected[name])
        torch.testing.assert_close(
            layers[name].get_delta_weight("default"), reference.adapter_layers()[name].get_delta_weight("default"))
    assert all(w.numel() > 0 for w in base_weights(model, names).values())
    # merging writes the gathered weight; unmerging restores it
    model.merge_adapter()
    reference.merge_adapter()
    for name in names:
        merged = layers[name].get_base_layer().weight
        assert merged.numel() == 0
        torch.testing.assert_close(merged.ds_full, reference.adapter_layers()[name].get_base_layer().weight)
    model.unmerge_adapter()
    for name in names:
        restored = layers[name].get_base_layer().weight.ds_full
        assert torch.equal(restored, _adapted_gpt2(partitioned=False).adapter_layers()[name].get_base_layer().weight)
