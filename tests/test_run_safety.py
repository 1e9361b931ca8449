"""Nothing the user had is lost: output paths, a lock per run, stopping on NaN, honest resume,
and one-line errors (exit code 2) instead of tracebacks."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ropo.cli import main as ropo_main
from ropo.paths import DiskFullError, OutputPathError
from ropo.training.guards import NonFiniteError, NonFiniteGuard
from ropo.training.recipe import RecipeError
from ropo.training.spec import load_recipe
from ropo.training.run import checkpoint_defect, train
from ropo.models.runs import read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
DATA = REPO / "configs" / "data" / "tiny_prefs.jsonl"
QUIET = ["sample_every=0", "metrics_every=0"]


def _args(run_dir: Path, *overrides: str) -> list[str]:
    return [str(TINY), f"output_dir={run_dir}", f"data.train={DATA}", *QUIET, *overrides]


def _tiny(run_dir: Path, *overrides: str):
    return load_recipe(TINY, _args(run_dir, *overrides)[1:])


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished two-step run; tests may only read it (they check that nothing changed it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(_tiny(run_dir, "training.max_steps=2", "training.save_steps=2"))
    return run_dir


# ---- ropo merge --out --------------------------------------------------------------------------


def _merge(run_dir: Path, out, *flags: str) -> int:
    return ropo_main(["merge", str(run_dir / "adapter"), "--base", "tiny:llama", "--out", str(out), *flags])


def test_merge_keeps_a_non_empty_folder_unless_forced(finished_run, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _merge(finished_run, out) == 2
    assert "is not empty (notes.txt) and was not written by this command" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert _merge(finished_run, out, "--force") == 0
    assert (out / "config.json").is_file() and not (out / "notes.txt").exists()
    assert _merge(finished_run, out) == 0, "an earlier merge's output is replaced without --force"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"], "no temporary or .old folders left"


def test_merge_never_replaces_its_inputs_or_a_file(finished_run, tmp_path, capsys):
    before = _snapshot(finished_run)
    for out in (finished_run, finished_run / "adapter", finished_run.parent):
        assert _merge(finished_run, out, "--force") == 2
        assert "holds the input" in capsys.readouterr().err
    assert _snapshot(finished_run) == before
    (tmp_path / "file.bin").write_text("x")
    assert _merge(finished_run, tmp_path / "file.bin") == 2
    assert "is a file, not a folder" in capsys.readouterr().err and (tmp_path / "file.bin").read_text() == "x"


def test_merge_into_the_current_folder(finished_run, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert _merge(finished_run, ".") == 0
    assert (here / "config.json").is_file() and not [p for p in here.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_merge_disk_full_keeps_the_earlier_output(finished_run, tmp_path, monkeypatch, capsys):
    import ropo.training.merge as merge

    out = tmp_path / "merged"
    assert _merge(finished_run, out) == 0
    before = _snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(merge, "atomic_write_text", full)
    assert _merge(finished_run, out) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and f"{out} was left as it was" in err and "Traceback" not in err
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


# ---- ropo train output_dir ---------------------------------------------------------------------


def test_train_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    theirs = tmp_path / "theirs"
    (theirs / "adapter").mkdir(parents=True)
    (theirs / "adapter" / "adapter_model.safetensors").write_text("their weights")
    (theirs / "data" / "train").mkdir(parents=True)
    (theirs / "data" / "train" / "rows.arrow").write_text("their rows")
    (theirs / "metrics.jsonl").write_text('{"step": 1}\n')
    before = _snapshot(theirs)
    assert ropo_main(["train", *_args(theirs, "training.max_steps=1")]) == 2
    assert "is not empty (adapter, data, metrics.jsonl) and was not written by this command" in capsys.readouterr().err
    assert _snapshot(theirs) == before and sorted(p.name for p in theirs.iterdir()) == ["adapter", "data", "metrics.jsonl"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        train(_tiny(tmp_path / "file", "training.max_steps=1"))


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = (  # a running ``ropo train`` holds this lock for as long as it runs
        "import fcntl, os, time; fd = os.open(%r, os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, str(os.getpid()).encode()); print('held', flush=True); time.sleep(60)" % str(run_dir / ".ropo.lock")
    )
    other = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(OutputPathError, match=rf"run is in use by another process \(PID {other.pid}\)"):
            train(_tiny(run_dir, "training.max_steps=1"))
    finally:
        other.kill()
        other.wait()
    assert [p.name for p in run_dir.iterdir()] == [".ropo.lock"], "the refused run wrote nothing"


def test_home_is_expanded_and_the_readme_method_switch_trains(tmp_path, monkeypatch):
    """``output_dir=~/x`` is ``$HOME/x`` (no literal ``./~``); and ``configs/default.yaml method=lora``
    (the README's example; RoPO's ``preset`` is set aside) trains, here on the tiny model."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"adapter\.preset \(an option of ropo\); set aside"):
        recipe = load_recipe(REPO / "configs/default.yaml", [
            "method=lora", "output_dir=~/x", "model.name_or_path=tiny:llama", f"data.train={DATA}", "data.eval=null",
            "training.max_steps=1", "training.max_length=128", "training.per_device_train_batch_size=2", *QUIET])
    result = train(recipe)
    assert result.run_dir == tmp_path / "home" / "x" and (result.run_dir / "adapter" / "adapter_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"], "nothing written outside the named folder"


# ---- stopping on non-finite values -------------------------------------------------------------


def test_a_nan_run_stops_with_the_step_and_saves_nothing_non_finite(tmp_path):
    run_dir = tmp_path / "run"
    recipe = _tiny(run_dir, "training.learning_rate=1e4", "training.max_steps=4", "training.save_steps=1")
    with pytest.warns(UserWarning, match=r"RoPO magnitude .*magnitude.* has log-scale .* beyond the bound ln 10"):
        with pytest.raises(NonFiniteError, match=r"step 2: the loss is nan; training stopped before saving") as stopped:
            train(recipe)
    assert "learning_rate (now 10000)" in str(stopped.value) and "checkpoints up to checkpoint-1 are kept" in str(stopped.value)
    assert not (run_dir / "adapter").exists() and not (run_dir / "train_summary.json").exists()
    saved = list(run_dir.rglob("*.safetensors"))
    assert [p.parent.name for p in saved] == ["checkpoint-1"]
    for path in saved:
        assert all(torch.isfinite(t).all() for t in load_file(path).values()), path
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in read_metrics(run_dir) if "loss" in m)


def test_guard_names_the_parameter_with_a_non_finite_gradient_or_value():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    guard, state = NonFiniteGuard(), type("State", (), {"global_step": 6})()
    model(torch.ones(1, 3)).sum().backward()
    guard.on_pre_optimizer_step(None, state, None, model=model)  # all finite
    model[1].weight.grad[0, 1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"step 7: the gradient of 1\.weight is inf"):
        guard.on_pre_optimizer_step(None, state, None, model=model)
    with torch.no_grad():
        model[0].bias[2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 6: parameter 0\.bias became nan"):
        guard.on_step_end(None, state, None, model=model)


# ---- resume ------------------------------------------------------------------------------------


def test_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    before = _snapshot(finished_run)
    assert ropo_main(["train", *_args(finished_run, "training.max_steps=2", "training.save_steps=2"), "--resume"]) == 0
    assert "had already finished; nothing was changed" in capsys.readouterr().out
    assert _snapshot(finished_run) == before
    assert ropo_main(["train", *_args(finished_run, "training.max_steps=2", "training.save_steps=2")]) == 2
    assert "already holds a run, and it finished: pass --restart" in capsys.readouterr().err


def test_resume_names_what_changed(finished_run):
    with pytest.raises(RecipeError, match=r"recipe differs .* in training\.beta \(was 0\.1, now 0\.5\); .*--force"):
        train(_tiny(finished_run, "training.max_steps=2", "training.save_steps=2", "training.beta=0.5"), resume=True)


def test_resume_refuses_changed_data_and_survives_a_half_written_log(tmp_path):
    data = tmp_path / "prefs.jsonl"
    shutil.copy(DATA, data)
    run_dir = tmp_path / "run"
    steps = ["training.max_steps=2", "training.save_steps=1", f"data.train={data}"]
    train(_tiny(run_dir, *steps))
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")  # as if killed after step 1
    shutil.rmtree(run_dir / "adapter")
    (run_dir / "train_summary.json").unlink()
    rows = data.read_text().splitlines()
    data.write_text("\n".join([rows[0], rows[2], rows[1], *rows[3:]]) + "\n")
    before = _snapshot(run_dir)
    with pytest.raises(RecipeError, match=r"data\.train \(.*prefs\.jsonl\): row 2 differs .*pass --force"):
        train(_tiny(run_dir, *steps), resume=True)
    assert _snapshot(run_dir) == before, "a refused resume rewrites neither data/ nor environment.json"
    shutil.copy(DATA, data)
    with (run_dir / "metrics.jsonl").open("a") as log:
        log.write('{"step": 2, "lo')  # killed in the middle of a record
    result = train(_tiny(run_dir, *steps), resume=True)
    assert [m["step"] for m in read_metrics(run_dir) if "loss" in m] == [1, 2]
    assert json.loads((run_dir / "train_summary.json").read_text())["global_step"] == 2
    assert len(json.loads((run_dir / "environment.json").read_text())["resumed"]) == 1
    assert result.model is not None


def test_a_run_that_crashed_before_its_first_checkpoint_restarts(tmp_path, monkeypatch, capsys):
    import ropo.training.run as run

    run_dir = tmp_path / "run"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # stopped while the model loads: run files written, no checkpoint

    monkeypatch.setattr(run, "load_base_model", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(run_dir, "training.max_steps=1"))
    monkeypatch.undo()
    assert (run_dir / "recipe.yaml").is_file() and not (run_dir / "checkpoints").exists()
    (run_dir / "notes.txt").write_text("mine")
    assert ropo_main(["train", *_args(run_dir, "training.max_steps=1"), "--resume"]) == 2
    assert "has no complete checkpoint (none was written); pass --restart" in capsys.readouterr().err
    assert ropo_main(["train", *_args(run_dir, "training.max_steps=1"), "--restart"]) == 0
    assert (run_dir / "adapter").is_dir() and (run_dir / "notes.txt").read_text() == "mine"


def test_disk_full_says_so_and_what_was_kept_then_resume_finishes(tmp_path, monkeypatch):
    import ropo.training.run as run

    run_dir = tmp_path / "run"
    steps = ["training.max_steps=2", "training.save_steps=2"]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run, "_save_final", full)
    with pytest.raises(DiskFullError, match=r"no space left on device; the complete checkpoints up to checkpoint-2 "
                                            r"are kept .*; the final adapter/ was not written"):
        train(_tiny(run_dir, *steps))
    monkeypatch.undo()
    result = train(_tiny(run_dir, *steps), resume=True)  # trained to the end: only the final save is left
    assert json.loads((run_dir / "train_summary.json").read_text())["global_step"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"], "no extra step"
    saved, checkpoint = load_file(run_dir / "adapter" / "adapter_model.safetensors"), load_file(
        run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert saved.keys() == checkpoint.keys() and all(torch.equal(saved[k], checkpoint[k]) for k in saved)
    assert result.model is not None


# ---- ropo eval ---------------------------------------------------------------------------------


def test_eval_of_a_missing_path_says_it_is_missing(capsys):
    assert ropo_main(["eval", "/path/that/does/not/exist", "--judge", "none"]) == 2
    err = capsys.readouterr().err
    assert "/path/that/does/not/exist: no such folder" in err and "Repo id" not in err


#: How a kill or a power loss leaves the newest checkpoint: (file, what is left of it, the reason given).
DAMAGE = {
    "state cut short": ("trainer_state.json", lambda data: data[: len(data) // 2], "its trainer_state.json is missing or cut short"),
    "empty weights": ("adapter_model.safetensors", lambda data: b"", "its adapter_model.safetensors is empty"),
    "weights cut short": ("adapter_model.safetensors", lambda data: data[:100], "its adapter_model.safetensors is cut short"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_passes_over_a_damaged_newest_checkpoint_and_says_why(tmp_path, capsys, damage):
    """The run stopped while checkpoint-4 was written: `--resume` continues from checkpoint-2, says
    which checkpoint it skipped and why, and finishes (no SafetensorError or JSONDecodeError)."""
    name, cut, why = DAMAGE[damage]
    run_dir, steps = tmp_path / "run", ["training.max_steps=4", "training.save_steps=2"]
    assert ropo_main(["train", *_args(run_dir, *steps)]) == 0
    shutil.rmtree(run_dir / "adapter")  # stopped before the final save
    (run_dir / "train_summary.json").unlink()
    damaged = run_dir / "checkpoints" / "checkpoint-4" / name
    damaged.write_bytes(cut(damaged.read_bytes()))
    capsys.readouterr()
    assert ropo_main(["train", *_args(run_dir, *steps), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"--resume: skipping checkpoint-4 ({why}); continuing from checkpoint-2" in err
    assert json.loads((run_dir / "train_summary.json").read_text())["global_step"] == 4
    assert checkpoint_defect(run_dir / "checkpoints" / "checkpoint-4") is None  # written again, whole


def test_a_data_warning_is_printed_once_in_one_line(tmp_path):
    """Through the command, as a user sees it (pytest would collect warnings itself)."""
    rows = DATA.read_text().splitlines()
    data = tmp_path / "repeated.jsonl"
    data.write_text("\n".join(rows + rows[:3]) + "\n")
    result = subprocess.run([sys.executable, "-m", "ropo.cli", "train", str(TINY), f"output_dir={tmp_path / 'run'}",
                             f"data.train={data}", *QUIET, "training.max_steps=1"],
                            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("3 row(s) repeat an earlier pair") == 1, result.stderr[-3000:]
    # One line, as ropo's (the user needs the message, not the line of ropo's source that raised it).
    assert f"ropo: warning: {data}: 3 row(s) repeat an earlier pair" in result.stderr
    assert "UserWarning" not in result.stderr and "validate_rows(" not in result.stderr
