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
