"""Forgetting, split into what each measure measures.

Why split: the first QA probe asked "Answer with just the answer, in as few words as possible" and
allowed 16 tokens. A DPO checkpoint that still knew Paris answered "Capital of France\n\nNo answer is
provided.": the probe measured following a brevity instruction as much as knowledge. Each measure
here is reported on its own, per item, so every one gets its interval and its paired comparisons:

- knowledge, free of answer format: the gold answer's log-likelihood per token after a neutral
  ``Question: … Answer:`` prefix, and the probe as a 4-way multiple-choice task scored by
  log-likelihood (lm-evaluation-harness's ``acc``; the task ``ropo_qa_probe_mc`` runs it there);
  and accuracy when the question is asked plainly, with room for a full sentence;
- instruction following: the first probe, unchanged, under the name it deserves;
- general language modelling: log-likelihood per token of text nobody here wrote, the Python
  documentation that ships with the interpreter (``pydoc_data.topics``), as PEFT's method
  comparison measures forgetting on Wikipedia text;
- degeneration: plain answers not in English (the question's language), and brevity answers that
  refuse or talk about the instruction instead of answering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.retention import BREVITY_MAX_NEW_TOKENS, QA_INSTRUCTION, QAItem, answer_matches, greedy_answers, normalize_answer
from ropo.evaluation.scoring import continuation_log_likelihoods

#: Room for "The capital of France is Paris." and a clause more; the brevity probe keeps its 16.
PLAIN_MAX_NEW_TOKENS = 32
#: The neutral context of the likelihood and multiple-choice measures (plain text, no chat template:
#: as lm-evaluation-harness scores such tasks).
NEUTRAL_CONTEXT = "Question: {question}\nAnswer:"
CHOICES = 4
#: The text corpus: paragraphs of at least this many characters (topics sorted by name; 442 of them
#: in Python 3.11), each scored on its first ``TEXT_TOKENS`` tokens.
TEXT_MIN_CHARACTERS = 300
TEXT_TOKENS = 96
#: An answer of at least this many words with none of these words is counted as not English. A
#: heuristic (no language detector is shipped offline): it flags "Il Capitale di Italy è …" and
#: lets "The capital of Italy is Rome." pass; it does not judge answers of fewer words.
LANGUAGE_MIN_WORDS = 4
ENGLISH_FUNCTION_WORDS = frozenset(
    "the a an is are was were be been of in on at to for from by with and or but not it its this that "
    "these those he she they we you i his her their there which who what as has have had".split())
#: A brevity answer that refuses, says no answer is given, or repeats the instruction.
EVASION = re.compile(
    r"no answer|not provided|cannot answer|can't answer|can not answer|unable to|i don't know|i do not know"
    r"|\bsorry\b|as an ai|few words|just the answer|answer with just|instruction", re.IGNORECASE)


@dataclass(frozen=True)
class KnowledgeItems:
    """Per probe item, in the probe's order (what an interval over items resamples)."""

    brevity_correct: tuple[bool, ...]
    plain_correct: tuple[bool, ...]
    choice_correct: tuple[bool, ...]
    answer_log_likelihood: tuple[float, ...]  # nats per token of the first accepted answer
    off_language: tuple[bool, ...]  # of the plain answers
    evasive: tuple[bool, ...]  # of the brevity answers

    def as_dict(self) -> dict[str, list]:
        return {key: list(value) for key, value in self.__dict__.items()}


def distractors(items: Sequence[QAItem], index: int, count: int = CHOICES - 1) -> list[str]:
    """Wrong choices for item ``index``: the first answers of its nearest neighbours in the probe
    (which groups questions by kind, so capitals compete with capitals), skipping any that an
    accepted answer of the item matches or that is already chosen."""
    accepted = {normalize_answer(a) for a in items[index].answers}
    chosen: list[str] = []
    for distance in range(1, len(items)):
        for neighbour in (index + distance, index - distance):
            if 0 <= neighbour < len(items) and len(chosen) < count:
                answer = items[neighbour].answers[0]
                if normalize_answer(answer) not in accepted | {normalize_answer(c) for c in chosen}:
                    chosen.append(answer)
        if len(chosen) == count:
            return chosen
    raise EvaluationError(f"the QA probe has too few distinct answers for {count} distractors of question "
                          f"{index + 1} ({items[index].question!r}); multiple choice needs at least {count + 1} questions "
                          "with different answers")


def choices(items: Sequence[QAItem], index: int) -> list[str]:
    """The multiple-choice options of item ``index``: its first answer, then its distractors."""
    return [items[index].answers[0], *distractors(items, index)]


def _context_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    return tokenizer(NEUTRAL_CONTEXT.format(question=question), add_special_tokens=False)["input_ids"]


def _answer_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    return tokenizer(" " + answer, add_special_tokens=False)["input_ids"]


def is_off_language(answer: str) -> bool:
    """True for an answer of at least ``LANGUAGE_MIN_WORDS`` words with no English function word."""
    words = re.findall(r"[^\W\d_]+", answer.lower())
    return len(words) >= LANGUAGE_MIN_WORDS and not ENGLISH_FUNCTION_WORDS.intersection(words)


def knowledge_items(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[QAItem],
    batch_size: int = 16,
    brevity_max_new_tokens: int = BREVITY_MAX_NEW_TOKENS,
) -> KnowledgeItems:
    """Every knowledge measure of ``model`` on ``items``, per item."""
    brevity = greedy_answers(model, tokenizer, items, QA_INSTRUCTION, brevity_max_new_tokens, batch_size)
    plain = greedy_answers(model, tokenizer, items, "", PLAIN_MAX_NEW_TOKENS, batch_size)
    contexts = [_context_ids(tokenizer, item.question) for item in items]
    options = [[_answer_ids(tokenizer, choice) for choice in choices(items, i)] for i in range(len(items))]
    scores = continuation_log_likelihoods(
        model, [(context, option) for context, row in zip(contexts, options) for option in row], batch_size)
    per_item = [scores[i * CHOICES : (i + 1) * CHOICES] for i in range(len(items))]
    return KnowledgeItems(
        brevity_correct=tuple(answer_matches(a, item.answers) for a, item in zip(brevity, items)),
        plain_correct=tuple(answer_matches(a, item.answers) for a, item in zip(plain, items)),
        choice_correct=tuple(max(range(CHOICES), key=row.__getitem__) == 0 for row in per_item),
        answer_log_likelihood=tuple(row[0] / len(option[0]) for row, option in zip(per_item, options)),
        off_language=tuple(is_off_language(a) for a in plain),
        evasive=tuple(bool(EVASION.search(a)) for a in brevity),
    )


@lru_cache(maxsize=4)
def text_passages(count: int) -> tuple[str, ...]:
    """The first ``count`` passages of the held-out text corpus: paragraphs of the Python
    documentation shipped with the interpreter."""
    from pydoc_data.topics import topics

    paragraphs = (p.strip() for name in sorted(topics) for p in topics[name].split("\n\n"))
    return tuple(p for p in paragraphs if len(p) >= TEXT_MIN_CHARACTERS)[:count]


def text_fingerprint(count: int) -> str:
    """What decides the corpus (it follows the interpreter's version): part of every cache key."""
    return hashlib.sha256("\n\n".join(text_passages(count)).encode()).hexdigest()


def text_log_likelihoods(model: nn.Module, tokenizer: PreTrainedTokenizerBase, count: int,
                         batch_size: int = 16) -> list[float]:
    """Per passage, the mean log-likelihood per token of its first ``TEXT_TOKENS`` tokens after the first."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"][:TEXT_TOKENS] for p in text_passages(count)]
    totals = continuation_log_likelihoods(model, [(row[:1], row[1:]) for row in rows], batch_size)
    return [total / (len(row) - 1) for total, row in zip(totals, rows)]
