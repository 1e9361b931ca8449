"""Token lengths of preference rows, and prompt-side truncation of rows over ``max_length``.

TRL truncates the *end* of over-long sequences, which cuts the completions that carry the
preference. We shorten the prompt instead (oldest text first) and count how many rows needed it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ropo.training.data import PreferenceData

#: Room for the special tokens TRL adds (BOS, EOS).
_SPECIAL_TOKENS = 2


@dataclass
class LengthReport:
    rows: int
    truncated_prompts: int = 0
    completions_over_limit: int = 0
    chosen_lengths: list[int] = field(default_factory=list)
    rejected_lengths: list[int] = field(default_factory=list)

    @property
    def mean_chosen_tokens(self) -> float:
        return fmean(self.chosen_lengths)

    @property
    def mean_rejected_tokens(self) -> float:
        return fmean(self.rejected_lengths)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _template_length(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> int:
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return len(encoded["input_ids"])


def _fit_standard(row: dict[str, Any], tokenizer, max_length: int, report: LengthReport) -> dict[str, Any]:
    chosen, rejected = len(_ids(tokenizer, row["chosen"])), len(_ids(tokenizer, row["rejected"]))
    report.chosen_lengths.append(chosen)
    report.rejected_lengths.append(rejected)
    prompt_ids = _ids(tokenizer, row.get("prompt", ""))
    budget = max_length - max(chosen, rejected) - _SPECIAL_TOKENS
    if len(prompt_ids) <= budget:
        return row
    if budget < 1:
        report.completions_over_limit += 1
        return row
    report.truncated_prompts += 1
    return {**row, "prompt": tokenizer.decode(prompt_ids[-budget:])}


def _fit_conversational(row: dict[str, Any], tokenizer, max_length: int, report: LengthReport) -> dict[str, Any]:
    prompt = list(row.get("prompt", []))
    prompt_length = _template_length(tokenizer, prompt, True) if prompt else 0
    completions = [_template_length(tokenizer, prompt + row[c], False) - prompt_length for c in ("chosen", "rejected")]
    report.chosen_lengths.append(completions[0])
    report.rejected_lengths.append(completions[1])
    budget = max_length - max(completions)
    if prompt_length <= budget:
        return row
    if budget < _SPECIAL_TOKENS or not prompt:
        report.completions_over_limit += 1
        return row
    report.truncated_prompts += 1
    while len(prompt) > 1 and _template_length(tokenizer, prompt, True) > budget:
        prompt.pop(0)  # the oldest turn goes first
    excess = _template_length(tokenizer, prompt, True) - budget
    if excess > 0:
        content_ids = _ids(tokenizer, prompt[0]["content"])
        prompt[0] = {**prompt[0], "content": tokenizer.decode(content_ids[min(excess, len(content_ids) - 1) :])}
    return {**row, "prompt": prompt}


def fit_to_max_length(
    data: PreferenceData, tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> tuple[PreferenceData, LengthReport]:
    """Measure every row and shorten prompts so that prompt + the longer completion fits."""
    report = LengthReport(rows=len(data.dataset))
    fit = _fit_conversational if data.conversational else _fit_standard
    limit = max_length if max_length is not None else 10**9
    rows = [fit(row, tokenizer, limit, report) for row in data.dataset.to_list()]
    if report.truncated_prompts:
        warnings.warn(
            f"{data.source}: {report.truncated_prompts} of {report.rows} rows exceed max_length={max_length}; "
            "their prompts were shortened from the start",
            stacklevel=2,
        )
    if report.completions_over_limit:
        warnings.warn(
            f"{data.source}: {report.completions_over_limit} rows have a completion longer than "
            f"max_length={max_length} by itself; TRL truncates its end",
            stacklevel=2,
        )
    return PreferenceData(Dataset.from_list(rows), data.source, data.conversational), report
