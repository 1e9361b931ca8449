"""Pretrained models ropo knows by name: the embedded default, SmolLM2-135M-Instruct."""

from ropo.models.default import (
    DEFAULT_MODEL_ALIASES,
    DefaultModelError,
    default_model_path,
    gguf_path,
    plain_config,
    resolve_model_name,
)

__all__ = [
    "DEFAULT_MODEL_ALIASES",
    "DefaultModelError",
    "default_model_path",
    "gguf_path",
    "plain_config",
    "resolve_model_name",
]
