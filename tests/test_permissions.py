"""What ropo writes reads like any other tool's output on a shared machine (issue 20): folders and
files follow the umask, not the private modes of the temporary names they are built under."""

import os
import stat
from pathlib import Path

from ropo.cli import main as ropo_main
from ropo.io import atomic_directory, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_atomic_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_directory(tmp_path / "folder", lambda tmp: (tmp / "inner.txt").write_text("x"))
        atomic_write_text(tmp_path / "file.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == 0o644


def test_a_trained_run_is_readable_by_a_teammate(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    old = os.umask(0o022)
    try:
        code = ropo_main(["train", "configs/tiny.yaml", f"output_dir={tmp_path / 'run'}", "training.max_steps=2",
                          "training.save_steps=2", "sample_every=0", "metrics_every=0"])
    finally:
        os.umask(old)
    assert code == 0
    modes = _modes(tmp_path / "run")
    private = {name: oct(mode) for name, mode in modes.items()
               if not name.endswith(".lock") and mode & 0o044 != 0o044}
    assert not private, private
    assert "adapter" in modes and any(name.startswith("data") for name in modes)
