"""RoPO: Weights-Rotated Preference Optimization, as a PEFT tuner for Hugging Face models.

``import ropo`` registers the ``ropo`` PEFT method (``PeftType.ROPO``), so that PEFT's and TRL's
own entry points take a ``ropo.RoPOConfig`` as they take a ``LoraConfig``.
"""

from ropo.quiet import mute_import_logs

mute_import_logs()  # before PEFT imports bitsandbytes (see ropo/quiet.py)

from ropo.adapter import (  # noqa: E402
    AutoRoPOModelForCausalLM,
    RoPOConfig,
    RoPOConfigError,
    RoPOError,
    RoPOLoadError,
    RoPOMergeError,
    RoPOModel,
    RoPOTargetError,
    get_ropo_model,
    orthogonality_error,
)
from ropo.metrics import hyperspherical_energy  # noqa: E402

__version__ = "0.2.0"

__all__ = [
    "AutoRoPOModelForCausalLM",
    "RoPOConfig",
    "RoPOConfigError",
    "RoPOError",
    "RoPOLoadError",
    "RoPOMergeError",
    "RoPOModel",
    "RoPOTargetError",
    "get_ropo_model",
    "hyperspherical_energy",
    "orthogonality_error",
]
