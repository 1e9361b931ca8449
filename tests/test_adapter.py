"""The adapter lifecycle on tiny Llama / Qwen2 (q,k,v bias) / Mistral models."""

import copy
import pickle

import pytest
import torch
from accelerate.utils import is_peft_model
from peft import PeftModel
from torch import nn

from conftest import train_steps
from ropo import AutoRoPOModelForCausalLM, RoPOConfig, RoPOModel, get_ropo_model, hyperspherical_energy
from ropo.adapter import RoPOLinear
from ropo.tiny_models import TINY_ARCHITECTURES, tiny_causal_lm


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
@pytest.mark.parametrize("preset", ["ropo-2024", "ropo-2025"])
def test_identity_at_init(architecture, preset, token_ids):
    base = tiny_causal_lm(architecture)
    with torch.no_grad():
        expected = base(token_ids).logits
    model = get_ropo_model(base, RoPOConfig(target_modules="all-linear", preset=preset))
    with torch.no_grad():
        logits = model(token_ids).logits
    assert (logits - expected).abs().max() <= 1e-6
    if architecture != "qwen2":  # no bias: the parameterisation allows bit-identity
        assert torch.equal(logits, expected)


def test_all_linear_never_includes_the_output_head():
    model = get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear"))
    names = set(model.adapter_layers())
    assert len(names) == 2 * 7 and not any("lm_head" in n for n in names)
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, RoPOLinear)


def test_target_selection_by_regex_and_layer_index():
    model = get_ropo_model(
        tiny_causal_lm(num_hidden_layers=3),
        RoPOConfig(target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 2]),
    )
    assert sorted(model.adapter_layers()) == [
        f"model.layers.{i}.self_attn.{p}" for i in (0, 2) for p in ("q_proj", "v_proj")
    ]
    regex = get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules=r".*\.mlp\.(up|down)_proj"))
    assert sorted(regex.adapter_layers()) == [f"model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("down_proj", "up_proj")]


def test_base_is_frozen_and_only_adapter_trains():
    model = get_ropo_model(tiny_causal_lm())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all((".ropo_rotation." in n or ".ropo_magnitude." in n) for n in trainable)
    assert model.get_nb_trainable_parameters()[0] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def _neuron_geometry(weight: torch.Tensor) -> torch.Tensor:
    unit = nn.functional.normalize(weight.double(), dim=1)
    return unit @ unit.T  # cosines of all angles between neurons


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
def test_training_keeps_angles_and_energy_and_disable_is_exact(architecture, token_ids):
    base = tiny_causal_lm(architecture)
    with torch.no_grad():
        base_logits = base(token_ids).logits
    original = {n: m.weight.detach().clone() for n, m in base.named_modules() if isinstance(m, nn.Linear)}
    model = get_ropo_model(base, RoPOConfig(target_modules="all-linear"))
    train_steps(model, token_ids)
    with torch.no_grad():
        trained = model(token_ids).logits
        with model.disable_adapter():
            assert torch.equal(model(token_ids).logits, base_logits)
    assert (trained - base_logits).abs().max() > 1e-3, "training did not move the model"
    assert model.orthogonality_error() <= 1e-5
    for name, layer in model.adapter_layers().items():
        merged = layer.merged_weight()
        assert not torch.allclose(merged, original[name]), name
        torch.testing.assert_close(_neuron_geometry(merged), _neuron_geometry(original[name]), rtol=0, atol=1e-5)
        he_base, he_merged = hyperspherical_energy(original[name]), hyperspherical_energy(merged)
        assert abs(he_merged - he_base) / he_base <= 1e-5, name


def test_lora_changes_angles_and_energy_where_ropo_does_not(token_ids):
    """The contrast the method rests on: the same training moves LoRA's neuron geometry."""
    from peft import LoraConfig, get_peft_model

    base = tiny_causal_lm()
    original = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian"))
    train_steps(lora, token_ids)
    merged = lora.merge_and_unload().model.layers[0].self_attn.q_proj.weight.detach()
    he_change = abs(hyperspherical_energy(merged) - hyperspherical_energy(original)) / hyperspherical_energy(original)
    angle_change = (_neuron_geometry(merged) - _neuron_geometry(original)).abs().max()
    assert angle_change > 1e-3 and he_change > 1e-5

    ropo = get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules=["q_proj", "v_proj"]))
    train_steps(ropo, token_ids)
    ropo_merged = ropo.adapter_layers()["model.layers.0.self_attn.q_proj"].merged_weight()
    assert (ropo_merged - original).abs().max() > 1e-3
    ropo_angle_change = (_neuron_geometry(ropo_merged) - _neuron_geometry(original)).abs().max()
    assert ropo_angle_change < angle_change / 100


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
def test_merge_unmerge_round_trip_and_merge_and_unload(architecture, token_ids):
    model = get_ropo_model(tiny_causal_lm(architecture), RoPOConfig(target_modules="all-linear"))
    train_steps(model, token_ids)
    weights = {n: l.base_layer.weight.detach().clone() for n, l in model.adapter_layers().items()}
    with torch.no_grad():
        unmerged = model(token_ids).logits
        model.merge_adapter()
        torch.testing.assert_close(model(token_ids).logits, unmerged, rtol=0, atol=1e-5)
        model.unmerge_adapter()
        assert all(torch.equal(l.base_layer.weight, weights[n]) for n, l in model.adapter_layers().items())
        assert torch.equal(model(token_ids).logits, unmerged)
        with model.merged_for_inference():  # the scoped form, used by evaluation to generate at the base model's cost
            assert all(layer.merged for layer in model.adapter_layers().values())
            torch.testing.assert_close(model(token_ids).logits, unmerged, rtol=0, atol=1e-5)
        assert not any(layer.merged for layer in model.adapter_layers().values())
        assert torch.equal(model(token_ids).logits, unmerged)
        plain = model.merge_and_unload()
        assert type(plain).__module__.startswith("transformers.")
        assert not any(isinstance(m, RoPOLinear) for m in plain.modules())
        torch.testing.assert_close(plain(token_ids).logits, unmerged, rtol=0, atol=1e-5)


def test_save_and_load_round_trip(tmp_path, token_ids):
    model = get_ropo_model(tiny_causal_lm("qwen2"), RoPOConfig(target_modules="all-linear"))
    train_steps(model, token_ids)
    with torch.no_grad():
        expected = model(token_ids).logits
    model.save_pretrained(tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    loaded = RoPOModel.from_pretrained(tiny_causal_lm("qwen2"), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(loaded(token_ids).logits, expected)
    assert loaded.get_nb_trainable_parameters()[0] == 0
    trainable = RoPOModel.from_pretrained(tiny_causal_lm("qwen2"), tmp_path / "adapter", is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == model.get_nb_trainable_parameters()[0]


def test_adapter_directory_loads_its_own_base(tmp_path, token_ids):
    base = tiny_causal_lm()
    base.save_pretrained(tmp_path / "base")
    model = get_ropo_model(tiny_causal_lm().from_pretrained(tmp_path / "base"))
    assert model.peft_config["default"].base_model_name_or_path == str(tmp_path / "base")
    train_steps(model, token_ids)
    model.save_pretrained(tmp_path / "adapter")
    loaded = AutoRoPOModelForCausalLM.from_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(loaded(token_ids).logits, model(token_ids).logits)


def test_low_precision_base_keeps_its_dtype_and_fp32_adapter(token_ids):
    base = tiny_causal_lm(dtype=torch.bfloat16)
    with torch.no_grad():
        expected = base(token_ids).logits
    model = get_ropo_model(base, RoPOConfig(target_modules="all-linear"))
    adapter = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in adapter)
    assert all(l.base_layer.weight.dtype == torch.bfloat16 for l in model.adapter_layers().values())
    with torch.no_grad():
        assert torch.equal(model(token_ids).logits, expected)
    train_steps(model, token_ids, steps=2)
    assert all(l.base_layer.weight.dtype == torch.bfloat16 for l in model.adapter_layers().values())


def test_to_dtype_casts_base_but_not_adapter(token_ids):
    model = get_ropo_model(tiny_causal_lm())
    model.to(torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert model(token_ids).logits.dtype == torch.bfloat16


def test_deepcopy_and_pickle_preserve_the_model(token_ids):
    model = get_ropo_model(tiny_causal_lm())
    train_steps(model, token_ids, steps=2)
    with torch.no_grad():
        expected = model(token_ids).logits
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert isinstance(clone, PeftModel) and isinstance(clone.base_model, RoPOModel)
            assert torch.equal(clone(token_ids).logits, expected)


def test_gradient_checkpointing_gives_the_same_gradients(token_ids):
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear"))
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        model(input_ids=token_ids, labels=token_ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert all(g is not None for g in checkpointed.values())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_generate_and_config_fall_through(token_ids):
    model = get_ropo_model(tiny_causal_lm())
    assert model.config.model_type == "llama"
    assert is_peft_model(model)  # so TRL takes its PEFT path (adapter-disabled reference)
    out = model.generate(token_ids[:, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 7)


def _meta_llama3_8b():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


@pytest.mark.parametrize(("preset", "paper_share"), [("ropo-2024", 0.0086), ("ropo-2025", 0.015)])
def test_trainable_share_on_llama3_8b_matches_the_papers(preset, paper_share, capsys):
    model = get_ropo_model(_meta_llama3_8b(), RoPOConfig(target_modules=["q_proj", "v_proj"], preset=preset))
    trainable, total = model.get_nb_trainable_parameters()
    share = 100 * trainable / total
    with capsys.disabled():
        print(f"\n{preset} on Llama-3-8B shapes, q_proj+v_proj: {trainable:,d} / {total:,d} = {share:.4f} %")
    assert 8.0e9 < total < 8.1e9
    assert share == pytest.approx(paper_share, rel=0.03)
