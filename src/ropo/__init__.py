"""RoPO: Weights-Rotated Preference Optimization, as a PEFT tuner for Hugging Face models.

``import ropo`` registers the ``ropo`` PEFT method (``PeftType.ROPO``), so that PEFT's and TRL's
own entry points take a ``ropo.RoPOConfig`` as they take a ``LoraConfig``.
"""

from ropo.adapter import (
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
from ropo.metrics import hyperspherical_energy

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
