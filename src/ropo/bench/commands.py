"""``ropo bench``: step time and peak memory of RoPO and PEFT's tuners, or rotation-only sweeps."""

from __future__ import annotations

import argparse
import dataclasses

import torch

from ropo.errors import RoPOConfigError


def _layers(values: list[str]) -> dict[str, int]:
    """``--layers 4`` (every model) or ``--layers smollm2-135m=8 llama-3.2-1b=2``."""
    from ropo.bench.models import MODEL_SPECS

    layers: dict[str, int] = {}
    for value in values:
        name, _, count = value.rpartition("=")
        try:
            number = int(count)
        except ValueError:
            raise RoPOConfigError(f"--layers: {value!r} is not N or MODEL=N") from None
        for model in [name] if name else list(MODEL_SPECS):
            layers[model] = number
    return layers


def _run(args: argparse.Namespace) -> int:
    from ropo.bench.methods import METHODS, TARGETS, is_method, trains_every_weight
    from ropo.bench.models import model_spec
    from ropo.bench.report import table, write_json
    from ropo.bench.runner import QUICK_PLAN, BenchPlan, default_device, run_bench
    from ropo.bench.sweeps import depth_sweep, sweep_table, width_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RoPOConfigError(f"--device {device}: no CUDA device is available")
    if args.sweep:
        tokens, repeats = args.tokens or (512 if args.quick else 1024), args.steps or (3 if args.quick else 7)
        widths = (512, 1024, 2048) if args.quick else None
        rows = []
        if args.sweep in ("width", "all"):
            rows += width_sweep(tokens, repeats, device, **({"widths": widths} if widths else {}))
        if args.sweep in ("depth", "all"):
            rows += depth_sweep(tokens, repeats, device, **({"dim": 1024} if args.quick else {}))
        print(sweep_table(rows))
    else:
        plan = dataclasses.replace(QUICK_PLAN) if args.quick else BenchPlan()
        for name in ("models", "targets", "methods"):
            if getattr(args, name):
                setattr(plan, name, getattr(args, name))
        for model in plan.models:
            model_spec(model)
        unknown = [m for m in plan.methods if not is_method(m)] + [t for t in plan.targets if t not in TARGETS]
        if unknown:
            raise RoPOConfigError(f"unknown method(s)/targets {unknown}; methods: {METHODS}, targets: {list(TARGETS)}")
        if args.layers:
            plan.layers = {**plan.layers, **_layers(args.layers)}
        for name in ("batch_size", "seq_len", "steps", "warmup"):
            value = getattr(args, name)
            if value is not None:
                if value < (0 if name == "warmup" else 1):
                    raise RoPOConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
                setattr(plan, name, value)
        plan.device, plan.memory = device, not args.no_memory
        if args.inference:
            plan.mode = "inference"
            plan.methods = [m for m in plan.methods if not trains_every_weight(m)]  # no adapter: the floor
        plan.dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        rows = run_bench(plan, args.threads)
        print(table(rows))
    if args.json:
        print(f"results written to {write_json(args.json, rows)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="time and measure RoPO against PEFT's LoRA, DoRA, OFT, HRA and BOFT",
        description="Train a few steps of every method on a model built from a config and print "
        "ms/step (median), the ratios to LoRA and to the frozen-model floor, peak memory and "
        "trainable parameters. With --sweep, time one rotation alone against its width or depth.",
    )
    bench.add_argument("--quick", action="store_true", help="a small run (SmolLM2 shape, 2 layers, q,v) in under 2 minutes on a CPU")
    bench.add_argument("--sweep", choices=["width", "depth", "all"], help="rotation-only sweep instead of the method comparison")
    bench.add_argument("--models", nargs="+", help="model shapes (smollm2-135m, llama-3.2-1b, llama-3-8b)")
    bench.add_argument("--targets", nargs="+", help="'q,v' and/or 'all-linear'")
    bench.add_argument("--methods", nargs="+", help="subset of floor lora dora oft hra boft ropo ropo_fast ropo_fused full, and ropo_merged (with --inference)")
    bench.add_argument("--layers", nargs="+", help="layers to build: N for every model or MODEL=N (default: the real count)")
    bench.add_argument("--batch-size", type=int)
    bench.add_argument("--seq-len", type=int)
    bench.add_argument("--steps", type=int, help="timed steps per method (sweeps: repeats per point)")
    bench.add_argument("--warmup", type=int, help="untimed steps per method first")
    bench.add_argument("--tokens", type=int, help="rows per rotation in sweeps")
    bench.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    bench.add_argument("--dtype", choices=["float32", "bfloat16"], help="model dtype (default: float32 on CPU, bfloat16 on GPU)")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    bench.add_argument("--inference", action="store_true", help="time forward passes without gradients (adapters unmerged) instead of training steps")
    bench.add_argument("--no-memory", action="store_true", help="skip the per-method peak-memory processes")
    bench.add_argument("--json", metavar="FILE", help="also write the result rows to FILE")
    bench.set_defaults(func=_run)
