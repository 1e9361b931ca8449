"""``ropo.io`` and ``ropo.paths``: the shared row reader names the file and line or row of every
problem; writes are atomic and never lose what the user has at the output path."""

import json
import os

import pytest

from ropo.io import atomic_write_text, read_json_rows


class CustomError(Exception):
    pass


def test_reads_jsonl_json_lists_and_data_objects(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    jsonl = atomic_write_text(tmp_path / "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    listed = atomic_write_text(tmp_path / "rows.json", json.dumps(rows))
    wrapped = atomic_write_text(tmp_path / "wrapped.json", json.dumps({"data": rows}))
    assert read_json_rows(jsonl) == read_json_rows(listed) == read_json_rows(wrapped) == rows


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.jsonl", '{"a": 1}\n\n{oops\n', r"bad\.jsonl: line 3: not valid JSON"),
        ("bad.json", '[{"a": 1},\n oops]', r"bad\.json: line 2: not valid JSON"),
        ("bad.json", '{"a": 1}', r"bad\.json: expected a JSON list of rows"),
        ("bad.jsonl", '{"a": 1}\n[1, 2]\n', r"bad\.jsonl: row 2: expected a JSON object, got list"),
    ],
)
def test_problems_are_raised_as_the_callers_error_with_file_and_place(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CustomError, match=message):
        read_json_rows(path, CustomError)


def test_missing_file_and_non_object_rows_when_allowed(tmp_path):
    with pytest.raises(CustomError, match=r"missing\.jsonl: cannot read"):
        read_json_rows(tmp_path / "missing.jsonl", CustomError)
    path = atomic_write_text(tmp_path / "mixed.jsonl", '"text"\n{"a": 1}\n')
    assert read_json_rows(path, CustomError, objects=False) == ["text", {"a": 1}]


def test_atomic_directory_replaces_a_folder_without_debris(tmp_path):
    from ropo.io import atomic_directory

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    atomic_directory(tmp_path / "out", lambda tmp: (tmp / "new.txt").write_text("new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new.txt"]


def test_atomic_directory_into_the_current_folder_fills_it_in_place(tmp_path, monkeypatch):
    """``--out .``: the folder a shell stands in cannot be renamed away (EBUSY, or a deleted cwd)."""
    from ropo.io import atomic_directory

    here = tmp_path / "here"
    here.mkdir()
    (here / "keep.txt").write_text("mine")
    (here / "model.bin").write_text("old")
    monkeypatch.chdir(here)
    atomic_directory(".", lambda tmp: (tmp / "model.bin").write_text("new"))
    assert sorted(p.name for p in here.iterdir()) == ["keep.txt", "model.bin"]  # no ..old.* or .tmp folders
    assert (here / "model.bin").read_text() == "new" and (here / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_non_utf8_rows_are_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(CustomError, match=r"rows\.jsonl: line 2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        read_json_rows(path, CustomError)


def test_a_half_written_last_log_line_is_dropped_or_completed(tmp_path):
    from ropo.io import drop_partial_last_line, read_jsonl_records

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl_records(log) == [{"step": 1}, {"step": 2}]  # a reader while it is being written
    assert drop_partial_last_line(log) and log.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert not drop_partial_last_line(log)
    log.write_text('{"step": 1}\n{"step": 2}')  # cut just before its newline: the record is whole
    assert drop_partial_last_line(log) and log.read_text() == '{"step": 1}\n{"step": 2}\n'
    log.write_text('{"step": 1}\n{oops\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2: not valid JSON"):
        read_jsonl_records(log)  # damage before the end is not a killed writer


def test_output_dir_checks(tmp_path, monkeypatch):
    from ropo.paths import OutputPathError, check_output_dir, output_path

    with pytest.raises(OutputPathError, match="output_dir is empty"):
        output_path("  ", "output_dir")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_path("~/runs/x", "output_dir") == tmp_path / "runs" / "x"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match=r"theirs is not empty \(notes\.txt\).*pass --force"):
        check_output_dir(tmp_path / "theirs", "--out")
    check_output_dir(tmp_path / "theirs", "--out", force=True)
    check_output_dir(tmp_path / "theirs", "--out", ours=lambda path: (path / "notes.txt").is_file())
    with pytest.raises(OutputPathError, match="holds the input"):
        check_output_dir(tmp_path, "--out", force=True, inputs=[tmp_path / "theirs" / "notes.txt"])
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "theirs" / "notes.txt", "--out")
    with pytest.raises(OutputPathError, match=r"notes\.txt is a file, so no folder can be made below it"):
        check_output_dir(tmp_path / "theirs" / "notes.txt" / "run", "--out")
    import errno

    def read_only(*args, **kwargs):  # as on a read-only mount (root passes any chmod)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    with pytest.raises(OutputPathError, match=r"cannot write in .*theirs \(Read-only file system\)"):
        check_output_dir(tmp_path / "theirs" / "new", "--out")


def test_folder_lock_names_the_holder_and_stale_locks_do_not_block(tmp_path):
    import subprocess
    import sys

    from ropo.paths import FolderLock, OutputPathError

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".ropo.lock").write_text("999999\n")  # left by a killed process: no one holds it
    with FolderLock(folder, "output_dir"):
        with pytest.raises(OutputPathError, match=rf"run is in use by another process \(PID {os.getpid()}\)"):
            FolderLock(folder, "output_dir").__enter__()
    assert not (folder / ".ropo.lock").exists()
    holder = (  # another process holding the lock as FolderLock does (without importing ropo: fast)
        "import fcntl, os, time; fd = os.open(%r, os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, str(os.getpid()).encode()); print('held', flush=True); time.sleep(60)" % str(folder / ".ropo.lock")
    )
    child = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(OutputPathError, match=rf"output_dir .*run is in use by another process \(PID {child.pid}\)"):
            FolderLock(folder, "output_dir").__enter__()
    finally:
        child.kill()
        child.wait()
    with FolderLock(folder, "output_dir"):  # the kernel let go of the killed holder's lock
        pass
