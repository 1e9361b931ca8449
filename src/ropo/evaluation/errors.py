"""The error evaluation raises on bad input (a prompt file, a judge spec, a run directory)."""

from ropo.errors import RoPOError


class EvaluationError(RoPOError, ValueError):
    """Bad evaluation input; the message names the file, row, key or option."""
