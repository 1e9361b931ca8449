"""Generations in the files AlpacaEval 2 and FastChat's MT-Bench read, so their judges run unchanged.

AlpacaEval: ``alpaca_eval --model_outputs model_outputs.json`` (a JSON list of
{instruction, output, generator, dataset}; pass AlpacaEval's own prompt file to ``ropo eval``).
MT-Bench: copy ``<model_id>.jsonl`` to ``fastchat/llm_judge/data/mt_bench/model_answer/`` and run
``gen_judgment.py`` (pass MT-Bench's ``question.jsonl`` to ``ropo eval``, which answers both turns).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from ropo.generation import Generation, Prompt
from ropo.io import atomic_write_text


def _first_sample(generations: Sequence[Generation]) -> dict[tuple[int | str, int], Generation]:
    return {(g.prompt_id, g.turn): g for g in generations if g.sample == 0}


def alpaca_eval_outputs(prompts: Sequence[Prompt], generations: Sequence[Generation], generator: str) -> list[dict]:
    """One record per prompt: its first turn and the first sample's answer."""
    answers = _first_sample(generations)
    return [
        {"dataset": p.dataset, "instruction": p.turns[0], "output": answers[p.id, 0].text, "generator": generator}
        for p in prompts
    ]


def mt_bench_answers(prompts: Sequence[Prompt], generations: Sequence[Generation], model_id: str) -> list[dict]:
    """FastChat's answer records: every sample as a choice, each holding the answers to all turns."""
    by_key = {(g.prompt_id, g.sample, g.turn): g.text for g in generations}
    samples = sorted({g.sample for g in generations})
    stamp = time.time()
    return [
        {
            "question_id": p.id,
            "answer_id": uuid.uuid4().hex,
            "model_id": model_id,
            "choices": [{"index": s, "turns": [by_key[p.id, s, t] for t in range(len(p.turns))]} for s in samples],
            "tstamp": stamp,
        }
        for p in prompts
    ]


def write_exports(
    directory: str | Path, name: str, prompts: Sequence[Prompt], generations: Sequence[Generation]
) -> dict[str, Path]:
    """Write ``alpaca_eval/<name>/model_outputs.json`` and ``mt_bench/model_answer/<name>.jsonl``."""
    directory = Path(directory)
    alpaca = atomic_write_text(
        directory / "alpaca_eval" / name / "model_outputs.json",
        json.dumps(alpaca_eval_outputs(prompts, generations, name), indent=2, ensure_ascii=False) + "\n",
    )
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in mt_bench_answers(prompts, generations, name))
    mt_bench = atomic_write_text(directory / "mt_bench" / "model_answer" / f"{name}.jsonl", "".join(lines))
    return {"alpaca_eval": alpaca, "mt_bench": mt_bench}
