"""A run is used with the base it was trained on (issue 20): a local base is recorded resolved,
with a fingerprint; evaluating the run from another folder, or after the base's weights changed,
either finds that base or is refused, and eval.json names the base it used."""

import json
import shutil
from pathlib import Path

import pytest

from ropo.cli import main as ropo_main
from ropo.layout import EVAL_FILE, RUN_BASE_FILE
from ropo.tiny_models import tiny_causal_lm, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _base(folder: Path, seed: int) -> None:
    tiny_causal_lm(vocab_size=len(tiny_tokenizer()), seed=seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A run trained on the relative base ``base_f32`` from tmp_path/project."""
    project = tmp_path / "project"
    project.mkdir()
    _base(project / "base_f32", seed=1)
    monkeypatch.chdir(project)
    data = REPO / "configs" / "data" / "tiny_prefs.jsonl"
    assert ropo_main(["train", str(REPO / "configs/tiny.yaml"), "output_dir=run", "model.name_or_path=base_f32",
                      f"data.train={data}", "training.max_steps=1", "training.save_steps=1", "sample_every=0",
                      "metrics_every=0"]) == 0
    return project


def test_the_base_is_recorded_resolved_and_used_from_another_folder(trained, tmp_path, monkeypatch):
    record = json.loads((trained / "run" / RUN_BASE_FILE).read_text())
    assert record["name_or_path"] == "base_f32" and record["resolved"] == str(trained / "base_f32")
    assert record["fingerprint"]["weights"] and record["fingerprint"]["config_sha256"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _base(elsewhere / "base_f32", seed=2)  # same name, same architecture, other weights
    monkeypatch.chdir(elsewhere)
    assert ropo_main(["eval", "../project/run", "--max-prompts", "1", "--max-new-tokens", "2", "--greedy",
                      "--qa-probe", "none", "--no-progress", "--output", "out"]) == 0
    model = json.loads((elsewhere / "out" / EVAL_FILE).read_text())["models"][0]
    assert model["base"] == str(trained / "base_f32")


def test_a_base_whose_weight_files_changed_is_refused(trained, capsys):
    """The fingerprint is the config's hash and the weight files' names and sizes (hashing the
    weights themselves would cost minutes on a real model): a change of either is caught."""
    shutil.rmtree(trained / "base_f32")
    _base(trained / "base_f32", seed=3)
    (trained / "base_f32" / "extra.safetensors").write_bytes(b"0" * 16)
    assert ropo_main(["eval", "run", "--max-prompts", "1", "--max-new-tokens", "2", "--greedy", "--qa-probe", "none", "--no-progress",
                      "--output", "out"]) == 2
    assert "is not the one the run was trained on" in capsys.readouterr().err


def test_a_resume_onto_another_base_is_refused(trained, capsys):
    """Continuing the run (one more step) after base_f32 was replaced by other weights."""
    shutil.rmtree(trained / "base_f32")
    _base(trained / "base_f32", seed=3)
    (trained / "base_f32" / "extra.safetensors").write_bytes(b"0" * 16)
    recipe = (trained / "run" / "recipe.yaml").read_bytes()
    data = REPO / "configs" / "data" / "tiny_prefs.jsonl"
    assert ropo_main(["train", str(REPO / "configs/tiny.yaml"), "output_dir=run", "model.name_or_path=base_f32",
                      f"data.train={data}", "training.max_steps=2", "training.save_steps=1", "sample_every=0",
                      "metrics_every=0", "--resume", "--force"]) == 2
    err = capsys.readouterr().err
    base = trained / "base_f32"
    assert f"run was trained on the base {base}; 'base_f32' now means {base}, whose weights differ" in err
    assert "Traceback" not in err and (trained / "run" / "recipe.yaml").read_bytes() == recipe
    assert not (trained / "run" / "checkpoints" / "checkpoint-2").exists()
