"""Model shapes the benchmark builds from a config (random weights: speed does not depend on them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropo.errors import RoPOConfigError


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a real Llama-family model (tied embeddings, as both of these have)."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int


MODEL_SPECS = {
    spec.name: spec
    for spec in (
        ModelSpec("smollm2-135m", 576, 1536, 30, 9, 3, 49152),
        ModelSpec("llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256),
        ModelSpec("llama-3-8b", 4096, 14336, 32, 32, 8, 128256),
    )
}


def scaled_vocab(spec: ModelSpec, layers: int) -> int:
    """The vocabulary that keeps the output head's share of the compute with fewer layers.

    With fewer layers than the real model, a full-size head would dominate the step and hide the
    adapters' cost; scaling the vocabulary with the layer count keeps head/body as in the real
    model. Rounded up to a multiple of 64.
    """
    vocab = spec.vocab_size * layers / spec.num_hidden_layers
    return int(-(-vocab // 64) * 64)


def model_info(spec: ModelSpec, layers: int) -> dict:
    """What the result rows record about the model actually built."""
    return {**asdict(spec), "num_hidden_layers": layers, "full_num_hidden_layers": spec.num_hidden_layers,
            "vocab_size": scaled_vocab(spec, layers), "full_vocab_size": spec.vocab_size}


def build_model(
    spec: ModelSpec, layers: int, dtype: torch.dtype, seed: int = 0, device: str = "cpu"
) -> LlamaForCausalLM:
    """A randomly initialised ``spec``-shaped model with ``layers`` layers (see ``scaled_vocab``),
    built on ``device`` (on a GPU, initialising billions of weights on the host takes minutes)."""
    if not 1 <= layers <= spec.num_hidden_layers:
        raise RoPOConfigError(
            f"--layers must be between 1 and {spec.num_hidden_layers} for {spec.name}, got {layers}"
        )
    config = LlamaConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        vocab_size=scaled_vocab(spec, layers),
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM(config).to(dtype)


def model_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise RoPOConfigError(f"unknown benchmark model {name!r}; known: {sorted(MODEL_SPECS)}")
    return MODEL_SPECS[name]
