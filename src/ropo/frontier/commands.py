"""``ropo frontier``: the KL-frontier study, a thin command over ``run_study``."""

from __future__ import annotations

import argparse

DEFAULT_OUT = "runs/frontier"
QUICK_OUT = "runs/frontier-quick"  # apart from the full study's: their runs have other recipes


def _frontier(args: argparse.Namespace) -> int:
    from ropo.frontier.plan import build_plan
    from ropo.frontier.study import run_study

    seeds = tuple(_seeds(args.seeds)) if args.seeds else None
    plan = build_plan(args.quick, args.methods.split(",") if args.methods else None, args.model, seeds)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = run_study(plan, out, progress=not args.no_progress, train_only=args.train_only)
    if result is None:
        print(f"[frontier] every run trained in {out}/runs (measure them: the same command without --train-only)")
        return 0
    print(f"[frontier] {result.computed} pieces computed, {result.reused} reused")
    print(f"[frontier] results: {result.frontier}")
    print(f"[frontier] plots: {result.frontier.parent / 'plots'}  (report: ropo report {result.frontier.parent})")
    return 0


def _seeds(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds: comma-separated integers, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    from ropo.frontier.plan import SERIES

    frontier = subparsers.add_parser(
        "frontier",
        help="the KL-frontier study: every method's checkpoints, judged and measured against sqrt(KL)",
        description="Trains each series (RoPO presets, plain DPO, LoRA, RoPO ablations) with the same data, "
        "steps, batch and β, at its usual learning rate times a per-method factor (full 10, LoRA 3, RoPO 1, "
        "measured to reach over-optimisation with overlapping KL ranges), long enough to over-optimise, "
        "and measures 5 checkpoints of each method and 3 of each RoPO ablation (and the base) on the demo task's held-out prompts: judge score, "
        "win rate and length-controlled win rate against the base, KL, length, diversity and QA retention, "
        "each with a 95 % bootstrap interval. Writes OUT/frontier.json and OUT/plots/. Every piece is cached: "
        "rerunning resumes an interrupted study and reuses what is done. The default study takes about 3 hours "
        "on a 2-core CPU (measured: the base 4.5 min, each checkpoint 3–4 min, each training run 8–15 min; "
        "all seven series); --methods runs a subset.",
    )
    frontier.add_argument("--quick", action="store_true",
                          help="a tiny random model, 3 checkpoints per series: a smoke test of the study (under a minute)")
    frontier.add_argument("--methods", default=None, metavar="SERIES,...",
                          help=f"comma-separated series to run (default: all of {','.join(SERIES)}; also any method of the "
                               "registry with a frontier factor that no series trains, e.g. oft or lora-r<k>)")
    frontier.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_OUT}; with --quick {QUICK_OUT})")
    frontier.add_argument("--model", default=None, help="base model (default: SmolLM2-135M-Instruct; with --quick tiny:llama)")
    frontier.add_argument("--seeds", default=None, metavar="S,...",
                          help="training seeds (default 0,1,2; with --quick 0): the compared series train at each, "
                               "the ablations at the first")
    frontier.add_argument("--train-only", action="store_true",
                          help="train every run a missing point needs, measure nothing (the measuring can follow later)")
    frontier.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    frontier.set_defaults(func=_frontier)
