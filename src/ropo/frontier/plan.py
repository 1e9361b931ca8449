"""The study's design: which runs are trained, how long, at which learning rate, and where they are measured.

Why a plan at all: one point per method compares methods that moved by different amounts (in the
committed demo RoPO's KL to the base was 5.4 nats, DPO's 0.96), so the learning rate, not the
method, decides the comparison. The study trains each method long enough to over-optimise and
measures several checkpoints along the way: each method becomes a curve of quality against
sqrt(KL(π‖π_ref)) (Gao et al. 2022; Rafailov et al. 2024, arXiv 2406.02900), and methods are
compared where their KL ranges overlap.

Fairness rules, kept by construction here (and tested):
- every series trains on the same data, steps, batch, schedule, β and seed;
- every series is checkpointed at the same steps;
- a method's learning rate is its usual rate (the demo's) times a factor per method, both in the
  method registry (``ropo.methods``; ``LEARNING_RATE_SCALES`` lists the factors), set so that each
  method's checkpoints reach the over-optimised regime and the methods' KL ranges overlap (a frontier compares methods at equal KL, so the rates are a
  way to span KL, not a setting to win with). The factors come from measurements, not from the
  results they produce:
  - full DPO at 5e-5 (the demo's 5e-6 × 10) for 60 steps of 4 pairs reached a training margin of
    6, KL 16 nats and a drop in QA retention (measured for issue 13): the regime the papers
    describe;
  - RoPO at its demo rate (2e-3) already moved furthest of the three in the demo (KL 5.4 after
    40 steps, against DPO's 0.96); a pilot at 2e-2 (× 10) had collapsed by its first checkpoint
    (step 12: KL 53 nats, judge score 0.28 against the base's 0.66, every answer at the length
    limit, QA accuracy 18 % against 44 %; kept in ``docs/results/frontier/pilot/``), so RoPO
    keeps × 1;
  - LoRA at 5e-4 reached KL 3.2 after 40 steps in the demo; × 3 puts its 60 steps between.

The RoPO ablations change one option of the ``ropo-2025`` preset each. "Givens only"
(``householder_reflections: 0``) is exactly the ``ropo-2024`` preset (bidirectional Givens plus
magnitudes), so that series serves as both and is trained once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropo.errors import RoPOError
from ropo.methods import DEFAULT_TARGET_MODULES, REGISTRY, find_method, get_method

#: Each method's usual learning rate is multiplied by its factor (both in the method registry):
#: rates that reach over-optimisation within the study's steps with overlapping KL ranges (see the
#: module docstring for the measurements behind them).
LEARNING_RATE_SCALES = {name: m.frontier_scale for name, m in REGISTRY.items() if m.frontier_scale is not None}
#: A warm-up (``Budget.warmup_ratio``), then a constant rate: under a decaying schedule the last
#: checkpoints bunch up at nearly the same KL, so fewer of them are distinct points of the curve.
LR_SCHEDULER = "constant_with_warmup"
BETA = 0.1
LOSS_TYPE = "sigmoid"
#: The demo task's training pairs (shipped with the package, so the quick mode finds them from any
#: folder; it trains on its first few rows).
DATA = "demo"
QUICK_MODEL = "tiny:llama"
DEFAULT_MODEL = "default"

if TYPE_CHECKING:
    from ropo.training.spec import RunSpec

_QV = list(DEFAULT_TARGET_MODULES)
#: The preset every ablation changes one option of (compared with it in the ablation panels).
ABLATION_REFERENCE = "ropo-2025"


@dataclass(frozen=True)
class SeriesSpec:
    """One curve of the study: a method with its adapter options, trained once."""

    name: str
    method: str  # a method of the registry (``ropo.methods``), as ``ropo train`` calls it
    adapter: dict[str, Any]
    description: str
    #: An ablation is compared with ``ropo-2025`` at the same budget (same steps, rate and
    #: checkpoints), measured at fewer of its checkpoints (``Budget.ablation_every``): the issue asks
    #: for ablations "at least at one matched budget", and each measured checkpoint costs ~3 min.
    ablation: bool = False


#: Every series the study knows, in the order it trains and plots them.
SERIES: dict[str, SeriesSpec] = {
    spec.name: spec
    for spec in (
        SeriesSpec("ropo-2025", "ropo", {"preset": "ropo-2025", "target_modules": _QV},
                   "RoPO, EMNLP 2025 preset: Givens + 2 Householder reflections + magnitudes, q/v"),
        SeriesSpec("ropo-2024", "ropo", {"preset": "ropo-2024", "target_modules": _QV},
                   "RoPO, 2024 preset (= ablation 'Givens only': no Householder reflections), q/v"),
        SeriesSpec("dpo", "full", {}, "plain DPO: full fine-tuning of every weight"),
        SeriesSpec("lora", "lora", {"target_modules": _QV}, "LoRA r=16, q/v"),
        SeriesSpec("ropo-no-magnitude", "ropo", {"preset": "ropo-2025", "magnitude": False, "target_modules": _QV},
                   "ablation: ropo-2025 without the neuron magnitudes", ablation=True),
        SeriesSpec("ropo-householder-only", "ropo", {"preset": "ropo-2025", "givens_layout": "none", "target_modules": _QV},
                   "ablation: ropo-2025 without Givens rotations (Householder reflections only)", ablation=True),
        SeriesSpec("ropo-all-linear", "ropo", {"preset": "ropo-2025", "target_modules": "all-linear"},
                   "ablation: ropo-2025 on every linear layer instead of q/v", ablation=True),
    )
}


@dataclass(frozen=True)
class Budget:
    """How long every series trains and how much each checkpoint is evaluated."""

    max_steps: int
    save_steps: int  # a checkpoint, hence a point of the curve, every this many steps
    batch_size: int
    max_length: int
    data_rows: int | None  # training pairs used (None: all)
    eval_prompts: int  # held-out prompts of the demo task
    samples_per_prompt: int
    max_new_tokens: int
    generation_batch_size: int
    probe_items: int | None  # questions of the large QA probe (None: all 436)
    probe_max_new_tokens: int  # greedy answer length on the probe (its answers are a few words)
    #: Share of the steps spent warming up. The warm-up's first step has rate 0, so a 3-step run
    #: with any warm-up would have a first checkpoint equal to the base.
    warmup_ratio: float
    #: An ablation series is measured at every this-many-th checkpoint (the first and the last
    #: included when the count allows): trained on the same budget, measured more sparsely.
    ablation_every: int = 1

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        return tuple(range(self.save_steps, self.max_steps + 1, self.save_steps))

    def measured_steps(self, spec: SeriesSpec) -> tuple[int, ...]:
        """The checkpoints of ``spec`` that become points of its curve."""
        return self.checkpoint_steps[:: self.ablation_every] if spec.ablation else self.checkpoint_steps


#: Sized for a 2-core CPU and SmolLM2-135M-Instruct: 60 steps × 4 pairs is 1.5 epochs of the task's
#: 155 pairs, 5 checkpoints per series (3 of them, steps 12, 36 and 60, measured for an ablation).
#: The held-out prompts are 32 of the 62 test prompts, spread
#: over every kind. Measured on the whole study (docs/results/frontier): the base 261 s, a checkpoint
#: 188–377 s (median about 210 s), a training run 480–885 s (all-linear RoPO 843 s): 3.1 h in all,
#: 75 min of it training.
DEFAULT_BUDGET = Budget(max_steps=60, save_steps=12, batch_size=4, max_length=192, data_rows=None,
                        eval_prompts=32, samples_per_prompt=2, max_new_tokens=96, generation_batch_size=16,
                        probe_items=None, probe_max_new_tokens=16, warmup_ratio=0.1, ablation_every=2)
#: A tiny random model on the first 6 demo pairs: only checks that the whole study runs (a test, seconds).
#: Its answers are random bytes, so they need 64 tokens to hold the few spaces that word 3-grams
#: (repetition) need.
QUICK_BUDGET = Budget(max_steps=3, save_steps=1, batch_size=2, max_length=128, data_rows=6,
                      eval_prompts=4, samples_per_prompt=2, max_new_tokens=64, generation_batch_size=8,
                      probe_items=6, probe_max_new_tokens=8, warmup_ratio=0.0)


@dataclass(frozen=True)
class StudyPlan:
    model: str
    data: str
    budget: Budget
    seed: int
    series: tuple[SeriesSpec, ...] = field(default_factory=tuple)

    def learning_rate(self, spec: SeriesSpec) -> float:
        method = get_method(spec.method)
        return method.learning_rate * method.frontier_scale

    def overrides(self, spec: SeriesSpec, run_dir: Path) -> dict[str, Any]:
        """The recipe of ``spec``'s run as ``ropo train`` overrides: everything but the method, its
        adapter options and its learning rate is the same for every series."""
        budget = self.budget
        return {
            "output_dir": str(run_dir), "method": spec.method, "seed": self.seed,
            "model.name_or_path": self.model, "data.train": self.data, "data.max_rows": budget.data_rows,
            "adapter": spec.adapter,
            "training.beta": BETA, "training.loss_type": LOSS_TYPE, "training.learning_rate": self.learning_rate(spec),
            "training.lr_scheduler_type": LR_SCHEDULER, "training.warmup_steps": budget.warmup_ratio,
            "training.max_steps": budget.max_steps, "training.per_device_train_batch_size": budget.batch_size,
            "training.max_length": budget.max_length, "training.logging_steps": 1,
            "training.save_steps": budget.save_steps, "training.gradient_checkpointing": False,
            "training.use_cpu": True,
            # The study measures lengths and HE itself at every checkpoint; the run's own samples are off.
            "sample_every": 0, "metrics_every": 0,
        }

    def run_spec(self, spec: SeriesSpec, run_dir: Path) -> RunSpec:
        from ropo.training.spec import load_spec

        return load_spec(None, settings=self.overrides(spec, run_dir))

    def describe(self) -> dict[str, Any]:
        """The plan as it is written into ``frontier.json``."""
        return {
            "learning_rate_scales": {m: LEARNING_RATE_SCALES[m] for m in sorted({s.method for s in self.series})}, "lr_scheduler": LR_SCHEDULER,
            "beta": BETA, "loss_type": LOSS_TYPE, "checkpoint_steps": list(self.budget.checkpoint_steps),
            "series": {s.name: {"method": s.method, "adapter": s.adapter, "learning_rate": self.learning_rate(s),
                                "description": s.description, "measured_steps": list(self.budget.measured_steps(s))}
                       for s in self.series},
        }


class PlanError(RoPOError, ValueError):
    """A series name the study does not know."""


def series_spec(name: str) -> SeriesSpec | None:
    """The study's series ``name``, or a series for any registry method with a frontier factor that no
    study series trains (``oft``, ``lora-r<k>``): its defaults on q/v. None if there is neither."""
    if name in SERIES:
        return SERIES[name]
    method = find_method(name)
    if method is None or method.frontier_scale is None or method.name in {s.method for s in SERIES.values()}:
        return None
    return SeriesSpec(method.name, method.name, {"target_modules": _QV} if method.has_adapter else {}, method.description)


def build_plan(quick: bool = False, methods: list[str] | None = None, model: str | None = None, seed: int = 0) -> StudyPlan:
    """The default study (SmolLM2 on the demo task's pairs) or the quick one (a tiny random model);
    ``methods`` picks series by name (default: all of them)."""
    names = list(SERIES) if not methods else methods
    unknown = [name for name in names if series_spec(name) is None]
    if unknown:
        extra = [name for name in (*REGISTRY, "lora-r<k>") if name in REGISTRY and series_spec(name) or name == "lora-r<k>"]
        raise PlanError(f"unknown series {unknown}; choose from {', '.join([*SERIES, *extra])}")
    return StudyPlan(
        model=model or (QUICK_MODEL if quick else DEFAULT_MODEL),
        data=DATA,
        budget=QUICK_BUDGET if quick else DEFAULT_BUDGET,
        seed=seed,
        series=tuple(series_spec(name) for name in dict.fromkeys(names)),
    )
