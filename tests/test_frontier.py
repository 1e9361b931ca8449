"""``ropo frontier``: the study's design is fair by construction, and the quick study runs end to end
on a tiny random model with every point finite, every interval around its estimate, and a rerun
that reuses every piece."""

import json
import math
import shutil
import time
from pathlib import Path

import pytest

from ropo.cli import main as ropo_main
from ropo.methods import get_method
from ropo.evaluation import build_report
from ropo.frontier.plan import DEFAULT_SERIES, LEARNING_RATE_SCALES, MATCHED_LORA, SERIES, PlanError, build_plan
from ropo.frontier.summary import comparisons_markdown, comparisons_table, summary_table, verdicts_markdown
from ropo.layout import FRONTIER_COMPARISONS_FILE as COMPARISONS_FILE
from ropo.layout import FRONTIER_SUMMARY_FILE as SUMMARY_FILE
from ropo.frontier.points import BASE, METRICS, TRAINING_METRICS, read_cached, training_symptoms
from ropo.metrics.catalogue import CI_SUFFIX
from ropo.frontier.study import FORMAT as FRONTIER_FORMAT, kl_ranges, study_evaluation

#: The series whose adapter options are "ropo-2025 with one thing changed".
ABLATIONS = ("ropo-no-magnitude", "ropo-householder-only", "ropo-all-linear")


def test_default_plan_is_one_design_for_every_series(tmp_path):
    assert DEFAULT_SERIES == ("ropo-2025", "dpo", "lora", "oft", MATCHED_LORA, *(n for n in SERIES if not SERIES[n].every_seed))
    plan = build_plan(methods=list(SERIES))  # the matched LoRA loads the model: its own test below
    assert plan.model == "default" and [s.name for s in plan.series] == list(SERIES) and plan.seeds == (0, 1, 2)
    assert {s.method for s in plan.series} == {"ropo", "full", "lora", "oft"}
    steps = plan.budget.checkpoint_steps
    assert len(steps) >= 5 and steps[-1] == plan.budget.max_steps  # the last step is a point too
    for seed in plan.seeds:
        shared = None
        for spec in plan.series:
            overrides = plan.overrides(spec, tmp_path / spec.name, seed)
            assert overrides["training.learning_rate"] == pytest.approx(get_method(spec.method).learning_rate * LEARNING_RATE_SCALES[spec.method])
            assert overrides["seed"] == seed
            common = {k: v for k, v in overrides.items() if k not in ("output_dir", "method", "adapter", "training.learning_rate")}
            assert shared is None or common == shared, spec.name  # same data, steps, batch, schedule, β, seed
            shared = common
            plan.run_spec(spec, tmp_path / spec.name, seed)  # every recipe is valid before anything trains
    # The compared series train at every seed, first seed first; the rest at the first seed only.
    runs = [(run.spec.name, run.seed) for run in plan.runs()]
    compared = [s.name for s in plan.series if s.every_seed]
    assert runs[: 3 * len(compared)] == [(name, seed) for seed in (0, 1, 2) for name in compared]
    assert runs[3 * len(compared):] == [(s.name, 0) for s in plan.series if not s.every_seed]
    assert len({run.run_dir(tmp_path) for run in plan.runs()}) == len(runs)
    # Over-optimisation needs more than one pass over the data at the scaled-up rates.
    assert plan.budget.max_steps * plan.budget.batch_size > 155


def test_ablations_change_one_option_of_the_2025_preset():
    reference = SERIES["ropo-2025"].adapter
    for name in ABLATIONS:
        adapter = SERIES[name].adapter
        changed = {k for k in set(adapter) | set(reference) if adapter.get(k) != reference.get(k)}
        assert len(changed) == 1, (name, changed)
    # "Givens only" is the 2024 preset: no Householder reflections, Givens and magnitudes kept.
    from ropo.adapter import RoPOConfig

    config = RoPOConfig(**SERIES["ropo-2024"].adapter)
    assert (config.householder_reflections, config.givens_layout, config.magnitude) == (0, "bidirectional", True)


def test_quick_plan_and_methods_subset():
    plan = build_plan(quick=True, methods=["dpo", "ropo-2025", "dpo"])
    assert plan.model == "tiny:llama" and [s.name for s in plan.series] == ["dpo", "ropo-2025"] and plan.seeds == (0,)
    assert len(plan.budget.checkpoint_steps) == 3
    with pytest.raises(PlanError, match="unknown series"):
        build_plan(methods=["ropo"])
    with pytest.raises(PlanError, match="distinct"):
        build_plan(quick=True, seeds=(1, 1))


def test_the_matched_lora_has_ropos_parameter_count_on_the_same_layers():
    from peft import get_peft_model

    from ropo.tiny_models import tiny_causal_lm

    [spec] = build_plan(quick=True, methods=[MATCHED_LORA]).series
    assert spec.name.startswith("lora-r") and spec.every_seed and spec.adapter["target_modules"] == ["q_proj", "v_proj"]

    def trainable(method: str, options: dict) -> int:
        model = get_peft_model(tiny_causal_lm("llama"), get_method(method).peft_config(options))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    ropo = trainable("ropo", SERIES["ropo-2025"].adapter)
    assert abs(trainable(spec.method, spec.adapter) - ropo) <= 0.05 * ropo


def test_held_out_prompts_cover_every_kind_of_the_test_split():
    from ropo.demo_task import split_records

    plan = build_plan(methods=["ropo-2025"])
    evaluation = study_evaluation(plan)
    test = {record["id"]: record["kind"] for record in split_records()["test"]}
    assert len(evaluation.prompts) == plan.budget.eval_prompts
    assert {test[prompt.id] for prompt in evaluation.prompts} == set(test.values())
    assert len(evaluation.probe) == 436 and evaluation.sampling.samples_per_prompt >= 2  # self-BLEU needs 2


def test_kl_ranges_say_which_series_overlap():
    points = [{"series": BASE, "kl": 0.0}] + [
        {"series": name, "kl": kl} for name, kls in (("a", (0.5, 2.0)), ("b", (1.5, 4.0)), ("c", (9.0, 12.0))) for kl in kls
    ]
    ranges = kl_ranges(points)
    assert ranges["a"] == {"min": 0.5, "max": 2.0, "overlaps": ["b"]}
    assert ranges["b"]["overlaps"] == ["a"] and ranges["c"]["overlaps"] == []


def test_a_cached_point_is_reused_only_for_its_settings(tmp_path):
    path = tmp_path / "point.json"
    path.write_text(json.dumps({"key": "abc", "point": {}}))
    assert read_cached(path, "abc") == {"key": "abc", "point": {}}
    assert read_cached(path, "abd") is None and read_cached(tmp_path / "none.json", "abc") is None


def test_training_symptoms_are_means_since_the_previous_checkpoint():
    records = [{"step": s, "loss": 0.7, "logps/chosen": -s, "logps/rejected": -2 * s, "rewards/margins": s} for s in (1, 2, 3, 4)]
    records.append({"step": 4, "train_runtime": 1.0})  # the closing summary is not a training step
    assert training_symptoms(records, 4, 2) == {"logps/chosen": -3.5, "logps/rejected": -7.0, "rewards/margins": 3.5}
    assert training_symptoms(records, 9, 2) == {metric.key: None for metric in TRAINING_METRICS}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_frontier_end_to_end(tmp_path, capsys):
    out = tmp_path / "frontier"
    series = ["ropo-2025", "dpo", "lora", "ropo-no-magnitude"]  # an adapter, full DPO, a rival, an ablation
    command = ["frontier", "--quick", "--out", str(out), "--no-progress", "--seeds", "0,1", "--methods", ",".join(series)]
    started = time.perf_counter()
    assert ropo_main(command) == 0
    first_seconds = time.perf_counter() - started
    frontier = json.loads((out / "frontier.json").read_text())
    points = frontier["points"]
    assert set(frontier["settings"]) >= {"model", "data", "sampling", "seeds"}
    assert [p["series"] for p in points if p["method"] == BASE] == [BASE] and points[0]["step"] == 0
    for name in series:
        for seed in (0, 1) if SERIES[name].every_seed else (0,):
            assert len([p for p in points if p["series"] == name and p["seed"] == seed]) == 3, (name, seed)
    # RoPO against each series that shares its seeds, every compared metric at >= 3 values of sqrt(KL).
    comparisons = frontier["comparisons"]
    assert {c["rival"] for c in comparisons} == {"dpo", "lora", "ropo-no-magnitude"}
    assert {tuple(c["seeds"]) for c in comparisons if c["rival"] == "lora"} == {(0, 1)}
    for rival in ("dpo", "lora"):
        assert len({c["sqrt_kl"] for c in comparisons if c["rival"] == rival}) >= 3
    assert all(_finite(c["difference"]) and c["ci"][0] <= c["difference"] <= c["ci"][1] for c in comparisons
               if c["metric"] != "self_bleu")
    for point in points:
        where = (point["series"], point["step"])
        assert _finite(point["learning_rate"]) and isinstance(point["step"], int), where
        for metric in METRICS:
            assert _finite(point[metric.key]), (where, metric.key)
            if metric.interval:
                low, high = point[metric.key + CI_SUFFIX]
                assert _finite(low) and _finite(high) and low <= point[metric.key] <= high, (where, metric.key)
        if point["method"] != BASE:
            assert all(_finite(point[metric.key]) for metric in TRAINING_METRICS), where
    base = points[0]
    assert base["kl"] == 0.0 and base["win_rate"] == base["lc_win_rate"] == 0.5
    # Full fine-tuning's HE change is measured against the base weights, not against itself.
    assert all(p["he_change"] > 0 for p in points if p["method"] == "full")
    # RoPO's rotations keep the neuron angles (to rounding); LoRA's update does not.
    assert max(p["he_change"] for p in points if p["method"] == "ropo") < 1e-6 < min(
        p["he_change"] for p in points if p["method"] == "lora")
    assert all(p["kl"] > 0 for p in points if p["method"] != BASE)
    assert frontier["plots"] and all((out / item["file"]).stat().st_size > 0 for item in frontier["plots"])
    assert all(_finite(seconds) for seconds in frontier["seconds"].values())
    assert {"train/ropo-2025-seed0", "train/lora-seed1", "train/ropo-no-magnitude-seed0"} <= set(frontier["seconds"])
    rows = (out / SUMMARY_FILE).read_text().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {p['series']}" for p in points]
    # The paired comparisons as the README quotes them: a row per (rival, metric), a cell per sqrt(KL),
    # bold exactly where the interval excludes 0.
    said, table = (out / COMPARISONS_FILE).read_text().split("\n\n")
    assert said.splitlines()[0].startswith("- **against `")
    table = table.splitlines()
    assert table[0].startswith("| rival | metric | seeds | ropo-2025 − rival at sqrt(KL)")
    assert len(table) == 2 + len({(c["rival"], c["metric"]) for c in comparisons})
    resolved = sum(c["ci"][0] > 0 or c["ci"][1] < 0 for c in comparisons)
    assert sum(row.count("**") for row in table) == 2 * resolved

    # A rerun trains nothing and measures nothing: every piece comes from the runs and the cache.
    capsys.readouterr()
    started = time.perf_counter()
    assert ropo_main(command) == 0
    assert time.perf_counter() - started < first_seconds / 2  # relative: the CPU may be shared
    assert "0 pieces computed" in capsys.readouterr().out
    again = json.loads((out / "frontier.json").read_text())
    assert again["points"] == points and again["seconds"] == frontier["seconds"]

    # Killed after LoRA's last checkpoint, before its final save and its last point: the rerun
    # resumes that run (no extra step) and measures that one point again, to the same numbers.
    run = out / "runs" / "lora" / "seed-1"
    shutil.rmtree(run / "adapter")
    (run / "train_summary.json").unlink()
    [last] = (out / "points").glob("lora-seed1-step00003-*.json")
    last.unlink()
    assert ropo_main(command) == 0
    assert "2 pieces computed" in capsys.readouterr().out
    assert json.loads((run / "train_summary.json").read_text())["global_step"] == 3
    assert json.loads((out / "frontier.json").read_text())["points"] == points

    # A later session that has only the measured points (run folders are not committed): nothing
    # is trained or measured again, since each point keeps its training-side metrics.
    shutil.rmtree(out / "runs")
    assert ropo_main(command) == 0
    assert "0 pieces computed" in capsys.readouterr().out
    assert json.loads((out / "frontier.json").read_text())["points"] == points

    report, metrics = build_report([out], tmp_path / "report")
    page = report.read_text()
    assert "Frontier" in page and page.count("<img") == len(frontier["plots"])
    assert json.loads(metrics.read_text())["frontiers"] == [str(out)]


def test_verdicts_read_each_metric_from_its_interval_and_direction():
    """Ahead and behind follow the catalogue's direction (lower self-BLEU is ahead), a metric
    without a better side (length) is only different, and an interval holding 0 is level."""
    def entry(metric, sqrt_kl, difference, low, high):
        return {"reference": "ropo-2025", "rival": "lora", "metric": metric, "sqrt_kl": sqrt_kl,
                "difference": difference, "ci": [low, high], "seeds": [0, 1, 2]}

    comparisons = [entry("judge_score", 1.0, 0.05, 0.01, 0.09), entry("judge_score", 2.0, 0.02, -0.01, 0.05),
                   entry("self_bleu", 1.0, -2.0, -3.0, -1.0), entry("self_bleu", 2.0, 1.5, 0.5, 2.5),
                   entry("mean_length", 1.0, -8.0, -12.0, -4.0), entry("distinct_2", 1.0, 0.01, -0.01, 0.03)]
    assert verdicts_markdown(comparisons) == (
        "- **against `lora`** (seeds 0,1,2): Ahead in judge score at 1.00 (+0.05); self-BLEU at 1.00 (-2.0). "
        "Behind in self-BLEU at 2.00 (+1.5). Different (no better side) in mean length (tokens) at 1.00 (-8). "
        "Level in distinct-2.\n")
    assert comparisons_markdown(comparisons) == verdicts_markdown(comparisons) + "\n" + comparisons_table(comparisons)


def test_ablations_get_their_own_panel_beside_the_preset_they_change():
    from ropo.frontier.plots import panels

    def point(series: str, ablation: bool = False) -> dict:
        return {"series": series, "ablation": ablation, "kl": 1.0}

    methods_only = [{"series": BASE}, point("ropo-2025"), point("dpo")]
    assert panels(methods_only) == [("", ["ropo-2025", "dpo"])]
    with_ablations = [*methods_only, point("ropo-no-magnitude", True), point("ropo-all-linear", True)]
    (_, methods), (_, ablations) = panels(with_ablations)
    assert methods == ["ropo-2025", "dpo"] and ablations == ["ropo-2025", "ropo-no-magnitude", "ropo-all-linear"]
    # The measured steps: every checkpoint for a method at its first seed, every other one for an
    # ablation and for a later seed.
    plan = build_plan(methods=["ropo-2025", "ropo-no-magnitude"])
    steps = {(run.spec.name, run.seed): run.steps for run in plan.runs()}
    every, sparse = plan.budget.checkpoint_steps, plan.budget.checkpoint_steps[::2]
    assert steps == {("ropo-2025", 0): every, ("ropo-2025", 1): sparse, ("ropo-2025", 2): sparse,
                     ("ropo-no-magnitude", 0): sparse}
    assert sparse[0] == every[0] and sparse[-1] == every[-1]  # first and last are shared


#: The committed studies in the current format: ``frontier`` (three seeds, paired comparisons, split
#: retention: the README's results). ``frontier-v1`` (issue 13, seed 0, format 1) is kept as it was.
_STUDIES = Path(__file__).resolve().parents[1] / "docs" / "results"
_CURRENT = [path.parent for path in sorted(_STUDIES.glob("*/frontier.json"))
            if json.loads(path.read_text())["format"] == FRONTIER_FORMAT]


def test_readme_quotes_the_committed_study():
    """The README's frontier table is the committed study's summary.md, and a study in the current
    format renders exactly that table from its frontier.json: a number typed by hand, or a study
    rerun without updating the README, fails here."""
    readme = (_STUDIES.parents[1] / "README.md").read_text()
    assert _STUDIES / "frontier" in _CURRENT  # the README's results are a study in the current format
    for study in _CURRENT:
        frontier = json.loads((study / "frontier.json").read_text())
        table = summary_table(frontier["points"])
        assert (study / SUMMARY_FILE).read_text() == table and table in readme
        # The README's verdicts read from the paired comparisons: quoted as the JSON renders them.
        paired = comparisons_markdown(frontier["comparisons"])
        assert (study / COMPARISONS_FILE).read_text() == paired and paired in readme


@pytest.mark.parametrize("study", _CURRENT, ids=lambda path: path.name)
def test_the_committed_plots_regenerate_byte_identical(study):
    """The committed study's figures are what the code draws from its frontier.json, byte for byte."""
    from ropo.frontier.plots import frontier_figures, plot_file

    figures = frontier_figures(json.loads((study / "frontier.json").read_text())["points"])
    assert {title: (study / "plots" / plot_file(title)).read_bytes() == png for title, png in figures.items()} == \
        {title: True for title in figures}
