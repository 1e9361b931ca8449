"""Token lengths of preference rows, and prompt-side truncation of rows over ``max_length``.

TRL truncates the *end* of over-long sequences, which cuts the completions that carry the
preference. We shorten the prompt instead (oldest text first) and count how many rows needed it.
Lengths are measured as TRL measures them (prompt and completion tokenized together, with the
EOS it appends), and a prompt is cut between characters, never inside one: cutting a list of
token ids can split a multi-byte character, and the re-tokenized text can come out longer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ropo.training.data import DataError, PreferenceData

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


def shortest_cut(text: str, fits: Callable[[str], bool]) -> int | None:
    """The smallest character index ``i`` for which ``fits(text[i:])`` (None: not even ``""`` fits).

    A binary search (token counts grow with the text, up to merges at the cut), then a step
    forward until it really fits.
    """
    if not fits(text[len(text):]):
        return None
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if fits(text[middle:]):
            high = middle
        else:
            low = middle + 1
    while not fits(text[low:]):
        low += 1
    return low


def _sequence_length(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> int:
    """Tokens TRL trains on for ``prompt + completion``: tokenized together, plus the EOS it appends."""
    eos = tokenizer.eos_token or ""
    text = prompt + completion + ("" if completion.endswith(eos) else eos)
    return len(tokenizer(text)["input_ids"])


def _fit_standard(row: dict[str, Any], tokenizer, max_length: int, report: LengthReport) -> dict[str, Any]:
    chosen, rejected = len(_ids(tokenizer, row["chosen"])), len(_ids(tokenizer, row["rejected"]))
    report.chosen_lengths.append(chosen)
    report.rejected_lengths.append(rejected)
    prompt = row.get("prompt") or ""

    def fits(text: str) -> bool:
        return all(_sequence_length(tokenizer, text, row[c]) <= max_length for c in ("chosen", "rejected"))

    if max_length >= 10**9 or fits(prompt):
        return row
    cut = shortest_cut(prompt, fits) if prompt else None
    if not cut:  # None: the completion alone is over; 0 cannot happen (the whole prompt did not fit)
        report.completions_over_limit += 1
        return row
    report.truncated_prompts += 1
    return {**row, "prompt": prompt[cut:]}


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
    if _template_length(tokenizer, prompt, True) > budget:
        first, rest = prompt[0], prompt[1:]

        def fits(content: str) -> bool:
            return _template_length(tokenizer, [{**first, "content": content}, *rest], True) <= budget

        cut = shortest_cut(first["content"], fits)
        if cut is not None:
            prompt[0] = {**first, "content": first["content"][cut:] or first["content"][-1:]}
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
    if report.rows and report.completions_over_limit == report.rows:
        needed = min(max(c, r) for c, r in zip(report.chosen_lengths, report.rejected_lengths))
        raise DataError(
            f"{data.source}: every one of the {report.rows} rows has a completion longer than "
            f"max_length={max_length} by itself, so no pair would be left to train on; the shortest pair "
            f"needs max_length >= {needed} (set training.max_length)"
        )
    if report.completions_over_limit:
        warnings.warn(
            f"{data.source}: {report.completions_over_limit} rows have a completion longer than "
            f"max_length={max_length} by itself; TRL truncates its end",
            stacklevel=2,
        )
    return PreferenceData(Dataset.from_list(rows), data.source, data.conversational), report
