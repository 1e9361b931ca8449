"""The Triton kernels of the rotation: the fused path's (and the reference's) Q and gradients.

With a GPU the kernels run natively on CUDA tensors. Without one they run in Triton's interpreter
on CPU tensors, so CI checks their logic: that needs ``TRITON_INTERPRET=1`` before triton is
first imported (it wraps its own library functions then), and other modules import it early
(peft, through torch), so on CPU ``test_kernels_in_the_interpreter`` reruns this file in a fresh
process with the variable set.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import saved_activations

pytest.importorskip("triton")

from ropo.rotation import OrthogonalRotation  # noqa: E402
from ropo.rotation.fused import fused_operands, fused_rotate, givens_plan  # noqa: E402
from ropo.rotation import triton_tree  # noqa: E402
from ropo.rotation.triton_rotation import (  # noqa: E402
    COLUMN_TILE,
    ROW_TILE,
    _kernels,
    triton_available,
    triton_rotate,
)

CUDA = torch.cuda.is_available()
INTERPRETED = not CUDA and os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="native Triton needs a CUDA device")
runs_kernels = pytest.mark.skipif(
    not (CUDA or INTERPRETED), reason="no GPU: run by test_kernels_in_the_interpreter"
)


@pytest.mark.skipif(CUDA or INTERPRETED, reason="the kernel tests run in this process")
def test_kernels_in_the_interpreter():
    """This file's tests, in a fresh process where Triton interprets its kernels on the CPU."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


@pytest.mark.skipif(CUDA or INTERPRETED, reason="kernels run natively on the GPU, or are interpreted")
def test_kernels_compile_for_a_gpu_without_one():
    """The interpreter checks values, not what the compiler rejects: compile each kernel to sm_90
    machine code (Triton ships the assembler, no GPU needed)."""
    for groups in (1, 4):
        _compile_each_kernel(_kernels(), {"ROWS": ROW_TILE, "COLUMNS": COLUMN_TILE, "BLOCK": 13, "SLOTS": 16, "GROUPS": groups})
    # The tree kernels at d = 4 096 (64 chunks of 64), bf16 activations, with a pair; and at d = 5
    # (one chunk of 8, one representative: the degenerate shapes), fp32, without.
    constants = {**triton_tree.tree_shape(4096).constants, "HAS_PAIR": True, "INPUT_GRAD": True, "DOWNCAST": True}
    bf16 = {name: "*bf16" for name in ("x_ptr", "out_ptr", "grad_ptr", "grad_x_ptr")}
    _compile_each_kernel(triton_tree._kernels(), constants, bf16)
    constants = {**triton_tree.tree_shape(5).constants, "HAS_PAIR": False, "INPUT_GRAD": False, "DOWNCAST": False}
    _compile_each_kernel(triton_tree._kernels(), constants)


def _compile_each_kernel(kernels, constants: dict[str, int], types: dict[str, str] | None = None) -> None:
    from triton import compile as compile_kernel
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    types = {"coords_ptr": "*i64", "real_ptr": "*i8", "offset_ptr": "*i32", **(types or {})}
    for kernel in vars(kernels).values():
        signature = {
            name: "constexpr" if name.isupper() else types.get(name, "*fp32" if name.endswith("_ptr") else "i32")
            for name in kernel.arg_names
        }
        used = {name: constants[name] for name in kernel.arg_names if name.isupper()}
        compiled = compile_kernel(ASTSource(kernel, signature, used), target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"], kernel


def _reference(dim: int, layout: str, reflections: int, seed: int, dtype=torch.float32) -> OrthogonalRotation:
    torch.manual_seed(seed)
    rotation = OrthogonalRotation(dim, reflections, layout, dtype=dtype, device=DEVICE, backend="reference")
    with torch.no_grad():
        for parameter in rotation.parameters():
            parameter.normal_(0, 0.5)
    return rotation


def _run(rotate, rotation: OrthogonalRotation, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and parameter gradients of ``rotate`` on fresh leaf copies."""
    plan = givens_plan(rotation.dim, rotation.givens_layout, DEVICE)
    # A part the layout leaves out is an empty buffer, not a parameter: copy all three operands.
    tensors = (rotation.angles, rotation.householder_base, rotation.householder_offset)
    params = [p.detach().clone().requires_grad_(p.numel() > 0) for p in tensors]
    x = x.detach().clone().requires_grad_()
    y = rotate(x, plan, *fused_operands(*params, plan))
    y.backward(grad)
    return y.detach(), x.grad, [p.grad for p in params if p.numel()]


def _run_reference(rotation: OrthogonalRotation, x: torch.Tensor, grad: torch.Tensor):
    rotation.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = rotation(x)
    y.backward(grad)
    return y.detach(), x.grad, [p.grad for p in rotation.parameters()]


def _assert_close(actual, expected, tol: float, what: str) -> None:
    if expected is None or expected.numel() == 0:  # e.g. no Givens angles at width 1
        assert actual is None or actual.numel() == 0, what
        return
    actual, expected = actual.double(), expected.double()
    scale = max(float(expected.abs().max()), 1.0)
    error = float((actual - expected).abs().max())
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:.1g} × {scale:.3g}"


def _assert_same(result, expected, input_tol: float, tol: float = 1e-5) -> None:
    (y, gx, grads), (y_ref, gx_ref, grads_ref) = result, expected
    assert y.dtype == y_ref.dtype and gx.dtype == gx_ref.dtype and y.shape == y_ref.shape
    _assert_close(y, y_ref, tol, "output")
    _assert_close(gx, gx_ref, input_tol, "input gradient")
    for name, actual, wanted in zip(("angles", "base", "offset"), grads, grads_ref):
        _assert_close(actual, wanted, 2 * tol, name)


@runs_kernels
@pytest.mark.parametrize("reflections", [0, 2])
@pytest.mark.parametrize("layout", ["bidirectional", "butterfly", "none"])
@pytest.mark.parametrize("dim", [1, 5, 64, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_fused_and_reference(dim, layout, reflections, dtype):
    rotation = _reference(dim, layout, reflections, seed=dim)
    x = torch.randn(3, 7, dim, device=DEVICE).to(dtype)
    grad = torch.randn(3, 7, dim, device=DEVICE)
    result = _run(triton_rotate, rotation, x, grad)
    assert result[0].dtype == torch.float32 and result[1].dtype == dtype
    # Against the fused path the input gradient is rounded the same way; the reference's is not.
    _assert_same(result, _run(fused_rotate, rotation, x, grad), input_tol=1e-5)
    _assert_same(result, _run_reference(rotation, x, grad), 1e-5 if dtype == torch.float32 else 8e-3)


@runs_kernels
def test_operand_gradients_match_the_fused_path():
    """The contract with the fused engine: the same gradients for the updates and each level's
    matrices between real slots. Pad slots aside: their outputs are discarded, and a pad column
    of M is 0 off its diagonal for every angle, so neither reaches the angles; the kernel, which
    never reads a pad slot, gives both 0."""
    dim, layout = 100, "bidirectional"  # gathered levels with pad slots
    plan = givens_plan(dim, layout, DEVICE)
    rotation = _reference(dim, layout, 4, seed=1)
    with torch.no_grad():
        updates, blocks = fused_operands(rotation.angles, rotation.householder_base, rotation.householder_offset, plan)
    x, grad = torch.randn(40, dim, device=DEVICE), torch.randn(40, dim, device=DEVICE)
    grads = []
    for rotate in (fused_rotate, triton_rotate):
        operands = [updates.clone().requires_grad_(), *(m.clone().requires_grad_() for m in blocks)]
        rotate(x, plan, operands[0], tuple(operands[1:])).backward(grad)
        grads.append([operand.grad for operand in operands])
    _assert_close(grads[1][0], grads[0][0], 2e-5, "updates")
    assert any(level.real_slots is not None for level in plan.levels)
    for level, actual, expected in zip(plan.levels, grads[1][1:], grads[0][1:]):
        real = torch.ones(level.blocks * level.block, dtype=torch.bool, device=DEVICE)
        if level.real_slots is not None:
            real = torch.zeros_like(real).index_fill_(0, level.real_slots, True)
        real = real.view(level.blocks, level.block)
        between_real = real[:, :, None] & real[:, None, :]
        _assert_close(actual[between_real], expected[between_real], 2e-5, "level matrices")
        assert not actual[~between_real].any()


@runs_kernels
def test_triton_gradients_pass_gradcheck_in_float64():
    rotation = _reference(7, "bidirectional", 2, seed=3, dtype=torch.float64)
    plan = givens_plan(7, "bidirectional", DEVICE)
    x = torch.randn(2, 7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in rotation.parameters())

    def function(x, angles, base, offset):
        return triton_rotate(x, plan, *fused_operands(angles, base, offset, plan))

    assert torch.autograd.gradcheck(function, (x, *params), eps=1e-6, atol=1e-7)


@runs_kernels
def test_triton_is_exactly_identity_at_init_and_handles_odd_inputs():
    rotation = OrthogonalRotation(100, 2, "bidirectional", device=DEVICE)
    plan = givens_plan(100, "bidirectional", DEVICE)
    x = torch.randn(100, 9, device=DEVICE).T  # non-contiguous rows
    assert torch.equal(triton_rotate(x, plan, *fused_operands(rotation.angles, rotation.householder_base, rotation.householder_offset, plan)), x)
    empty = torch.randn(0, 100, device=DEVICE, requires_grad=True)
    y = triton_rotate(empty, plan, *fused_operands(rotation.angles, rotation.householder_base, rotation.householder_offset, plan))
    y.sum().backward()
    assert y.shape == (0, 100) and empty.grad.shape == (0, 100)
    # An input that needs no gradient (e.g. the first layer's): the parameters still get theirs.
    reference = _reference(100, "bidirectional", 2, seed=4)
    params = [p.detach().clone().requires_grad_() for p in reference.parameters()]
    grad = torch.randn(9, 100, device=DEVICE)
    triton_rotate(x, plan, *fused_operands(*params, plan)).backward(grad)
    reference(x).backward(grad)
    for (name, expected), actual in zip(reference.named_parameters(), params):
        _assert_close(actual.grad, expected.grad, 2e-5, name)


@runs_kernels
def test_triton_saves_only_its_input():
    rotation = _reference(64, "butterfly", 2, seed=5)
    plan = givens_plan(64, "butterfly", DEVICE)
    x = torch.randn(32, 64, device=DEVICE, requires_grad=True)
    saved = saved_activations(lambda: triton_rotate(x, plan, *fused_operands(rotation.angles, rotation.householder_base, rotation.householder_offset, plan)), x)
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


def _tree_rotation(dim: int, reflections: int, seed: int) -> OrthogonalRotation:
    rotation = _reference(dim, "bidirectional", reflections, seed)
    rotation.backend = "triton"
    return rotation


@runs_kernels
@pytest.mark.parametrize(("dim", "reflections", "dtype"), [
    (2, 0, torch.float32), (5, 2, torch.bfloat16), (100, 2, torch.float32), (300, 0, torch.bfloat16),
    (300, 2, torch.float32),
])
def test_tree_kernels_match_the_reference(dim, reflections, dtype):
    """One chunk (2, 5), two (100) and five (300, padded to 8 representatives); every parameter's
    gradient, through the module as users call it. A few cases, not all combinations: on a GPU
    each is compiled (seconds each), and the kit's run has minutes."""
    rotation = _tree_rotation(dim, reflections, seed=dim)
    x = torch.randn(3, 7, dim, device=DEVICE).to(dtype)
    grad = torch.randn(3, 7, dim, device=DEVICE)
    result = _run_reference(rotation, x, grad)
    assert result[0].dtype == torch.float32 and result[1].dtype == dtype
    with torch.no_grad():  # what a layer asks for: its input's dtype, written by the kernel
        direct, cast = rotation(x, dtype=dtype).float(), rotation(x).to(dtype).float()
    if CUDA:  # rounded to nearest, as the cast
        assert torch.equal(direct, cast)
    else:  # Triton's interpreter truncates on a downcast, whatever the kernel asks: within one unit
        assert float(((direct - cast).abs() / cast.abs().clamp_min(1e-30)).max()) <= torch.finfo(dtype).eps
    rotation.backend = "reference"
    _assert_same(result, _run_reference(rotation, x, grad), 1e-5 if dtype == torch.float32 else 8e-3)


@runs_kernels
def test_tree_kernels_are_what_triton_runs_for_the_default_layout():
    """``triton`` means the tree kernels for the bidirectional layout with at most one reflection
    pair, the level kernels otherwise, and ``triton-levels`` the level kernels always."""
    x = torch.randn(4, 100, device=DEVICE, requires_grad=True)
    for backend, layout, reflections, engine in (
        ("triton", "bidirectional", 2, "triton-tree"), ("triton", "bidirectional", 4, "triton"),
        ("triton", "butterfly", 2, "triton"), ("triton-levels", "bidirectional", 2, "triton"),
    ):
        rotation = OrthogonalRotation(100, reflections, layout, device=DEVICE, backend=backend)
        node = rotation(x).grad_fn
        while not hasattr(node, "engine"):
            node = node.next_functions[0][0]
        assert node.engine.name == engine, (backend, layout, reflections)


@runs_kernels
def test_tree_kernels_are_exactly_identity_at_init_and_save_only_their_input():
    rotation = OrthogonalRotation(300, 2, "bidirectional", device=DEVICE, backend="triton")
    x = torch.randn(300, 9, device=DEVICE).T  # non-contiguous rows
    assert torch.equal(rotation(x), x)
    x = torch.randn(40, 300, device=DEVICE, requires_grad=True)
    saved = saved_activations(lambda: _tree_rotation(300, 2, seed=6)(x), x)
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()
    empty = torch.randn(0, 300, device=DEVICE, requires_grad=True)
    rotation(empty).sum().backward()
    assert empty.grad.shape == (0, 300)


@runs_kernels
def test_tree_backward_loops_over_row_tiles(monkeypatch):
    """More row tiles than backward programs: each program adds several tiles into its partial sums."""
    monkeypatch.setattr(triton_tree, "BACKWARD_PROGRAMS", 2)
    rotation = _tree_rotation(100, 2, seed=7)
    x, grad = torch.randn(5 * triton_tree.ROWS + 3, 100, device=DEVICE), torch.randn(5 * triton_tree.ROWS + 3, 100, device=DEVICE)
    result = _run_reference(rotation, x, grad)
    rotation.backend = "reference"
    _assert_same(result, _run_reference(rotation, x, grad), 1e-5)


def test_triton_available_only_on_cuda_or_in_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_available(torch.zeros(2))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_available(torch.zeros(2))
    if CUDA:
        monkeypatch.delenv("TRITON_INTERPRET")
        assert triton_available(torch.zeros(2, device="cuda"))


_WITHOUT_TRITON = """
import importlib.abc, sys
class NoTriton(importlib.abc.MetaPathFinder):  # as on a machine where triton is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoTriton())
import torch, ropo
from ropo.rotation.triton_rotation import triton_available
from ropo.tiny_models import tiny_causal_lm
assert not triton_available(torch.zeros(2))
model = ropo.get_ropo_model(tiny_causal_lm())
ids = torch.randint(0, 100, (1, 5))
model(input_ids=ids, labels=ids).loss.backward()
"""


def test_ropo_imports_and_trains_without_triton():
    """triton is optional (CUDA kernels only): PEFT and torch import it when it is there, so the
    check is that nothing of ropo needs it, in a process where it cannot be imported."""
    subprocess.run([sys.executable, "-c", _WITHOUT_TRITON], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@needs_cuda
@pytest.mark.parametrize("dim", [576, 4096, 14336])
def test_tree_kernels_match_fused_at_model_width_in_bf16(dim):
    """The widths of SmolLM2 and Llama-3-8B (attention and MLP: 112 chunks of 128), called as a
    layer calls them (bf16 in, bf16 out: the same compiled kernels as the kit's bench then)."""
    rotation = _tree_rotation(dim, 2, seed=0)
    x = torch.randn(4, 300, dim, device=DEVICE).bfloat16()
    grad = torch.randn(4, 300, dim, device=DEVICE).bfloat16()
    results = []
    for backend in ("triton", "fused"):
        rotation.backend = backend
        rotation.zero_grad()
        leaf = x.detach().clone().requires_grad_()
        y = rotation(leaf, dtype=torch.bfloat16)
        y.backward(grad)
        results.append((y.detach(), leaf.grad, [p.grad for p in rotation.parameters()]))
    assert results[0][0].dtype == results[0][1].dtype == torch.bfloat16
    # Sums over 1200 rows in another order, and outputs rounded to bf16: a bf16 unit of tolerance.
    _assert_same(results[0], results[1], input_tol=8e-3, tol=8e-3)


@needs_cuda
@pytest.mark.parametrize("layout", ["bidirectional", "butterfly"])
def test_level_kernels_match_fused_at_model_width_in_bf16(layout):
    dim = 2048
    rotation = _reference(dim, layout, 2, seed=0)
    x = torch.randn(4, 300, dim, device=DEVICE).bfloat16()
    grad = torch.randn(4, 300, dim, device=DEVICE)
    result = _run(triton_rotate, rotation, x, grad)
    assert result[0].dtype == torch.float32 and result[1].dtype == torch.bfloat16
    # Sums over 1200 rows and 2048 coordinates in another order: a looser fp32 tolerance.
    _assert_same(result, _run(fused_rotate, rotation, x, grad), input_tol=8e-3, tol=1e-4)
