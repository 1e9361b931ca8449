"""Adapter directories: ``adapter_config.json`` + ``adapter_model.safetensors``, adapter only.

Writes are atomic (temporary file, then rename). Reads check everything (config keys, a manifest
of adapted modules and their shapes, a checksum of the tensors) before anything is changed.
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
from ropo.adapter.errors import RoPOConfigError, RoPOLoadError
from ropo.io import atomic_write, atomic_write_text

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


def write_adapter(directory: str | Path, files: AdapterFiles) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in files.tensors.items()}
    metadata = {_CHECKSUM_KEY: _checksum(tensors), "format": "pt"}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    document = {
        **files.config.to_dict(),
        "modules": {name: list(shape) for name, shape in files.modules.items()},
    }
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    atomic_write_text(directory / CONFIG_NAME, text)
    return directory


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
    try:
        config = RoPOConfig.from_dict(document, source=str(path))
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
