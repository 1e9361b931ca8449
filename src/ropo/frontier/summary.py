"""The study as markdown the README quotes: its points (``OUT/summary.md``) and its paired
comparisons at matched KL (``OUT/comparisons.md``: the verdicts they support, then the table).

Why files: the README's results are copied from the committed study, not typed; a test checks
that the README holds these tables exactly as the committed ``frontier.json`` renders them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ropo.evaluation.verdicts import AHEAD, BEHIND, DIFFERENT, excludes_zero, verdicts
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


#: How each compared metric is written: (header, scale, decimals). Rates are shown in percent (a
#: difference of two rates in percentage points).
WRITTEN = {
    "judge_score": ("judge score", 1.0, 2),
    "lc_win_rate": ("LC win rate (%)", 100.0, 0),
    "mean_length": ("mean length (tokens)", 1.0, 0),
    "distinct_2": ("distinct-2", 1.0, 3),
    "self_bleu": ("self-BLEU", 1.0, 1),
    "plain_accuracy": ("QA plain (%)", 100.0, 1),
    "choice_accuracy": ("QA choice (%)", 100.0, 1),
    "answer_log_likelihood": ("answer log-lik. (nats/token)", 1.0, 2),
    "text_log_likelihood": ("text log-lik. (nats/token)", 1.0, 3),
    "brevity_accuracy": ("QA brevity (%)", 100.0, 1),
    "off_language_rate": ("off-language (%)", 100.0, 1),
    "evasion_rate": ("evasive (%)", 100.0, 1),
}
#: Shown without their interval in the points table (rare events: the interval says little per point).
_WITHOUT_INTERVAL = ("off_language_rate", "evasion_rate")

#: (point key, header, how a cell is written): the metrics a reader compares methods on.
COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any], str], str]], ...] = (
    ("seed", "seed", lambda point, key: "" if point.get(key) is None else str(point[key])),
    ("step", "step", lambda point, key: str(point[key])),
    ("kl", "KL (nats)", _plain(".1f")),
    *((key, header, _plain(f".{digits}f", scale) if key in _WITHOUT_INTERVAL else _interval(scale, digits))
      for key, (header, scale, digits) in WRITTEN.items()),
    ("he_change", "HE change", _plain(".1e")),
)


def summary_table(points: Sequence[dict[str, Any]]) -> str:
    """One row per point, in the study's order (the base first); brackets are 95 % intervals."""
    lines = ["| series | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for point in points:
        lines.append(f"| {point['series']} | " + " | ".join(cell(point, key) for key, _, cell in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


#: How each verdict class is introduced in the README.
_VERDICT_WORDS = {AHEAD: "Ahead in", BEHIND: "Behind in", DIFFERENT: "Different (no better side) in"}


def _where(metric_key: str, entries: Sequence[dict[str, Any]]) -> str:
    """``header at a, b (d_a, d_b)``: the sqrt(KL) values of ``entries`` and the differences there."""
    header, scale, digits = WRITTEN[metric_key]
    at = ", ".join(f"{e['sqrt_kl']:.2f}" for e in entries)
    by = ", ".join(f"{scale * e['difference']:+.{digits}f}" for e in entries)
    return f"{header} at {at} ({by})"


def verdicts_markdown(comparisons: Sequence[dict[str, Any]]) -> str:
    """Per rival, one line of ``ropo.evaluation.verdicts``: ahead, behind, different, level."""
    lines = []
    for verdict in verdicts(comparisons):
        said = [f"{_VERDICT_WORDS[side]} " + "; ".join(_where(key, entries) for key, entries in found.items())
                for side, found in verdict.resolved.items() if found]
        if verdict.level:
            said.append("Level in " + ", ".join(WRITTEN[key][0] for key in verdict.level))
        seeds = ",".join(map(str, verdict.seeds))
        lines.append(f"- **against `{verdict.rival}`** (seeds {seeds}): " + ". ".join(said) + ".")
    return "\n".join(lines) + "\n"


def comparisons_markdown(comparisons: Sequence[dict[str, Any]]) -> str:
    """``OUT/comparisons.md``: the verdicts, then the table they are read from."""
    return verdicts_markdown(comparisons) + "\n" + comparisons_table(comparisons)


def comparisons_table(comparisons: Sequence[dict[str, Any]]) -> str:
    """One row per (rival, metric): the reference minus the rival at each common sqrt(KL), with its
    95 % interval (paired over items and seeds); a cell whose interval excludes 0 is in bold."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in comparisons:
        rows.setdefault((entry["rival"], entry["metric"]), []).append(entry)
    reference = comparisons[0]["reference"] if comparisons else ""
    width = max((len(entries) for entries in rows.values()), default=0)
    lines = [f"| rival | metric | seeds | {reference} − rival at sqrt(KL) … |" + " |" * (width - 1),
             "|---|---|---|" + "---:|" * width]
    for (rival, metric), entries in rows.items():
        header, scale, digits = WRITTEN[metric]
        cells = []
        for entry in sorted(entries, key=lambda e: e["sqrt_kl"]):
            low, high = entry["ci"]
            text = f"{scale * entry['difference']:+.{digits}f} [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"
            cells.append(f"{entry['sqrt_kl']:.2f}: " + (f"**{text}**" if excludes_zero(entry) else text))
        seeds = ",".join(str(seed) for seed in entries[0]["seeds"])
        lines.append(f"| {rival} | {header} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
