"""Preference data: load from files, folders or the hub; validate every row before step 1.

Rows follow TRL's formats: *standard* (``prompt``, ``chosen``, ``rejected`` strings) or
*conversational* (each a list of ``{"role", "content"}`` messages). Errors name the file and row.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from ropo.errors import RoPOError
from ropo.io import read_json_rows

COLUMNS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant", "tool")
_MAX_LISTED = 10


class DataError(RoPOError, ValueError):
    """Preference data that cannot be trained on; the message names the file and rows."""


@dataclass
class PreferenceData:
    dataset: Dataset
    source: str
    conversational: bool


def demo_data_path(split: str) -> Path:
    """The built-in preference task shipped with ropo (``demo`` / ``demo:test``)."""
    from importlib.resources import files

    return Path(str(files("ropo.demo_task") / "data" / f"{split}.jsonl"))


def _read_rows(spec: str, split: str) -> tuple[list[Any], str]:
    """Raw rows and a label naming where they came from."""
    if spec == "demo" or spec.startswith("demo:"):
        spec = str(demo_data_path(spec.partition(":")[2] or "train"))
    path = Path(spec)
    if path.is_file():
        if path.suffix in (".jsonl", ".json"):
            return read_json_rows(path, DataError, objects=False), str(path)
        if path.suffix == ".csv":
            return _read_csv(path), str(path)
        if path.suffix == ".parquet":
            from datasets import load_dataset

            try:
                dataset = load_dataset("parquet", data_files=str(path), split="train")
            except Exception as error:  # datasets wraps pyarrow's many errors in its own
                raise DataError(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from None
            return dataset.to_list(), str(path)
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json, .parquet or .csv)")
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except FileNotFoundError:
            raise DataError(
                f"{path}: is a folder but not a saved `datasets` dataset (no dataset_info.json / state.json); "
                "give a .jsonl, .json, .parquet or .csv file, or a folder written by Dataset.save_to_disk"
            ) from None
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise DataError(f"{path}: no split {split!r}; it has {sorted(loaded)}")
            loaded = loaded[split]
        return loaded.to_list(), f"{path} [{split}]"
    if spec.endswith((".jsonl", ".json", ".parquet", ".csv")) or "/" not in spec:
        raise DataError(f"{spec}: no such file or folder")
    from datasets import load_dataset

    try:
        dataset = load_dataset(spec, split=split)
    except Exception as error:  # the hub raises many types; all mean "cannot get it"
        raise DataError(f"hub dataset {spec!r} [{split}]: cannot be loaded ({type(error).__name__}: {error})") from None
    return dataset.to_list(), f"hub dataset {spec} [{split}]"


def _read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line; ragged rows are errors naming the line."""
    import csv
    import io

    from ropo.io import read_text_file

    text = read_text_file(path, DataError, "data file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        lines = [(reader.line_num, line) for line in reader if line]
    except csv.Error as error:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({error})") from None
    if not lines:
        raise DataError(f"{path}: empty file; expected a header line (prompt,chosen,rejected) and rows")
    (_, header), rows = lines[0], lines[1:]
    if not rows:
        raise DataError(f"{path}: only a header line ({','.join(header)}), no rows")
    for number, line in rows:
        if len(line) != len(header):
            raise DataError(f"{path}: line {number}: {len(line)} fields, the header has {len(header)} ({','.join(header)})")
    return [dict(zip(header, line)) for _, line in rows]


def _field_problem(value: Any) -> tuple[str | None, str | None]:
    """(format, problem) of one field: format is 'standard' or 'conversational'."""
    if isinstance(value, str):
        return "standard", None if value.strip() else "is empty"
    if isinstance(value, list):
        if not value:
            return "conversational", "is an empty list of messages"
        for index, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                return "conversational", f"message {index} must be an object with a string 'content'"
            if message.get("role") not in ROLES:
                return "conversational", f"message {index} has role {message.get('role')!r}, not one of {ROLES}"
            if not message["content"].strip():
                return "conversational", f"message {index} has empty content"
        return "conversational", None
    return None, f"must be a string or a list of messages, got {type(value).__name__}"


def validate_rows(rows: list[Any], source: str) -> tuple[list[dict[str, Any]], bool]:
    """Clean rows with only the three columns, and whether they are conversational; or DataError."""
    if not rows:
        raise DataError(f"{source}: no rows")
    present = {key for row in rows if isinstance(row, dict) for key in row}
    missing = [c for c in ("chosen", "rejected") if c not in present]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {sorted(present)}")
    prompted = "prompt" in present
    problems, formats, clean = [], Counter(), []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            problems.append(f"row {number}: expected an object with prompt/chosen/rejected, got {type(row).__name__}")
            continue
        if row.get("chosen") is None and row.get("rejected") is None:
            problems.append(f"row {number}: prompt-only row (no 'chosen' and no 'rejected')")
            continue
        row_formats = set()
        for column in COLUMNS:
            if column == "prompt" and not prompted:
                continue  # no row has a prompt: TRL's implicit-prompt format
            if column == "prompt" and column not in row:
                problems.append(f"row {number}: 'prompt' is missing (other rows have one; give every row a prompt)")
                continue
            if row.get(column) is None:
                problems.append(f"row {number}: '{column}' is missing")
                continue
            kind, problem = _field_problem(row[column])
            if problem:
                problems.append(f"row {number}: '{column}' {problem}")
            row_formats.add(kind)
        if len(row_formats) > 1:
            problems.append(f"row {number}: mixes plain strings and message lists across columns")
        formats.update(row_formats)
        clean.append({c: row[c] for c in COLUMNS if c in row})
    if len(formats) > 1 and not problems:
        problems.append("rows mix the standard (string) and conversational (messages) formats")
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DataError(f"{source}: {len(problems)} problem(s):\n  {listed}{more}")
    _warn_about_weak_pairs(clean, source)
    return clean, "conversational" in formats


def _warn_about_weak_pairs(rows: list[dict[str, Any]], source: str) -> None:
    keys = [json.dumps([row.get(c) for c in COLUMNS], sort_keys=True) for row in rows]
    copies: dict[str, list[int]] = {}
    for number, key in enumerate(keys, start=1):
        copies.setdefault(key, []).append(number)
    repeated = sorted((rows_of for rows_of in copies.values() if len(rows_of) > 1), key=len, reverse=True)
    if repeated:
        extra = sum(len(rows_of) - 1 for rows_of in repeated)
        example = "=".join(map(str, repeated[0][:3])) + ("=…" if len(repeated[0]) > 3 else "")
        warnings.warn(
            f"{source}: {extra} row(s) repeat an earlier pair: {len(repeated)} pair(s) occur more than once, "
            f"the most often {len(repeated[0])} times (rows {example}); each copy counts as one more pair in training",
            stacklevel=3,
        )
    same = [n for n, row in enumerate(rows, start=1) if row["chosen"] == row["rejected"]]
    if same:
        warnings.warn(f"{source}: {len(same)} row(s) with chosen == rejected (e.g. row {same[0]}) carry no preference", stacklevel=3)


def load_preference_data(spec: str, split: str = "train", max_rows: int | None = None) -> PreferenceData:
    rows, source = _read_rows(spec, split)
    if max_rows is not None:
        rows = rows[:max_rows]
    clean, conversational = validate_rows(rows, source)
    return PreferenceData(Dataset.from_list(clean), source, conversational)
