"""The demo task's judge: a deterministic, programmatic score of an answer against its prompt's checks.

Every prompt record carries ``checks``, the constraints its instruction states. Each check gives a value
in [0, 1]; the answer's score is their mean, times ``1 - repetition`` (the share of the answer's word
trigrams that repeat an earlier one), so that degenerate, looping text loses what it gains. An answer
with no words scores 0. Scores lie in [0, 1]; equal scores are a tie.

The checks (the value in the record → what earns 1):

- ``count_items: n`` — exactly n distinct list items (bullet or numbered lines; else non-empty lines;
  else comma/"and"-separated parts). ``1 - |items - n| / n``, at least 0.
- ``keywords: [w, ...]`` — the share of the words that appear (whole word, case-insensitive, plural
  -s/-es accepted).
- ``min_sentences: k`` — ``min(1, sentences / k)``; a sentence is a segment ended by . ! ? or a line
  break with at least 3 words.
- ``max_words: n`` — 1 up to n words, then ``1 - (words - n) / n``, at least 0.
- ``final_number: x`` — the last number written equals x.
- ``contains_any: [a, ...]`` — at least one of the phrases appears (as ``keywords``).
- ``starts_with: w`` — the first word is w (case-insensitive, punctuation ignored).
- ``ends_with: phrase`` — the last words are the phrase (case-insensitive, punctuation ignored).
- ``lowercase: true`` — the share of words without a capital letter.
- ``yes_no: "yes"|"no"`` — the first word is the expected one (1) or the other (0); otherwise 0.5 if
  only the expected one appears somewhere.
- ``reason: true`` — the answer gives a reason: it contains "because", "since", "due to",
  "therefore", "as a result", "that is why", "this is why" or "which means".

Why this design: as in real preference data, several criteria (sentence minimums, required words,
reasons) are easier to meet with more text, so preferred answers tend to be longer — a policy can gain
by getting longer. But no check rewards length as such: word limits, exact item counts and exact
endings punish excess, and the repetition factor punishes padding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(?=\S)")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_REASON_MARKERS = ("because", "since", "due to", "therefore", "as a result", "that is why", "this is why", "which means")
#: A segment with fewer words than this does not count as a sentence ("1.", "Yes.", "Apples").
MIN_SENTENCE_WORDS = 3


def words(text: str) -> list[str]:
    """The words of ``text`` (letters/digits, with an apostrophe suffix such as "it's")."""
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Segments ended by . ! ? or a line break that have at least ``MIN_SENTENCE_WORDS`` words."""
    return [part for part in _SENTENCE_END.split(text) if len(words(part)) >= MIN_SENTENCE_WORDS]


def list_items(text: str) -> list[str]:
    """The items of a list answer: marked lines, else non-empty lines, else comma/"and" parts."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marked = [_LIST_MARKER.sub("", line) for line in lines if _LIST_MARKER.match(line)]
    if marked:
        return marked
    if len(lines) > 1:
        return lines
    return [part.strip() for part in re.split(r",|\band\b", text) if words(part)]


def _mentions(text: str, phrase: str) -> bool:
    pattern = r"\b" + r"\s+".join(re.escape(word) for word in phrase.split()) + r"(?:s|es)?\b"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def _lower_words(text: str) -> list[str]:
    return [word.lower() for word in words(text)]


def _count_items(answer: str, n: int) -> float:
    distinct = {" ".join(_lower_words(item)) for item in list_items(answer)} - {""}
    return max(0.0, 1.0 - abs(len(distinct) - n) / n)


def _keywords(answer: str, keywords: list[str]) -> float:
    return sum(_mentions(answer, word) for word in keywords) / len(keywords)


def _min_sentences(answer: str, k: int) -> float:
    return min(1.0, len(sentences(answer)) / k)


def _max_words(answer: str, n: int) -> float:
    return max(0.0, 1.0 - max(0, len(words(answer)) - n) / n)


def _final_number(answer: str, expected: float) -> float:
    numbers = _NUMBER.findall(answer)
    return float(bool(numbers) and float(numbers[-1].replace(",", "")) == float(expected))


def _contains_any(answer: str, phrases: list[str]) -> float:
    return float(any(_mentions(answer, phrase) for phrase in phrases))


def _starts_with(answer: str, word: str) -> float:
    first = _lower_words(answer)[:1]
    return float(first == [word.lower()])


def _ends_with(answer: str, phrase: str) -> float:
    expected = _lower_words(phrase)
    return float(_lower_words(answer)[-len(expected):] == expected)


def _lowercase(answer: str, _: bool) -> float:
    lettered = [word for word in words(answer) if any(c.isalpha() for c in word)]
    return sum(word == word.lower() for word in lettered) / len(lettered) if lettered else 0.0


def _yes_no(answer: str, expected: str) -> float:
    tokens = _lower_words(answer)
    other = "no" if expected == "yes" else "yes"
    if tokens[:1] == [expected]:
        return 1.0
    if tokens[:1] == [other]:
        return 0.0
    return 0.5 if expected in tokens and other not in tokens else 0.0


def _reason(answer: str, _: bool) -> float:
    return float(any(_mentions(answer, marker) for marker in _REASON_MARKERS))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _word_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and words(v) for v in value)


def _phrase(value: Any) -> bool:
    return isinstance(value, str) and bool(words(value))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


#: check name → (what a valid value is, its test, the check).
CHECKS: dict[str, tuple[str, Callable[[Any], bool], Callable[[str, Any], float]]] = {
    "count_items": ("a positive integer", _positive_int, _count_items),
    "keywords": ("a non-empty list of words", _word_list, _keywords),
    "min_sentences": ("a positive integer", _positive_int, _min_sentences),
    "max_words": ("a positive integer", _positive_int, _max_words),
    "final_number": ("a non-negative number", _number, _final_number),
    "contains_any": ("a non-empty list of words", _word_list, _contains_any),
    "starts_with": ("a word", _phrase, _starts_with),
    "ends_with": ("a phrase", _phrase, _ends_with),
    "lowercase": ("true", lambda value: value is True, _lowercase),
    "yes_no": ('"yes" or "no"', lambda value: value in ("yes", "no"), _yes_no),
    "reason": ("true", lambda value: value is True, _reason),
}


def check_errors(checks: Any) -> list[str]:
    """What is wrong with a record's ``checks`` (empty when it is valid), one message per problem."""
    if not isinstance(checks, Mapping) or not checks:
        return [f"checks must be a non-empty object, got {checks!r}"]
    errors = []
    for name, value in checks.items():
        if name not in CHECKS:
            errors.append(f"checks.{name}: unknown check (known: {', '.join(CHECKS)})")
        elif not CHECKS[name][1](value):
            errors.append(f"checks.{name} must be {CHECKS[name][0]}, got {value!r}")
    return errors


def repetition(answer: str) -> float:
    """The share of word trigrams that repeat an earlier trigram of the same answer (0 = none)."""
    tokens = _lower_words(answer)
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    return 1.0 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0


def score_details(record: Mapping[str, Any], answer: str) -> dict[str, float]:
    """Each check's value, the repetition share and the final ``score`` of ``answer`` for ``record``."""
    checks = record["checks"]
    values = {name: CHECKS[name][2](answer, value) for name, value in checks.items()}
    repeated = repetition(answer)
    constraint = sum(values.values()) / len(values)
    final = constraint * (1.0 - repeated) if words(answer) else 0.0
    return {**values, "repetition": repeated, "score": final}


def score(record: Mapping[str, Any], answer: str) -> float:
    """The judge's score of ``answer`` to the prompt ``record``, in [0, 1] (higher is better)."""
    return score_details(record, answer)["score"]


def preference(record: Mapping[str, Any], answer_a: str, answer_b: str) -> float:
    """1.0 if the judge prefers ``answer_a``, 0.0 if it prefers ``answer_b``, 0.5 for a tie.

    The mean of this over prompts is a win rate with ties counted as half.
    """
    score_a, score_b = score(record, answer_a), score(record, answer_b)
    return 1.0 if score_a > score_b else 0.0 if score_a < score_b else 0.5
