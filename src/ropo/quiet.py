"""Third-party messages known to be harmless, declared in one place.

Two kinds, silenced differently:

- ``IMPORT_LOG_MESSAGES``: logged while bitsandbytes imports. ropo does not import bitsandbytes
  itself (only the bitsandbytes layer types of a quantized base reach ropo's code), but PEFT's
  ``peft.helpers`` does whenever it is installed, so ``import ropo`` would print them on every
  CPU machine. They are muted for ``import ropo`` (library users too), as log filters that match
  these messages only.
- ``CLI_WARNINGS``: Python warnings raised during training by the pinned transformers/TRL/PEFT,
  about names ropo's users do not write. Only the ``ropo`` command filters them (inside its run,
  restored afterwards); library users keep Python's defaults.

The ``ropo`` command also prints ropo's own warnings (about the user's data or recipe) as one line,
``ropo: warning: …``, without the line of ropo's source that Python shows after each warning.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

#: (logger name, message prefix, why it is harmless).
IMPORT_LOG_MESSAGES: tuple[tuple[str, str, str], ...] = (
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        "bitsandbytes falls back to its own CPU 4-bit matmul when the optional hub kernel is not cached",
    ),
    (
        "kernels._internals.hf_hub",
        "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
        "the same optional kernel looked up while HF_HUB_OFFLINE=1",
    ),
)

#: Where ropo's own code is: a warning attributed to a file under it is ropo's.
PACKAGE_DIR = Path(__file__).resolve().parent

#: (category, message regex, why it is harmless).
CLI_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`is_gradient_checkpointing` is deprecated",
        "TRL reads the old property on every step; transformers answers it from the new one",
    ),
    (
        FutureWarning,
        r"`gradient_checkpointing(_kwargs)?` is deprecated",
        "TRL's DPOConfig sets the old field by default; transformers copies it to the new one",
    ),
    (
        UserWarning,
        r"Could not find a config file in tiny:",
        "PEFT looks for a hub config of ropo's built-in tiny models, which have none",
    ),
)


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def mute_import_logs() -> None:
    """Attach the filters (once) to the loggers that print ``IMPORT_LOG_MESSAGES``."""
    for name, prefix, _ in IMPORT_LOG_MESSAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and prefix in f.prefixes for f in logger.filters):
            logger.addFilter(_DropMessages((prefix,)))


def filter_cli_warnings() -> None:
    """Ignore ``CLI_WARNINGS`` in the current warnings context (the CLI wraps it in ``catch_warnings``)."""
    for category, pattern, _ in CLI_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def one_line_warnings() -> None:
    """Print ropo's own warnings as ``ropo: warning: MESSAGE`` in the current warnings context;
    other packages' warnings keep Python's format."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if Path(filename).resolve().is_relative_to(PACKAGE_DIR):
            print(f"ropo: warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
