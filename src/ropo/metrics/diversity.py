"""Diversity of generations: DPO-style over-fitting makes answers repetitive and alike.

Texts are split into words on whitespace (a tokenizer-free unit, so models with different
tokenizers compare fairly); a pre-split sequence of tokens is used as it is.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from statistics import fmean

import sacrebleu

Tokens = Sequence[Hashable]


def _tokens(item: str | Tokens) -> Tokens:
    return item.split() if isinstance(item, str) else item


def ngrams(tokens: Tokens, n: int) -> list[tuple[Hashable, ...]]:
    """The n-grams of ``tokens`` in order (empty when there are fewer than ``n`` tokens)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str | Tokens], n: int) -> float | None:
    """Distinct n-grams over all n-grams, pooled across ``texts`` (Li et al., 2016).

    None when the texts hold no n-gram at all (the ratio is undefined).
    """
    pooled = [gram for text in texts for gram in ngrams(_tokens(text), n)]
    return len(set(pooled)) / len(pooled) if pooled else None


def repetition_rate(texts: Sequence[str | Tokens], n: int) -> float | None:
    """Mean over texts of the share of a text's n-grams that repeat an earlier one in the same text.

    Texts with no n-gram are left out; None when no text has one.
    """
    rates = []
    for text in texts:
        grams = ngrams(_tokens(text), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return fmean(rates) if rates else None


def self_bleu(samples_per_prompt: Sequence[Sequence[str]]) -> float | None:
    """Mean sentence BLEU (sacrebleu, 0–100) of each sample against the other samples of its prompt.

    High self-BLEU = the samples for one prompt are near copies of each other. Prompts with fewer
    than two samples are left out; None when no prompt has two.
    """
    scores = [
        sacrebleu.sentence_bleu(sample, [other for j, other in enumerate(samples) if j != i]).score
        for samples in samples_per_prompt
        if len(samples) >= 2
        for i, sample in enumerate(samples)
    ]
    return fmean(scores) if scores else None
