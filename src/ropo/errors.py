"""Errors a user can act on, below every other module: each names what is wrong and where."""


class RoPOError(Exception):
    """Base class for every error ropo raises on bad input."""

    #: What the ``ropo`` command exits with when this error ends it.
    exit_code = 2


class RoPOConfigError(RoPOError, ValueError):
    """An invalid or unknown configuration option."""


class RoPOTargetError(RoPOError, ValueError):
    """``target_modules`` matched nothing, or matched a layer type RoPO cannot adapt."""


class RoPOLoadError(RoPOError):
    """An adapter directory that is missing, corrupt, or does not fit the base model."""


class RoPOMergeError(RoPOError):
    """A merge that would write non-finite weights."""


class RoPOInterrupted(RoPOError):
    """A command stopped by Ctrl-C or SIGTERM; the message says what was kept and how to go on."""

    exit_code = 130  # the shell's code for a command ended by SIGINT
