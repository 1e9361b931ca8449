"""Recipes: YAML + overrides, validated (keys and values) before any model is loaded."""

from pathlib import Path

import pytest

from ropo.cli import main as ropo_main
from ropo.training.recipe import RecipeError
from ropo.training.spec import load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_shipped_recipes_are_valid():
    import torch

    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"tiny.yaml", "default.yaml", "paper.yaml"}
    for path in paths:
        # The paper recipe trains in bf16 on GPUs; without one, TRL rightly refuses bf16.
        cpu_only = ["training.bf16=false"] if path.name == "paper.yaml" and not torch.cuda.is_available() else []
        recipe = load_recipe(path, cpu_only)
        assert recipe.method in ("ropo", "full", "lora", "dora", "oft", "hra"), path


def test_overrides_reach_every_section():
    recipe = load_recipe(REPO / "configs/tiny.yaml", ["training.beta=0.3", "method=lora", "adapter={r: 4}",
                                                      "model.dtype=bfloat16", "training.loss_type=[sigmoid, sft]"])
    assert recipe.training["beta"] == 0.3 and recipe.method == "lora" and recipe.adapter == {"r": 4}
    assert recipe.model.dtype == "bfloat16" and recipe.training["loss_type"] == ["sigmoid", "sft"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["methd=ropo"], r"unknown key\(s\) \['methd'\]"),
        (["model.path=x"], r"unknown key\(s\) \['model\.path'\]"),
        (["training.betta=0.1"], r"training\.betta is not an option of TRL's DPOConfig"),
        (["training.beta=high"], r"training\.beta must be float, got 'high'"),
        (["training.max_steps=2.5"], r"training\.max_steps must be int, got 2\.5"),
        (["training.bf16=1"], r"training\.bf16 must be bool, got 1"),
        (["training.output_dir=x"], r"set output_dir at the top level"),
        (["method=sft"], r"method must be one of"),
        (["model.dtype=int4"], r"model\.dtype must be one of"),
        (["seed=abc"], r"seed must be int, got 'abc'"),
        (["adapter.preset=ropo-1999"], r"adapter.*preset must be one of"),
        (["adapter.householder_reflections=3"], r"householder_reflections must be an even"),
        (["method=lora", "adapter={rank: 4}"], r"adapter: options for 'lora' \(LoraConfig\)"),
        (["method=full", "training.precompute_ref_log_probs=false"], r"precompute_ref_log_probs must stay true"),
        (["sample_every=-1"], r"sample_every must be >= 0"),
        (["beta"], r"must look like key=value"),
    ],
)
def test_bad_recipes_are_refused_with_the_key(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(REPO / "configs/tiny.yaml", overrides)


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "r.yaml").write_text("method: [unclosed")
    with pytest.raises(RecipeError, match=r"r\.yaml: not valid YAML"):
        load_recipe(tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def _forbid_loading(monkeypatch) -> None:
    """Make any model or tokenizer load fail, where it is looked up and where training bound it
    (imported here first, so that no module binds the stand-in for good)."""
    import ropo.models.loading as loading
    import ropo.training.run as run

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the recipe was validated")

    for module in (loading, run):
        monkeypatch.setattr(module, "load_base_model", must_not_load)
        monkeypatch.setattr(module, "load_tokenizer", must_not_load)


def test_cli_reports_recipe_errors_before_loading_anything(tmp_path, capsys, monkeypatch):
    _forbid_loading(monkeypatch)
    code = ropo_main(["train", str(REPO / "configs/tiny.yaml"), f"output_dir={tmp_path}", "training.beta=high"])
    assert code == 2
    assert "training.beta must be float" in capsys.readouterr().err


def test_scientific_notation_is_a_number(tmp_path):
    (tmp_path / "r.yaml").write_text(f"output_dir: {tmp_path}\nmodel: {{name_or_path: 'tiny:llama'}}\ntraining:\n  learning_rate: 5e-6\n")
    assert load_recipe(tmp_path / "r.yaml").training["learning_rate"] == 5e-6
    assert load_recipe(tmp_path / "r.yaml", ["training.learning_rate=1e-4"]).training["learning_rate"] == 1e-4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.beta=-1"], r"training\.beta must be > 0"),
        (["training.beta=0"], r"training\.beta must be > 0"),
        (["training.max_steps=0"], r"training\.max_steps must be a positive number of steps"),
        (["training.loss_type=bogus"], r"training\.loss_type must be one or more of \['sigmoid'"),
        (["training.loss_type=[sigmoid, bogus]"], r"training\.loss_type must be one or more of"),
        (["training.learning_rate=-0.01"], r"training\.learning_rate must be > 0, got -0\.01"),
        (["training.per_device_train_batch_size=0"], r"training\.per_device_train_batch_size must be >= 1, got 0"),
        (["training.gradient_accumulation_steps=0"], r"training\.gradient_accumulation_steps must be >= 1"),
        (["training.save_steps=0"], r"training\.save_steps must be > 0"),
        (["training.max_length=0"], r"training\.max_length must be at least 2"),
        (["training.ld_alpha=1.5"], r"training\.ld_alpha must be in \[0, 1\]"),
        (["training.f_divergence_type=kl"], r"training\.f_divergence_type must be one of"),
        (["training.loss_type=exo_pair"], r"training\.label_smoothing must be > 0 for loss_type exo_pair"),
        (["output_dir="], r"output_dir is empty"),
        (["adapter.target_modules=[q_proj, lm_head]"], r"adapter\.target_modules includes lm_head"),
        (["method=lora", "adapter.target_modules=lm_.*"], r"adapter\.target_modules includes lm_head"),
    ],
)
def test_values_that_would_fail_after_the_model_loads_are_refused_first(overrides, message):
    """TRL's DPOConfig accepts these; they fail (or invert the preference) only once training runs."""
    with pytest.raises(RecipeError, match=message):
        load_recipe(REPO / "configs/tiny.yaml", overrides)


def test_loss_types_are_trls():
    import dataclasses
    import re

    from trl import DPOConfig

    from ropo.training.trl_config import LOSS_TYPES

    help_text = {f.name: f for f in dataclasses.fields(DPOConfig)}["loss_type"].metadata["help"]
    assert tuple(re.findall(r"`'([a-z_]+)'`", help_text)) == LOSS_TYPES


def test_cli_refuses_invalid_trl_values_before_loading_a_model(tmp_path, capsys, monkeypatch):
    _forbid_loading(monkeypatch)
    for override, message in [("training.loss_type=bogus", "training.loss_type must be"),
                              ("training.per_device_train_batch_size=0", "per_device_train_batch_size must be >= 1"),
                              ("output_dir=", "output_dir is empty")]:
        extra = [] if override.startswith("output_dir") else [f"output_dir={tmp_path / 'run'}"]
        assert ropo_main(["train", str(REPO / "configs/tiny.yaml"), *extra, override]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_unreadable_recipes_are_named(tmp_path):
    with pytest.raises(RecipeError, match=r"configs: is a folder, not a recipe file"):
        load_recipe(REPO / "configs")
    (tmp_path / "r.yaml").write_bytes(b"method: ropo\nseed: 0 # caf\xe9\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: line 2: not UTF-8 text \(byte 0xe9\)"):
        load_recipe(tmp_path / "r.yaml")


@pytest.mark.parametrize("method", ["ropo", "lora", "dora", "full", "oft", "hra"])
def test_the_readme_recipe_switches_method_from_the_command_line(method):
    """``ropo train configs/default.yaml method=lora``: RoPO's options are set aside, with a note."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe = load_recipe(REPO / "configs/default.yaml", [f"method={method}"])
    notes = [str(w.message) for w in caught if "set aside" in str(w.message)]
    assert recipe.method == method and recipe.adapter["target_modules"] == ["q_proj", "v_proj"]
    if method == "ropo":
        assert recipe.adapter["preset"] == "ropo-2025" and not notes
    else:
        assert "preset" not in recipe.adapter
        assert notes and "adapter.preset (an option of ropo)" in notes[0]


def test_per_method_adapter_sections():
    overrides = ["adapter={target_modules: [q_proj], ropo: {preset: ropo-2024}, lora: {r: 4}}"]
    assert load_recipe(REPO / "configs/tiny.yaml", overrides).adapter == {"target_modules": ["q_proj"], "preset": "ropo-2024"}
    lora = load_recipe(REPO / "configs/tiny.yaml", [*overrides, "method=lora"])
    assert lora.adapter == {"target_modules": ["q_proj"], "r": 4}
    with pytest.raises(RecipeError, match=r"adapter\.lora must be a mapping"):
        load_recipe(REPO / "configs/tiny.yaml", ["method=lora", "adapter.lora=4"])
    with pytest.raises(RecipeError, match=r"rank"):  # an option of no method is still an error
        load_recipe(REPO / "configs/tiny.yaml", ["method=lora", "adapter.rank=4"])
