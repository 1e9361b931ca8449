"""``ropo.io``: the shared row reader names the file and line or row of every problem."""

import json

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
