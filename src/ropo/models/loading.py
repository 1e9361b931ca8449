"""Base model and tokenizer from a recipe's ``model.name_or_path``."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ropo.errors import RoPOError
from ropo.models import resolve_model_name
from ropo.tiny_models import TINY_ARCHITECTURES, tiny_causal_lm, tiny_tokenizer

TINY_PREFIX = "tiny:"
#: The dtypes a base model loads in (a recipe's ``model.dtype``; ``auto``: the checkpoint's own).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class ModelLoadError(RoPOError):
    """A base model or tokenizer that cannot be found or read."""


#: Said with every load error: a model whose code is its own needs the recipe's explicit consent.
_REMOTE_CODE_HINT = "; if the model ships its own code and you trust it, set model.trust_remote_code: true"


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of ``name_or_path``; ``trust_remote_code`` is passed explicitly (never prompted)."""
    if name_or_path.startswith(TINY_PREFIX):
        return tiny_tokenizer()
    path = resolve_model_name(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        hint = "" if trust_remote_code else _REMOTE_CODE_HINT
        raise ModelLoadError(f"model {name_or_path!r}: cannot load its tokenizer ({error}){hint}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    name_or_path: str, dtype: str = "float32", seed: int = 0, trust_remote_code: bool = False
) -> PreTrainedModel:
    """A pretrained causal LM, or for ``tiny:<arch>`` a tiny random one (vocab of ``tiny_tokenizer``).
    ``trust_remote_code`` is passed explicitly, so transformers never asks interactively."""
    if name_or_path.startswith(TINY_PREFIX):
        architecture = name_or_path[len(TINY_PREFIX) :]
        if architecture not in TINY_ARCHITECTURES:
            raise ModelLoadError(f"model {name_or_path!r}: tiny models are {[TINY_PREFIX + a for a in TINY_ARCHITECTURES]}")
        model = tiny_causal_lm(architecture, vocab_size=len(tiny_tokenizer()), seed=seed, dtype=DTYPES[dtype] if dtype != "auto" else torch.float32)
        # Recorded by PEFT in every adapter (base_model_name_or_path), so errors can name the base.
        model.name_or_path = model.config._name_or_path = name_or_path
        return model
    path = resolve_model_name(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        hint = "" if trust_remote_code else _REMOTE_CODE_HINT
        raise ModelLoadError(f"model {name_or_path!r}: cannot load ({error}){hint}") from None
