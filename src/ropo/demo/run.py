"""``run_demo``: train RoPO, DPO and LoRA on the built-in task, evaluate them with the task's
judge, and write the report and ``metrics.json`` (one object per method, plus ``base``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropo.layout import DEMO_METRICS_FILE, DEMO_SUMMARY_FILE, FRONTIER_FILE
from ropo.demo.modes import METHODS, DemoMode
from ropo.io import atomic_write_text
from ropo.methods import DEFAULT_TARGET_MODULES, get_method
from ropo.metrics.catalogue import CI_SUFFIX
from ropo.metrics.energy import HE_CHANGE

if TYPE_CHECKING:
    from ropo.evaluation import Evaluation
    from ropo.training.spec import RunSpec

#: The frontier studies committed with the project (present in a source checkout, where ``make demo``
#: runs): the demo's report shows them beside the newcomer's own pipeline check, marked as such.
#: ``frontier``: the multi-seed study (three seeds, paired comparisons, split retention; the README's
#: results). The first, seed-0 study it supersedes (``frontier-v1``) is not shown.
COMMITTED_STUDIES = tuple(Path(__file__).resolve().parents[3] / "docs" / "results" / name
                          for name in ("frontier",))
#: The contract other tools read: every method (and the base) has these, each a number.
CONTRACT_KEYS = ("win_rate", "mean_length", "distinct_2", "self_bleu", "choice_accuracy", "he_change",
                 "trainable_params", "train_seconds")
#: What ``metrics.json`` keeps of each model's ``eval.json`` metrics, under the same (catalogue) keys.
EVAL_KEYS = ("win_rate", "lc_win_rate", "judge_score", "mean_length", "hit_limit_rate", "distinct_2", "self_bleu",
             "choice_accuracy", "answer_log_likelihood", "brevity_accuracy", "text_log_likelihood", "kl", HE_CHANGE,
             "orthogonality_error")


@dataclass
class DemoResult:
    report: Path
    metrics: Path
    summary: Path


def demo_spec(method: str, mode: DemoMode, model: str, output_dir: Path, seed: int, extra: Sequence[str] = ()) -> RunSpec:
    """One method's run: the same data, steps, batch, schedule and β for every method, then
    ``extra`` overrides (``key=value``, as for ``ropo train``) for this method only."""
    from ropo.training.spec import load_spec

    trained_as = get_method(method)
    settings = {
        "output_dir": str(output_dir), "method": trained_as.name, "seed": seed,
        "model.name_or_path": model, "data.train": "demo",
        # Only the pairs the steps will reach: the reference log-probs are computed for every row.
        "data.max_rows": mode.max_steps * mode.batch_size,
        "adapter": {"target_modules": list(DEFAULT_TARGET_MODULES)} if trained_as.has_adapter else {},
        "training.beta": 0.1, "training.loss_type": "sigmoid", "training.learning_rate": trained_as.learning_rate,
        "training.lr_scheduler_type": "cosine", "training.warmup_steps": 0.1,
        "training.max_steps": mode.max_steps, "training.per_device_train_batch_size": mode.batch_size,
        "training.max_length": mode.max_length, "training.logging_steps": 1, "training.save_steps": mode.save_steps,
        "training.gradient_checkpointing": False, "training.use_cpu": True,
        # Generation lengths twice per run (4 prompts; on a CPU a sample costs about a step): the
        # fewest that make "length over training" a line rather than one dot per run.
        "sample_every": max(1, mode.max_steps // 2), "sample_prompts": 4, "sample_max_new_tokens": mode.max_new_tokens,
        "metrics_every": max(1, mode.max_steps // 2),
    }
    return load_spec(None, list(extra), settings)


def train_all(
    methods: Sequence[str], mode: DemoMode, model: str, out: Path, seed: int,
    overrides: dict[str, list[str]] | None = None,
) -> dict[str, Path]:
    """Train each method unless its run already finished; an interrupted run resumes.

    A finished run made with other settings is never reused: that is an error naming them.
    """
    from ropo.training.reuse import train_or_reuse

    runs = {}
    for method in methods:
        run_dir = out / "runs" / method
        train_or_reuse(demo_spec(method, mode, model, run_dir, seed, (overrides or {}).get(method, ())), method, "demo")
        runs[method] = run_dir
    return runs


def demo_evaluation(mode: DemoMode, seed: int) -> Evaluation:
    """The task's test prompts, the task's judge, the shipped QA probe and held-out text, as ``mode`` sizes them."""
    from ropo.demo_task import held_out_records
    from ropo.demo_task.task_judge import TaskJudge
    from ropo.evaluation import Evaluation, Prompt, SamplingSettings, load_qa_probe
    from ropo.evaluation.retention import BREVITY_MAX_NEW_TOKENS

    prompts = [Prompt(id=r["id"], turns=(r["prompt"],), dataset="ropo-demo") for r in held_out_records(mode.eval_prompts)]
    settings = SamplingSettings(max_new_tokens=mode.max_new_tokens, samples_per_prompt=mode.samples_per_prompt, seed=seed)
    return Evaluation(prompts, settings, TaskJudge(), load_qa_probe()[: mode.probe_items], BREVITY_MAX_NEW_TOKENS,
                      mode.text_passages)


def evaluate_all(runs: dict[str, Path], mode: DemoMode, model: str, out: Path, seed: int) -> dict[str, dict[str, Any]]:
    """Evaluate the base and every run on the task's test prompts; the contract's metrics per method."""
    from ropo.evaluation import Candidate, evaluate_models
    from ropo.evaluation.measure import measure_energy
    from ropo.models.loading import load_base_model, load_tokenizer
    from ropo.models.runs import load_run

    evaluation = demo_evaluation(mode, seed)
    base = Candidate("base", load_base_model(model, "float32", seed).eval(), load_tokenizer(model), source=model, method="base")
    loaded = {method: load_run(path) for method, path in runs.items()}
    candidates = [
        Candidate(method, run.model, run.tokenizer, source=str(runs[method]), method=run.method,
                  base_model=None if get_method(run.method).has_adapter else base.model)
        for method, run in loaded.items()
    ]
    results = {r.name: r for r in evaluate_models(candidates, evaluation, out / "eval", baseline=base,
                                                  prompt_source="ropo demo task (test split)")}
    summary: dict[str, dict[str, Any]] = {"base": {
        # Its win rates are against its own answers (every pair a tie): the line the others are read against.
        **_kept(results["base"].metrics),
        # The same statistic as the tuned rows: 0 to rounding, since the base is compared with itself.
        HE_CHANGE: measure_energy(base.model, base.model, evaluation)[0][HE_CHANGE],
        "trainable_params": 0,
        "train_seconds": 0.0,
    }}
    for method in loaded:
        trained = json.loads((runs[method] / "train_summary.json").read_text())
        summary[method] = {**_kept(results[method].metrics), "trainable_params": trained["trainable_params"],
                           "train_seconds": trained["train_seconds"]}
    return summary


def _kept(metrics: dict[str, Any]) -> dict[str, Any]:
    """``EVAL_KEYS`` of one model's eval.json metrics, with their intervals where they have one."""
    return {key: metrics[key] for name in EVAL_KEYS for key in (name, name + CI_SUFFIX) if key in metrics}


#: The summary table's columns: (key in metrics.json, header, format).
SUMMARY_COLUMNS = (
    ("win_rate", "win rate vs base", ".1%"),
    ("lc_win_rate", "LC win rate vs base", ".1%"),
    ("judge_score", "judge score", ".3f"),
    ("mean_length", "mean length (tokens)", ".1f"),
    ("hit_limit_rate", "hit length limit", ".0%"),
    ("distinct_2", "distinct-2", ".3f"),
    ("self_bleu", "self-BLEU", ".1f"),
    ("choice_accuracy", "QA multiple choice", ".1%"),
    ("answer_log_likelihood", "QA answer log-lik. (nats/token)", ".3f"),
    ("brevity_accuracy", "QA under brevity instruction", ".1%"),
    ("text_log_likelihood", "text log-lik. (nats/token)", ".3f"),
    ("kl", "KL to base", ".3g"),
    ("he_change", "HE change (mean abs, rel.)", ".1e"),
    ("trainable_params", "trainable params", ",d"),
    ("train_seconds", "train time (s)", ".0f"),
)


def summary_table(summary: dict[str, dict[str, Any]]) -> str:
    """``metrics.json`` as a markdown table, one row per method ("–" where a value does not apply)."""
    lines = ["| method | " + " | ".join(header for _, header, _ in SUMMARY_COLUMNS) + " |",
             "|---|" + "---:|" * len(SUMMARY_COLUMNS)]
    for name, values in summary.items():
        cells = ["–" if values.get(key) is None else format(values[key], fmt) for key, _, fmt in SUMMARY_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_demo(
    out: Path, mode: DemoMode, model: str = "default", methods: Sequence[str] = tuple(METHODS), seed: int = 0,
    overrides: dict[str, list[str]] | None = None,
) -> DemoResult:
    """Train, evaluate, report. ``overrides`` maps a method to extra recipe overrides for it."""
    from ropo.evaluation import build_report

    runs = train_all(methods, mode, model, out, seed, overrides)
    summary = evaluate_all(runs, mode, model, out, seed)
    studies = [study for study in COMMITTED_STUDIES if (study / FRONTIER_FILE).is_file()]
    report, _ = build_report([*runs.values(), out / "eval"], out / "report", committed_studies=studies)
    metrics_path = atomic_write_text(out / DEMO_METRICS_FILE, json.dumps(summary, indent=2) + "\n")
    table = atomic_write_text(out / DEMO_SUMMARY_FILE, summary_table(summary))
    return DemoResult(report, metrics_path, table)
