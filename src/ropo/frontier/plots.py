"""The frontier's figures: each metric against sqrt(KL(π‖base)), one curve per series with its 95 % band.

Why sqrt(KL): over-optimisation studies plot gold-judge quality against it (Gao et al. 2022;
Rafailov et al. 2024), where quality first rises and then falls; a method is better when its curve
is higher at the same KL. Points of a series are joined in order of KL, not of training step, so
the band is a region over the x-axis. The base sits at KL 0 as a black star with its interval.
Legends stand to the right of the axes, so no label ever covers a curve or another label; the RoPO
ablations get their own panel below the methods.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.axes import Axes  # noqa: E402

from ropo.evaluation.plots import COLORS, MARKERS  # noqa: E402
from ropo.frontier.plan import REFERENCE  # noqa: E402
from ropo.frontier.points import BASE, METRICS  # noqa: E402
from ropo.metrics.catalogue import CI_SUFFIX  # noqa: E402

#: (metric key, figure title): the metrics a reader compares methods on, each against sqrt(KL).
FRONTIER_PLOTS = (
    ("judge_score", "Judge score vs sqrt(KL)"),
    ("win_rate", "Win rate vs base vs sqrt(KL)"),
    ("lc_win_rate", "Length-controlled win rate vs sqrt(KL)"),
    ("mean_length", "Mean answer length vs sqrt(KL)"),
    ("distinct_2", "Distinct-2 vs sqrt(KL)"),
    ("plain_accuracy", "Knowledge: QA asked plainly vs sqrt(KL)"),
    ("choice_accuracy", "Knowledge: QA multiple choice vs sqrt(KL)"),
    ("answer_log_likelihood", "Knowledge: gold-answer log-likelihood vs sqrt(KL)"),
    ("text_log_likelihood", "Text log-likelihood vs sqrt(KL)"),
    ("brevity_accuracy", "Instruction following: QA under the brevity instruction vs sqrt(KL)"),
)
LOGPS_TITLE = "Chosen and rejected log-probs over training"
_LABELS = {metric.key: metric.label for metric in METRICS}
_SHARES = {"win_rate", "lc_win_rate", "brevity_accuracy", "plain_accuracy", "choice_accuracy"}  # shown in percent


def plot_file(title: str) -> str:
    """``judge-score-vs-sqrt-kl.png`` for the figure titled "Judge score vs sqrt(KL)"."""
    return "-".join(re.findall(r"[a-z0-9]+", title.lower())) + ".png"


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # "tight" keeps the outside legend
    plt.close(figure)
    return buffer.getvalue()


def _series(points: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The trained points by series, in first-seen order (the plan's)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        if point["series"] != BASE:
            grouped.setdefault(point["series"], []).append(point)
    return grouped


def _by_seed(series: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A series' points per training seed, the first seed first."""
    seeds = sorted({p.get("seed") or 0 for p in series})
    return [[p for p in series if (p.get("seed") or 0) == seed] for seed in seeds]


def _root_kl(point: dict[str, Any]) -> float:
    return math.sqrt(max(point["kl"], 0.0))  # KL is ≥ 0; float rounding can leave -1e-9


def _legend(axes: Axes) -> None:
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def panels(points: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The series each panel of a figure draws: the methods, then (when the study has any) the RoPO
    ablations beside the preset they change, so no panel holds more curves than a reader can follow."""
    names = list(_series(points))
    ablations = [n for n in names if any(p.get("ablation") for p in points if p["series"] == n)]
    methods = [n for n in names if n not in ablations]
    if not ablations:
        return [("", methods)]
    reference = [REFERENCE] if REFERENCE in names else []
    return [("methods", methods), (f"RoPO ablations beside {REFERENCE}", reference + ablations)]


@dataclass
class _Layout:
    """A figure's panels, each with the series it draws, and what every panel shares: the trained
    points by series and each series' colour and marker (the same in every panel)."""

    figure: plt.Figure
    panels: list[tuple[Axes, str, list[str]]]
    series: dict[str, list[dict[str, Any]]]
    styles: dict[str, tuple[str, str]]


def _figure(points: Sequence[dict[str, Any]]) -> _Layout:
    """One row of axes per panel."""
    layout = panels(points)
    # Shared axes: a curve's height compares across panels; constrained layout keeps titles, labels
    # and the outside legends apart.
    figure, axes = plt.subplots(len(layout), 1, figsize=(7.2, 4.0 * len(layout)), squeeze=False, sharex=True,
                                sharey=True, layout="constrained")
    series = _series(points)
    styles = {name: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, name in enumerate(series)}
    return _Layout(figure, [(axes[row][0], title, names) for row, (title, names) in enumerate(layout)], series, styles)


def metric_vs_root_kl(points: Sequence[dict[str, Any]], key: str, title: str) -> bytes:
    """One metric against sqrt(KL): a line (and band, where the metric has an interval) per series."""
    scale = 100.0 if key in _SHARES else 1.0
    layout = _figure(points)
    for axes, panel, names in layout.panels:
        for name in names:
            first, *others = _by_seed([p for p in layout.series[name] if p.get(key) is not None])
            series = sorted(first, key=_root_kl)
            xs = [_root_kl(p) for p in series]
            color, marker = layout.styles[name]
            axes.plot(xs, [scale * p[key] for p in series], color=color, marker=marker,
                      linewidth=1.8, markersize=5, label=f"{name} ({len(series)} checkpoints)")
            if all(key + CI_SUFFIX in p for p in series):
                axes.fill_between(xs, [scale * p[key + CI_SUFFIX][0] for p in series],
                                  [scale * p[key + CI_SUFFIX][1] for p in series], color=color, alpha=0.15, linewidth=0)
            # Later seeds: their checkpoints as open markers with a thin line, so the seed-to-seed
            # spread is seen beside the first seed's curve and band.
            for seed_points in others:
                seed_points = sorted(seed_points, key=_root_kl)
                axes.plot([_root_kl(p) for p in seed_points], [scale * p[key] for p in seed_points], color=color,
                          marker=marker, markerfacecolor="none", linewidth=0.6, markersize=5, alpha=0.8)
        for base in (p for p in points if p["series"] == BASE and p.get(key) is not None):
            interval = base.get(key + CI_SUFFIX)
            error = None if interval is None else [[scale * (base[key] - interval[0])], [scale * (interval[1] - base[key])]]
            axes.errorbar([0.0], [scale * base[key]], yerr=error, color="black", marker="*", markersize=12,
                          capsize=4, linestyle="none", label="base (step 0)", zorder=4)
        if key in ("win_rate", "lc_win_rate"):
            axes.axhline(50.0, color="0.5", linestyle="--", linewidth=1, label="tie with base")
        axes.set_xlabel("sqrt(KL(π ‖ base)), KL in nats per answer")
        axes.set_ylabel(_LABELS[key] + (" (%)" if key in _SHARES else ""))
        axes.set_title(f"{title}: {panel}" if panel else title)
        axes.grid(alpha=0.3)
        _legend(axes)
    return _png(layout.figure)


def log_probs_over_training(points: Sequence[dict[str, Any]]) -> bytes:
    """log p(chosen) (solid) and log p(rejected) (dashed) on the training batches since the previous
    checkpoint: both falling is DPO's known failure."""
    layout = _figure(points)
    for axes, panel, names in layout.panels:
        for name in names:
            series = sorted(_by_seed(layout.series[name])[0], key=lambda p: p["step"])
            color, marker = layout.styles[name]
            for key, style in (("logps/chosen", "-"), ("logps/rejected", "--")):
                kept = [p for p in series if p.get(key) is not None]
                axes.plot([p["step"] for p in kept], [p[key] for p in kept], style, color=color,
                          marker=marker, markersize=4, label=f"{name}: {key.split('/')[1]}")
        axes.set_xlabel("training step")
        axes.set_ylabel("mean log-prob of the training answers (nats)")
        axes.set_title(f"{LOGPS_TITLE}: {panel}" if panel else LOGPS_TITLE)
        axes.grid(alpha=0.3)
        _legend(axes)
    return _png(layout.figure)


def frontier_figures(points: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """Every figure of the frontier, by title, in the order a reader takes them in."""
    figures = {title: metric_vs_root_kl(points, key, title) for key, title in FRONTIER_PLOTS}
    figures[LOGPS_TITLE] = log_probs_over_training(points)
    return figures
