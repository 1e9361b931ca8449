"""Judges decide which of two answers is better; the win rate against a baseline comes from them.

A judge is anything with a ``name`` and ``compare(candidates, baselines)``: the built-in reward-model
judge, a task's programmatic judge, or your own. ``load_judge`` turns a command-line spec into one.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.statistics import preferences
from ropo.generation import Message, model_device

#: A chat ending with the assistant message being judged.
Conversation = Sequence[Message]


@runtime_checkable
class Judge(Protocol):
    name: str

    def compare(self, candidates: Sequence[Conversation], baselines: Sequence[Conversation]) -> list[float]:
        """For each pair, the probability that the candidate's answer is the better one (0.5 = tie)."""
        ...


class PointwiseJudge(ABC):
    """A judge that scores each answer on its own; pairs are compared by their scores."""

    name: str

    @abstractmethod
    def score(self, conversations: Sequence[Conversation]) -> list[float]:
        """A higher score is a better final answer."""

    def compare(self, candidates: Sequence[Conversation], baselines: Sequence[Conversation]) -> list[float]:
        if len(candidates) != len(baselines):
            raise ValueError(f"compare needs as many baselines as candidates ({len(baselines)} vs {len(candidates)})")
        return preferences(self.score(candidates), self.score(baselines))


def judged_preferences(judge: Judge, candidates: Sequence[Conversation], baselines: Sequence[Conversation]) -> list[float]:
    """The judge's preference for each candidate over its baseline (1 win, 0.5 tie, 0 loss), checked:
    what ``ropo.evaluation.statistics.win_rate`` turns into a win rate with its interval."""
    if not candidates:
        raise ValueError("judged_preferences needs at least one pair")
    preferences = judge.compare(candidates, baselines)
    if len(preferences) != len(candidates) or not all(0.0 <= p <= 1.0 for p in preferences):
        raise EvaluationError(f"judge {judge.name!r} must return one preference in [0, 1] per pair")
    return preferences


class RewardModelJudge(PointwiseJudge):
    """Any ``AutoModelForSequenceClassification`` reward model with a single output (its score).

    Conversations are rendered with the reward model's own chat template (or joined by blank
    lines if it has none) and truncated from the left to ``max_length`` tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        name: str = "reward-model",
        batch_size: int = 8,
        max_length: int = 2048,
    ) -> None:
        labels = getattr(model.config, "num_labels", None)
        if labels != 1:
            raise EvaluationError(
                f"reward model {name!r} has num_labels={labels}; a reward model gives one score per input"
            )
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_length = max_length
        # The model pools the last token that is not its config's pad id: rows can share a batch only
        # when the tokenizer pads with that id (without one it pools the last position, right only
        # for unpadded rows).
        pads_match = tokenizer.pad_token_id is not None and tokenizer.pad_token_id == model.config.pad_token_id
        self.batch_size = batch_size if pads_match else 1

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device = "cpu", **kwargs) -> RewardModelJudge:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(name_or_path, trust_remote_code=False)
        except (OSError, ValueError) as error:
            raise EvaluationError(f"reward model {name_or_path!r}: cannot load ({error})") from None
        return cls(model.to(device), tokenizer, name=f"rm:{name_or_path}", **kwargs)

    def _render(self, conversation: Conversation) -> list[int]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(list(conversation), tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer("\n\n".join(m["content"] for m in conversation))["input_ids"]
        return ids[-self.max_length :]

    @torch.inference_mode()
    def score(self, conversations: Sequence[Conversation]) -> list[float]:
        device = model_device(self.model)
        scores: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            rows = [self._render(c) for c in conversations[start : start + self.batch_size]]
            # A lone row needs no padding (and its tokenizer may have no pad token).
            inputs = self.tokenizer.pad({"input_ids": rows}, padding=len(rows) > 1, padding_side="right", return_tensors="pt")
            logits = self.model(**inputs.to(device)).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores


def load_judge(spec: str, device: str | torch.device = "cpu") -> Judge | None:
    """``none`` → no judge; ``rm:NAME_OR_PATH`` → a reward model; ``package.module:attr`` → ``attr()``
    (a class or factory taking no arguments) from an importable module, e.g. a task's own judge."""
    if spec == "none":
        return None
    if spec.startswith("rm:"):
        return RewardModelJudge.from_pretrained(spec[3:], device=device)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise EvaluationError(f"--judge {spec!r}: use 'none', 'rm:<reward model>' or '<module>:<factory>'")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise EvaluationError(f"--judge {spec!r}: {error}") from None
    judge = factory()
    if not isinstance(judge, Judge):
        raise EvaluationError(f"--judge {spec!r}: {type(judge).__name__} has no 'name' and 'compare(candidates, baselines)'")
    return judge
