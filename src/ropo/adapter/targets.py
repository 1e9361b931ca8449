"""Which modules of a model ``RoPOConfig.target_modules`` and ``layers_to_transform`` select."""

from __future__ import annotations

import re

from torch import nn

from ropo.adapter.config import RoPOConfig
from ropo.adapter.errors import RoPOTargetError
from ropo.adapter.layer import check_adaptable

_DEFAULT_LAYER_LISTS = ("layers", "layer", "h", "blocks", "block")


def _layer_index(name: str, pattern: str | None) -> int | None:
    lists = (pattern,) if pattern else _DEFAULT_LAYER_LISTS
    match = re.search(r"(?:^|\.)(?:%s)\.(\d+)(?:\.|$)" % "|".join(map(re.escape, lists)), name)
    return int(match.group(1)) if match else None


def _output_head_names(model: nn.Module) -> set[str]:
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return {name for name, module in model.named_modules() if head is not None and module is head} | {
        "lm_head"
    }


def find_target_modules(model: nn.Module, config: RoPOConfig) -> list[str]:
    """Names of the modules to adapt, in model order; raises on anything a user must fix."""
    targets = config.target_modules
    modules = dict(model.named_modules())
    if targets == "all-linear":
        heads = _output_head_names(model)
        names = [n for n, m in modules.items() if isinstance(m, nn.Linear) and n not in heads]
    elif isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as error:
            raise RoPOTargetError(f"target_modules regex {targets!r} is invalid: {error}") from None
        names = [n for n in modules if n and pattern.fullmatch(n)]
    else:
        names = [n for n in modules if any(n == t or n.endswith("." + t) for t in targets)]
        unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if unmatched:
            raise RoPOTargetError(
                f"target_modules {unmatched} match no module of {type(model).__name__}; "
                f"its linear layers end in {_linear_suffixes(modules)}"
            )
    if not names:
        raise RoPOTargetError(
            f"target_modules {targets!r} match no module of {type(model).__name__}; "
            f"its linear layers end in {_linear_suffixes(modules)}"
        )
    if config.layers_to_transform is not None:
        wanted = set(config.layers_to_transform)
        names = [n for n in names if _layer_index(n, config.layers_pattern) in wanted]
        if not names:
            raise RoPOTargetError(
                f"layers_to_transform={config.layers_to_transform} (layers_pattern="
                f"{config.layers_pattern!r}) leaves none of the matched modules of {targets!r}"
            )
    for name in names:
        check_adaptable(name, modules[name])
    return names


def _linear_suffixes(modules: dict[str, nn.Module]) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, nn.Linear)})
