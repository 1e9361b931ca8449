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

from tqdm.auto import tqdm

from ropo.layout import (
    DIVERGED_FILE,
    FRONTIER_FILE,
    FRONTIER_SUMMARY_FILE,
    PLOTS_DIR,
    POINTS_DIR,
    RUN_METRICS_FILE,
    RUNS_DIR,
    TRAIN_SECONDS_FILE,
)
from ropo.evaluation.statistics import DEFAULT_SEED as BOOTSTRAP_SEED
from ropo.frontier.plan import SeriesSpec, StudyPlan
from ropo.frontier.summary import summary_table
from ropo.frontier.points import (
    BASE,
    METRICS,
    TRAINING_METRICS,
    BaseAnswers,
    Evaluation,
    measure_base,
    measure_checkpoint,
    read_cached,
    settings_key,
    training_symptoms,
)
from ropo.io import atomic_write, atomic_write_text, read_jsonl_records
from ropo.methods import get_method

if TYPE_CHECKING:
    from ropo.training.recipe import Recipe
    from ropo.training.spec import RunSpec

FORMAT = "ropo-frontier/1"


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
                                seed=plan.seed, batch_size=budget.generation_batch_size)
    probe = load_qa_probe(data_path(LARGE_QA_PROBE))[: budget.probe_items]
    prompts = [Prompt(r["id"], (r["prompt"],), "ropo-demo") for r in records]
    return Evaluation(prompts, sampling, TaskJudge(), probe, budget.probe_max_new_tokens)


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
        self.train_seconds: dict[str, float] = self._recorded_train_seconds()
        self.eval_seconds: dict[str, float] = {}
        self.diverged: dict[str, str] = {}
        self.reused = self.computed = 0
        self._series_names = {spec.name for spec in plan.series}
        self._base_model = None
        pieces = sum(1 + len(plan.budget.measured_steps(spec)) for spec in plan.series)
        self.bar = tqdm(total=1 + pieces, desc="frontier", unit="piece", disable=not progress)

    def _recorded_train_seconds(self) -> dict[str, float]:
        """Training seconds from earlier sessions of this study (a resumed run adds to them)."""
        path = self.out / TRAIN_SECONDS_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def base_model(self):
        """The untuned model, loaded once: the base piece and full fine-tuning's reference."""
        from ropo.models.loading import load_base_model

        if self._base_model is None:
            self._base_model = load_base_model(self.plan.model, "float32", self.plan.seed).eval()
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

    def measure_base(self) -> BaseAnswers:
        def compute() -> dict[str, Any]:
            answers, point = measure_base(self.base_model(), self.tokenizer, self.evaluation)
            return {"point": point, "answers": answers.answers, "probe_correct": answers.probe_correct}

        settings = {"model": self.plan.model, "seed": self.plan.seed, "evaluation": self.evaluation.describe()}
        cached = self._piece(BASE, compute, settings)
        self.points.append({"method": BASE, "series": BASE, "step": 0, "learning_rate": 0.0, "settings": {"key": cached["key"]},
                            **cached["point"]})
        return BaseAnswers(cached["answers"], cached["probe_correct"])

    def train(self, spec: SeriesSpec, run_spec: RunSpec) -> Recipe:
        """Train (or resume, or reuse) ``spec``'s run and return its recipe; a run that diverged
        keeps the checkpoints it wrote before."""
        from ropo.training.guards import NonFiniteError
        from ropo.training.reuse import train_or_reuse

        recipe = run_spec.recipe
        marker = Path(recipe.output_dir) / DIVERGED_FILE
        self.bar.set_postfix_str(f"train {spec.name}")
        if marker.is_file() and json.loads(marker.read_text())["recipe"] == _without_output_dir(recipe):
            self.diverged[spec.name] = json.loads(marker.read_text())["error"]
            self.reused += 1
        else:
            started, trained = time.perf_counter(), True
            try:
                trained = train_or_reuse(run_spec, spec.name, command="frontier")
            except NonFiniteError as error:
                self.diverged[spec.name] = str(error)
                atomic_write_text(marker, json.dumps({"error": str(error), "recipe": _without_output_dir(recipe)}) + "\n")
            finally:  # an interrupted session's time counts too: the resumed run starts from its checkpoint
                if trained:
                    elapsed = time.perf_counter() - started
                    self.train_seconds[spec.name] = self.train_seconds.get(spec.name, 0.0) + elapsed
                    atomic_write_text(self.out / TRAIN_SECONDS_FILE, json.dumps(self.train_seconds, indent=1) + "\n")
            if trained:
                self.computed += 1
            else:
                self.reused += 1
        self.bar.update()
        return recipe

    def measure_series(self, spec: SeriesSpec, base: BaseAnswers) -> None:
        run_dir = self.out / RUNS_DIR / spec.name
        run_spec = self.plan.run_spec(spec, run_dir)
        recipe = run_spec.recipe
        pieces = {
            step: (f"{spec.name}-step{step:05d}",
                   {"recipe": _without_output_dir(recipe), "step": step, "evaluation": self.evaluation.describe()})
            for step in self.plan.budget.measured_steps(spec)
        }
        # Every point measured already (e.g. committed by an earlier session whose run folders are
        # gone): the series needs no training, since a point holds its training-side metrics too.
        if all(self._is_cached(name, settings) for name, settings in pieces.values()):
            self.reused += 1
            self.bar.update()
            records: list[dict[str, Any]] = []
        else:
            recipe = self.train(spec, run_spec)
            records = read_jsonl_records(run_dir / RUN_METRICS_FILE)
        for step, (name, settings) in pieces.items():
            checkpoint = run_dir / "checkpoints" / f"checkpoint-{step}"
            if not self._is_cached(name, settings) and not (checkpoint / "trainer_state.json").is_file():
                self.bar.update()  # a diverged run stopped before it
                continue

            def compute(checkpoint: Path = checkpoint, step: int = step) -> dict[str, Any]:
                model = self._load_checkpoint(spec, checkpoint)
                base_model = None if get_method(spec.method).has_adapter else self.base_model()
                return {"point": measure_checkpoint(model, self.tokenizer, self.evaluation, base, base_model),
                        "training": training_symptoms(records, step, self.plan.budget.save_steps)}

            cached = self._piece(name, compute, settings)
            self.points.append({
                "method": spec.method, "series": spec.name, "ablation": spec.ablation, "step": step,
                "learning_rate": self.plan.learning_rate(spec),
                "settings": {"key": cached["key"], "adapter": spec.adapter, "checkpoint": str(checkpoint)},
                **cached["point"], **cached["training"],
            })

    def _load_checkpoint(self, spec: SeriesSpec, checkpoint: Path):
        from ropo.models.runs import load_trained

        return load_trained(spec.method, checkpoint, self.plan.model, "float32", self.plan.seed).eval()

    def document(self, plots: list[dict[str, str]]) -> dict[str, Any]:
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
                "seeds": {"training": self.plan.seed, "sampling": sampling["seed"], "bootstrap": BOOTSTRAP_SEED},
                "budget": dataclasses.asdict(self.plan.budget),
                "plan": self.plan.describe(),
            },
            "diverged": self.diverged,
            "kl_ranges": kl_ranges(self.points),
            "plots": plots,
            "seconds": {**{f"train/{name}": s for name, s in self.train_seconds.items() if name in self._series_names},
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


def run_study(plan: StudyPlan, out: str | Path, progress: bool = True) -> StudyResult:
    """Run every piece of ``plan`` that is not done yet, then write ``frontier.json`` and the plots."""
    from ropo.frontier.plots import frontier_figures, plot_file

    out = Path(out)
    study = Study(plan, out, progress)
    base = study.measure_base()
    for spec in plan.series:
        study.measure_series(spec, base)
    study.bar.close()
    written = []
    for title, png in frontier_figures(study.points).items():
        path = atomic_write(out / PLOTS_DIR / plot_file(title), lambda tmp, png=png: Path(tmp).write_bytes(png))
        written.append({"title": title, "file": str(path.relative_to(out))})
    frontier = atomic_write_text(out / FRONTIER_FILE, json.dumps(study.document(written), indent=2) + "\n")
    atomic_write_text(out / FRONTIER_SUMMARY_FILE, summary_table(study.points))
    return StudyResult(frontier, [out / item["file"] for item in written], study.reused, study.computed)
