"""RoPO through PEFT's and TRL's own entry points, as their users call them (``import ropo`` only).

What users run: ``get_peft_model``, ``PeftModel.from_pretrained``, ``AutoPeftModelForCausalLM``,
transformers' ``load_adapter``, several adapters, ``unload``, ``modules_to_save``, TRL's
``DPOTrainer`` with ``peft_config=`` and TRL's default ``DPOConfig`` (bf16 autocast, gradient
checkpointing), bf16 autocast for each rotation backend, GPT-2's ``Conv1D`` and bitsandbytes'
4-bit layers as bases.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftConfig, PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType
from torch import nn

import ropo
from conftest import train_steps
from ropo import RoPOConfig, RoPOLoadError, RoPOMergeError
from ropo.adapter import RoPOLayer
from ropo.cli import main as ropo_main
from ropo.tiny_models import tiny_causal_lm, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _logits(model, token_ids):
    with torch.no_grad():
        return model(token_ids).logits


def test_import_registers_ropo_with_peft():
    """Fails loudly if PEFT's enum or registry moves (adapter/peft_type.py is the one shim)."""
    assert PeftType.ROPO in list(PeftType) and PeftType("ROPO") is PeftType.ROPO
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.ROPO] is RoPOConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.ROPO] is ropo.RoPOModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.ROPO] == "ropo_"
    assert RoPOConfig().peft_type is PeftType.ROPO


def test_config_round_trips_through_peft_config(tmp_path):
    RoPOConfig(target_modules=["q_proj"], preset="ropo-2024", init_weights=False).save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(str(tmp_path))
    assert isinstance(loaded, RoPOConfig)
    assert (loaded.preset, loaded.householder_reflections, loaded.init_weights) == ("ropo-2024", 0, False)
    assert loaded.target_modules == {"q_proj"}


def test_from_pretrained_auto_class_and_transformers_load_adapter(tmp_path, token_ids):
    tiny_causal_lm().save_pretrained(tmp_path / "base")
    base = type(tiny_causal_lm()).from_pretrained(tmp_path / "base")
    model = get_peft_model(base, RoPOConfig(target_modules="all-linear", init_weights=False))
    expected = _logits(model, token_ids)
    model.save_pretrained(tmp_path / "adapter")

    loaded = PeftModel.from_pretrained(type(base).from_pretrained(tmp_path / "base"), str(tmp_path / "adapter"))
    assert torch.equal(_logits(loaded, token_ids), expected)
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"))
    assert torch.equal(_logits(auto, token_ids), expected)
    plain = type(base).from_pretrained(tmp_path / "base")
    plain.load_adapter(str(tmp_path / "adapter"))  # transformers' own adapter loading
    assert torch.equal(_logits(plain, token_ids), expected)


def test_several_adapters_set_delete_disable_and_unload(token_ids):
    base_logits = _logits(tiny_causal_lm(), token_ids)
    model = get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules=["q_proj", "v_proj"]))
    model.add_adapter("other", RoPOConfig(target_modules=["q_proj", "v_proj"], init_weights=False))
    assert torch.equal(_logits(model, token_ids), base_logits)  # "default" is still active, at identity
    model.set_adapter("other")
    other = _logits(model, token_ids)
    assert (other - base_logits).abs().max() > 1e-3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".other." in n for n in trainable)
    with model.disable_adapter():
        assert torch.equal(_logits(model, token_ids), base_logits)
    model.set_adapter("default")
    model.delete_adapter("other")
    assert all(set(layer.ropo_rotation) == {"default"} for layer in model.modules() if isinstance(layer, RoPOLayer))
    plain = model.unload()
    assert not any(isinstance(m, RoPOLayer) for m in plain.modules())
    assert torch.equal(_logits(plain, token_ids), base_logits)


def test_modules_to_save_trains_and_saves_the_module(tmp_path, token_ids):
    model = get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]))
    assert any("lm_head" in n for n, p in model.named_parameters() if p.requires_grad)
    train_steps(model, token_ids, steps=2)
    expected = _logits(model, token_ids)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    assert any("lm_head" in key for key in load_file(tmp_path / "adapter_model.safetensors"))
    assert torch.equal(_logits(PeftModel.from_pretrained(tiny_causal_lm(), str(tmp_path)), token_ids), expected)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bf16_autocast_forward_and_backward(backend, token_ids):
    """TRL's default is bf16 autocast: the rotation computes in fp32 inside it, forward and backward."""
    fp32 = get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear", rotation_backend=backend, init_weights=False))
    loss32 = fp32(input_ids=token_ids, labels=token_ids).loss
    model = get_peft_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear", rotation_backend=backend, init_weights=False))
    model.load_state_dict(fp32.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=token_ids, labels=token_ids).loss
    loss.backward()
    loss32.backward()
    assert loss.item() == pytest.approx(loss32.item(), rel=2e-2)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    reference = {n: p.grad for n, p in fp32.named_parameters() if p.requires_grad}
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    cosine = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in grads.values()]), torch.cat([g.flatten() for g in reference.values()]), dim=0
    )
    assert cosine > 0.99, "bf16 gradients point elsewhere than fp32's"


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=128, n_positions=32)).eval()


def test_gpt2_conv1d_base(token_ids):
    base_logits = _logits(_gpt2(), token_ids)
    identity = get_peft_model(_gpt2(), RoPOConfig(target_modules=["c_attn", "c_proj"]))
    assert torch.equal(_logits(identity, token_ids), base_logits)
    model = get_peft_model(_gpt2(), RoPOConfig(target_modules=["c_attn", "c_proj"], init_weights=False))
    train_steps(model, token_ids, steps=2)
    unmerged = _logits(model, token_ids)
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    model.merge_adapter()
    torch.testing.assert_close(_logits(model, token_ids), unmerged, rtol=0, atol=1e-5)
    model.unmerge_adapter()
    assert all(torch.equal(m.weight, weights[n]) for n, m in model.named_modules() if n in weights)
    plain = model.merge_and_unload()
    torch.testing.assert_close(_logits(plain, token_ids), unmerged, rtol=0, atol=1e-5)


def test_bitsandbytes_4bit_base_trains_on_cpu():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    quantized = nn.Sequential(bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32), nn.ReLU(), nn.Linear(64, 8))
    quantized.load_state_dict(dense.state_dict())
    quantized = quantized.to("cpu")  # bitsandbytes quantizes on the move
    assert quantized[0].weight.dtype == torch.uint8
    x = torch.randn(5, 64)
    with torch.no_grad():
        expected = quantized(x)
    model = get_peft_model(quantized, RoPOConfig(target_modules=["0"]))
    with torch.no_grad():
        assert torch.equal(model(x), expected)  # identity at init, through the quantized matmul
    model(x).square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)
    with pytest.raises(RoPOMergeError, match="quantized"):
        model.merge_adapter()


def _tiny_dpo_dataset(tmp_path: Path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(REPO / "configs/data/tiny_prefs.jsonl"), split="train",
                        cache_dir=str(tmp_path / "cache"))


def test_trl_default_dpo_config_with_peft_config(tmp_path, token_ids):
    """TRL unchanged: DPOConfig() defaults (bf16 autocast, gradient checkpointing), peft_config=RoPOConfig.

    ``use_cpu=True`` is what TRL itself asks for to run bf16 on a machine without a GPU."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2, save_steps=3,
                     logging_steps=1, report_to="none", max_length=64, use_cpu=True)
    assert args.bf16 and args.gradient_checkpointing  # TRL's defaults, left as they are
    trainer = DPOTrainer(model=tiny_causal_lm(vocab_size=262), args=args, train_dataset=_tiny_dpo_dataset(tmp_path),
                         processing_class=tiny_tokenizer(), peft_config=RoPOConfig())
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)  # no second copy
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # step 1: policy == reference
    checkpoint = tmp_path / "out" / "checkpoint-3"
    files = {p.name for p in checkpoint.iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    # accelerate wraps the trained model's forward in bf16 autocast; compare the model itself
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "angles" in n)
    reloaded = PeftModel.from_pretrained(tiny_causal_lm(vocab_size=262), str(checkpoint))
    ids = token_ids % 256
    torch.testing.assert_close(_logits(reloaded, ids), _logits(model, ids), rtol=0, atol=1e-5)


def test_trl_with_a_ropo_peft_model_loads_no_second_model(tmp_path):
    from trl import DPOConfig, DPOTrainer

    model = get_peft_model(tiny_causal_lm(vocab_size=262), RoPOConfig())
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     bf16=False, max_length=64)
    trainer = DPOTrainer(model=model, args=args, train_dataset=_tiny_dpo_dataset(tmp_path), processing_class=tiny_tokenizer())
    assert trainer.ref_model is None and "ref" in model.peft_config  # TRL's frozen copy of the adapter
    trainer.train()


def _legacy_adapter(directory: Path, model) -> None:
    """An adapter as ropo 0.1 wrote it: a 'modules' manifest and a checksum in the metadata."""
    from safetensors.torch import save_file

    from ropo.adapter.legacy import _CHECKSUM_KEY, _checksum

    layers = model.base_model.adapter_layers()
    tensors = {}
    for name, layer in layers.items():
        rotation = layer.ropo_rotation["default"]
        for key in ("angles", "householder_base", "householder_offset"):
            tensors[f"{name}.rotation.{key}"] = getattr(rotation, key).detach().clone()
        tensors[f"{name}.magnitude.log_scale"] = layer.ropo_magnitude["default"].log_scale.detach().clone()
    directory.mkdir()
    save_file(tensors, directory / "adapter_model.safetensors", metadata={_CHECKSUM_KEY: _checksum(tensors), "format": "pt"})
    document = {"peft_type": "ROPO", "target_modules": ["q_proj", "v_proj"], "preset": "ropo-2025",
                "householder_reflections": 2, "givens_layout": "bidirectional", "magnitude": True,
                "adapter_dtype": "float32", "rotation_backend": "auto", "layers_to_transform": None,
                "layers_pattern": None, "base_model_name_or_path": None,
                "modules": {name: [layer.out_features, layer.in_features] for name, layer in layers.items()}}
    (directory / "adapter_config.json").write_text(json.dumps(document))


def test_ropo_0_1_adapters_are_refused_by_name_and_convert(tmp_path, token_ids):
    model = get_peft_model(tiny_causal_lm(), RoPOConfig(init_weights=False))
    expected = _logits(model, token_ids)
    _legacy_adapter(tmp_path / "old", model)
    with pytest.raises(RoPOLoadError, match="ropo convert-adapter"):
        PeftModel.from_pretrained(tiny_causal_lm(), str(tmp_path / "old"))
    assert ropo_main(["convert-adapter", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    converted = PeftModel.from_pretrained(tiny_causal_lm(), str(tmp_path / "new"))
    assert torch.equal(_logits(converted, token_ids), expected)


def test_mixed_adapter_batches_are_refused_not_ignored(token_ids):
    model = get_peft_model(tiny_causal_lm(), RoPOConfig())
    with pytest.raises(ValueError, match="mixed adapter batches"):
        model(token_ids, adapter_names=["default", "default"])
