"""``build_report``: one self-contained HTML page (plots inlined as PNG) + metrics.json comparing runs.

Inputs are training run directories (their ``metrics.jsonl``), ``ropo eval`` results
(``eval.json``) and ``ropo frontier`` study folders (``frontier.json``, shown in a section of their
own); a run directory that holds both metrics.jsonl and eval.json is read as one run.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropo.layout import DEMO_METRICS_FILE, EVAL_FILE, FRONTIER_FILE, REPORT_FILE, RUN_METRICS_FILE
from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.evaluate import FORMAT as EVAL_FORMAT
from ropo.evaluation.plots import WIDE_FIGURES, Series, all_figures
from ropo.io import atomic_write, atomic_write_text
from ropo.evaluation.verdicts import verdicts
from ropo.metrics.catalogue import CI_SUFFIX, REPETITION_N, metric



@dataclass(frozen=True)
class Column:
    key: str
    label: str
    direction: int  # +1 higher is better, −1 lower is better, 0 neither (not marked)
    fmt: str  # a format spec; "%" shows a share as a percentage
    aspect: str = ""  # the summary line it can headline (the first marked column of an aspect does)

    def show(self, value: float | None) -> str:
        if value is None:
            return "—"
        return f"{100 * value:.1f}%" if self.fmt == "%" else format(value, self.fmt)

    def show_with_interval(self, value: float | None, interval: Sequence[float] | None) -> str:
        """The value, and its 95 % interval where it has one, in the value's format."""
        if value is None or not interval:
            return self.show(value)
        return f"{self.show(value)} <span class=role>[{self.show(interval[0])}, {self.show(interval[1])}]</span>"


#: Summary lines, in order: what each aspect means for a reader.
ASPECTS = {
    "preference": "Preference (judge)",
    "training": "Preference (training rewards)",
    "length": "Length",
    "diversity": "Diversity",
    "retention": "Knowledge retention",
    "drift": "Drift from the base",
}

def _column(key: str, label: str, fmt: str, aspect: str = "") -> Column:
    """A column of a catalogue metric: its direction is the catalogue's."""
    return Column(key, label, metric(key).direction, fmt, aspect)


COLUMNS = (
    _column("win_rate", "Win rate vs baseline", "%", "preference"),
    _column("lc_win_rate", "Length-controlled win rate vs baseline", "%", "preference"),
    _column("judge_score", "Judge score (mean)", ".3g", "preference"),
    _column("reward_margin", "Reward margin, last step (train)", ".3g", "training"),
    _column("reward_accuracy", "Reward accuracy, last step (train)", "%", "training"),
    _column("mean_length", "Mean answer length (tokens)", ".1f"),
    _column("hit_limit_rate", "Answers cut at the token limit", "%", "length"),
    _column("distinct_1", "Distinct-1", ".3f", "diversity"),
    _column("distinct_2", "Distinct-2", ".3f", "diversity"),
    _column("self_bleu", "Self-BLEU between samples", ".1f", "diversity"),
    _column("repetition", f"Repeated {REPETITION_N}-grams within an answer", "%", "diversity"),
    _column("choice_accuracy", "QA multiple choice by log-likelihood (knowledge)", "%", "retention"),
    _column("answer_log_likelihood", "Gold answer log-likelihood per token (knowledge, nats)", ".3f", "retention"),
    _column("plain_accuracy", "QA accuracy asked plainly (knowledge)", "%", "retention"),
    _column("text_log_likelihood", "Held-out text log-likelihood per token (nats)", ".3f", "retention"),
    _column("brevity_accuracy", "QA accuracy under the brevity instruction", "%", "retention"),
    _column("off_language_rate", "Plain answers not in English", "%", "retention"),
    _column("evasion_rate", "Brevity answers that evade", "%", "retention"),
    _column("kl", "KL(policy ‖ base) per answer (nats)", ".3g", "drift"),
    _column("he_change", "Mean |HE change| per layer (relative)", ".2e", "drift"),
    _column("he_change_max", "Max |HE change| per layer (relative)", ".2e", "drift"),
    _column("orthogonality_error", "Orthogonality error max|QᵀQ−I|", ".1e"),
)


@dataclass
class ReportRun:
    name: str
    source: str
    role: str = "candidate"  # or "baseline": shown, never marked best
    training: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None  # this model's entry in eval.json

    def metrics(self) -> dict[str, float | None]:
        values: dict[str, float | None] = dict((self.evaluation or {}).get("metrics", {}))
        for key, column in (("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy")):
            logged = [r[key] for r in self.training if isinstance(r.get(key), (int, float))]
            if logged:
                values[column] = logged[-1]
        return values

    def he_layers(self) -> dict[str, float]:
        if self.evaluation and self.evaluation.get("he_layers"):
            return {layer["name"]: layer["relative_change"] for layer in self.evaluation["he_layers"]}
        logged = [r for r in self.training if any(k.startswith("he_change/") for k in r)]
        return {k.split("/", 1)[1]: v for k, v in logged[-1].items() if k.startswith("he_change/")} if logged else {}


def read_training_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``; each must be an object with an integer ``step``."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvaluationError(f"{path}: line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise EvaluationError(f"{path}: line {number}: expected an object with an integer 'step'")
        records.append(record)
    return records


def read_eval(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise EvaluationError(f"{path}: not a `ropo eval` result (no 'models' list)")
    for number, model in enumerate(document["models"], 1):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("metrics"), dict):
            raise EvaluationError(f"{path}: models[{number - 1}] needs a 'name' and a 'metrics' object")
    if document.get("format") != EVAL_FORMAT:  # other metric names: its columns would silently show nothing
        raise EvaluationError(f"{path}: written as {document.get('format')!r}, this ropo reads {EVAL_FORMAT!r}; "
                              "run `ropo eval` again to rewrite it")
    return document


def collect_runs(paths: Sequence[str | Path]) -> tuple[list[ReportRun], list[dict[str, Any]]]:
    """Runs from run directories and eval results, merged by name; also the eval documents read."""
    runs: dict[str, ReportRun] = {}
    documents = []
    for raw in paths:
        path = Path(raw)
        eval_file = path if path.is_file() else path / EVAL_FILE
        metrics_file = path / RUN_METRICS_FILE
        if not (eval_file.is_file() or metrics_file.is_file()):
            raise EvaluationError(f"{path}: neither a training run ({RUN_METRICS_FILE}) nor `ropo eval` results ({EVAL_FILE})")
        if metrics_file.is_file():
            name = path.resolve().name
            if name in runs and runs[name].training:
                raise EvaluationError(f"two training runs are named {name!r} ({runs[name].source}, {path}); rename one")
            runs.setdefault(name, ReportRun(name, str(path))).training = read_training_metrics(metrics_file)
        if eval_file.is_file():
            document = read_eval(eval_file)
            documents.append({"path": str(eval_file), **{k: v for k, v in document.items() if k != "models"}})
            for model in document["models"]:
                run = runs.setdefault(model["name"], ReportRun(model["name"], model.get("source") or str(eval_file)))
                run.evaluation, run.role = model, model.get("role", "candidate")
    return list(runs.values()), documents


def best_runs(runs: Sequence[ReportRun], columns: Sequence[Column]) -> dict[str, list[str]]:
    """For each column with a direction, the candidate run(s) with the best value; nothing is
    marked when fewer than two runs have a value or when they all tie."""
    best = {}
    for column in columns:
        values = {r.name: r.metrics().get(column.key) for r in runs if r.role != "baseline"}
        values = {name: v for name, v in values.items() if v is not None}
        if column.direction and len(values) >= 2 and len(set(values.values())) > 1:
            top = max(v * column.direction for v in values.values())
            best[column.key] = [name for name, v in values.items() if v * column.direction == top]
    return best


def shown_columns(runs: Sequence[ReportRun]) -> list[Column]:
    """The known columns some run has a value for, then any lm-eval scores (not marked)."""
    present = {k for r in runs for k, v in r.metrics().items() if v is not None}
    extra = sorted(k for k in present if k.startswith("lm_eval/"))
    return [c for c in COLUMNS if c.key in present] + [Column(k, k, 0, ".4g") for k in extra]


def _summary_lines(runs: Sequence[ReportRun], columns: Sequence[Column], best: dict[str, list[str]]) -> list[str]:
    """One line per aspect, headlined by its first column that has a best run, then a tally."""
    lines = []
    for aspect, title in ASPECTS.items():
        column = next((c for c in columns if c.aspect == aspect and c.key in best), None)
        if column is None:
            continue
        values = ", ".join(
            f"{html.escape(r.name)} {column.show(r.metrics().get(column.key))}" for r in runs if r.role != "baseline"
        )
        winners = " and ".join(f"<b>{html.escape(n)}</b>" for n in best[column.key])
        lines.append(f"{title}: {winners} best on {html.escape(column.label)} ({values})")
    marked = [c for c in columns if c.key in best]
    tally = ", ".join(
        f"{html.escape(r.name)} {sum(r.name in best[c.key] for c in marked)}" for r in runs if r.role != "baseline"
    )
    if marked:
        lines.append(f"Best values out of {len(marked)} compared metrics: {tally}")
    return lines


def _table(runs: Sequence[ReportRun], columns: Sequence[Column], best: dict[str, list[str]]) -> str:
    head = "".join(
        f"<th>{html.escape(r.name)}{' <span class=role>(baseline)</span>' if r.role == 'baseline' else ''}</th>" for r in runs
    )
    rows = []
    for column in columns:
        arrow = {1: " ↑", -1: " ↓", 0: ""}[column.direction]
        cells = []
        for run in runs:
            values = run.metrics()
            is_best = run.name in best.get(column.key, [])
            shown = column.show_with_interval(values.get(column.key), values.get(column.key + CI_SUFFIX))
            cells.append(f"<td class={'best' if is_best else 'plain'}>{'★ ' if is_best else ''}{shown}</td>")
        rows.append(f"<tr><th class=metric>{html.escape(column.label)}{arrow}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _series(runs: Sequence[ReportRun]) -> list[Series]:
    return [
        Series(r.name, i, r.training, r.metrics().get("mean_length"), r.metrics().get("win_rate"), r.he_layers(), r.role == "baseline")
        for i, r in enumerate(runs)
    ]


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{margin-bottom:4px}.meta{color:#666;font-size:13px}
.summary{background:#eef6ee;border-left:5px solid #2e7d32;padding:10px 16px;margin:16px 0;font-size:16px}
table{border-collapse:collapse;margin:12px 0;font-size:14px}
th,td{border:1px solid #ccc;padding:5px 10px;text-align:right}th.metric{text-align:left;font-weight:normal}
thead th{background:#f0f0f0}td.best{background:#c8e6c9;font-weight:bold}.role{color:#888;font-weight:normal}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
figure.wide{grid-column:1/-1}figure.wide img{width:auto;max-width:100%}figure{margin:0;border:1px solid #ddd;padding:8px;background:#fff}figure img{width:100%}
figcaption{font-weight:bold;margin-bottom:6px}ul.notes{color:#555;font-size:13px}
"""


def read_frontier(directory: Path) -> dict[str, Any]:
    """A study's ``frontier.json``: its points, the metrics they hold and the plots it drew."""
    path = directory / FRONTIER_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in ("points", "metrics", "plots")):
        raise EvaluationError(f"{path}: not a `ropo frontier` result (needs 'points', 'metrics' and 'plots' lists)")
    missing = [item["file"] for item in document["plots"] if not (directory / item["file"]).is_file()]
    if missing:
        raise EvaluationError(f"{path}: its plot {missing[0]} is missing; run `ropo frontier` again to redraw it")
    return document


def _frontier_cell(point: dict[str, Any], metric: dict[str, Any]) -> str:
    value, interval = point.get(metric["key"]), point.get(metric["key"] + "_ci")
    if value is None:
        return "<td>—</td>"
    shown = format(value, ".3g") + (f" <span class=role>[{interval[0]:.3g}, {interval[1]:.3g}]</span>" if interval else "")
    return f"<td>{shown}</td>"


def verdict_list(comparisons: Sequence[dict[str, Any]]) -> str:
    """The verdicts (``ropo.evaluation.verdicts``) as a list a newcomer reads before the table."""
    def where(key: str, entries: Sequence[dict[str, Any]]) -> str:
        at = ", ".join(f"{e['sqrt_kl']:.2f} ({e['difference']:+.3g})" for e in entries)
        return f"{html.escape(metric(key).label)} at sqrt(KL) {at}"

    items = []
    for verdict in verdicts(comparisons):
        said = [f"<b>{side}</b> in " + "; ".join(where(key, entries) for key, entries in found.items())
                for side, found in verdict.resolved.items() if found]
        if verdict.level:
            said.append("<b>level</b> in " + ", ".join(html.escape(metric(key).label) for key in verdict.level))
        items.append(f"<li>against <b>{html.escape(verdict.rival)}</b> (seeds {','.join(map(str, verdict.seeds))}): "
                     + ". ".join(said) + ".</li>")
    return ("<h3>What the paired comparisons say</h3><p class=meta>Read from the intervals alone: ahead or behind where"
            " the 95 % interval excludes 0 (on the metric's better side), level where every interval holds 0.</p>"
            f"<ul class=notes>{''.join(items)}</ul>")


def comparisons_table(comparisons: Sequence[dict[str, Any]]) -> str:
    """The paired differences (reference − rival at matched sqrt(KL)) as one HTML table."""
    rows = "".join(
        f"<tr><th class=metric>{html.escape(c['reference'])} − {html.escape(c['rival'])}</th><td>{html.escape(c['metric'])}</td>"
        f"<td>{c['sqrt_kl']:.2f}</td><td>{c['difference']:+.4g} [{c['ci'][0]:+.4g}, {c['ci'][1]:+.4g}]</td>"
        f"<td>{html.escape(','.join(map(str, c['seeds'])))}</td></tr>"
        for c in comparisons
    )
    return ("<h3>Paired comparisons at matched KL</h3><p class=meta>The reference's metric minus the rival's, read along"
            " each curve at the same sqrt(KL), with a 95 % bootstrap interval over the same resampled prompts or items"
            " and seeds: an interval without 0 is a difference the study resolves.</p><div style='overflow-x:auto'><table>"
            "<thead><tr><th>comparison</th><th>metric</th><th>sqrt(KL)</th><th>difference [95 % CI]</th><th>seeds</th></tr>"
            f"</thead><tbody>{rows}</tbody></table></div>")


def frontier_section(directory: Path, frontier: dict[str, Any], committed: bool = False) -> str:
    """A study's plots (its PNGs inlined), its paired comparisons and every point with its 95 %
    intervals; ``committed``: the study committed with the project, shown beside a user's own runs."""
    plots = "".join(
        f"<figure class=plot><figcaption>{html.escape(item['title'])}</figcaption><img alt='{html.escape(item['title'])}' "
        f"src='data:image/png;base64,{base64.b64encode((directory / item['file']).read_bytes()).decode()}'></figure>"
        for item in frontier["plots"]
    )
    metrics = frontier["metrics"]
    head = "".join(f"<th>{html.escape(m['label'])}</th>" for m in metrics)
    rows = "".join(
        f"<tr><th class=metric>{html.escape(str(p['series']))}</th><td>{p['step']}</td><td>{p['learning_rate']:.3g}</td>"
        + "".join(_frontier_cell(p, m) for m in metrics) + "</tr>"
        for p in frontier["points"]
    )
    settings = html.escape(json.dumps({k: v for k, v in frontier.get("settings", {}).items() if k != "plan"}))
    title = (f"The committed frontier study (measured for the project, not by this run): {directory}" if committed
             else f"Frontier: {directory}")
    comparisons = (verdict_list(frontier["comparisons"]) + comparisons_table(frontier["comparisons"])
                   if frontier.get("comparisons") else "")
    return (f"<h2>{html.escape(title)}</h2><p class=meta>Each metric against sqrt(KL(π ‖ base)); "
            f"bands and brackets are 95 % bootstrap intervals over prompts (probe questions for retention).</p>"
            f"<div class=plots>{plots}</div>{comparisons}<h3>Every point</h3><div style='overflow-x:auto'><table><thead><tr><th>series</th>"
            f"<th>step</th><th>learning rate</th>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
            f"<ul class=notes><li>settings: {settings}</li></ul>")


def render_html(
    runs: Sequence[ReportRun],
    documents: Sequence[dict[str, Any]],
    figures: dict[str, bytes],
    columns: Sequence[Column],
    best: dict[str, list[str]],
    frontiers: str = "",
) -> str:
    summary = "<br>".join(_summary_lines(runs, columns, best)) or "Only one run: nothing to compare."
    plots = "".join(
        f"<figure class={'wide' if title in WIDE_FIGURES else 'plot'}><figcaption>{html.escape(title)}</figcaption>"
        f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></figure>"
        for title, png in figures.items()
    )
    notes = "".join(
        f"<li><b>{html.escape(r.name)}</b>: {html.escape(note)}</li>" for r in runs for note in (r.evaluation or {}).get("notes", [])
    )
    settings = "".join(
        f"<li>{html.escape(d['path'])}: judge {html.escape(str(d.get('judge')))}, baseline {html.escape(str(d.get('baseline')))}, "
        f"{d.get('prompts', {}).get('count', '?')} prompts, sampling {html.escape(json.dumps(d.get('sampling', {})))}</li>"
        for d in documents
    )
    written = f"written {time.strftime('%Y-%m-%d %H:%M')}"
    compared = f"""<div class=meta>{len(runs)} runs · {written} · ★ = best value (↑ higher is better, ↓ lower is better; unmarked rows have no better direction)</div>
<div class=summary>{summary}</div>
<h2>Metrics</h2>{_table(runs, columns, best)}
<h2>Plots</h2><div class=plots>{plots}</div>
<h2>Settings and notes</h2><ul class=notes>{settings}{notes}</ul>""" if runs else f"<div class=meta>{written}</div>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RoPO report: {html.escape(', '.join(r.name for r in runs) or 'frontier')}</title>
<style>{_STYLE}</style></head><body>
<h1>RoPO report</h1>
{compared}{frontiers}
</body></html>
"""


def plot_file_name(title: str) -> str:
    """``plots/win-rate-vs-length.png`` for the figure titled "Win rate vs length"."""
    return "plots/" + "-".join(re.findall(r"[a-z0-9]+", title.lower())) + ".png"


def build_report(paths: Sequence[str | Path], output_dir: str | Path,
                 committed_studies: Sequence[Path] = ()) -> tuple[Path, Path]:
    """Write ``report.html`` (plots inline, so it travels as one file), ``metrics.json`` and each
    plot as a PNG under ``plots/`` (for pages that embed them) for the runs and eval results at
    ``paths``; a frontier study folder among them adds its section (its plots stay in its folder).
    ``committed_studies``: frontier folders shown after them, marked as the project's own study."""
    frontier_dirs = [Path(p) for p in paths if (Path(p) / FRONTIER_FILE).is_file()]
    others = [p for p in paths if Path(p) not in frontier_dirs]
    runs, documents = collect_runs(others) if others else ([], [])
    frontiers = "".join(frontier_section(d, read_frontier(d)) for d in frontier_dirs)
    frontiers += "".join(frontier_section(d, read_frontier(d), committed=True) for d in committed_studies)
    figures = all_figures(_series(runs)) if runs else {}
    columns = shown_columns(runs)
    best = best_runs(runs, columns)
    summary = {
        "runs": [{"name": r.name, "role": r.role, "source": r.source, "metrics": r.metrics(), "he_layers": r.he_layers()} for r in runs],
        "columns": [{"key": c.key, "label": c.label, "direction": c.direction} for c in columns],
        "best": best,
        "plots": list(figures),
        "plot_files": [plot_file_name(title) for title in figures],
        "evaluations": documents,
        "frontiers": [str(d) for d in frontier_dirs],
        "committed_studies": [str(d) for d in committed_studies],
    }
    output_dir = Path(output_dir)
    for title, png in figures.items():
        atomic_write(output_dir / plot_file_name(title), lambda tmp, png=png: Path(tmp).write_bytes(png))
    report = atomic_write_text(output_dir / REPORT_FILE, render_html(runs, documents, figures, columns, best, frontiers))
    metrics = atomic_write_text(output_dir / DEMO_METRICS_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return report, metrics
