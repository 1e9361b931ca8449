"""Recipes: YAML + overrides, validated (keys and values) before any model is loaded."""

from pathlib import Path

import pytest

from ropo.cli import main as ropo_main
from ropo.training.recipe import RecipeError, load_recipe

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
        (["method=lora", "adapter={rank: 4}"], r"adapter options for 'lora'"),
        (["training.precompute_ref_log_probs=false"], r"precompute_ref_log_probs must stay true"),
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


def test_cli_reports_recipe_errors_before_loading_anything(tmp_path, capsys, monkeypatch):
    import ropo.training.loading as loading

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the recipe was validated")

    monkeypatch.setattr(loading, "load_base_model", must_not_load)
    code = ropo_main(["train", str(REPO / "configs/tiny.yaml"), f"output_dir={tmp_path}", "training.beta=high"])
    assert code == 2
    assert "training.beta must be float" in capsys.readouterr().err


def test_scientific_notation_is_a_number(tmp_path):
    (tmp_path / "r.yaml").write_text(f"output_dir: {tmp_path}\nmodel: {{name_or_path: 'tiny:llama'}}\ntraining:\n  learning_rate: 5e-6\n")
    assert load_recipe(tmp_path / "r.yaml").training["learning_rate"] == 5e-6
    assert load_recipe(tmp_path / "r.yaml", ["training.learning_rate=1e-4"]).training["learning_rate"] == 1e-4
