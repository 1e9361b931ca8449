"""``ropo demo``: the papers' comparison, reproduced on the embedded default with one command."""

from __future__ import annotations

import argparse
from pathlib import Path

#: Printed after every demo: its rows are single points that moved by different amounts (see the
#: KL column), so the comparison itself is the frontier study, committed with the repository.
FRONTIER_POINTER = (
    "[demo] each method above is one point at its usual learning rate, and the methods moved by different "
    "amounts (KL to base): a check of the pipeline, not the comparison. The comparison at equal KL is the "
    "frontier study: `ropo frontier` (several checkpoints per method, 95 % intervals); the measured study "
    "(three seeds, paired comparisons at matched KL) is committed in docs/results/frontier/ and summarised in the "
    "README (\"The KL frontier\")."
)


def _demo(args: argparse.Namespace) -> int:
    from ropo.demo.modes import METHODS, MODES
    from ropo.demo.run import run_demo

    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"ropo demo: error: unknown method(s) {unknown}; choose from {list(METHODS)}")
    overrides: dict[str, list[str]] = {}
    for item in args.set:
        method, sep, override = item.partition(":")
        if not sep or method not in methods or "=" not in override:
            raise SystemExit(f"ropo demo: error: --set {item!r}: expected METHOD:KEY=VALUE with METHOD one of {methods}")
        overrides.setdefault(method, []).append(override)
    mode = "quick" if args.quick else "full" if args.full else "default"
    result = run_demo(Path(args.out), MODES[mode], model=args.model, methods=methods, seed=args.seed, overrides=overrides)
    print(result.summary.read_text(encoding="utf-8"))
    print(f"[demo] report: {result.report}")
    print(f"[demo] metrics: {result.metrics}")
    print(FRONTIER_POINTER)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from ropo.demo.modes import METHODS

    demo = subparsers.add_parser(
        "demo",
        help="train RoPO, DPO and LoRA on the built-in task and report the comparison",
        description="Trains each method with the same data and schedule on the embedded default model, "
        "evaluates them with the task's judge, and writes report/report.html and metrics.json. "
        "Interrupted runs resume when the command is run again.",
    )
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few steps: a smoke test of the whole pipeline")
    size.add_argument("--full", action="store_true", help="train longer and evaluate every test prompt")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--model", default="default", help="base model (default: SmolLM2-135M-Instruct)")
    demo.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                      help="a recipe override for one method, as for ropo train (e.g. dpo:training.learning_rate=5e-5); repeatable")
    demo.set_defaults(func=_demo)
