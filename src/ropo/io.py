"""Files in and out: atomic writes (a crash or a bad input never leaves a half-written file or
folder behind) and the one JSON/JSONL row reader every command uses."""

from __future__ import annotations

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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result should read like any file
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_directory(path: str | Path, build: Callable[[Path], object]) -> Path:
    """Call ``build(tmp_dir)`` on a new folder beside ``path``, then swap it in for ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        build(tmp)
        if path.exists():
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
