"""Prompt sets for ``ropo eval``: our own JSONL, AlpacaEval's JSON list, or MT-Bench's question.jsonl."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from ropo.evaluation.errors import EvaluationError
from ropo.generation import Prompt
from ropo.io import read_json_rows

#: The shipped default: short single-turn instructions of varied kinds.
DEFAULT_PROMPTS = "prompts.jsonl"


def data_path(name: str) -> Path:
    """A file shipped in ``ropo/evaluation/data``."""
    return Path(str(files("ropo.evaluation").joinpath("data", name)))


def _turns(row: dict[str, Any], where: str) -> tuple[str, ...]:
    for key in ("turns", "prompt", "instruction"):
        if key in row:
            value = row[key]
            turns = value if key == "turns" else [value]
            if not (isinstance(turns, list) and turns and all(isinstance(t, str) and t.strip() for t in turns)):
                raise EvaluationError(f"{where}: key {key!r} must be a non-empty string (or list of them for 'turns')")
            return tuple(turns)
    raise EvaluationError(f"{where}: needs one of the keys 'prompt', 'instruction' (AlpacaEval) or 'turns' (MT-Bench)")


def load_prompts(path: str | Path | None = None, limit: int | None = None) -> list[Prompt]:
    """The prompts of ``path`` (default: the shipped set), the first ``limit`` of them if given."""
    path = Path(path) if path is not None else data_path(DEFAULT_PROMPTS)
    prompts = []
    for number, row in enumerate(read_json_rows(path, EvaluationError), 1):
        where = f"{path}: row {number}"
        prompt_id = row.get("question_id", row.get("id", number))
        if not isinstance(prompt_id, (int, str)) or isinstance(prompt_id, bool):
            raise EvaluationError(f"{where}: 'question_id' must be an integer or a string")
        prompts.append(Prompt(prompt_id, _turns(row, where), str(row.get("dataset", path.stem))))
    if not prompts:
        raise EvaluationError(f"{path}: holds no prompts")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise EvaluationError(f"{path}: prompt id {duplicate!r} appears more than once")
    return prompts[:limit] if limit is not None else prompts
