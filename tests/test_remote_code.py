"""A model folder that ships its own Python code is never run on an interactive "yes" (issue 20):
ropo passes trust_remote_code explicitly, false unless the recipe's model.trust_remote_code says so."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_CODE = """
from pathlib import Path
Path(__file__).with_name("CODE_RAN").write_text("the model's own code ran")
from transformers import LlamaConfig
class CustomConfig(LlamaConfig):
    model_type = "custom-llama"
"""


def _model_with_code(folder: Path) -> Path:
    folder.mkdir()
    (folder / "configuration_custom.py").write_text(_CODE)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom-llama", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                                                   "AutoModelForCausalLM": "configuration_custom.CustomConfig"},
    }))
    return folder


def test_a_yes_on_stdin_does_not_run_a_models_code(tmp_path):
    model = _model_with_code(tmp_path / "model")
    command = [sys.executable, "-m", "ropo.cli", "train", "configs/tiny.yaml", f"output_dir={tmp_path / 'run'}",
               f"model.name_or_path={model}"]
    result = subprocess.run(command, cwd=REPO, input="y\n" * 20, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "set model.trust_remote_code: true" in result.stderr
    assert not (model / "CODE_RAN").exists()


def test_trust_remote_code_is_a_recipe_key_and_typed():
    from ropo.training.recipe import RecipeError
    from ropo.training.spec import load_recipe

    assert load_recipe(REPO / "configs/tiny.yaml").model.trust_remote_code is False
    assert load_recipe(REPO / "configs/tiny.yaml", ["model.trust_remote_code=true"]).model.trust_remote_code is True
    with pytest.raises(RecipeError, match="model.trust_remote_code must be bool"):
        load_recipe(REPO / "configs/tiny.yaml", ["model.trust_remote_code=maybe"])


@pytest.mark.parametrize("opted_in", [True, False])
def test_a_run_is_loaded_with_its_own_opt_in_and_no_more(tmp_path, monkeypatch, opted_in):
    """`ropo eval` and the report load a run as it was trained: with remote code only if its recipe said so."""
    import ropo.models.runs as runs
    from ropo.cli import main as ropo_main

    run_dir = tmp_path / "run"
    assert ropo_main(["train", str(REPO / "configs/tiny.yaml"), f"output_dir={run_dir}", "training.max_steps=1",
                      "sample_every=0", "metrics_every=0", f"model.trust_remote_code={str(opted_in).lower()}"]) == 0
    passed = []
    load_model, load_tokenizer = runs.load_base_model, runs.load_tokenizer

    def model(name, dtype="float32", seed=0, trust_remote_code=False):
        passed.append(("model", trust_remote_code))
        return load_model(name, dtype, seed, trust_remote_code)

    def tokenizer(name, trust_remote_code=False):
        passed.append(("tokenizer", trust_remote_code))
        return load_tokenizer(name, trust_remote_code)

    monkeypatch.setattr(runs, "load_base_model", model)
    monkeypatch.setattr(runs, "load_tokenizer", tokenizer)
    runs.load_run(run_dir)
    assert passed == [("model", opted_in), ("tokenizer", opted_in)]
