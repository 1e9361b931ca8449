"""The QA probe: its items, the brevity instruction, answer matching, and lm-evaluation-harness tasks.

A short QA probe (shipped, or your own JSONL of ``{"question", "answers"}``) is what
``ropo.evaluation.knowledge`` measures forgetting on. ``qa_probe`` is the probe as the lm-eval task
``ropo_qa`` scores it (``ropo.evaluation.harness.TASKS_DIR``): greedy answers under the brevity
instruction (``brevity_accuracy``) and the gold answer's log-likelihood under the same prompt. Users
with the data can add any lm-evaluation-harness task through ``lm_eval_scores``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.evaluation.errors import EvaluationError
from ropo.io import read_json_rows
from ropo.generation import Prompt, SamplingSettings, generate, render_prompt
from ropo.evaluation.prompts import data_path
from ropo.evaluation.scoring import continuation_log_likelihoods

DEFAULT_QA_PROBE = "qa_probe.jsonl"
#: 436 questions written for this project (see data/README.md): enough to see a few points of forgetting.
LARGE_QA_PROBE = "qa_probe_large.jsonl"
QA_INSTRUCTION = "Answer with just the answer, in as few words as possible.\n"
#: The brevity probe's greedy answer length (its answers are a few words; the lm-eval task's max_gen_toks).
BREVITY_MAX_NEW_TOKENS = 16


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]  # accepted answers; the first is the one whose likelihood is measured


@dataclass(frozen=True)
class QAResult:
    accuracy: float  # share of questions whose greedy answer contains an accepted answer
    answer_log_likelihood: float  # mean over questions of log p(first accepted answer | question), nats
    correct: tuple[bool, ...]  # per question, in order: what a confidence interval over questions resamples


def load_qa_probe(path: str | Path | None = None) -> list[QAItem]:
    path = Path(path) if path is not None else data_path(DEFAULT_QA_PROBE)
    items = []
    for number, row in enumerate(read_json_rows(path, EvaluationError), 1):
        question, answers = row.get("question"), row.get("answers")
        if not (isinstance(question, str) and question.strip()):
            raise EvaluationError(f"{path}: row {number}: 'question' must be a non-empty string")
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)):
            raise EvaluationError(f"{path}: row {number}: 'answers' must be a non-empty list of strings")
        items.append(QAItem(question, tuple(answers)))
    if not items:
        raise EvaluationError(f"{path}: holds no questions")
    return items


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def answer_matches(prediction: str, answers: Sequence[str]) -> bool:
    """True if some accepted answer appears in the prediction as whole words (after normalising)."""
    padded = f" {normalize_answer(prediction)} "
    return any(f" {normalize_answer(answer)} " in padded for answer in answers)


def greedy_answers(model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[QAItem], instruction: str,
                   max_new_tokens: int, batch_size: int, progress: bool = False) -> list[str]:
    """Each question, after ``instruction``, answered greedily as one user turn."""
    prompts = [Prompt(i, (instruction + item.question,), "qa_probe") for i, item in enumerate(items)]
    settings = SamplingSettings(max_new_tokens=max_new_tokens, do_sample=False, samples_per_prompt=1, batch_size=batch_size)
    return [g.text for g in generate(model, tokenizer, prompts, settings, progress=progress, description="QA probe")]


def qa_probe(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[QAItem],
    batch_size: int = 8,
    max_new_tokens: int = BREVITY_MAX_NEW_TOKENS,
    progress: bool = False,
) -> QAResult:
    """Greedy-answer accuracy and gold-answer log-likelihood on ``items``."""
    answers = greedy_answers(model, tokenizer, items, QA_INSTRUCTION, max_new_tokens, batch_size, progress)
    correct = tuple(answer_matches(answer, item.answers) for answer, item in zip(answers, items))
    pairs = [
        (render_prompt(tokenizer, [{"role": "user", "content": QA_INSTRUCTION + item.question}]),
         tokenizer(item.answers[0], add_special_tokens=False)["input_ids"])
        for item in items
    ]
    return QAResult(fmean(correct), fmean(continuation_log_likelihoods(model, pairs, batch_size)), correct)


def lm_eval_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    limit: int | None = None,
    batch_size: int = 8,
    apply_chat_template: bool = False,
) -> dict[str, float]:
    """Run lm-evaluation-harness ``tasks`` on the loaded model; ``{"lm_eval/<task>/<metric>": value}``.

    lm-eval is optional (``pip install 'ropo[eval]'``) and fetches its tasks' data sets itself;
    ropo's own tasks (``ropo_qa_probe``, ``ropo_qa_probe_loglik``, tag ``ropo_qa``) are local.
    ``apply_chat_template`` renders each prompt as a user turn, as ropo's own probe does.
    """
    from ropo.evaluation.harness import task_manager

    manager = task_manager()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=harness_model, tasks=list(tasks), limit=limit, task_manager=manager,
        apply_chat_template=apply_chat_template,
    )
    return {
        f"lm_eval/{task}/{metric.split(',')[0]}": float(value)
        for task, metrics in output["results"].items()
        for metric, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in metric
    }
