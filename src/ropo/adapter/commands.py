"""``ropo convert-adapter``: ropo 0.1's adapter format to PEFT's, once per adapter."""

from __future__ import annotations

import argparse


def _convert(args: argparse.Namespace) -> int:
    from ropo.adapter.legacy import convert_legacy_adapter

    out = convert_legacy_adapter(args.old_dir, args.new_dir)
    print(f"converted adapter written to {out} (load it with peft.PeftModel.from_pretrained)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert-adapter", help="rewrite an adapter saved by ropo 0.1 in PEFT's format (the tensors are unchanged)"
    )
    convert.add_argument("old_dir", help="the ropo 0.1 adapter folder (adapter_config.json with a 'modules' manifest)")
    convert.add_argument("new_dir", help="a new folder for the converted adapter")
    convert.set_defaults(func=_convert)
