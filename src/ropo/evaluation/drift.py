"""How far a tuned model moved from its base: KL on its own answers, HE per layer, orthogonality.

DPO keeps the policy near the reference only through the logits; RoPO also keeps each layer's
neuron angles (hyperspherical energy) where they were. These numbers show both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ropo.evaluation.errors import EvaluationError
from ropo.generation import Generation
from ropo.evaluation.scoring import continuation_log_probs
from ropo.metrics import hyperspherical_energy
from ropo.methods import DEFAULT_TARGET_MODULES
from ropo.models.weights import base_weights, effective_weights, tracked_layers, unwrapped

#: Layers whose HE is measured in a model without adapters (fully fine-tuned): RoPO's default targets.
DEFAULT_HE_MODULES = DEFAULT_TARGET_MODULES


class Reference:
    """The model a policy is measured against: a separate base model, or the policy itself with
    its adapter disabled (RoPO and PEFT models), which costs no second copy in memory."""

    def __init__(self, policy: nn.Module, base_model: nn.Module | None = None) -> None:
        if base_model is None and not hasattr(policy, "disable_adapter"):
            raise EvaluationError(
                f"{type(policy).__name__} has no adapter to disable; pass the base model to compare with"
            )
        self.policy, self.base_model = policy, base_model

    @contextlib.contextmanager
    def model(self) -> Iterator[nn.Module]:
        if self.base_model is not None:
            yield self.base_model
        else:
            with self.policy.disable_adapter():
                yield self.policy


def generation_kl(
    policy: nn.Module, reference: Reference, generations: Sequence[Generation], batch_size: int = 8
) -> list[float]:
    """KL(π ‖ π_ref) of each answer: Σ over its generated positions of the exact per-token KL
    between the two next-token distributions (temperature 1), along the policy's own samples.

    Averaged over answers sampled from π this estimates the sequence-level KL with less variance
    than the log-ratio of the sampled tokens alone.
    """
    values = []
    for start in range(0, len(generations), batch_size):
        pairs = [(g.prompt_token_ids, g.token_ids) for g in generations[start : start + batch_size]]
        policy_log_probs = continuation_log_probs(policy, pairs)
        with reference.model() as reference_model:
            reference_log_probs = continuation_log_probs(reference_model, pairs)
        for log_p, log_q in zip(policy_log_probs, reference_log_probs):
            if log_p.shape != log_q.shape:
                raise EvaluationError(
                    f"policy and reference vocabularies differ ({log_p.shape[-1]} vs {log_q.shape[-1]}): "
                    "KL needs the same tokenizer"
                )
            values.append(float((log_p.exp() * (log_p - log_q.to(log_p.device))).sum()))
    return values


@dataclass(frozen=True)
class LayerEnergy:
    name: str
    base: float  # HE of the layer's weight before tuning
    adapted: float  # HE of the weight the tuned layer computes with

    @property
    def change(self) -> float:
        return self.adapted - self.base

    @property
    def relative_change(self) -> float:
        return self.change / self.base

    def as_dict(self) -> dict[str, float | str]:
        return {**asdict(self), "change": self.change, "relative_change": self.relative_change}


def _base_weights(model: nn.Module, names: Sequence[str], base_model: nn.Module | None) -> dict[str, torch.Tensor]:
    """Each layer's weight before tuning: from ``base_model`` if given, else the adapter's frozen layer."""
    if base_model is not None:
        return effective_weights(unwrapped(base_model), names)
    if not hasattr(model, "disable_adapter"):
        raise EvaluationError(
            f"{type(model).__name__} has no adapter: the HE change needs the base model (ropo eval --base)"
        )
    try:
        return base_weights(model, names)
    except ValueError as error:
        raise EvaluationError(str(error)) from None


def layer_energies(
    model: nn.Module, base_model: nn.Module | None = None, modules: Sequence[str] = DEFAULT_HE_MODULES
) -> list[LayerEnergy]:
    """HE of every measured layer before and after tuning, in model order."""
    names = tracked_layers(model, modules)
    before = _base_weights(model, names, base_model)
    after = effective_weights(model, names)
    return [LayerEnergy(n, hyperspherical_energy(before[n]), hyperspherical_energy(after[n])) for n in names]


