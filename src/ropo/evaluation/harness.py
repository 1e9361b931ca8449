"""EleutherAI's lm-evaluation-harness with RoPO registered (the optional ``ropo[eval]`` extra).

``lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER`` loads the adapter with PEFT's
``PeftModel.from_pretrained``; a process that never imported ``ropo`` does not know the ROPO PEFT
type. ``ropo lm-eval ARGS...`` is lm-eval's own command line in a process that has, with ropo's
tasks (the QA probe, ``TASKS_DIR``) on the include path.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ropo.evaluation.errors import EvaluationError

#: ropo's lm-eval tasks: ``ropo_qa_probe`` (greedy accuracy), ``ropo_qa_probe_mc`` (multiple choice by
#: log-likelihood, as the frontier's choice_accuracy), ``ropo_qa_probe_loglik`` (answer
#: log-likelihood), both under the tag ``ropo_qa``. Usable by plain lm-eval with ``--include_path``.
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"


def require_lm_eval() -> None:
    """An error naming the extra to install when lm-eval is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise EvaluationError("lm-eval is not installed: pip install 'ropo[eval]' (lm-eval 0.4.x)") from None


def task_manager():
    """lm-eval's ``TaskManager`` over its own tasks plus ropo's."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR))


def run_lm_eval_cli(argv: Sequence[str]) -> int:
    """lm-eval's command line on ``argv`` (``ropo`` is imported); ropo's tasks are included unless
    ``--include_path`` is given (lm-eval's command line takes one folder)."""
    require_lm_eval()
    import ropo  # noqa: F401  (registers the ROPO PEFT type before lm-eval loads an adapter)
    from lm_eval.__main__ import cli_evaluate

    argv = list(argv)
    if argv and argv[0] not in ("-h", "--help") and "--include_path" not in argv:
        argv += ["--include_path", str(TASKS_DIR)]
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    return 0
