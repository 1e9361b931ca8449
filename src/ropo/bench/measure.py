"""Timing (all methods interleaved in one process) and peak memory (one method at a time).

Step times are taken round-robin, one step of each method per round, so that a shared, noisy
machine slows every method alike; the median over rounds is reported. Peak memory on the CPU needs
a process of its own per method: the peak resident set size during the steps (VmHWM, reset just
before them through /proc/self/clear_refs) minus the resident size before the model was built; on
CUDA, ``torch.cuda.max_memory_allocated`` after a reset, in the same process once the timed
models are freed. Both include the model's weights.
"""

from __future__ import annotations

import copy
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ropo.errors import RoPOConfigError, RoPOError
from ropo.bench.methods import inference_only, prepare, trainable_parameters
from ropo.bench.models import build_model, model_spec, scaled_vocab

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class RunSettings:
    """One benchmark configuration: the same for every method compared in it."""

    model: str
    layers: int
    targets: str
    batch_size: int
    seq_len: int
    steps: int
    warmup: int
    device: str
    dtype: str
    mode: str = "train"
    seed: int = 0


MODES = ("train", "inference")


class Trainee:
    """A method's model, its optimizer (AdamW; none without trainable weights) and one step.

    A ``train`` step is forward + backward + optimizer step of the next-token loss; an
    ``inference`` step is the forward alone, without gradients, with the adapter unmerged.
    """

    def __init__(self, method: str, model: nn.Module, settings: RunSettings) -> None:
        self.method, self.mode = method, settings.mode
        if inference_only(method) and settings.mode != "inference":
            raise RoPOConfigError(f"method {method!r} is timed in inference mode only (--inference)")
        self.model = prepare(method, model, settings.targets).to(settings.device).train()
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=1e-5) if parameters else None
        self.trainable_params = trainable_parameters(self.model)
        self.total_params = sum(p.numel() for p in self.model.parameters())

    def step(self, input_ids: torch.Tensor) -> None:
        if self.mode == "inference":
            with torch.no_grad():
                self.model(input_ids=input_ids)
            return
        loss = self.model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def batch(settings: RunSettings) -> torch.Tensor:
    """Random token ids (batch_size × seq_len); the loss is next-token prediction on them."""
    vocab = scaled_vocab(model_spec(settings.model), settings.layers)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    ids = torch.randint(0, vocab, (settings.batch_size, settings.seq_len), generator=generator)
    return ids.to(settings.device)


def base_model(settings: RunSettings) -> nn.Module:
    return build_model(model_spec(settings.model), settings.layers, DTYPES[settings.dtype], settings.seed, settings.device)


def time_methods(
    settings: RunSettings, methods: list[str], advance: Callable[[str], None] = lambda _: None
) -> dict[str, dict]:
    """Step times (ms) of every method, round-robin; ``advance`` is called after every step."""
    ids = batch(settings)
    base = base_model(settings)
    trainees = [Trainee(method, copy.deepcopy(base), settings) for method in methods]
    del base
    times: dict[str, list[float]] = {t.method: [] for t in trainees}
    for round_index in range(settings.warmup + settings.steps):
        shift = round_index % len(trainees)
        for trainee in trainees[shift:] + trainees[:shift]:
            _synchronize(settings.device)
            start = time.perf_counter()
            trainee.step(ids)
            _synchronize(settings.device)
            if round_index >= settings.warmup:
                times[trainee.method].append((time.perf_counter() - start) * 1e3)
            advance(trainee.method)
    return {
        t.method: {
            "ms_per_step": statistics.median(times[t.method]),
            "ms_per_step_all": [round(v, 3) for v in times[t.method]],
            "trainable_params": t.trainable_params,
            "total_params": t.total_params,
        }
        for t in trainees
    }


# ----------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RoPOError(f"/proc/self/status has no {field} line")


def measure_memory_here(settings: RunSettings, method: str, steps: int) -> dict:
    """Peak memory of ``steps`` training steps of ``method``, measured in this (fresh) process."""
    ids = batch(settings)
    cuda = settings.device.startswith("cuda")
    if not cuda and not Path("/proc/self/clear_refs").exists():
        raise RoPOError("peak memory on CPU is read from Linux's /proc/self; run with --no-memory")
    before = torch.cuda.memory_allocated(settings.device) if cuda else _status_kib("VmRSS") * 1024
    trainee = Trainee(method, base_model(settings), settings)
    _synchronize(settings.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(settings.device)
        loaded = torch.cuda.memory_allocated(settings.device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        loaded = _status_kib("VmRSS") * 1024
    for _ in range(steps):
        trainee.step(ids)
    _synchronize(settings.device)
    peak = torch.cuda.max_memory_allocated(settings.device) if cuda else _status_kib("VmHWM") * 1024
    return {"peak_memory_bytes": peak - before, "train_memory_bytes": peak - loaded}


MEMORY_MEASURE = {
    "cpu": "peak RSS during the steps (VmHWM after clear_refs) minus RSS before building the model",
    "cuda": "torch.cuda.max_memory_allocated during the steps",
}


def measure_memory(settings: RunSettings, method: str, steps: int, threads: int | None) -> dict:
    """``measure_memory_here`` in a fresh Python process on the CPU (the resident-set peak is per
    process); in this one on CUDA, whose allocator resets its peak on request."""
    if settings.device.startswith("cuda"):
        gc.collect()  # PEFT models hold reference cycles: free the timed ones first
        torch.cuda.empty_cache()
        return measure_memory_here(settings, method, steps)
    request = {"settings": asdict(settings), "method": method, "steps": steps, "threads": threads}
    result = subprocess.run(
        [sys.executable, "-m", "ropo.bench.probe", json.dumps(request)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-5:]
        raise RoPOError(f"memory probe for {method} on {settings.model} failed: " + " | ".join(tail))
    return json.loads(result.stdout.strip().splitlines()[-1])
