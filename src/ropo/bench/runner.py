"""``ropo bench``'s main job: every method on every (model, targets) configuration, as result rows."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ropo.bench.environment import environment
from ropo.bench.measure import MEMORY_MEASURE, RunSettings, measure_memory, time_methods
from ropo.bench.methods import INFERENCE_ONLY, METHODS, method_settings
from ropo.bench.models import model_info, model_spec
from ropo.bench.report import add_ratios


@dataclass
class BenchPlan:
    """What to run. ``layers`` maps a model name to its layer count (missing: the real count)."""

    models: list[str] = field(default_factory=lambda: ["smollm2-135m", "llama-3.2-1b"])
    targets: list[str] = field(default_factory=lambda: ["q,v", "all-linear"])
    methods: list[str] = field(default_factory=lambda: [m for m in METHODS if m not in INFERENCE_ONLY])
    layers: dict[str, int] = field(default_factory=dict)
    batch_size: int = 2
    seq_len: int = 512
    steps: int = 5
    warmup: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    memory: bool = True
    memory_steps: int = 2
    mode: str = "train"


QUICK_PLAN = BenchPlan(
    models=["smollm2-135m"], targets=["q,v"], layers={"smollm2-135m": 2},
    batch_size=1, seq_len=128, steps=3, warmup=1, memory_steps=1,
)


def run_bench(plan: BenchPlan, threads: int | None = None) -> list[dict]:
    """Measure every method of ``plan`` and return one row per (model, targets, method)."""
    configs = [(m, t) for m in plan.models for t in plan.targets]
    per_config = len(plan.methods) * (plan.warmup + plan.steps + (1 if plan.memory else 0))
    env = environment(plan.device)
    rows = []
    with tqdm(total=len(configs) * per_config, desc="ropo bench", unit="step", file=sys.stderr) as bar:
        for model, targets in configs:
            layers = plan.layers.get(model, model_spec(model).num_hidden_layers)
            settings = RunSettings(
                model, layers, targets, plan.batch_size, plan.seq_len, plan.steps, plan.warmup,
                plan.device, plan.dtype, plan.mode,
            )

            def advance(method: str, where: str = f"{model} {targets}") -> None:
                bar.set_postfix_str(f"{where}: {method}")
                bar.update(1)

            timings = time_methods(settings, plan.methods, advance)
            for method in plan.methods:
                row = {
                    "method": method, "model": model, "targets": targets, "device": plan.device,
                    "mode": plan.mode, "dtype": plan.dtype, **timings[method],
                    "peak_memory_bytes": None, "train_memory_bytes": None,
                    "memory_measure": None,
                    "batch_size": plan.batch_size, "seq_len": plan.seq_len,
                    "tokens_per_step": plan.batch_size * plan.seq_len, "steps": plan.steps,
                    "model_config": model_info(model_spec(model), layers),
                    "method_config": method_settings(method),
                    "environment": env,
                }
                if plan.memory:
                    row.update(measure_memory(settings, method, plan.memory_steps, threads))
                    row["memory_measure"] = MEMORY_MEASURE["cuda" if plan.device.startswith("cuda") else "cpu"]
                    advance(method, f"{model} {targets} memory")
                rows.append(row)
    return add_ratios(rows)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
