"""RoPO: Weights-Rotated Preference Optimization, as a PEFT-style adapter for Hugging Face models."""

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
)
from ropo.metrics import hyperspherical_energy

__version__ = "0.1.0"

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
]
