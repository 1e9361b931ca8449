"""The study's points as one markdown table (``OUT/summary.md``), the table the README quotes.

Why a file: the README's results are copied from the committed study, not typed; a test checks
that the README holds this table exactly as the committed ``frontier.json`` renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ropo.metrics.catalogue import CI_SUFFIX


def _interval(scale: float, digits: int, sign: str = "") -> Callable[[dict[str, Any], str], str]:
    """The estimate and its interval; ``sign="+"`` writes the sign of a change."""
    def cell(point: dict[str, Any], key: str) -> str:
        low, high = point[key + CI_SUFFIX]
        spec = f"{sign}.{digits}f"
        return f"{scale * point[key]:{spec}} [{scale * low:{spec}}, {scale * high:{spec}}]"
    return cell


def _plain(spec: str, scale: float = 1.0, unit: str = "") -> Callable[[dict[str, Any], str], str]:
    return lambda point, key: f"{scale * point[key]:{spec}}{unit}"


#: (point key, header, how a cell is written): the metrics a reader compares methods on.
COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any], str], str]], ...] = (
    ("seed", "seed", lambda point, key: "" if point.get(key) is None else str(point[key])),
    ("step", "step", lambda point, key: str(point[key])),
    ("kl", "KL (nats)", _plain(".1f")),
    ("judge_score", "judge score", _interval(1.0, 2)),
    ("lc_win_rate", "LC win rate (%)", _interval(100.0, 0)),
    ("mean_length", "mean length (tokens)", _interval(1.0, 0)),
    ("distinct_2", "distinct-2", _interval(1.0, 3)),
    ("self_bleu", "self-BLEU", _interval(1.0, 1)),
    ("plain_accuracy", "QA plain (%)", _interval(100.0, 1)),
    ("choice_accuracy", "QA choice (%)", _interval(100.0, 1)),
    ("answer_log_likelihood", "answer log-lik. (nats/token)", _interval(1.0, 2)),
    ("text_log_likelihood", "text log-lik. (nats/token)", _interval(1.0, 3)),
    ("brevity_accuracy", "QA brevity (%)", _interval(100.0, 1)),
    ("off_language_rate", "off-language (%)", _plain(".1f", 100.0)),
    ("evasion_rate", "evasive (%)", _plain(".1f", 100.0)),
    ("he_change", "HE change", _plain(".1e")),
)


def summary_table(points: Sequence[dict[str, Any]]) -> str:
    """One row per point, in the study's order (the base first); brackets are 95 % intervals."""
    lines = ["| series | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for point in points:
        lines.append(f"| {point['series']} | " + " | ".join(cell(point, key) for key, _, cell in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
