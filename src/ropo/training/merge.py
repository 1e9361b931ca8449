"""``ropo merge``: an adapter folded into its base, written as a plain transformers model."""

from __future__ import annotations

from pathlib import Path

from ropo.adapter import RoPOModel
from ropo.io import atomic_directory
from ropo.training.loading import load_base_model, load_tokenizer


def merge_to_directory(adapter_dir: str | Path, base: str, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Merge and save; refuses non-finite weights (nothing is written then) and never leaves a
    half-written ``out_dir``."""
    model = RoPOModel.from_pretrained(load_base_model(base, dtype), adapter_dir)
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(base)

    def build(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_directory(out_dir, build)
