"""``run_study``: train every series, measure every checkpoint and the base, write ``frontier.json`` and the plots.

Why in pieces: the default study takes hours on a CPU, so it is split into pieces that each
survive an interruption. A training run resumes from its last complete checkpoint; the base and
every evaluated checkpoint are cached as their own JSON file under ``points/``, named by the hash
of everything that decided them (model, recipe, step, prompts, sampling, judge, probe), and reused
only when that hash matches. Rerunning the command after a kill therefore redoes at most one
piece; rerunning it after a change redoes exactly the pieces the change affects.

Layout of ``OUT``::

    frontier.json      every point, the settings and the seconds per piece (the output contract)
    summary.md         the points as one markdown table (what the README quotes)
    plots/*.png        each metric against sqrt(KL), one curve per series
    points/*.json      the cache: one file per evaluated checkpoint, plus the base's answers
    train_seconds.json wall-clock seconds spent training each series, over all sessions
    runs/<series>/     the training runs (``ropo train`` folders, checkpoints included)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ropo.layout import (
    DIVERGED_FILE,
    FRONTIER_FILE,
    FRONTIER_COMPARISONS_FILE,
    FRONTIER_SUMMARY_FILE,
    PLOTS_DIR,
    POINTS_DIR,
    RUN_METRICS_FILE,
    TRAIN_SECONDS_FILE,
)
from ropo.evaluation.statistics import DEFAULT_SEED as BOOTSTRAP_SEED
from ropo.frontier.plan import REFERENCE, SeriesSpec, StudyPlan, StudyRun
from ropo.frontier.summary import comparisons_markdown, summary_table
from ropo.frontier.comparisons import Curve, compare
from ropo.evaluation.drift import Reference
from ropo.evaluation.measure import Evaluation, measure_energy, measure_items, summarize
from ropo.frontier.points import BASE, METRICS, TRAINING_METRICS, read_cached, settings_key, training_symptoms
from ropo.io import atomic_write, atomic_write_text, read_jsonl_records
from ropo.methods import get_method
from ropo.metrics.energy import HE_CHANGE

if TYPE_CHECKING:
    from ropo.training.recipe import Recipe
    from ropo.training.spec import RunSpec

#: Format 2: points carry ``seed`` and the split retention metrics; ``comparisons`` added.
FORMAT = "ropo-frontier/2"


@dataclass
class StudyResult:
    frontier: Path
    plots: list[Path]
    reused: int  # pieces taken from the cache or from finished runs
    computed: int


def study_evaluation(plan: StudyPlan) -> Evaluation:
    """The held-out prompts (the demo task's test split), sampling, judge and probe of ``plan``."""
    from ropo.demo_task import held_out_records
    from ropo.demo_task.task_judge import TaskJudge
    from ropo.generation import Prompt, SamplingSettings
    from ropo.evaluation.prompts import data_path
    from ropo.evaluation.retention import LARGE_QA_PROBE, load_qa_probe

    budget = plan.budget
    records = held_out_records(budget.eval_prompts)
    sampling = SamplingSettings(max_new_tokens=budget.max_new_tokens, samples_per_prompt=budget.samples_per_prompt,
                                seed=plan.seeds[0], batch_size=budget.generation_batch_size)
    probe = load_qa_probe(data_path(LARGE_QA_PROBE))[: budget.probe_items]
    prompts = [Prompt(r["id"], (r["prompt"],), "ropo-demo") for r in records]
    return Evaluation(prompts, sampling, TaskJudge(), probe, budget.probe_max_new_tokens, budget.text_passages,
                      lm_eval_tasks=plan.lm_eval_tasks, lm_eval_limit=plan.lm_eval_limit)


def _without_output_dir(recipe: Recipe) -> dict[str, Any]:
    """A recipe as a cache key sees it: where the run was written decides none of its numbers."""
    return {k: v for k, v in recipe.to_dict().items() if k != "output_dir"}


class Study:
    """One study's pieces, run in order with one progress bar."""

    def __init__(self, plan: StudyPlan, out: Path, progress: bool = True) -> None:
        from ropo.models.loading import load_tokenizer

        self.plan, self.out = plan, out
        self.evaluation = study_evaluation(plan)
        self.tokenizer = load_tokenizer(plan.model)
        self.points: list[dict[str, Any]] = []
        self.measured: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (point metadata, cached piece)
        self.train_seconds: dict[str, float] = self._recorded_train_seconds()
        self.eval_seconds: dict[str, float] = {}
        self.diverged: dict[str, str] = {}
        self.reused = self.computed = 0
        self._run_names = {run.name for run in plan.runs()}
        self._base_model = None
        pieces = sum(1 + len(run.steps) for run in plan.runs())
        self.bar = tqdm(total=1 + pieces, desc="frontier", unit="piece", disable=not progress)

    def _recorded_train_seconds(self) -> dict[str, float]:
        """Training seconds from earlier sessions of this study (a resumed run adds to them)."""
        path = self.out / TRAIN_SECONDS_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def base_model(self):
        """The untuned model, loaded once: the base piece and full fine-tuning's reference."""
        from ropo.models.loading import load_base_model

        if self._base_model is None:
            self._base_model = load_base_model(self.plan.model, "float32", self.plan.seeds[0]).eval()
        return self._base_model

    def _piece_path(self, name: str, settings: dict[str, Any]) -> tuple[Path, str]:
        key = settings_key(settings)
        return self.out / POINTS_DIR / f"{name}-{key[:16]}.json", key

    def _is_cached(self, name: str, settings: dict[str, Any]) -> bool:
        return read_cached(*self._piece_path(name, settings)) is not None

    def _piece(self, name: str, compute: Callable[[], dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
        """The cached result of piece ``name`` if its settings match, else ``compute()`` timed and cached."""
        path, key = self._piece_path(name, settings)
        self.bar.set_postfix_str(name)
        cached = read_cached(path, key)
        if cached is None:
            started = time.perf_counter()
            cached = {"key": key, "settings": settings, **compute()}
            cached["seconds"] = time.perf_counter() - started
            atomic_write_text(path, json.dumps(cached, indent=1) + "\n")
            self.computed += 1
        else:
            self.reused += 1
        self.eval_seconds[name] = cached["seconds"]
        self.bar.update()
        return cached

    def measure_base(self) -> dict[str, Any]:
        """The base's items (its KL and HE change are 0 by definition; its answers, judged against
        themselves, tie every pair)."""
        def compute() -> dict[str, Any]:
            return {"items": measure_items(self.base_model(), self.tokenizer, self.evaluation, is_base=True).items,
                    "he_change": 0.0}

        settings = {"model": self.plan.model, "seed": self.plan.seeds[0], "evaluation": self.evaluation.describe()}
        cached = self._piece(BASE, compute, settings)
        self.measured.append(({"method": BASE, "series": BASE, "seed": None, "step": 0, "learning_rate": 0.0,
                               "settings": {"key": cached["key"]}}, cached))
        return cached["items"]

    def train(self, run: StudyRun, run_spec: RunSpec) -> Recipe:
        """Train (or resume, or reuse) ``run`` and return its recipe; a run that diverged keeps the
        checkpoints it wrote before."""
        from ropo.training.guards import NonFiniteError
        from ropo.training.reuse import train_or_reuse

        recipe = run_spec.recipe
        marker = Path(recipe.output_dir) / DIVERGED_FILE
        self.bar.set_postfix_str(f"train {run.name}")
        if marker.is_file() and json.loads(marker.read_text())["recipe"] == _without_output_dir(recipe):
            self.diverged[run.name] = json.loads(marker.read_text())["error"]
            self.reused += 1
        else:
            started, trained = time.perf_counter(), True
            try:
                trained = train_or_reuse(run_spec, run.name, command="frontier")
            except NonFiniteError as error:
                self.diverged[run.name] = str(error)
                atomic_write_text(marker, json.dumps({"error": str(error), "recipe": _without_output_dir(recipe)}) + "\n")
            finally:  # an interrupted session's time counts too: the resumed run starts from its checkpoint
                if trained:
                    elapsed = time.perf_counter() - started
                    self.train_seconds[run.name] = self.train_seconds.get(run.name, 0.0) + elapsed
                    atomic_write_text(self.out / TRAIN_SECONDS_FILE, json.dumps(self.train_seconds, indent=1) + "\n")
            if trained:
                self.computed += 1
            else:
                self.reused += 1
        self.bar.update()
        return recipe

    def _pieces(self, run: StudyRun, recipe: Recipe) -> dict[int, tuple[str, dict[str, Any]]]:
        return {step: (f"{run.name}-step{step:05d}",
                       {"recipe": _without_output_dir(recipe), "step": step, "evaluation": self.evaluation.describe()})
                for step in run.steps}

    def measure_run(self, run: StudyRun, base: dict[str, Any] | None) -> None:
        """Train ``run`` if a point it needs is not measured yet, then measure its checkpoints
        (``base`` None: train only)."""
        spec, run_dir = run.spec, run.run_dir(self.out)
        run_spec = self.plan.run_spec(spec, run_dir, run.seed)
        recipe = run_spec.recipe
        pieces = self._pieces(run, recipe)
        # Every point measured already (e.g. committed by an earlier session whose run folders are
        # gone): the run needs no training, since a point holds its training-side metrics too.
        if all(self._is_cached(name, settings) for name, settings in pieces.values()):
            self.reused += 1
            self.bar.update()
            records: list[dict[str, Any]] = []
        else:
            recipe = self.train(run, run_spec)
            records = read_jsonl_records(run_dir / RUN_METRICS_FILE)
        if base is None:
            return
        for step, (name, settings) in pieces.items():
            checkpoint = run_dir / "checkpoints" / f"checkpoint-{step}"
            if not self._is_cached(name, settings) and not (checkpoint / "trainer_state.json").is_file():
                self.bar.update()  # a diverged run stopped before it
                continue

            def compute(checkpoint: Path = checkpoint, step: int = step) -> dict[str, Any]:
                model = self._load_checkpoint(spec, checkpoint, run.seed)
                base_model = None if get_method(spec.method).has_adapter else self.base_model()
                return {"items": measure_items(model, self.tokenizer, self.evaluation, Reference(model, base_model)).items,
                        "he_change": measure_energy(model, base_model, self.evaluation)[0][HE_CHANGE],
                        "training": training_symptoms(records, step, self.plan.budget.save_steps)}

            cached = self._piece(name, compute, settings)
            self.measured.append(({
                "method": spec.method, "series": spec.name, "seed": run.seed, "ablation": spec.ablation, "step": step,
                "learning_rate": self.plan.learning_rate(spec),
                "settings": {"key": cached["key"], "adapter": spec.adapter, "checkpoint": str(checkpoint)},
            }, cached))

    def assemble(self) -> list[dict[str, Any]]:
        """Every point's metrics and intervals from its items, and the paired comparisons of
        ``REFERENCE`` with every other series, all from one set of bootstrap draws."""
        draws = self.evaluation.draws()
        base_items = next(cached["items"] for meta, cached in self.measured if meta["series"] == BASE)
        curves: dict[str, dict[int, list[dict[str, Any]]]] = {}
        base_rows = None
        for meta, cached in self.measured:
            point = summarize(cached["items"], base_items["answers"], self.evaluation, draws)
            metrics, rows = point.metrics, point.rows
            self.points.append({**meta, **metrics, "he_change": cached["he_change"], **cached.get("training", {})})
            if meta["series"] == BASE:
                base_rows = rows
            else:
                curves.setdefault(meta["series"], {}).setdefault(meta["seed"], []).append(rows)
        return compare({series: [Curve(seed, {k: np.column_stack([base_rows[k], *(r[k] for r in rows)]) for k in base_rows})
                                 for seed, rows in by_seed.items()]
                        for series, by_seed in curves.items()}, REFERENCE)

    def _load_checkpoint(self, spec: SeriesSpec, checkpoint: Path, seed: int):
        from ropo.models.runs import load_trained

        return load_trained(spec.method, checkpoint, self.plan.model, "float32", seed).eval()

    def document(self, plots: list[dict[str, str]], comparisons: list[dict[str, Any]]) -> dict[str, Any]:
        sampling = self.evaluation.sampling.as_dict()
        return {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "points": self.points,
            "metrics": [{"key": m.key, "label": m.label, "interval": m.interval} for m in METRICS],
            "training_metrics": [{"key": m.key, "label": m.label} for m in TRAINING_METRICS],
            "settings": {
                "model": self.plan.model,
                "data": {"train": self.plan.data, "rows": self.plan.budget.data_rows,
                         "eval": "demo task test split", "eval_prompts": [p.id for p in self.evaluation.prompts],
                         "judge": self.evaluation.judge.name, "probe_items": len(self.evaluation.probe)},
                "sampling": sampling,
                "seeds": {"training": list(self.plan.seeds), "sampling": sampling["seed"], "bootstrap": BOOTSTRAP_SEED},
                "budget": dataclasses.asdict(self.plan.budget),
                "plan": self.plan.describe(),
            },
            "diverged": self.diverged,
            "comparisons": comparisons,
            "kl_ranges": kl_ranges(self.points),
            "plots": plots,
            "seconds": {**{f"train/{name}": s for name, s in self.train_seconds.items() if name in self._run_names},
                        **{f"eval/{name}": s for name, s in self.eval_seconds.items()}},
        }


def kl_ranges(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each series' KL range and the series whose range overlaps it: methods are compared only
    where their curves share KL values, so a series that overlaps no other is a design failure."""
    ranges: dict[str, tuple[float, float]] = {}
    for point in points:
        if point["series"] != BASE:
            low, high = ranges.get(point["series"], (point["kl"], point["kl"]))
            ranges[point["series"]] = (min(low, point["kl"]), max(high, point["kl"]))
    return {
        name: {"min": low, "max": high,
               "overlaps": [other for other, (lo, hi) in ranges.items() if other != name and lo <= high and low <= hi]}
        for name, (low, high) in ranges.items()
    }


def run_study(plan: StudyPlan, out: str | Path, progress: bool = True, train_only: bool = False) -> StudyResult | None:
    """Run every piece of ``plan`` that is not done yet, then write ``frontier.json`` and the plots.

    ``train_only``: train every run that a missing point needs and stop (None): the runs can train
    where compute is cheap and be measured later, or while the measuring code is still changing.
    """
    from ropo.frontier.plots import frontier_figures, plot_file

    out = Path(out)
    study = Study(plan, out, progress)
    base = None if train_only else study.measure_base()
    for run in plan.runs():
        study.measure_run(run, base)
    study.bar.close()
    if train_only:
        return None
    comparisons = study.assemble()
    written = []
    for title, png in frontier_figures(study.points).items():
        path = atomic_write(out / PLOTS_DIR / plot_file(title), lambda tmp, png=png: Path(tmp).write_bytes(png))
        written.append({"title": title, "file": str(path.relative_to(out))})
    frontier = atomic_write_text(out / FRONTIER_FILE, json.dumps(study.document(written, comparisons), indent=2) + "\n")
    atomic_write_text(out / FRONTIER_SUMMARY_FILE, summary_table(study.points))
    atomic_write_text(out / FRONTIER_COMPARISONS_FILE, comparisons_markdown(comparisons))
    return StudyResult(frontier, [out / item["file"] for item in written], study.reused, study.computed)
