"""Functions the ``ropo_qa_probe*`` lm-eval tasks name with ``!function probe_task.…``.

lm-eval resolves ``!function`` modules beside the YAML, but ``datasets`` resolves
``dataset_kwargs.data_files`` against the working directory; ``json_beside_yaml`` resolves them
against this folder, so ``--include_path`` works from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from ropo.evaluation.knowledge import choices
from ropo.evaluation.retention import QAItem, answer_matches

HERE = Path(__file__).resolve().parent


def json_beside_yaml(data_files: dict[str, str], **_: Any) -> datasets.DatasetDict:
    """``datasets.load_dataset("json", data_files=...)`` with paths taken relative to this folder."""
    return datasets.load_dataset("json", data_files={split: str(HERE / path) for split, path in data_files.items()})


def accuracy(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """ropo's QA-probe rule: right when the answer contains an accepted answer as whole words."""
    return {"accuracy": float(answer_matches(results[0], doc["answers"]))}


def answer_log_likelihood(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
    """log p(first accepted answer | question), nats: ropo's ``answer_log_likelihood``."""
    return {"answer_log_likelihood": float(results[0][0])}


def with_choices(dataset: datasets.Dataset) -> datasets.Dataset:
    """Each question with its multiple-choice options (the gold answer first), as the frontier scores them."""
    items = [QAItem(row["question"], tuple(row["answers"])) for row in dataset]
    return dataset.map(lambda _, index: {"choices": choices(items, index)}, with_indices=True)
