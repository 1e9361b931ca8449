"""The RoPO adapter: config, layer, model wrapper, save/load, merge."""

from ropo.adapter.config import PRESETS, RoPOConfig
from ropo.adapter.errors import RoPOConfigError, RoPOError, RoPOLoadError, RoPOMergeError, RoPOTargetError
from ropo.adapter.layer import RoPOLinear
from ropo.adapter.model import AutoRoPOModelForCausalLM, RoPOModel, get_ropo_model

__all__ = [
    "PRESETS",
    "AutoRoPOModelForCausalLM",
    "RoPOConfig",
    "RoPOConfigError",
    "RoPOError",
    "RoPOLinear",
    "RoPOLoadError",
    "RoPOMergeError",
    "RoPOModel",
    "RoPOTargetError",
    "get_ropo_model",
]
