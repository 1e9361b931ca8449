"""The native CPU path of ``OrthogonalRotation.forward``: each Givens rotation applied as it is.

Why: in PyTorch ops the fused path has to apply a level of Givens stages as dense block matrices
(16 multiply-adds per coordinate and level, plus a gather and a scatter per level); a rotation
itself is 6 flops per row. ``native_rotation.cpp`` applies the reflection pairs and every
rotation one by one on feature-major tiles of ``ROWS_PER_TILE`` rows kept in cache, and walks
them back in backward from the same saved x (benchmarks/README.md has the measurements).

It is compiled on first use with torch's own ``cpp_extension`` (a C++ compiler is needed; about
half a minute, once: torch caches the build under ``TORCH_EXTENSIONS_DIR``). Where it cannot be
built, ``auto`` uses the fused path instead, and says so once.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path
from types import ModuleType

import torch

from ropo.rotation.fused import AngleEngine
from ropo.rotation.layout import givens_pairs

SOURCE = Path(__file__).with_name("native_rotation.cpp")
#: Rows per tile: one AVX2 register of fp32 per coordinate. On one SmolLM2 layer (1 024 × 576,
#: forward + backward, one thread) 8 rows took 2.7 ms, 16 rows 3.6 ms, 32 rows 3.4 ms, 64 rows 3.1 ms.
ROWS_PER_TILE = 8
#: Compiler flags: optimised, rows per tile fixed at compile time.
BASE_FLAGS = ("-O3", f"-DROPO_ROWS={ROWS_PER_TILE}")
#: ``at::parallel_for`` is inlined into the extension: under torch's OpenMP backend it only runs in
#: parallel when the extension is compiled with ``-fopenmp`` (the symbols resolve to the libgomp
#: torch has loaded, no second runtime). Without it, one thread did all the work: 1 024 × 576
#: forward + backward took about 2.6 ms with one or two torch threads; with it, 1.2-1.3 ms on two.
#: Other backends need only the ``omp simd`` loops vectorised.
OPENMP_FLAGS = {True: ("-fopenmp",), False: ("-fopenmp-simd",)}
#: Instruction sets used for each CPU capability torch detects (the build's name includes the
#: capability, so builds for different CPUs sharing one cache folder never mix).
CAPABILITY_FLAGS = {"AVX512": ("-mavx2", "-mfma"), "AVX2": ("-mavx2", "-mfma")}


def _build_name(flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    return f"ropo_native_rotation_{digest}"


@functools.lru_cache(maxsize=None)
def _extension() -> ModuleType | str:
    """The compiled kernels, or why they could not be built (tried once per process)."""
    openmp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    flags = (*BASE_FLAGS, *OPENMP_FLAGS[openmp], *CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), ()))
    try:
        from torch.utils.cpp_extension import load

        return load(name=_build_name(flags), sources=[str(SOURCE)], extra_cflags=list(flags), verbose=False)
    except Exception as error:  # no compiler, no headers, no ninja: all mean "use the fused path"
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return f"{type(error).__name__}: {lines[-1]}"


def native_unavailable_reason() -> str | None:
    """None when the native kernels are built and loaded, else why not (one line)."""
    built = _extension()
    return None if isinstance(built, ModuleType) else built


def native_applies(x: torch.Tensor, adapter_dtype: torch.dtype) -> bool:
    """Whether the native kernels can rotate ``x``: a CPU tensor and an fp32 adapter."""
    return x.device.type == "cpu" and adapter_dtype == torch.float32


@functools.lru_cache(maxsize=None)
def _warn_fallback(reason: str) -> None:
    warnings.warn(
        f"the native CPU rotation kernels could not be built ({reason}); RoPO uses the slower fused path "
        "(they need a C++ compiler and ninja, `pip install ninja`; rotation_backend='fused' silences this)",
        stacklevel=4,
    )


def native_or_fallback(x: torch.Tensor, adapter_dtype: torch.dtype) -> bool:
    """``auto``'s choice on the CPU: True when the native kernels apply and are built; otherwise
    False, with one warning per reason when they could not be built."""
    if not native_applies(x, adapter_dtype):
        return False
    reason = native_unavailable_reason()
    if reason is not None:
        _warn_fallback(reason)
    return reason is None


def _forward(x: torch.Tensor, updates: torch.Tensor, angles: torch.Tensor, layout: str, dtype: torch.dtype) -> torch.Tensor:
    first, second = givens_pairs(x.shape[-1], layout, str(x.device))
    return _extension().forward(x, updates, first, second, torch.cos(angles), torch.sin(angles)).to(dtype)


def _backward(
    x: torch.Tensor, updates: torch.Tensor, angles: torch.Tensor, layout: str, grad_output: torch.Tensor,
    input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    first, second = givens_pairs(x.shape[-1], layout, str(x.device))
    grad_x, angle_grad, update_grad = _extension().backward(
        x, grad_output.float().contiguous(), updates, first, second, torch.cos(angles), torch.sin(angles), input_grad
    )
    return (grad_x if input_grad else None), update_grad, angle_grad


#: The native kernels as an engine of ``rotate_by_angles`` (which saves only x and the operands).
NATIVE_ENGINE = AngleEngine("native", _forward, _backward)
