"""Output to a place that cannot be written (issue 20): one line from each command, before any
model loads. /proc refuses new entries even to root, for whom permission bits say nothing."""

from pathlib import Path

import pytest

from ropo.cli import main as ropo_main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", [
    ["train", str(REPO / "configs/tiny.yaml"), "output_dir=/proc/ropo-out"],
    ["merge", str(REPO / "configs"), "--base", "tiny:llama", "--out", "/proc/ropo-out"],
    ["eval", "tiny:llama", "--output", "/proc/ropo-out", "--max-prompts", "1"],
])
def test_an_unwritable_output_is_one_line_before_loading(command, capsys, monkeypatch):
    import importlib

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    # imported first, then patched where each binds it: no module keeps the stand-in afterwards
    modules = [importlib.import_module(name) for name in
               ("ropo.models.loading", "ropo.models.runs", "ropo.training.run", "ropo.training.merge")]
    for module in modules:
        monkeypatch.setattr(module, "load_base_model", must_not_load)
    assert ropo_main(command) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write in /proc" in err and "Traceback" not in err and len(err.splitlines()) == 1
