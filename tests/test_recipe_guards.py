"""Recipe values TRL would accept and then ignore or fail on late (issue 20): each is an error
from `ropo train` naming the key, before anything is loaded or written."""

from pathlib import Path

import pytest

from ropo.cli import main as ropo_main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, message", [
    ("training.resume_from_checkpoint=other/checkpoint-10", "training.resume_from_checkpoint is not taken"),
    ("training.push_to_hub=true", "training.push_to_hub needs the Hugging Face Hub, but HF_HUB_OFFLINE is set"),
])
def test_keys_that_would_be_ignored_or_fail_late_are_refused(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    assert ropo_main(["train", "configs/tiny.yaml", f"output_dir={out}", override]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_max_length_shorter_than_every_completion_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    assert ropo_main(["train", "configs/tiny.yaml", f"output_dir={out}", "training.max_length=4"]) == 2
    err = capsys.readouterr().err
    assert "every one of the 24 rows has a completion longer than max_length=4" in err and "max_length >= " in err
    assert not out.exists() or not any(p.name != ".ropo.lock" for p in out.iterdir())
    # and the same command with a working max_length then trains there, no --restart needed
    assert ropo_main(["train", "configs/tiny.yaml", f"output_dir={out}", "training.max_steps=1", "sample_every=0",
                      "metrics_every=0"]) == 0
