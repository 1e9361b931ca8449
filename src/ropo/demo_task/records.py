"""The task's files: prompt records and preference pairs as JSONL, read with errors that name the file,
row and key, and written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ropo.errors import RoPOError
from ropo.demo_task.judge import check_errors
from ropo.io import atomic_write_text, read_json_rows

#: The prompts written for this task (see README.md next to it).
PROMPTS_FILE = Path(__file__).with_name("prompts.jsonl")
#: The dataset built once with SmolLM2-135M-Instruct and shipped, so the demo need not rebuild it.
SHIPPED_DATA_DIR = Path(__file__).with_name("data")
SPLITS = ("train", "test")
BUILD_INFO = "build.json"
TEST_PROMPTS = "test_prompts.jsonl"


class TaskDataError(RoPOError, ValueError):
    """A prompt or pair file that is missing or malformed."""


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path``, one JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TaskDataError(f"{path}: cannot read ({error.strerror or error})") from None
    except json.JSONDecodeError as error:
        raise TaskDataError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(value, dict):
        raise TaskDataError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` to ``path`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def load_prompts(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The prompt records (``id``, ``kind``, ``prompt``, ``checks``) of ``path``, default the shipped
    ``prompts.jsonl``, each validated; ids must be unique."""
    path = Path(path) if path is not None else PROMPTS_FILE
    records = read_json_rows(path, TaskDataError)
    if not records:
        raise TaskDataError(f"{path}: no prompt records")
    seen: set[str] = set()
    for number, record in enumerate(records, start=1):
        where = f"{path}, record {number}"
        for key in ("id", "kind", "prompt"):
            if not _text(record.get(key)):
                raise TaskDataError(f"{where}: key {key!r} must be a non-empty string, got {record.get(key)!r}")
        if record["id"] in seen:
            raise TaskDataError(f"{where}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        errors = check_errors(record.get("checks"))
        if errors:
            raise TaskDataError(f"{where} (id {record['id']!r}): {'; '.join(errors)}")
    return records


def _message_list(row: dict[str, Any], key: str, role: str) -> str | None:
    """Why ``row[key]`` is not a one-message conversation of ``role`` with text, or None if it is."""
    value = row.get(key)
    if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)):
        return f"key {key!r} must be a list holding one message, got {value!r}"
    if value[0].get("role") != role or not _text(value[0].get("content")):
        return f"key {key!r} must hold a {role!r} message with non-empty content, got {value[0]!r}"
    return None


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The preference pairs of ``path`` (TRL's conversational format), each validated."""
    rows = read_json_rows(path, TaskDataError)
    for number, row in enumerate(rows, start=1):
        for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
            problem = _message_list(row, key, role)
            if problem:
                raise TaskDataError(f"{path}, row {number}: {problem}")
    return rows
