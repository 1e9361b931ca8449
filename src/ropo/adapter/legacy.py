"""ropo 0.1's adapter directories, read once to convert them to PEFT's format.

ropo 0.1 wrote ``adapter_config.json`` with a ``modules`` manifest (name → [out, in]) and
``adapter_model.safetensors`` keyed ``<module>.rotation.<parameter>`` / ``<module>.magnitude.log_scale``
with a checksum in its metadata. The reader checks all of it before anything is written; the
converter writes the same tensors under PEFT's keys with ``save_pretrained``'s layout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ropo.adapter.config import RoPOConfig
from ropo.errors import RoPOConfigError, RoPOLoadError
from ropo.io import atomic_directory

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_CHECKSUM_KEY = "ropo_sha256"


@dataclass
class AdapterFiles:
    """What an adapter directory holds: its config, which modules it adapts (name → (out, in))
    and the adapter tensors, keyed ``<module name>.<parameter name>``."""

    config: RoPOConfig
    modules: dict[str, tuple[int, int]]
    tensors: dict[str, torch.Tensor]


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def read_config(directory: str | Path) -> tuple[RoPOConfig, dict[str, tuple[int, int]]]:
    """The config and module manifest of an adapter directory, validated."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise RoPOLoadError(f"{path}: not found (is {directory} an adapter directory?)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RoPOLoadError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise RoPOLoadError(f"{path}: expected a JSON object, got {type(document).__name__}")
    modules = document.pop("modules", None)
    if not isinstance(modules, dict) or not modules or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) for v in s)
        for s in modules.values()
    ):
        raise RoPOLoadError(f"{path}: 'modules' must map each adapted module to [out_features, in_features]")
    document.pop("peft_type", None)
    try:
        config = RoPOConfig.from_options(document, source=str(path))
    except RoPOConfigError as error:
        raise RoPOLoadError(str(error)) from None
    return config, {name: (shape[0], shape[1]) for name, shape in modules.items()}


def read_adapter(directory: str | Path) -> AdapterFiles:
    config, modules = read_config(directory)
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise RoPOLoadError(f"{path}: not found")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise RoPOLoadError(f"{path}: cannot be read, the file is truncated or corrupt ({error})") from None
    expected = metadata.get(_CHECKSUM_KEY)
    if expected is None or _checksum(tensors) != expected:
        raise RoPOLoadError(f"{path}: checksum mismatch, the file is corrupt or was not written by ropo")
    return AdapterFiles(config, modules, tensors)


#: ropo 0.1's parameter names inside an adapted module → PEFT's (before the adapter name).
_KEYS = {
    "rotation.angles": "ropo_rotation.angles",
    "rotation.householder_base": "ropo_rotation.householder_base",
    "rotation.householder_offset": "ropo_rotation.householder_offset",
    "magnitude.log_scale": "ropo_magnitude.log_scale",
}


def convert_legacy_adapter(old_directory: str | Path, new_directory: str | Path) -> Path:
    """Write ropo 0.1's adapter at ``old_directory`` as a PEFT adapter at ``new_directory``
    (which must not exist yet); the tensors are the same, bit for bit."""
    files = read_adapter(old_directory)
    new_directory = Path(new_directory)
    if new_directory.exists():
        raise RoPOLoadError(f"{new_directory}: already exists; choose a new folder for the converted adapter")
    tensors = {}
    for key, tensor in files.tensors.items():
        if not tensor.numel():
            continue  # ropo 0.1 saved the empty parts of a layout (e.g. no reflections); now they are not saved
        module, suffix = next(((key[: -len(old) - 1], new) for old, new in _KEYS.items() if key.endswith("." + old)),
                              (None, None))
        if module not in files.modules:
            raise RoPOLoadError(f"{old_directory}: tensor {key!r} belongs to no module of the manifest")
        tensors[f"base_model.model.{module}.{suffix}"] = tensor.contiguous()
    config = files.config
    config.target_modules = set(files.modules)

    def build(tmp: Path) -> None:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})

    return atomic_directory(new_directory, build)
