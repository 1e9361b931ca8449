"""The ``ropo`` command. Each sub-command lives with the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys

from ropo.errors import RoPOError

#: Modules that expose ``register(subparsers)``; each adds its sub-commands and sets ``func``.
COMMAND_MODULES = (
    "ropo.training.commands",
    "ropo.adapter.commands",
    "ropo.evaluation.commands",
    "ropo.demo_task.commands",
    "ropo.demo.commands",
    "ropo.frontier.commands",
    "ropo.bench.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ropo", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RoPOError as error:
        print(f"ropo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
