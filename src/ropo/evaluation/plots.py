"""The report's figures (matplotlib, headless), each returned as PNG bytes.

Every figure is always drawn: when no run has the data for it, it says so instead of vanishing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLORS = plt.get_cmap("tab10").colors
MARKERS = "osD^vP*X"  # so runs whose curves coincide stay visible
HE_TITLE = "HE change per layer"
WIDE_FIGURES = {HE_TITLE}  # shown across the whole page: models have many layers


@dataclass
class Series:
    """What the figures need of one run (``color`` is its index in the palette)."""

    name: str
    color: int
    training: list[dict[str, Any]] = field(default_factory=list)
    mean_length: float | None = None
    win_rate: float | None = None
    he_layers: dict[str, float] = field(default_factory=dict)  # layer → relative HE change
    is_baseline: bool = False


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _no_data(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, f"No data: {what}", ha="center", va="center", fontsize=12, color="0.4",
              transform=axes.transAxes, wrap=True)
    axes.set_xticks([])
    axes.set_yticks([])


def training_curve(run: Series, key: str) -> tuple[list[float], list[float]]:
    """``key``'s logged values against the step; empty unless logged at two or more steps (one dot
    per run is not a curve)."""
    points = [(r["step"], r[key]) for r in run.training if isinstance(r.get(key), (int, float))]
    return ([p[0] for p in points], [p[1] for p in points]) if len(points) >= 2 else ([], [])


def training_curves(runs: Sequence[Series], keys: Sequence[tuple[str, str]], title: str, ylabel: str) -> bytes:
    """One line per run and key (``keys``: (metric key, line style)) against the training step."""
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    drawn = False
    for run in runs:
        for key, style in keys:
            steps, values = training_curve(run, key)
            if steps:
                label = run.name if len(keys) == 1 else f"{run.name}: {key.rsplit('/', 1)[-1]}"
                axes.plot(steps, values, style, color=COLORS[run.color % len(COLORS)], label=label, linewidth=1.8,
                          marker=MARKERS[run.color % len(MARKERS)], markersize=5, markevery=max(1, len(steps) // 12))
                drawn = True
    if drawn:
        axes.set_xlabel("training step")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    else:
        _no_data(axes, f"no run logged {' or '.join(k for k, _ in keys)} at two or more steps in metrics.jsonl")
    axes.set_title(title)
    return _png(figure)


def short_layer_name(name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` → ``3.q_proj``: the layer index and the module."""
    match = re.search(r"\.(\d+)\.", name)
    return f"{match.group(1)}.{name.rsplit('.', 1)[-1]}" if match else name


def energy_change_per_layer(runs: Sequence[Series]) -> bytes:
    """Grouped bars: relative HE change (%) of each layer, one colour per run."""
    runs = [r for r in runs if r.he_layers]
    layers = list(dict.fromkeys(layer for r in runs for layer in r.he_layers))
    figure, axes = plt.subplots(figsize=(min(16.0, max(6.4, 0.25 * len(layers) * max(1, len(runs)))), 3.8))
    if not layers:
        _no_data(axes, "no HE per layer (run `ropo eval` with a base, or log he_change/<layer> in training)")
    else:
        width = 0.8 / len(runs)
        for k, run in enumerate(runs):
            xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(layers))]
            ys = [100 * run.he_layers.get(layer, float("nan")) for layer in layers]
            largest = max(abs(v) for v in run.he_layers.values())
            label = f"{run.name} (max |change| {100 * largest:.1e}%)"
            axes.bar(xs, ys, width, color=COLORS[run.color % len(COLORS)], label=label)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xticks(range(len(layers)), [short_layer_name(layer) for layer in layers], rotation=90, fontsize=7)
        axes.set_ylabel("HE change from base (%)")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8)
    axes.set_title("Hyperspherical energy change per layer (0 = neuron angles kept)")
    return _png(figure)


def win_rate_vs_length(runs: Sequence[Series]) -> bytes:
    """Each run's win rate against its mean answer length: alignment that only lengthens answers
    moves right, alignment that helps moves up."""
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    points = [r for r in runs if r.win_rate is not None and r.mean_length is not None]
    if not points:
        _no_data(axes, "no win rates (run `ropo eval` with a --judge)")
    else:
        seen: dict[tuple[float, float], int] = {}
        for run in points:
            point = (run.mean_length, 100 * run.win_rate)
            stacked = seen[point] = seen.get(point, -1) + 1  # labels of coinciding points go one above another
            axes.scatter(*point, s=80, color=COLORS[run.color % len(COLORS)],
                         marker=MARKERS[run.color % len(MARKERS)], zorder=3)
            axes.annotate(run.name, point, textcoords="offset points", xytext=(6, 6 + 12 * stacked))
        axes.axhline(50, color="0.5", linestyle="--", linewidth=1, label="tie with baseline")
        for run in runs:
            if run.is_baseline and run.mean_length is not None:
                axes.axvline(run.mean_length, color="0.5", linestyle=":", linewidth=1, label=f"{run.name} length")
        axes.set_xlabel("mean answer length (tokens)")
        axes.set_ylabel("win rate vs baseline (%)")
        axes.set_ylim(-5, 105)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    axes.set_title("Win rate vs answer length")
    return _png(figure)


def all_figures(runs: Sequence[Series]) -> dict[str, bytes]:
    """Every figure of the report, by title, in the order they are shown."""
    return {
        "Reward margin over training": training_curves(runs, [("rewards/margins", "-")], "Reward margin", "chosen − rejected reward"),
        "Chosen and rejected rewards over training": training_curves(
            runs, [("rewards/chosen", "-"), ("rewards/rejected", "--")], "Chosen (solid) and rejected (dashed) rewards", "implicit reward"
        ),
        "Generation length over training": training_curves(
            runs, [("sample_mean_length", "-")], "Length of sampled answers", "mean tokens"
        ),
        "Win rate vs length": win_rate_vs_length(runs),
        HE_TITLE: energy_change_per_layer(runs),
    }
