"""Bad input gets a clear error naming what and where, and leaves the user's model as it was."""

import json

import pytest
import torch

from conftest import train_steps
from ropo import (
    RoPOConfig,
    RoPOConfigError,
    RoPOLoadError,
    RoPOMergeError,
    RoPOModel,
    RoPOTargetError,
    get_ropo_model,
)
from ropo.adapter import RoPOLinear
from ropo.tiny_models import tiny_causal_lm


@pytest.fixture
def saved_adapter(tmp_path, token_ids):
    model = get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules=["q_proj", "v_proj"]))
    train_steps(model, token_ids, steps=2)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def _state(model):
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def _assert_unchanged(model, before):
    assert not any(isinstance(m, RoPOLinear) for m in model.modules())
    after = _state(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n][0], before[n][0]) and after[n][1] == before[n][1] for n in before)


def test_target_names_matching_nothing_are_named():
    with pytest.raises(RoPOTargetError, match=r"\['qproj'\].*q_proj"):
        get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules=["qproj", "v_proj"]))
    with pytest.raises(RoPOTargetError, match="match no module"):
        get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules=r"nothing\..*"))


@pytest.mark.parametrize(("targets", "message"), [
    (["embed_tokens", "q_proj"], r"'model\.embed_tokens' is the model's output head or an embedding"),
    (["lm_head"], r"'lm_head' is the model's output head"),
    (r".*(q_proj|rotary_emb)", r"'model\.rotary_emb' is a .*LlamaRotaryEmbedding; RoPO adapts linear layers"),
])
def test_unsupported_targets_are_named_and_change_nothing(targets, message):
    model = tiny_causal_lm()
    before = _state(model)
    with pytest.raises(RoPOTargetError, match=message):
        get_ropo_model(model, RoPOConfig(target_modules=targets))
    _assert_unchanged(model, before)


def test_layers_to_transform_that_selects_nothing():
    with pytest.raises(RoPOTargetError, match="layers_to_transform"):
        get_ropo_model(tiny_causal_lm(), RoPOConfig(layers_to_transform=[7]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"householder_reflections": 3}, "householder_reflections must be an even"),
        ({"givens_layout": "spiral"}, "givens_layout must be one of"),
        ({"preset": "ropo-2023"}, "preset must be one of"),
        ({"adapter_dtype": "int8"}, "adapter_dtype must be one of"),
        ({"magnitude": "yes"}, "magnitude must be true or false"),
        ({"target_modules": []}, "target_modules must be"),
        ({"layers_to_transform": [-1]}, "layers_to_transform"),
        ({"householder_reflections": 0, "givens_layout": "none"}, "leaves no rotation"),
    ],
)
def test_invalid_option_values(options, message):
    with pytest.raises(RoPOConfigError, match=message):
        RoPOConfig(**options)


def test_invalid_target_regex():
    with pytest.raises(RoPOConfigError, match="regex"):
        get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules="q_proj("))


def _edit_config(directory, edit):
    path = directory / "adapter_config.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_unknown_config_key_on_load(saved_adapter):
    _edit_config(saved_adapter, lambda d: d.update(givens_layuot="butterfly"))
    base = tiny_causal_lm()
    before = _state(base)
    with pytest.raises(RoPOLoadError, match=r"adapter_config\.json.*unknown key\(s\) \['givens_layuot'\]"):
        RoPOModel.from_pretrained(base, saved_adapter)
    _assert_unchanged(base, before)


def test_invalid_config_value_on_load(saved_adapter):
    _edit_config(saved_adapter, lambda d: d.update(householder_reflections=5))
    with pytest.raises(RoPOConfigError, match=r"householder_reflections must be an even"):
        RoPOModel.from_pretrained(tiny_causal_lm(), saved_adapter)


def test_shape_mismatch_on_load_names_the_modules(saved_adapter):
    base = tiny_causal_lm(hidden_size=32)
    before = _state(base)
    with pytest.raises(RoPOLoadError, match=r"shapes differ.*model\.layers\.0\.self_attn\.q_proj\.ropo_magnitude\.default\.log_scale: saved \(64,\), model \(32,\)"):
        RoPOModel.from_pretrained(base, saved_adapter)
    _assert_unchanged(base, before)


@pytest.mark.parametrize(("other", "differs"), [
    (dict(num_hidden_layers=1), "num_hidden_layers differ"),
    (dict(num_hidden_layers=3), "num_hidden_layers differ"),
    (dict(architecture="qwen2"), "model_type differ"),
    (dict(architecture="mistral"), "model_type differ"),
])
def test_another_architecture_is_refused(saved_adapter, other, differs):
    base = tiny_causal_lm(**other)
    before = _state(base)
    with pytest.raises(RoPOLoadError, match=rf"made for a base with .*'model_type': 'llama', 'num_hidden_layers': 2.*{differs}"):
        RoPOModel.from_pretrained(base, saved_adapter)
    _assert_unchanged(base, before)


def test_missing_adapter_tensors_are_named(saved_adapter):
    from safetensors.torch import load_file, save_file

    path = saved_adapter / "adapter_model.safetensors"
    tensors = load_file(path)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(RoPOLoadError, match=r"does not match this model: 1 tensor\(s\) missing"):
        RoPOModel.from_pretrained(tiny_causal_lm(), saved_adapter)


def test_truncated_weights_file(saved_adapter):
    path = saved_adapter / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    base = tiny_causal_lm()
    before = _state(base)
    with pytest.raises(RoPOLoadError, match="adapter_model.safetensors: cannot be read"):
        RoPOModel.from_pretrained(base, saved_adapter)
    _assert_unchanged(base, before)


def test_missing_directory_and_bad_json(tmp_path, saved_adapter):
    with pytest.raises(RoPOLoadError, match="no such adapter folder"):
        RoPOModel.from_pretrained(tiny_causal_lm(), tmp_path / "nowhere")
    (saved_adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(RoPOLoadError, match="not valid JSON"):
        RoPOModel.from_pretrained(tiny_causal_lm(), saved_adapter)


def test_failed_merge_changes_nothing(token_ids):
    model = get_ropo_model(tiny_causal_lm(), RoPOConfig(target_modules="all-linear"))
    train_steps(model, token_ids, steps=2)
    layers = model.adapter_layers()
    with torch.no_grad():
        layers["model.layers.1.mlp.down_proj"].ropo_rotation["default"].angles[3] = float("nan")
    weights = {n: l.base_layer.weight.detach().clone() for n, l in layers.items()}
    # ``safe_merge`` (PEFT's "check finite before changing a layer") holds whatever its value.
    for safe_merge in (False, True):
        with pytest.raises(RoPOMergeError, match=r"model\.layers\.1\.mlp\.down_proj.*NaN/Inf"):
            model.merge_adapter(safe_merge=safe_merge)
        with pytest.raises(RoPOMergeError):
            model.merge_and_unload(safe_merge=safe_merge)
        with pytest.raises(RoPOMergeError):
            layers["model.layers.1.mlp.down_proj"].merge(safe_merge=safe_merge)
    assert not any(l.merged for l in layers.values())
    assert all(torch.equal(l.base_layer.weight, weights[n]) for n, l in model.adapter_layers().items())


