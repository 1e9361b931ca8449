"""Which base model a run was trained on, recorded so that it is the one used again.

Why: a local base is named by a path, and a relative path means another folder when a run is
evaluated from elsewhere (``ropo eval ../run`` would load whatever ``base_f32`` is found there,
with the same architecture and other weights, and report other numbers without a word). A run
records its base resolved (an absolute path, or the hub id as given) with a fingerprint of what
was there: a hash of ``config.json`` and the names and sizes of the weight files. Loading the run
checks the base against it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ropo.errors import RoPOLoadError
from ropo.models.default import resolve_model_name
from ropo.paths import is_local_path

#: Files whose names and sizes identify a checkpoint's weights (hashing gigabytes would cost minutes).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def fingerprint(folder: Path) -> dict[str, Any]:
    """A local model folder's config hash and weight files (name, size)."""
    config = folder / "config.json"
    return {
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "weights": sorted([p.name, p.stat().st_size] for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)),
    }


def base_record(name_or_path: str) -> dict[str, Any]:
    """What a run records of its base: the name as written, where it resolved to and, for a local
    folder, its fingerprint (None for a hub id or a ``tiny:`` model, which name themselves)."""
    resolved = resolve_model_name(name_or_path)
    local = is_local_path(resolved) and Path(resolved).expanduser().is_dir()
    path = str(Path(resolved).expanduser().resolve()) if local else resolved
    return {"name_or_path": name_or_path, "resolved": path, "fingerprint": fingerprint(Path(path)) if local else None}


def checked_base(record: dict[str, Any], where: str) -> str:
    """The base to load for a run that recorded ``record``: its resolved path, refused (naming the
    difference) when what is there now is not what the run was trained on."""
    path, recorded = record["resolved"], record.get("fingerprint")
    if recorded is None:
        return path
    folder = Path(path)
    if not folder.is_dir():
        raise RoPOLoadError(f"{where}: the run was trained on the base {path} (written as "
                            f"{record['name_or_path']!r}), which is no longer there")
    now = fingerprint(folder)
    changed = [key for key in ("config_sha256", "weights") if now[key] != recorded[key]]
    if changed:
        raise RoPOLoadError(f"{where}: the base at {path} is not the one the run was trained on "
                            f"({' and '.join(changed)} differ): its adapter would be applied to other weights")
    return path
