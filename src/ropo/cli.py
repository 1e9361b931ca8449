"""The ``ropo`` command. Each sub-command lives with the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ropo.errors import RoPOError
from ropo.quiet import filter_cli_warnings, one_line_warnings

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
    with warnings.catch_warnings():
        filter_cli_warnings()
        one_line_warnings()
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown and not hasattr(args, "passthrough"):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if hasattr(args, "passthrough"):  # `ropo lm-eval ARGS...`: handed on unparsed
            args.passthrough = unknown
        try:
            return int(args.func(args) or 0)
        except RoPOError as error:
            print(f"ropo {args.command}: error: {error}", file=sys.stderr)
            return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
