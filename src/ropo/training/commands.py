"""``ropo train`` and ``ropo merge``."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from ropo.errors import RoPOInterrupted


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) ends training as Ctrl-C does: with one line saying
    what was kept, not silently."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _close_progress_bars() -> None:
    """Close the trainer's progress bars now: left open, tqdm redraws them at exit, after the
    line that says how to go on."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _interrupted(args: argparse.Namespace, run_dir: Path) -> RoPOInterrupted:
    """The one line an interrupted ``ropo train`` ends with: what was kept and the command that goes on."""
    from ropo.training.run import newest_complete_checkpoint

    command = " ".join(["ropo train", args.recipe, *args.overrides])
    kept = newest_complete_checkpoint(run_dir)
    if kept is None:
        return RoPOInterrupted(f"interrupted before the first complete checkpoint in {run_dir}; start again with: "
                               f"{command} --restart")
    return RoPOInterrupted(f"interrupted; {kept} is the last complete checkpoint; continue with: {command} --resume")


def _end_process_group() -> None:
    """End the DDP process group of a ``ropo train`` that accelerate launched, before exiting. Left
    to the interpreter's exit, gloo's threads can abort a rank that trained and saved correctly
    ("terminate called without an active exception", seen once under load); torch asks for this
    call at the end of every distributed program."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(args: argparse.Namespace) -> int:
    from ropo.training.run import train
    from ropo.training.spec import load_spec

    spec = load_spec(args.recipe, args.overrides)
    try:
        with _sigterm_as_interrupt():
            result = train(spec, resume=args.resume, force=args.force, restart=args.restart)
    except KeyboardInterrupt:
        _close_progress_bars()
        raise _interrupted(args, Path(spec.recipe.output_dir)) from None
    _end_process_group()
    if result.finished:
        print(f"run in {result.run_dir} had already finished; nothing was changed")
    else:
        print(f"run written to {result.run_dir}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from ropo.training.merge import merge_to_directory

    out = merge_to_directory(args.adapter_dir, args.base, args.out, args.dtype, force=args.force)
    print(f"merged model written to {out}, its weights in {args.dtype} (--dtype; whatever the base was stored in)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from ropo.models.loading import DTYPES

    train = subparsers.add_parser(
        "train",
        help="align a model with DPO (RoPO or a baseline) from a YAML recipe",
        description="Train with DPO. Overrides use dotted keys: training.beta=0.2 method=lora adapter.preset=ropo-2024",
    )
    train.add_argument("recipe", help="YAML recipe (see configs/)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in output_dir from its last complete checkpoint (a finished run is left as it is)")
    train.add_argument("--restart", action="store_true",
                       help="discard the run in output_dir (its checkpoints, metrics, data and weights; other files are kept) "
                            "and start again from step 0, e.g. after a crash before the first checkpoint")
    train.add_argument("--force", action="store_true",
                       help="write into a non-empty output_dir that holds no run, or --resume although the recipe or data changed")
    train.set_defaults(func=_train)

    merge = subparsers.add_parser("merge", help="fold a RoPO adapter into its base and save a plain model")
    merge.add_argument("adapter_dir")
    merge.add_argument("--base", required=True, help="base model (folder, hub id, default, tiny:<arch>)")
    merge.add_argument("--out", required=True, help="output folder (new, empty, or an earlier merge's)")
    merge.add_argument("--force", action="store_true",
                       help="replace --out even if it is a file or a non-empty folder not written by ropo merge "
                            "(a folder holding the adapter or its run is never replaced)")
    merge.add_argument("--dtype", default="float32", choices=[name for name in DTYPES if name != "auto"])
    merge.set_defaults(func=_merge)
