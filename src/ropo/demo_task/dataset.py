"""The built dataset as the training and evaluation code use it: a ``datasets.DatasetDict`` of TRL
preference pairs, and the prompt records of each split (for the judge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from ropo.demo_task.records import SHIPPED_DATA_DIR, SPLITS, TEST_PROMPTS, TaskDataError, load_prompts, read_pairs


def preference_dataset(directory: str | Path | None = None) -> DatasetDict:
    """``train`` and ``test`` pairs (``prompt``/``chosen``/``rejected`` conversations plus ``id``,
    ``kind`` and the judge's scores) from ``directory``, default the shipped build."""
    directory = Path(directory) if directory is not None else SHIPPED_DATA_DIR
    return DatasetDict({name: Dataset.from_list(read_pairs(directory / f"{name}.jsonl")) for name in SPLITS})


def split_records(directory: str | Path | None = None, prompts_path: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The prompt records of each split of the build in ``directory`` (default the shipped one), all of
    them, including those for which no pair was kept: ``test`` from its ``test_prompts.jsonl``,
    ``train`` the rest of ``prompts_path`` (default the shipped prompts)."""
    directory = Path(directory) if directory is not None else SHIPPED_DATA_DIR
    test = load_prompts(directory / TEST_PROMPTS)
    records = load_prompts(prompts_path)
    known = {record["id"]: record for record in records}
    changed = [record["id"] for record in test if known.get(record["id"]) != record]
    if changed:
        raise TaskDataError(f"{directory / TEST_PROMPTS}: records not in {prompts_path or 'the shipped prompts'}: {changed[:5]}")
    test_ids = {record["id"] for record in test}
    return {"train": [record for record in records if record["id"] not in test_ids], "test": test}


def held_out_records(count: int | None = None) -> list[dict[str, Any]]:
    """``count`` prompt records of the shipped test split spread evenly over it (all with None).

    The split is ordered by prompt kind, so its first ``count`` prompts would cover only the first
    kinds; the demo and the frontier study both evaluate on this selection."""
    test = split_records()["test"]
    if count is None or count >= len(test):
        return test
    return [test[i * len(test) // count] for i in range(count)]
