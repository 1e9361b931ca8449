"""Files in and out: atomic writes (a crash or a bad input never leaves a half-written file or
folder behind) and the one JSON/JSONL row reader every command uses."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result should read like any file
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def follow_umask(folder: Path) -> None:
    """Give ``folder`` and what it holds the modes the umask gives new files, where they were made
    private: ``mkdtemp`` makes folders 0700 and safetensors writes its files 0600, so a teammate
    on a shared machine could not read a run."""
    umask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        if path.is_dir() and mode == 0o700:
            path.chmod(0o777 & ~umask)
        elif path.is_file() and mode == 0o600:
            path.chmod(0o666 & ~umask)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_directory(path: str | Path, build: Callable[[Path], object]) -> Path:
    """Call ``build(tmp_dir)`` on a new folder beside ``path``, then swap it in for ``path``.

    The folder the process stands in (``--out .``) cannot be swapped without pulling it from
    under the shell, so it is filled in place instead: each built entry is renamed into it.
    """
    path = Path(os.path.abspath(os.path.expanduser(path)))
    in_place = path.is_dir() and _holds_cwd(path)
    if not in_place:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path if in_place else path.parent, prefix=f".{path.name}."))
    try:
        build(tmp)
        follow_umask(tmp)
        if in_place:
            _move_entries(tmp, path)
            tmp.rmdir()
        elif path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _holds_cwd(path: Path) -> bool:
    cwd = Path.cwd().resolve()
    return path.resolve() == cwd or path.resolve() in cwd.parents


def _move_entries(source: Path, target: Path) -> None:
    """Rename every entry of ``source`` into ``target``, replacing entries of the same name."""
    old = Path(tempfile.mkdtemp(dir=target, prefix=".old."))
    try:
        for entry in sorted(source.iterdir()):
            destination = target / entry.name
            if destination.exists() or destination.is_symlink():
                os.replace(destination, old / entry.name)
            os.replace(entry, destination)
    finally:
        shutil.rmtree(old, ignore_errors=True)


#: What torch's writer says when a write fails; it loses the errno, so free space decides.
_WRITE_FAILED = ("basic_ios::clear: iostream error", "PytorchStreamWriter failed writing file", "file write failed")
#: Below this much free space, a failed write is taken to be a full disk.
_NEARLY_FULL = 64 * 2**20


def is_disk_full(error: BaseException, directory: str | Path | None = None) -> bool:
    """Whether ``error`` means the disk is full: ``ENOSPC``, safetensors' "os error 28", or
    torch's write failure while ``directory``'s disk has (almost) no space left."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if "No space left on device" in text or "os error 28" in text:
        return True
    if directory is not None and any(sign in text for sign in _WRITE_FAILED):
        try:
            return shutil.disk_usage(directory).free < _NEARLY_FULL
        except OSError:
            return False
    return False


def not_utf8(problem: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, and the fix."""
    data = problem.object
    line = data.count(b"\n", 0, problem.start) + 1
    return f"line {line}: not UTF-8 text (byte 0x{data[problem.start]:02x}); save the file as UTF-8"


def read_text_file(path: Path, error: type[Exception], what: str = "file") -> str:
    """A UTF-8 text file's contents; a folder, a missing file or other bytes are ``error`` naming the path."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as problem:
        raise error(f"{path}: cannot read ({problem.strerror or problem})") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path}: {not_utf8(problem)}") from None


def read_jsonl_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log a running (or killed) process appends to: a half-written last line
    is skipped, as the writer was stopped in the middle of it; damage elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as problem:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number}: not valid JSON ({problem.msg})") from None
    return records


def drop_partial_last_line(path: str | Path) -> bool:
    """Repair an append-only JSONL log whose writer was killed mid-line (the last line has no
    newline): a cut-off record is dropped, a whole one gets its newline. Returns whether it did."""
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    if not data or data.endswith(b"\n"):
        return False
    body, _, last = data.rpartition(b"\n")
    try:
        json.loads(last)
        repaired = data + b"\n"
    except ValueError:  # JSONDecodeError and UnicodeDecodeError (a multi-byte character cut in two)
        repaired = body + b"\n" if body else b""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(repaired))
    return True


def read_json_rows(path: str | Path, error: type[Exception] = ValueError, objects: bool = True) -> list[Any]:
    """The rows of a JSONL file (one value per non-empty line) or of a JSON file holding a list
    (or ``{"data": [...]}``); every problem is raised as ``error`` naming the file and line or row.

    ``objects`` requires each row to be a JSON object; readers that report bad rows themselves
    (with the column that is wrong) pass False.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        raise error(f"{path}: cannot read ({problem.strerror or problem})") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path}: {not_utf8(problem)}") from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as problem:
            raise error(f"{path}: line {problem.lineno}: not valid JSON ({problem.msg})") from None
        if isinstance(rows, dict) and isinstance(rows.get("data"), list):
            rows = rows["data"]
        if not isinstance(rows, list):
            raise error(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as problem:
                    raise error(f"{path}: line {number}: not valid JSON ({problem.msg})") from None
    if objects:
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise error(f"{path}: row {number}: expected a JSON object, got {type(row).__name__}")
    return rows
