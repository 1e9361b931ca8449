"""A folder is a run only if ropo made it (issue 20): the advised commands never delete a user's
own recipe or data, whatever the folder's layout."""

import hashlib
import shutil
from pathlib import Path

import pytest

from ropo.cli import main as ropo_main
from ropo.layout import RUN_MARKER

REPO = Path(__file__).resolve().parents[1]
FAST = ["training.max_steps=1", "training.save_steps=1", "sample_every=0", "metrics_every=0"]


def _project(root: Path, output_dir: str) -> Path:
    """exp1/recipe.yaml (``output_dir`` as given) beside exp1/data/prefs.jsonl, as users lay it out."""
    project = root / "exp1"
    (project / "data").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "data" / "tiny_prefs.jsonl", project / "data" / "prefs.jsonl")
    recipe = (REPO / "configs" / "tiny.yaml").read_text()
    recipe = recipe.replace("output_dir: runs/tiny", f"output_dir: {output_dir}")
    recipe = recipe.replace("train: configs/data/tiny_prefs.jsonl", f"train: {project / 'data' / 'prefs.jsonl'}")
    (project / "recipe.yaml").write_text(recipe)
    return project


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("output_dir", ["exp1", "."])
def test_a_project_folder_is_never_taken_for_a_run(tmp_path, monkeypatch, capsys, output_dir):
    project = _project(tmp_path, output_dir)
    monkeypatch.chdir(tmp_path if output_dir == "exp1" else project)
    before = _digests(project)
    for extra in ([], ["--restart"], ["--resume"], ["--force"]):
        assert ropo_main(["train", str(project / "recipe.yaml"), *FAST, *extra]) == 2, extra
        assert _digests(project) == before, extra  # byte for byte, after each advised command
    err = capsys.readouterr().err
    assert "is not a ropo run" in err and "choose another output_dir" in err
    assert not (project / RUN_MARKER).exists()


def test_restart_removes_only_what_the_run_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    args = ["train", "configs/tiny.yaml", f"output_dir={run_dir}", *FAST]
    assert ropo_main(args) == 0
    assert (run_dir / RUN_MARKER).is_file() and (run_dir / "data" / "train").is_dir()
    (run_dir / "data" / "notes.txt").write_text("mine")
    (run_dir / "analysis.ipynb").write_text("{}")
    assert ropo_main([*args, "--restart"]) == 0
    assert (run_dir / "data" / "notes.txt").read_text() == "mine" and (run_dir / "analysis.ipynb").read_text() == "{}"
    assert (run_dir / "adapter").is_dir()


def test_restart_refuses_when_the_recipe_reads_data_it_would_remove(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    assert ropo_main(["train", "configs/tiny.yaml", f"output_dir={run_dir}", *FAST]) == 0
    inside = run_dir / "checkpoints" / "prefs.jsonl"
    shutil.copy(REPO / "configs" / "data" / "tiny_prefs.jsonl", inside)
    before = _digests(run_dir)
    assert ropo_main(["train", "configs/tiny.yaml", f"output_dir={run_dir}", f"data.train={inside}", *FAST, "--restart"]) == 2
    assert "nothing was changed" in capsys.readouterr().err and _digests(run_dir) == before


@pytest.mark.parametrize("flag", ["--resume", "--restart"])
def test_a_save_stopped_midway_leaves_nothing_behind(tmp_path, monkeypatch, flag):
    """SIGTERM during the final save leaves the hidden folder the adapter was being built in."""
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    args = ["train", "configs/tiny.yaml", f"output_dir={run_dir}", "training.max_steps=2", "training.save_steps=1",
            "sample_every=0", "metrics_every=0"]
    assert ropo_main(args) == 0
    leftover = run_dir / ".adapter.k3j2x9"
    leftover.mkdir()
    (leftover / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    shutil.rmtree(run_dir / "adapter")  # the save never finished
    assert ropo_main([*args, flag]) == 0
    assert not leftover.exists() and (run_dir / "adapter").is_dir()


def test_the_adapter_card_says_to_import_ropo(tmp_path, monkeypatch):
    """PEFT alone fails on a RoPO adapter with `KeyError: 'ROPO'`: the saved card says what to do."""
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    assert ropo_main(["train", "configs/tiny.yaml", f"output_dir={run_dir}", *FAST]) == 0
    card = (run_dir / "adapter" / "README.md").read_text()
    assert "`import ropo` before" in card and "KeyError: 'ROPO'" in card
