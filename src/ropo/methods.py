"""The method registry: one entry per method ropo trains, benchmarks and studies.

An entry owns every fact about its method: its name and aliases, how its PEFT config is built and
which options it takes, whether it has an adapter (which decides the weights folder, the reference
policy and how a checkpoint loads), its guard options, its usual learning rate and frontier factor,
and its benchmark variants. Nothing outside this module compares method names, so adding a method
is adding an entry. Adapter methods use the usual defaults of their papers / PEFT's docs (LoRA/DoRA
at r=16); ``full`` (plain DPO, alias ``dpo``) trains every weight.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peft import PeftConfig
from torch import nn

from ropo.adapter import RoPOConfig
from ropo.errors import RoPOError

#: The layers adapted when nothing else is said (and tracked for HE in full fine-tuning): the
#: ones the papers adapt.
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")


class MethodError(RoPOError, ValueError):
    """An unknown method or an option its config does not take."""


@dataclass(frozen=True)
class BenchVariant:
    """One row of ``ropo bench`` for a method: its options on top of the method's defaults."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Folded into the weights (``merge_and_unload``) and timed in inference mode only.
    merged: bool = False
    description: str | None = None


@dataclass(frozen=True)
class Method:
    """One method: a PEFT config class and its defaults, or no adapter (``config_class`` None)."""

    name: str
    description: str
    config_class: str | None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    #: The usual learning rate (adapters learn at larger rates than full fine-tuning): the demo
    #: trains at it; the frontier multiplies it by ``frontier_scale`` (see ``ropo.frontier.plan``).
    learning_rate: float | None = None
    frontier_scale: float | None = None
    #: The non-finite guard also watches RoPO's neuron magnitudes.
    guards_magnitudes: bool = False
    bench: tuple[BenchVariant, ...] = ()

    @property
    def has_adapter(self) -> bool:
        return self.config_class is not None

    @property
    def weights_dir(self) -> str:
        """Adapters go to ``adapter/``; full fine-tuning writes a whole model to ``model/``."""
        return "adapter" if self.has_adapter else "model"

    def peft_class(self) -> type[PeftConfig]:
        if self.config_class == RoPOConfig.__name__:
            return RoPOConfig
        import peft

        return getattr(peft, self.config_class)

    def option_names(self) -> frozenset[str]:
        """The adapter options this method takes (without an adapter: the layers whose HE it tracks)."""
        if not self.has_adapter:
            return frozenset({"target_modules"})
        return frozenset(f.name for f in dataclasses.fields(self.peft_class()) if f.init)

    def peft_config(self, options: Mapping[str, Any] | None = None, source: str = "adapter") -> PeftConfig | None:
        """The PEFT config with this method's defaults overridden by ``options`` (None without an adapter)."""
        options = dict(options or {})
        if not self.has_adapter:
            if set(options) - {"target_modules"}:
                raise MethodError(f"{source}: method {self.name!r} takes no options except target_modules (tracked for HE)")
            return None
        values = {"target_modules": list(DEFAULT_TARGET_MODULES), **self.defaults, **options, "task_type": "CAUSAL_LM"}
        cls = self.peft_class()
        try:
            if hasattr(cls, "from_options"):
                return cls.from_options(values, source=source)
            return cls(**values)
        except RoPOError as error:
            raise MethodError(str(error)) from None
        except (TypeError, ValueError) as error:
            raise MethodError(f"{source}: options for {self.name!r} ({self.config_class}): {error}") from None

    def tracked_modules(self, options: Mapping[str, Any]) -> tuple[str, ...] | str:
        """The layers whose HE a run tracks: its adapted layers, or (without an adapter) the usual ones."""
        return options.get("target_modules", DEFAULT_TARGET_MODULES)


_LORA = {"lora_alpha": 32, "lora_dropout": 0.0}
_ROPO_BENCH = {"preset": "ropo-2025"}

#: Every method, in the order they are listed (and benchmarked).
REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("lora", "LoRA r=16", "LoraConfig", {"r": 16, **_LORA}, learning_rate=5e-4, frontier_scale=3.0,
           bench=(BenchVariant("lora"),)),
    Method("dora", "DoRA r=16", "LoraConfig", {"r": 16, **_LORA, "use_dora": True}, bench=(BenchVariant("dora"),)),
    # OFT's learning rate is LoRA's; its frontier factor × 1 is measured (KL 10.7 → 39.9 over the
    # study's steps; × 3, LoRA's, was at KL 34 by the first checkpoint): docs/results/frontier/pilot/.
    Method("oft", "OFT, blocks of 32", "OFTConfig", {"r": 0, "oft_block_size": 32}, learning_rate=5e-4,
           frontier_scale=1.0, bench=(BenchVariant("oft"),)),
    Method("hra", "HRA r=8", "HRAConfig", {"r": 8}, bench=(BenchVariant("hra"),)),
    Method("boft", "BOFT", "BOFTConfig", {"boft_block_size": 4, "boft_n_butterfly_factor": 1}, bench=(BenchVariant("boft"),)),
    Method("ropo", "RoPO", "RoPOConfig", learning_rate=2e-3, frontier_scale=1.0, guards_magnitudes=True, bench=(
        BenchVariant("ropo", {**_ROPO_BENCH, "rotation_backend": "reference"}),
        BenchVariant("ropo_fast", {**_ROPO_BENCH, "rotation_backend": "auto"}),
        BenchVariant("ropo_fused", {**_ROPO_BENCH, "rotation_backend": "fused"},
                     description="the batched-matmul path that 'auto' used on the CPU before the native kernels"),
        BenchVariant("ropo_merged", {**_ROPO_BENCH, "rotation_backend": "auto"}, merged=True,
                     description="ropo_fast merged into the weights (merge_and_unload)"),
    )),
    Method("full", "plain DPO: full fine-tuning of every weight", None, aliases=("dpo",), learning_rate=5e-6,
           frontier_scale=10.0, bench=(BenchVariant("full", description="every weight trained"),)),
)}

#: ``lora-r<k>``: LoRA at rank k (alpha 2k), at LoRA's rates; ``matched_lora`` picks the k (and the
#: layers at k - 1) whose trainable parameters match RoPO's on the same layers.
_RANKED_LORA = re.compile(r"lora-r([1-9][0-9]*)")


def ranked_lora(rank: int) -> Method:
    """The LoRA entry of rank ``rank``, named ``lora-r<rank>``."""
    lora = REGISTRY["lora"]
    return dataclasses.replace(lora, name=f"lora-r{rank}", description=f"LoRA r={rank}",
                               defaults={**lora.defaults, "r": rank, "lora_alpha": 2 * rank},
                               bench=(BenchVariant(f"lora-r{rank}"),))


def find_method(name: str) -> Method | None:
    """The entry called ``name`` (or one of its aliases, or ``lora-r<k>``); None if there is none."""
    if name in REGISTRY:
        return REGISTRY[name]
    for method in REGISTRY.values():
        if name in method.aliases:
            return method
    ranked = _RANKED_LORA.fullmatch(name) if isinstance(name, str) else None
    return ranked_lora(int(ranked.group(1))) if ranked else None


def known_names() -> tuple[str, ...]:
    """What an error lists as the known methods."""
    return (*REGISTRY, "lora-r<k>")


def get_method(name: str, source: str = "method") -> Method:
    """The entry called ``name``, or a ``MethodError`` that lists the known ones."""
    method = find_method(name)
    if method is None:
        raise MethodError(f"{source}: unknown method {name!r}; known: {', '.join(known_names())}")
    return method


@dataclass(frozen=True)
class MatchedLora:
    """A LoRA on RoPO's layers with RoPO's trainable-parameter count: rank ``rank`` on most layers,
    ``rank - 1`` on the layers ``lowered`` names (one rank step is too coarse: on SmolLM2's q/v,
    r = 3 trains 7 % more than RoPO, r = 2 29 % fewer)."""

    rank: int
    lowered: tuple[str, ...]  # module names (as in the base model) at rank - 1
    modules: int  # adapted modules
    parameters: int  # this LoRA's trainable parameters
    target: int  # RoPO's

    @property
    def method(self) -> str:
        return f"lora-r{self.rank}"

    def options(self) -> dict[str, Any]:
        """Adapter options on top of ``lora-r<rank>``'s defaults; alpha follows rank (alpha = 2 r)."""
        low = self.rank - 1
        return {"rank_pattern": {name: low for name in self.lowered},
                "alpha_pattern": {name: 2 * low for name in self.lowered}} if self.lowered else {}


def matched_lora(model: nn.Module, ropo_options: Mapping[str, Any] | None = None) -> MatchedLora:
    """The LoRA whose trainable parameters on RoPO's layers match RoPO's own there, to within half
    of one layer's rank step: the smallest uniform rank at or above RoPO's count, then layers
    lowered by one rank (last layers first) while that brings the count closer."""
    from peft import get_peft_model

    from ropo.adapter import RoPOLayer

    peft_model = get_peft_model(copy.deepcopy(model), REGISTRY["ropo"].peft_config(ropo_options))
    target = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    prefix = "base_model.model."
    widths = {name.removeprefix(prefix): layer.in_features + layer.out_features
              for name, layer in peft_model.named_modules() if isinstance(layer, RoPOLayer)}
    rank = max(1, -(-target // sum(widths.values())))
    parameters, lowered = rank * sum(widths.values()), []
    for name, width in reversed(widths.items()):
        if rank > 1 and parameters - target >= width / 2:
            parameters -= width
            lowered.append(name)
    return MatchedLora(rank, tuple(sorted(lowered)), len(widths), parameters, target)
