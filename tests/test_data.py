"""Preference data: every kind of bad row is caught before training, with the file and row."""

import json
import warnings

import pytest
from datasets import Dataset, DatasetDict

from ropo.tiny_models import tiny_tokenizer
from ropo.training.data import DataError, load_preference_data
from ropo.training.lengths import fit_to_max_length

GOOD = {"prompt": "Say hi.", "chosen": " Hi there.", "rejected": " No."}


def _jsonl(tmp_path, rows, name="prefs.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_standard_rows_load(tmp_path):
    data = load_preference_data(_jsonl(tmp_path, [GOOD, {**GOOD, "prompt": "Say bye."}]))
    assert len(data.dataset) == 2 and not data.conversational
    assert data.dataset.column_names == ["prompt", "chosen", "rejected"]


def test_conversational_rows_load(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "Say hi."}],
        "chosen": [{"role": "assistant", "content": "Hi there."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    data = load_preference_data(_jsonl(tmp_path, [row]))
    assert data.conversational and data.dataset[0]["chosen"][0]["content"] == "Hi there."


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "p", "chosen": "c"}], r"missing column\(s\) \['rejected'\]"),
        ([GOOD, {**GOOD, "chosen": "  "}], r"row 2: 'chosen' is empty"),
        ([GOOD, GOOD, {**GOOD, "rejected": 7}], r"row 3: 'rejected' must be a string or a list of messages, got int"),
        ([GOOD, {"prompt": "only a prompt"}], r"row 2: prompt-only row"),
        ([{**GOOD, "chosen": None}], r"row 1: 'chosen' is missing"),
        ([{**GOOD, "chosen": [{"role": "assistant", "content": "x"}]}], r"row 1: mixes plain strings and message lists"),
        ([{**GOOD, "chosen": [{"role": "robot", "content": "x"}]}], r"row 1: 'chosen' message 0 has role 'robot'"),
        (['"just a string"', GOOD], r"row 1: expected an object"),
    ],
)
def test_bad_rows_are_named(tmp_path, rows, message):
    path = _jsonl(tmp_path, rows)
    with pytest.raises(DataError, match=message) as error:
        load_preference_data(path)
    assert path in str(error.value)


def test_invalid_json_line_is_named(tmp_path):
    path = _jsonl(tmp_path, [GOOD, "{not json"])
    with pytest.raises(DataError, match=r"prefs\.jsonl: line 2: not valid JSON"):
        load_preference_data(path)


def test_many_problems_are_listed_together(tmp_path):
    with pytest.raises(DataError, match=r"12 problem\(s\)(.|\n)*and 2 more"):
        load_preference_data(_jsonl(tmp_path, [{**GOOD, "chosen": ""}] * 12))


def test_duplicates_and_identical_pairs_warn(tmp_path):
    rows = [GOOD, GOOD, {**GOOD, "prompt": "x", "rejected": GOOD["chosen"]}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_preference_data(_jsonl(tmp_path, rows))
    messages = [str(w.message) for w in caught]
    assert any("1 row(s) repeat an earlier pair: 1 pair(s) occur more than once, the most often 2 times (rows 1=2)" in m
               for m in messages)
    assert any("chosen == rejected (e.g. row 3)" in m for m in messages)


def test_ten_thousand_copies_of_one_pair_are_counted_as_such(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_preference_data(_jsonl(tmp_path, [GOOD] * 10_000))
    message = next(str(w.message) for w in caught if "repeat" in str(w.message))
    assert "9999 row(s) repeat an earlier pair: 1 pair(s) occur more than once, the most often 10000 times (rows 1=2=3=…)" in message


def test_other_file_types_and_folders(tmp_path):
    rows = [GOOD, {**GOOD, "prompt": "Again."}]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    Dataset.from_list(rows).to_csv(str(tmp_path / "p.csv"), index=False)
    (tmp_path / "p.json").write_text(json.dumps(rows))
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "folder"))
    for spec in ("p.parquet", "p.csv", "p.json", "folder"):
        assert len(load_preference_data(str(tmp_path / spec)).dataset) == 2, spec
    with pytest.raises(DataError, match=r"no split 'test'; it has \['train'\]"):
        load_preference_data(str(tmp_path / "folder"), split="test")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_preference_data(str(tmp_path / "p.txt"))
    with pytest.raises(DataError, match="no such file or folder"):
        load_preference_data(str(tmp_path / "missing.jsonl"))


def test_csv_empty_cell_is_named(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,chosen,rejected\nhi,a,b\nhey,,b\n")
    with pytest.raises(DataError, match=r"p\.csv: 1 problem\(s\):\n  row 2: 'chosen' is empty"):
        load_preference_data(str(tmp_path / "p.csv"))


def test_rows_over_max_length_are_counted_and_prompt_truncated(tmp_path):
    tokenizer = tiny_tokenizer()  # one token per byte
    long_prompt = "x" * 50 + " keep the end"
    data = load_preference_data(_jsonl(tmp_path, [GOOD, {**GOOD, "prompt": long_prompt}]))
    with pytest.warns(UserWarning, match=r"1 of 2 rows exceed max_length=40; their prompts were shortened"):
        fitted, report = fit_to_max_length(data, tokenizer, max_length=40)
    assert report.truncated_prompts == 1 and report.rows == 2
    prompt = fitted.dataset[1]["prompt"]
    assert prompt.endswith(" keep the end") and len(prompt) == 40 - len(GOOD["chosen"]) - 1  # and TRL's EOS
    assert fitted.dataset[0] == GOOD and fitted.dataset[1]["chosen"] == GOOD["chosen"]
    assert report.mean_chosen_tokens == len(GOOD["chosen"])


def test_conversational_rows_over_max_length_lose_their_oldest_turns(tmp_path):
    tokenizer = tiny_tokenizer()
    row = {
        "prompt": [{"role": "user", "content": "a" * 60}, {"role": "assistant", "content": "b" * 10},
                   {"role": "user", "content": "Say hi."}],
        "chosen": [{"role": "assistant", "content": "Hi."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    data = load_preference_data(_jsonl(tmp_path, [row]))
    with pytest.warns(UserWarning, match="1 of 1 rows exceed"):
        fitted, report = fit_to_max_length(data, tokenizer, max_length=60)
    prompt = fitted.dataset[0]["prompt"]
    assert prompt[-1]["content"] == "Say hi." and all("a" * 60 != m["content"] for m in prompt)
    full = tokenizer.apply_chat_template(prompt + row["chosen"], tokenize=True, return_dict=True)["input_ids"]
    assert len(full) <= 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", r"p\.csv: empty file"),
        (b"prompt,chosen,rejected\n", r"p\.csv: only a header line \(prompt,chosen,rejected\), no rows"),
        (b"prompt,chosen,rejected\nhi,a,b\nhey,a,b,extra\n", r"p\.csv: line 3: 4 fields, the header has 3"),
        (b"prompt,chosen,rejected\nhi,a\n", r"p\.csv: line 2: 2 fields, the header has 3"),
        (b"prompt,chosen,rejected\ncaf\xe9,a,b\n", r"p\.csv: line 2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"),
    ],
)
def test_bad_csv_files_are_named(tmp_path, text, message):
    (tmp_path / "p.csv").write_bytes(text)
    with pytest.raises(DataError, match=message):
        load_preference_data(str(tmp_path / "p.csv"))


def test_unreadable_data_is_named(tmp_path):
    (tmp_path / "p.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl: line 2: not UTF-8 text \(byte 0xff\)"):
        load_preference_data(str(tmp_path / "p.jsonl"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"folder: is a folder but not a saved `datasets` dataset"):
        load_preference_data(str(tmp_path / "folder"))
    (tmp_path / "p.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"p\.parquet: not a readable parquet file"):
        load_preference_data(str(tmp_path / "p.parquet"))


def test_one_row_without_a_prompt_is_named(tmp_path):
    unprompted = {"chosen": GOOD["chosen"], "rejected": GOOD["rejected"]}
    with pytest.raises(DataError, match=r"row 2: 'prompt' is missing \(other rows have one"):
        load_preference_data(_jsonl(tmp_path, [GOOD, unprompted, GOOD]))
    assert len(load_preference_data(_jsonl(tmp_path, [unprompted, unprompted], "implicit.jsonl")).dataset) == 2


def _trl_length(tokenizer, prompt: str, completion: str) -> int:
    """As TRL's DPOTrainer tokenizes a standard row: prompt + completion + EOS, together."""
    return len(tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"])


def test_multibyte_prompts_are_shortened_between_characters_and_fit(tmp_path):
    tokenizer = tiny_tokenizer()  # one token per byte: "é" is 2 tokens, "日" 3, "🙂" 4
    long_prompt = "é日🙂 " * 40 + "keep the end"
    row = {"prompt": long_prompt, "chosen": " Ça va 🙂.", "rejected": " Non."}
    data = load_preference_data(_jsonl(tmp_path, [row]))
    for max_length in range(30, 60):
        with pytest.warns(UserWarning, match="their prompts were shortened"):
            fitted, _ = fit_to_max_length(data, tokenizer, max_length=max_length)
        prompt = fitted.dataset[0]["prompt"]
        assert "\ufffd" not in prompt and long_prompt.endswith(prompt) and prompt.endswith("keep the end")
        assert _trl_length(tokenizer, prompt, row["chosen"]) <= max_length
        assert _trl_length(tokenizer, long_prompt[len(long_prompt) - len(prompt) - 1:], row["chosen"]) > max_length, \
            "one more character would not fit: the prompt is cut no shorter than it must be"
