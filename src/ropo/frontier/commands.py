"""``ropo frontier``: the KL-frontier study, a thin command over ``run_study``."""

from __future__ import annotations

import argparse

DEFAULT_OUT = "runs/frontier"
QUICK_OUT = "runs/frontier-quick"  # apart from the full study's: their runs have other recipes


def _frontier(args: argparse.Namespace) -> int:
    from ropo.evaluation.commands import lm_eval_tasks
    from ropo.frontier.plan import build_plan
    from ropo.frontier.study import run_study

    seeds = tuple(_seeds(args.seeds)) if args.seeds else None
    plan = build_plan(args.quick, args.methods.split(",") if args.methods else None, args.model, seeds,
                      lm_eval_tasks(args.lm_eval), args.lm_eval_limit)
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
    from ropo.evaluation.commands import positive_int
    from ropo.frontier.plan import DEFAULT_SERIES

    frontier = subparsers.add_parser(
        "frontier",
        help="the KL-frontier study: every method's checkpoints, judged and measured against sqrt(KL)",
        description="Trains each series (RoPO, plain DPO, LoRA r=16, a LoRA with RoPO's parameter count, PEFT's "
        "OFT, and RoPO's presets and ablations) with the same data, steps, batch and β, at its usual learning rate "
        "times a per-method factor (measured, from KL alone, to reach over-optimisation with overlapping KL ranges), "
        "at seeds 0, 1 and 2 (the ablations at 0), and measures its checkpoints (and the base) on the same held-out "
        "prompts, probe items and text passages: judge score, win rates against the base, KL, length, diversity, "
        "knowledge (plain QA, multiple choice, answer likelihood), QA under a brevity instruction, text likelihood "
        "and degeneration, each with a 95 % bootstrap interval; then RoPO against every rival at matched sqrt(KL), "
        "paired over items and seeds. Writes OUT/frontier.json (points and comparisons) and OUT/plots/. Every piece "
        "is cached: rerunning resumes an interrupted study and reuses what is done. --methods runs a subset.",
    )
    frontier.add_argument("--quick", action="store_true",
                          help="a tiny random model, 3 checkpoints per series: a smoke test of the study (under a minute)")
    frontier.add_argument("--methods", default=None, metavar="SERIES,...",
                          help=f"comma-separated series to run (default: all of {','.join(DEFAULT_SERIES)}; also any method of the "
                               "registry with a frontier factor that no series trains, e.g. lora-r8)")
    frontier.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_OUT}; with --quick {QUICK_OUT})")
    frontier.add_argument("--model", default=None, help="base model (default: SmolLM2-135M-Instruct; with --quick tiny:llama)")
    frontier.add_argument("--seeds", default=None, metavar="S,...",
                          help="training seeds (default 0,1,2; with --quick 0): the compared series train at each, "
                               "the ablations at the first")
    frontier.add_argument("--train-only", action="store_true",
                          help="train every run a missing point needs, measure nothing (the measuring can follow later)")
    frontier.add_argument("--lm-eval", default=None, metavar="TASKS",
                          help="comma-separated lm-evaluation-harness tasks scored at every point as well, e.g. "
                               "mmlu,arc_easy or ropo_qa (needs ropo[eval]; asking for tasks measures every point again)")
    frontier.add_argument("--lm-eval-limit", type=positive_int, default=None, metavar="N", help="examples per lm-eval task")
    frontier.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    frontier.set_defaults(func=_frontier)
