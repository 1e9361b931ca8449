"""``ropo merge``: an adapter folded into its base, written as a plain transformers model."""

from __future__ import annotations

import json
from pathlib import Path

from ropo.adapter.api import load_adapter_model
from ropo.io import atomic_directory, atomic_write_text, is_disk_full
from ropo.paths import DiskFullError, check_output_dir, output_path
from ropo.models.loading import load_base_model, load_tokenizer

#: Written into every merged folder: it marks the folder as ``ropo merge``'s own, which a later
#: merge may replace without ``--force``, and records what it was made from.
MERGE_MARKER = "ropo_merge.json"


def merge_inputs(adapter_dir: Path, base: str) -> list[Path]:
    """Folders the merge reads, which its output must never replace: the adapter, the run it
    belongs to, and a local base model."""
    inputs = [adapter_dir]
    if (adapter_dir.parent / "recipe.yaml").is_file():
        inputs.append(adapter_dir.parent)
    if Path(base).expanduser().exists():
        inputs.append(Path(base).expanduser())
    return inputs


def merge_to_directory(
    adapter_dir: str | Path, base: str, out_dir: str | Path, dtype: str = "float32", force: bool = False
) -> Path:
    """Merge and save; refuses non-finite weights (nothing is written then) and never leaves a
    half-written ``out_dir``. The output is checked before any model loads: a folder holding an
    input is refused, and so is a file or a non-empty folder that is not an earlier merge's
    output unless ``force``."""
    adapter_dir = Path(adapter_dir).expanduser()
    out = output_path(out_dir, "--out")
    check_output_dir(out, "--out", force=force, inputs=merge_inputs(adapter_dir, base),
                     ours=lambda path: (path / MERGE_MARKER).is_file(), file_ok=True)
    model = load_adapter_model(load_base_model(base, dtype), adapter_dir)
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(base)
    origin = {"adapter": str(adapter_dir.resolve()), "base": base, "dtype": dtype}

    def build(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / MERGE_MARKER, json.dumps(origin, indent=2) + "\n")

    try:
        return atomic_directory(out, build)
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error, out.parent):
            raise
        kept = f"{out} was left as it was" if out.exists() else f"nothing was written to {out}"
        raise DiskFullError(f"--out {out}: no space left on device while writing the merged model; {kept}. "
                            "Free some space (or choose another disk) and run ropo merge again") from None
