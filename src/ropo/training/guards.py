"""Guards that stop a run before it saves garbage: the first non-finite loss, gradient or
trainable parameter ends training with an error naming the step and the parameter, and a RoPO
neuron magnitude that has grown past :data:`MAGNITUDE_LOG_SCALE_BOUND` is warned about.

The checks run before anything is written for the step: the gradients in
``on_pre_optimizer_step`` (before the optimizer applies them), the parameters in
``on_step_end`` and the logged loss in ``on_log``, all of which the trainer calls before it
saves that step's checkpoint. An exception raised there ends ``trainer.train()``, so neither
that checkpoint nor the final adapter is written.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from transformers import TrainerCallback

from ropo.errors import RoPOError

#: RoPO scales each output neuron by ``exp(g)``. Beyond ``|g| = ln 10`` a neuron is amplified or
#: damped more than tenfold: no longer a preference adjustment of a pretrained layer, and
#: usually a sign that the learning rate is too high. Training goes on; the run is warned once.
MAGNITUDE_LOG_SCALE_BOUND = math.log(10.0)


class NonFiniteError(RoPOError):
    """Training produced a NaN or infinite loss, gradient or parameter; nothing of it was saved."""


def _trainable(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)


def first_non_finite(tensors: list[tuple[str, torch.Tensor]]) -> tuple[str, str] | None:
    """The name and kind (``nan`` / ``inf``) of the first non-finite tensor, or None.

    One device sync for the common case where all are finite; the culprit is looked for only then.
    """
    if not tensors:
        return None
    if bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return None
    for name, tensor in tensors:
        if not bool(torch.isfinite(tensor).all()):
            return name, "nan" if bool(torch.isnan(tensor).any()) else "inf"
    return None


class NonFiniteGuard(TrainerCallback):
    """Stops training on the first non-finite loss, gradient or trainable parameter.

    ``magnitudes``: also warn (once) when a parameter whose name contains ``magnitude`` holds a
    log-scale beyond :data:`MAGNITUDE_LOG_SCALE_BOUND` (RoPO's neuron magnitudes; PEFT's DoRA
    magnitudes are norms, not log-scales, so it is off for the other methods).
    """

    def __init__(self, magnitudes: bool = False, hint: str = "") -> None:
        self.magnitudes = magnitudes
        self.hint = hint
        self.warned = False

    def _stop(self, what: str, step: int) -> None:
        raise NonFiniteError(
            f"step {step}: {what}; training stopped before saving anything of this step{self.hint}"
        )

    def check_loss(self, loss: float | torch.Tensor, step: int) -> None:
        value = float(loss)
        if not math.isfinite(value):
            self._stop(f"the loss is {value}", step)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            found = first_non_finite(list(_trainable(model)))
            if found:
                self._stop(f"parameter {found[0]} is {found[1]} before training (a damaged checkpoint?)", state.global_step)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        found = first_non_finite([(n, p.grad) for n, p in _trainable(model) if p.grad is not None])
        if found:
            self._stop(f"the gradient of {found[0]} is {found[1]}", state.global_step + 1)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        parameters = list(_trainable(model))
        found = first_non_finite(parameters)
        if found:
            self._stop(f"parameter {found[0]} became {found[1]} in the optimizer step", state.global_step)
        if self.magnitudes and not self.warned:
            self._check_magnitudes(parameters, state.global_step)

    def _check_magnitudes(self, parameters: list[tuple[str, torch.Tensor]], step: int) -> None:
        for name, tensor in parameters:
            if "magnitude" in name and tensor.numel():
                largest = float(tensor.detach().abs().max())
                if largest > MAGNITUDE_LOG_SCALE_BOUND:
                    self.warned = True
                    scale = f"{math.exp(largest):.3g}" if largest < 700 else f"e^{largest:.0f}"
                    warnings.warn(
                        f"step {step}: RoPO magnitude {name} has log-scale {largest:.3g} (a neuron scaled by "
                        f"{scale}x), beyond the bound ln 10 = {MAGNITUDE_LOG_SCALE_BOUND:.3g}; "
                        f"the learning rate is probably too high{self.hint}",
                        stacklevel=2,
                    )
                    return

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and isinstance(logs["loss"], (int, float)):
            self.check_loss(logs["loss"], state.global_step)


def install(trainer, magnitudes: bool, hint: str = "") -> NonFiniteGuard:
    """Add a :class:`NonFiniteGuard` to ``trainer`` and check each micro-batch's loss as it is
    computed (the trainer hides a NaN loss from its log by default, and callbacks never see it)."""
    guard = NonFiniteGuard(magnitudes, hint)
    trainer.add_callback(guard)
    training_step = trainer.training_step

    def checked_training_step(*args, **kwargs):
        loss = training_step(*args, **kwargs)
        guard.check_loss(loss.detach(), trainer.state.global_step + 1)
        return loss

    trainer.training_step = checked_training_step
    return guard
