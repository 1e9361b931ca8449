"""What the paired comparisons say, read from their intervals alone: per rival, where the reference
is ahead, behind, different (a metric without a better side) or level.

Why generated: a verdict typed by hand drifts from the numbers it summarises. This one is a function
of ``frontier.json``'s ``comparisons``, so the README (``ropo.frontier.summary``) and the HTML report
(``ropo.evaluation.report``) write the same verdicts, each in its own format, and a test can check
them. A difference counts where its 95 % interval excludes 0; its side is the metric's direction in
the catalogue (lower self-BLEU is ahead, for example).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ropo.metrics.catalogue import metric

#: The verdict classes, in the order they are written.
AHEAD, BEHIND, DIFFERENT = "ahead", "behind", "different"


@dataclass(frozen=True)
class Verdict:
    """One rival: per class, the metrics and the comparisons that resolved it (in sqrt(KL) order);
    ``level``: the metrics whose every interval holds 0."""

    rival: str
    seeds: tuple[int, ...]
    resolved: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    level: list[str] = field(default_factory=list)


def excludes_zero(entry: dict[str, Any]) -> bool:
    low, high = entry["ci"]
    return low > 0 or high < 0


def _side(entry: dict[str, Any]) -> str:
    direction = metric(entry["metric"]).direction
    if direction == 0:
        return DIFFERENT
    return AHEAD if direction * entry["difference"] > 0 else BEHIND


def verdicts(comparisons: Sequence[dict[str, Any]]) -> list[Verdict]:
    """One verdict per rival, in the order the rivals first appear in ``comparisons``."""
    by_rival: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for entry in comparisons:
        by_rival.setdefault(entry["rival"], {}).setdefault(entry["metric"], []).append(entry)
    found = []
    for rival, metrics in by_rival.items():
        verdict = Verdict(rival, tuple(next(iter(metrics.values()))[0]["seeds"]), {AHEAD: {}, BEHIND: {}, DIFFERENT: {}})
        for key, entries in metrics.items():
            resolved = [e for e in sorted(entries, key=lambda e: e["sqrt_kl"]) if excludes_zero(e)]
            for entry in resolved:
                verdict.resolved[_side(entry)].setdefault(key, []).append(entry)
            if not resolved:
                verdict.level.append(key)
        found.append(verdict)
    return found
