"""Build the preference dataset: sample several answers per prompt from the base model, score them with
the judge, keep the best and worst as (chosen, rejected) when the judge separates them clearly.

Prompts are split into train and test before sampling (seeded shuffle), so the test prompts are known
even where no pair was kept. Answers are sampled by evaluation's ``generate``, the same pipeline that
answers the held-out prompts: the same chat rendering, padding, sampling settings and stop tokens, so
"a finished answer" means the same in the data and in its evaluation. Each batch reseeds torch with
``seed + batch index``, so a build is reproducible for the same model, settings and machine. Answers
that hit ``max_new_tokens`` before a stop token are cut off, and are left out of the pairs: training
on them would teach the model to stop mid-sentence.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ropo.errors import RoPOConfigError
from ropo.demo_task import judge
from ropo.demo_task.records import BUILD_INFO, SPLITS, TEST_PROMPTS, TaskDataError, read_json, write_json, write_jsonl
from ropo.generation import Prompt, SamplingSettings, generate

#: 2: sampled through evaluation's ``generate`` (its stop tokens, top-k off, batches of answers).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides the built dataset besides the model and the prompts."""

    num_samples: int = 4          # answers sampled per prompt
    max_new_tokens: int = 128     # longer answers are cut off and left out of the pairs
    batch_size: int = 8           # prompts per generate call: batch_size × num_samples answers
    temperature: float = 0.9
    top_p: float = 0.95
    seed: int = 0
    test_fraction: float = 0.2    # share of prompts held out for evaluation
    min_margin: float = 0.25      # least score gap between chosen and rejected

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise RoPOConfigError(f"build setting {name} must be at least 1, got {getattr(self, name)}")
        if self.num_samples < 2:
            raise RoPOConfigError(f"build setting num_samples must be at least 2 to form a pair, got {self.num_samples}")
        if not 0.0 < self.temperature:
            raise RoPOConfigError(f"build setting temperature must be positive, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise RoPOConfigError(f"build setting top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise RoPOConfigError(f"build setting test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.min_margin <= 1.0:
            raise RoPOConfigError(f"build setting min_margin must be in [0, 1], got {self.min_margin}")


@dataclass(frozen=True)
class Sample:
    text: str
    finished: bool  # the model ended its turn within max_new_tokens


@dataclass
class BuiltDataset:
    splits: dict[str, list[dict[str, Any]]]  # the pairs of each split
    test_prompts: list[dict[str, Any]]  # every held-out prompt record, with or without a pair
    info: dict[str, Any] = field(default_factory=dict)


def split_prompts(records: list[dict[str, Any]], test_fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Train and test prompt records: a seeded shuffle of the ids decides; each keeps the file order."""
    ids = sorted(record["id"] for record in records)
    random.Random(seed).shuffle(ids)
    test_ids = set(ids[: round(len(ids) * test_fraction)])
    return {
        "train": [record for record in records if record["id"] not in test_ids],
        "test": [record for record in records if record["id"] in test_ids],
    }


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: BuildSettings,
    progress: bool = False,
) -> list[list[Sample]]:
    """``settings.num_samples`` sampled answers to each user prompt, in prompt order, by ``generate``."""
    sampling = SamplingSettings(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        samples_per_prompt=settings.num_samples,
        seed=settings.seed,
        batch_size=settings.batch_size * settings.num_samples,
    )
    jobs = [Prompt(index, (prompt,), "build") for index, prompt in enumerate(prompts)]
    answers: list[list[Sample]] = [[] for _ in prompts]
    for answer in generate(model, tokenizer, jobs, sampling, progress, "sampling"):  # ordered by sample
        answers[answer.prompt_id].append(Sample(answer.text, not answer.hit_limit))
    return answers


def make_pair(record: dict[str, Any], samples: list[Sample], min_margin: float) -> dict[str, Any] | None:
    """The judge's best and worst distinct finished answers as a TRL conversational pair, or None when
    fewer than two remain or their scores differ by less than ``min_margin`` (or not at all). Ties go
    to the earlier sample, so the choice carries no length preference of its own."""
    texts = list(dict.fromkeys(sample.text for sample in samples if sample.finished and sample.text))
    if len(texts) < 2:
        return None
    scores = [judge.score(record, text) for text in texts]
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    if scores[best] <= scores[worst] or scores[best] - scores[worst] < min_margin:
        return None
    return {
        "id": record["id"],
        "kind": record["kind"],
        "prompt": [{"role": "user", "content": record["prompt"]}],
        "chosen": [{"role": "assistant", "content": texts[best]}],
        "rejected": [{"role": "assistant", "content": texts[worst]}],
        "chosen_score": scores[best],
        "rejected_score": scores[worst],
    }


def _length_preference(record: dict[str, Any], samples: list[Sample]) -> list[bool]:
    """For every pair of this prompt's finished answers that the judge does not tie and whose lengths
    differ: whether the judge preferred the longer one."""
    scored = [(len(judge.words(s.text)), judge.score(record, s.text)) for s in samples if s.finished and s.text]
    return [
        (len_a > len_b) == (score_a > score_b)
        for i, (len_a, score_a) in enumerate(scored)
        for len_b, score_b in scored[i + 1 :]
        if score_a != score_b and len_a != len_b
    ]


def pair_stats(rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, Any]:
    """Counts and mean lengths (words; tokens when ``tokenizer`` is given) of chosen vs rejected."""
    if not rows:
        return {"pairs": 0}
    chosen = [row["chosen"][0]["content"] for row in rows]
    rejected = [row["rejected"][0]["content"] for row in rows]
    stats: dict[str, Any] = {
        "pairs": len(rows),
        "mean_chosen_words": fmean(len(judge.words(text)) for text in chosen),
        "mean_rejected_words": fmean(len(judge.words(text)) for text in rejected),
        "chosen_longer_share": fmean(len(judge.words(c)) > len(judge.words(r)) for c, r in zip(chosen, rejected)),
        "mean_chosen_score": fmean(row["chosen_score"] for row in rows),
        "mean_rejected_score": fmean(row["rejected_score"] for row in rows),
        "pairs_by_kind": dict(sorted(Counter(row["kind"] for row in rows).items())),
    }
    if tokenizer is not None:
        stats["mean_chosen_tokens"] = fmean(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in chosen)
        stats["mean_rejected_tokens"] = fmean(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rejected)
    return stats


def prompts_digest(records: list[dict[str, Any]]) -> str:
    """A sha256 of the prompt records, so a cached build can tell whether its prompts changed."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True).encode())
    return digest.hexdigest()


def build_dataset(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[dict[str, Any]],
    settings: BuildSettings,
    model_name: str,
    progress: bool = False,
) -> BuiltDataset:
    """Sample, judge and pair every prompt of ``records``; the pairs per split plus what was measured."""
    started = time.perf_counter()
    prompt_splits = split_prompts(records, settings.test_fraction, settings.seed)
    ordered = prompt_splits["train"] + prompt_splits["test"]
    answers = sample_answers(model, tokenizer, [record["prompt"] for record in ordered], settings, progress)
    by_id = {record["id"]: samples for record, samples in zip(ordered, answers)}
    splits = {
        name: [pair for record in prompt_splits[name] if (pair := make_pair(record, by_id[record["id"]], settings.min_margin))]
        for name in SPLITS
    }
    all_samples = [sample for samples in answers for sample in samples]
    longer_preferred = [flag for record in ordered for flag in _length_preference(record, by_id[record["id"]])]
    info = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "settings": asdict(settings),
        "prompts": len(records),
        "prompts_sha256": prompts_digest(records),
        "samples": len(all_samples),
        "finished_share": fmean(sample.finished for sample in all_samples),
        "mean_sample_words": fmean(len(judge.words(sample.text)) for sample in all_samples),
        "judge_prefers_longer_share": fmean(longer_preferred) if longer_preferred else None,
        "judged_sample_pairs": len(longer_preferred),
        "stats": {name: pair_stats(rows, tokenizer) for name, rows in splits.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    return BuiltDataset(splits, prompt_splits["test"], info)


def write_dataset(directory: str | Path, built: BuiltDataset) -> Path:
    """``train.jsonl`` and ``test.jsonl`` (pairs), ``test_prompts.jsonl`` (the held-out prompt records,
    for evaluation with the judge) and ``build.json`` (written last: it marks a complete build)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BUILD_INFO).unlink(missing_ok=True)
    for name, rows in built.splits.items():
        write_jsonl(directory / f"{name}.jsonl", rows)
    write_jsonl(directory / TEST_PROMPTS, built.test_prompts)
    write_json(directory / BUILD_INFO, built.info)
    return directory


def cached_build(directory: str | Path, settings: BuildSettings, model_name: str, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The build info of ``directory`` if it holds a complete build with exactly these inputs, else None."""
    path = Path(directory) / BUILD_INFO
    needed = [f"{name}.jsonl" for name in SPLITS] + [TEST_PROMPTS]
    if not path.is_file() or not all((Path(directory) / name).is_file() for name in needed):
        return None
    try:
        info = read_json(path)
    except TaskDataError:
        return None
    same = (
        info.get("format_version") == FORMAT_VERSION
        and info.get("settings") == asdict(settings)
        and info.get("model") == model_name
        and info.get("prompts_sha256") == prompts_digest(records)
    )
    return info if same else None

