"""``ropo data build``: build (or reuse) the demo task's preference dataset."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ropo.errors import RoPOConfigError
from ropo.demo_task.build import BuildSettings, build_dataset, cached_build, write_dataset
from ropo.demo_task.records import TaskDataError, load_prompts
from ropo.models.default import cache_root


def default_output_dir() -> Path:
    """Where ``ropo data build`` writes unless told otherwise: ``<cache>/data/demo_task``."""
    return cache_root() / "data" / "demo_task"


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="the built-in preference task's dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    build = data_commands.add_parser(
        "build",
        help="sample answers from a model, judge them and write (chosen, rejected) pairs",
        description="Sample answers to the task's prompts, score them with the task's judge and write "
        "train.jsonl, test.jsonl (pairs), test_prompts.jsonl and build.json. A complete build with the "
        "same model, prompts and settings is reused.",
    )
    build.add_argument("--model", default="default", help="model name or folder (default: SmolLM2-135M-Instruct; tiny:<arch> for a tiny random one)")
    build.add_argument("--prompts", default=None, help="prompt records JSONL (default: the shipped prompts.jsonl)")
    build.add_argument("--out", default=None, help=f"output folder (default: {default_output_dir()})")
    build.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    build.add_argument("--force", action="store_true", help="rebuild even if a matching build is there")
    defaults = BuildSettings()
    for setting in fields(BuildSettings):
        default = getattr(defaults, setting.name)
        build.add_argument(f"--{setting.name.replace('_', '-')}", type=type(default), default=default, help=f"(default: {default})")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from ropo.models.loading import load_base_model, load_tokenizer

    settings = BuildSettings(**{setting.name: getattr(args, setting.name) for setting in fields(BuildSettings)})
    records = load_prompts(args.prompts)
    if args.limit is not None:
        if args.limit < 1:
            raise RoPOConfigError(f"--limit must be at least 1, got {args.limit}")
        records = records[: args.limit]
    out = Path(args.out) if args.out else default_output_dir()
    info = None if args.force else cached_build(out, settings, args.model, records)
    if info is None:
        built = build_dataset(load_base_model(args.model), load_tokenizer(args.model), records, settings, args.model, progress=True)
        empty = [name for name, rows in built.splits.items() if not rows]
        if empty:
            raise TaskDataError(
                f"no pair was kept for split(s) {empty} ({len(records)} prompts, finished share "
                f"{built.info['finished_share']:.2f}): raise --num-samples or --max-new-tokens, or lower --min-margin"
            )
        write_dataset(out, built)
        info = built.info
        print(f"built {out} in {info['seconds']} s")
    else:
        print(f"reusing {out} (same model, prompts and settings; --force rebuilds)")
    print(json.dumps(info["stats"], indent=2))
    return 0
