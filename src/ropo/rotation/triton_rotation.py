"""Triton kernels for the fused rotation: the same Q·x and gradients as the fused path's engine.

Why: on a GPU the fused path's batched matmuls are small and each level costs a gather, a bmm and
a scatter as separate passes over the activations. Here each step is one kernel over tiles of
rows, taking the very same operands (``fused_operands``) and plan (``givens_plan``):

- a reflection pair, x ↦ x + e·(w₀·x) + b·(w₁·x), in place on a tile of whole rows;
- a level, gather → ``block × block`` matmul → scatter of one group of coordinates for a tile of
  rows, in place (groups of a level are disjoint and pad slots are never written).

Backward saves only x and the operands, like the fused path: it reruns the forward, then walks
the steps backwards, recovering each step's input from its output in place (every step is
orthogonal: its input is its transpose applied to its output), so it keeps no copy per step;
parameter gradients are per-program partial sums reduced with torch, so no atomics are needed. Everything is computed in the operands' dtype (fp32
in practice, also for bf16/fp16 activations). Triton is imported on first use only (it is an
optional dependency) and the kernels are jitted then. With ``TRITON_INTERPRET=1`` in the
environment before triton is first imported (by anything: peft imports it through torch) they
run in Triton's interpreter on CPU tensors, which is how the tests check them without a GPU.
"""

from __future__ import annotations

import functools
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

from ropo.rotation.fused import GivensLevel, GivensPlan, RotationEngine, rotate_with
from ropo.rotation.layout import tensor_cache

#: ``triton.language``, bound on first use (the kernels below look it up as a module global).
tl: Any = None

#: Rows per program: a level's 4-d product (rows × groups × block × block) stays in registers.
ROW_TILE = 32
#: Rows per program of a reflection pair, which walks whole rows (kernel_sweep.py: 8 and 32 were
#: within noise of each other on an H200 at 4 096 rows).
PAIR_ROW_TILE = 32
#: Coordinates per chunk when a reflection pair walks along whole rows (at 128 the backward
#: kernels spill registers on sm_90).
COLUMN_TILE = 64
#: Slots of a level one program rotates per row (``_groups``). Measured on an H200
#: (benchmarks/gpu/kernel_sweep.py, 4 096 rows of 4 096 and 14 336): 8 (one group of the tree's
#: 8-wide levels) was fastest; 64 and 128 were 1.1-1.3× and 2.8-3.4× slower forward + backward,
#: their (rows × groups × slots × slots) products being too large for the registers.
LEVEL_COORDINATES = 8
#: Programs to aim for when a reduction over rows is split (enough to fill a large GPU; each
#: program adds one partial sum to reduce afterwards).
TARGET_PROGRAMS = 1024


def _pair_forward(buf_ptr, update_ptr, rows, dim, ROWS: tl.constexpr, COLUMNS: tl.constexpr):
    """x ← x + e·(w₀·x) + b·(w₁·x) for ``ROWS`` rows of ``buf`` (rows, dim), in place."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = row < rows
    base = buf_ptr + row.to(tl.int64)[:, None] * dim
    c0 = tl.zeros([ROWS], dtype=buf_ptr.dtype.element_ty)
    c1 = tl.zeros([ROWS], dtype=buf_ptr.dtype.element_ty)
    for start in range(0, dim, COLUMNS):
        col = start + tl.arange(0, COLUMNS)
        col_mask = col < dim
        x = tl.load(base + col[None, :], mask=row_mask[:, None] & col_mask[None, :], other=0.0)
        w0 = tl.load(update_ptr + 2 * dim + col, mask=col_mask, other=0.0)
        w1 = tl.load(update_ptr + 3 * dim + col, mask=col_mask, other=0.0)
        c0 += tl.sum(x * w0[None, :], axis=1)
        c1 += tl.sum(x * w1[None, :], axis=1)
    for start in range(0, dim, COLUMNS):
        col = start + tl.arange(0, COLUMNS)
        col_mask = col < dim
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(base + col[None, :], mask=mask, other=0.0)
        e = tl.load(update_ptr + col, mask=col_mask, other=0.0)
        b = tl.load(update_ptr + dim + col, mask=col_mask, other=0.0)
        tl.store(base + col[None, :], x + e[None, :] * c0[:, None] + b[None, :] * c1[:, None], mask=mask)


def _pair_coefficients(
    x_ptr, grad_ptr, update_ptr, out_ptr, rows, dim, ROWS: tl.constexpr, COLUMNS: tl.constexpr
):
    """Per row w₀·x, w₁·x, e·∂y, b·∂y into ``out`` (rows, 4): the scalars a pair's backward needs."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = row < rows
    offset = row.to(tl.int64)[:, None] * dim
    c0 = tl.zeros([ROWS], dtype=x_ptr.dtype.element_ty)
    c1 = tl.zeros([ROWS], dtype=x_ptr.dtype.element_ty)
    p0 = tl.zeros([ROWS], dtype=x_ptr.dtype.element_ty)
    p1 = tl.zeros([ROWS], dtype=x_ptr.dtype.element_ty)
    for start in range(0, dim, COLUMNS):
        col = start + tl.arange(0, COLUMNS)
        col_mask = col < dim
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + offset + col[None, :], mask=mask, other=0.0)
        g = tl.load(grad_ptr + offset + col[None, :], mask=mask, other=0.0)
        e = tl.load(update_ptr + col, mask=col_mask, other=0.0)
        b = tl.load(update_ptr + dim + col, mask=col_mask, other=0.0)
        w0 = tl.load(update_ptr + 2 * dim + col, mask=col_mask, other=0.0)
        w1 = tl.load(update_ptr + 3 * dim + col, mask=col_mask, other=0.0)
        c0 += tl.sum(x * w0[None, :], axis=1)
        c1 += tl.sum(x * w1[None, :], axis=1)
        p0 += tl.sum(g * e[None, :], axis=1)
        p1 += tl.sum(g * b[None, :], axis=1)
    tl.store(out_ptr + row * 4, c0, mask=row_mask)
    tl.store(out_ptr + row * 4 + 1, c1, mask=row_mask)
    tl.store(out_ptr + row * 4 + 2, p0, mask=row_mask)
    tl.store(out_ptr + row * 4 + 3, p1, mask=row_mask)


def _pair_backward(
    x_ptr, grad_ptr, update_ptr, coefficient_ptr, partial_ptr, rows, dim,
    ROWS: tl.constexpr, COLUMNS: tl.constexpr,
):
    """One chunk of coordinates over every ``num_programs(0)``-th tile of rows.

    y = x + Σ_k u_k (w_k·x): ∂x = ∂y + Σ_k w_k (u_k·∂y) in place on ``grad``, and this program's
    partial sums of ∂u_k = Σ_t ∂y_t (w_k·x_t), ∂w_k = Σ_t (u_k·∂y_t) x_t into ``partial``.
    """
    split, splits = tl.program_id(0), tl.num_programs(0)
    col = tl.program_id(1) * COLUMNS + tl.arange(0, COLUMNS)
    col_mask = col < dim
    w0 = tl.load(update_ptr + 2 * dim + col, mask=col_mask, other=0.0)
    w1 = tl.load(update_ptr + 3 * dim + col, mask=col_mask, other=0.0)
    de = tl.zeros([COLUMNS], dtype=x_ptr.dtype.element_ty)
    db = tl.zeros([COLUMNS], dtype=x_ptr.dtype.element_ty)
    dw0 = tl.zeros([COLUMNS], dtype=x_ptr.dtype.element_ty)
    dw1 = tl.zeros([COLUMNS], dtype=x_ptr.dtype.element_ty)
    for tile in range(split, tl.cdiv(rows, ROWS), splits):
        row = tile * ROWS + tl.arange(0, ROWS)
        row_mask = row < rows
        mask = row_mask[:, None] & col_mask[None, :]
        offset = row.to(tl.int64)[:, None] * dim + col[None, :]
        x = tl.load(x_ptr + offset, mask=mask, other=0.0)
        g = tl.load(grad_ptr + offset, mask=mask, other=0.0)
        c0 = tl.load(coefficient_ptr + row * 4, mask=row_mask, other=0.0)
        c1 = tl.load(coefficient_ptr + row * 4 + 1, mask=row_mask, other=0.0)
        p0 = tl.load(coefficient_ptr + row * 4 + 2, mask=row_mask, other=0.0)
        p1 = tl.load(coefficient_ptr + row * 4 + 3, mask=row_mask, other=0.0)
        de += tl.sum(g * c0[:, None], axis=0)
        db += tl.sum(g * c1[:, None], axis=0)
        dw0 += tl.sum(x * p0[:, None], axis=0)
        dw1 += tl.sum(x * p1[:, None], axis=0)
        tl.store(grad_ptr + offset, g + w0[None, :] * p0[:, None] + w1[None, :] * p1[:, None], mask=mask)
    out = partial_ptr + split * 4 * dim + col
    tl.store(out, de, mask=col_mask)
    tl.store(out + dim, db, mask=col_mask)
    tl.store(out + 2 * dim, dw0, mask=col_mask)
    tl.store(out + 3 * dim, dw1, mask=col_mask)


def _group_slots(
    matrices_ptr, coords_ptr, real_ptr, blocks, dtype: tl.constexpr,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr, GROUPS: tl.constexpr,
):
    """Program ``program_id(1)``'s groups: their coordinates and real-slot mask (GROUPS, SLOTS)
    and their matrices (GROUPS, SLOTS, SLOTS); groups past the level's last are all pad."""
    group = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
    slot = tl.arange(0, SLOTS)
    valid = (group < blocks)[:, None] & (slot < BLOCK)[None, :]
    index = group[:, None] * BLOCK + slot[None, :]
    coord = tl.load(coords_ptr + index, mask=valid, other=0)
    real = (tl.load(real_ptr + index, mask=valid, other=0) != 0) & valid
    entry = index[:, :, None] * BLOCK + slot[None, None, :]
    matrix = tl.load(matrices_ptr + entry, mask=valid[:, :, None] & (slot < BLOCK)[None, None, :], other=0.0)
    return coord, real, matrix.to(dtype)


def _level_forward(
    buf_ptr, matrices_ptr, coords_ptr, real_ptr, rows, dim, blocks,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr, GROUPS: tl.constexpr, ROWS: tl.constexpr,
):
    """y_c = M_c·x_c for ``GROUPS`` consecutive groups c of a level on ``ROWS`` rows, in place.

    Only real slots are read and written: a pad slot's column of M_c is zero off its diagonal,
    and reading it (coordinate 0) could race with the group that writes coordinate 0.
    """
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    coord, real, matrix = _group_slots(
        matrices_ptr, coords_ptr, real_ptr, blocks, buf_ptr.dtype.element_ty, BLOCK, SLOTS, GROUPS
    )
    mask = (row < rows)[:, None, None] & real[None, :, :]
    pointers = buf_ptr + row.to(tl.int64)[:, None, None] * dim + coord[None, :, :]
    x = tl.load(pointers, mask=mask, other=0.0)
    tl.store(pointers, tl.sum(matrix[None, :, :, :] * x[:, :, None, :], axis=3), mask=mask)


def _level_backward(
    buf_ptr, grad_ptr, matrices_ptr, coords_ptr, real_ptr, partial_ptr, rows, dim, blocks,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr, GROUPS: tl.constexpr, ROWS: tl.constexpr,
):
    """``GROUPS`` consecutive groups c of a level over every ``num_programs(0)``-th tile of rows.

    ``buf`` holds the level's output y: M_c is orthogonal, so its input is x_c = M_cᵀ·y_c,
    written back in place (the next level down reads it), with no copy kept from the forward.
    ∂x_c = M_cᵀ·∂y_c in place on ``grad``, and this program's partial sums of ∂M_c = Σ_t ∂y_c·x_cᵀ
    into ``partial`` (groups × slots × slots). Only real slots are read or written, so groups
    never touch each other's coordinates; rows and columns of pad slots in ∂M_c are 0 (a pad
    column of M_c is 0 off its diagonal for every angle, so its gradient never reaches them).
    """
    split, splits = tl.program_id(0), tl.num_programs(0)
    coord, real, matrix = _group_slots(
        matrices_ptr, coords_ptr, real_ptr, blocks, buf_ptr.dtype.element_ty, BLOCK, SLOTS, GROUPS
    )
    accumulated = tl.zeros([GROUPS, SLOTS, SLOTS], dtype=buf_ptr.dtype.element_ty)
    for tile in range(split, tl.cdiv(rows, ROWS), splits):
        row = tile * ROWS + tl.arange(0, ROWS)
        mask = (row < rows)[:, None, None] & real[None, :, :]
        offset = row.to(tl.int64)[:, None, None] * dim + coord[None, :, :]
        y = tl.load(buf_ptr + offset, mask=mask, other=0.0)
        g = tl.load(grad_ptr + offset, mask=mask, other=0.0)
        x = tl.sum(matrix[None, :, :, :] * y[:, :, :, None], axis=2)
        accumulated += tl.sum(g[:, :, :, None] * x[:, :, None, :], axis=0)
        tl.store(buf_ptr + offset, x, mask=mask)
        tl.store(grad_ptr + offset, tl.sum(matrix[None, :, :, :] * g[:, :, :, None], axis=2), mask=mask)
    group = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
    slot = tl.arange(0, SLOTS)
    out = partial_ptr + (split * tl.num_programs(1) * GROUPS + group[:, None, None]) * SLOTS * SLOTS
    tl.store(out + slot[None, :, None] * SLOTS + slot[None, None, :], accumulated)


@functools.lru_cache(maxsize=None)
def _triton() -> ModuleType | None:
    """``triton`` if it imports (it is an optional dependency), else None."""
    try:
        import triton
    except ImportError:
        return None
    return triton


@functools.lru_cache(maxsize=None)
def _kernels() -> SimpleNamespace:
    """The jitted kernels (interpreted ones under ``TRITON_INTERPRET=1``), built on first use."""
    global tl
    import triton
    import triton.language

    tl = triton.language
    for helper in (_group_slots,):  # device functions: the kernels call them by their global name
        globals()[helper.__name__] = triton.jit(helper)
    kernels = (_pair_forward, _pair_coefficients, _pair_backward, _level_forward, _level_backward)
    return SimpleNamespace(**{kernel.__name__.lstrip("_"): triton.jit(kernel) for kernel in kernels})


def triton_available(x: torch.Tensor) -> bool:
    """Whether ``triton_rotate`` can rotate ``x``: triton imports and x is on a CUDA device, or
    ``TRITON_INTERPRET=1`` asks for Triton's interpreter (CPU tensors; for tests)."""
    return _triton() is not None and (x.is_cuda or bool(_triton().knobs.runtime.interpret))


def _splits(tiles: int, parallel: int) -> int:
    """Programs a reduction over ``tiles`` row tiles is split into, next to ``parallel`` others."""
    return max(1, min(tiles, TARGET_PROGRAMS // parallel))


@tensor_cache
def _slots(level: GivensLevel, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The coordinate each slot reads and whether it is written back (1) or a pad slot (0);
    cached per level (a plan's levels live as long as the plan), so no step allocates them."""
    size = level.blocks * level.block
    coords = torch.arange(dim, device=device) if level.coords is None else level.coords
    if level.real_slots is None:
        return coords, torch.ones(size, dtype=torch.int8, device=device)
    real = torch.zeros(size, dtype=torch.int8, device=device)
    return coords, real.index_fill_(0, level.real_slots, 1)


def _groups(level: GivensLevel, slots: int) -> int:
    """Groups of a level one program rotates: enough for ``LEVEL_COORDINATES`` slots a row (a few
    whole memory sectors when the groups are contiguous), never more than the level has."""
    wanted = max(1, LEVEL_COORDINATES // slots)
    return min(1 << (wanted - 1).bit_length(), 1 << (level.blocks - 1).bit_length())


def _slot_count(block: int) -> int:
    """A level's slots per group rounded up to a power of two (``tl.arange`` needs one)."""
    return 1 << (block - 1).bit_length()


def _forward(
    x: torch.Tensor, levels: tuple[GivensLevel, ...], updates: torch.Tensor, blocks: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Q·x on rows (tokens, dim) in the operands' dtype, in a new buffer."""
    kernels = _kernels()
    buf = x.to(dtype=updates.dtype, memory_format=torch.contiguous_format, copy=True)
    rows, dim = buf.shape
    tiles = -(-rows // ROW_TILE)
    for update in updates:
        _pair_apply(buf, update)
    for level, matrices in zip(levels, blocks):
        coords, real = _slots(level, dim, buf.device)
        slots = _slot_count(level.block)
        groups = _groups(level, slots)
        kernels.level_forward[(tiles, -(-level.blocks // groups))](
            buf, matrices.contiguous(), coords, real, rows, dim, level.blocks,
            BLOCK=level.block, SLOTS=slots, GROUPS=groups, ROWS=ROW_TILE,
        )
    return buf


def _pair_apply(buf: torch.Tensor, update: torch.Tensor) -> None:
    """x ← x + U·(W·x) on every row of ``buf`` in place (``update``: rows u₀, u₁, w₀, w₁)."""
    rows, dim = buf.shape
    _kernels().pair_forward[(-(-rows // PAIR_ROW_TILE),)](
        buf, update, rows, dim, ROWS=PAIR_ROW_TILE, COLUMNS=COLUMN_TILE
    )


def _level_gradients(
    buf: torch.Tensor, grad: torch.Tensor, level: GivensLevel, matrices: torch.Tensor
) -> torch.Tensor:
    """∂M of one level (blocks, b, b); turns ``buf`` from the level's output into its input and
    ``grad`` into the gradient of its input."""
    rows, dim = grad.shape
    slots = _slot_count(level.block)
    groups = _groups(level, slots)
    programs = -(-level.blocks // groups)
    splits = _splits(-(-rows // ROW_TILE), programs)
    partial = grad.new_empty(splits, programs * groups, slots, slots)
    coords, real = _slots(level, dim, grad.device)
    _kernels().level_backward[(splits, programs)](
        buf, grad, matrices.contiguous(), coords, real, partial, rows, dim, level.blocks,
        BLOCK=level.block, SLOTS=slots, GROUPS=groups, ROWS=ROW_TILE,
    )
    return partial.sum(0)[: level.blocks, : level.block, : level.block].to(matrices.dtype)


def _pair_gradients(pair_input: torch.Tensor, grad: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """∂update of one reflection pair (4, dim); turns ``grad`` into the gradient of its input."""
    rows, dim = grad.shape
    kernels = _kernels()
    tiles, chunks = -(-rows // ROW_TILE), -(-dim // COLUMN_TILE)
    coefficients = grad.new_empty(rows, 4)
    kernels.pair_coefficients[(-(-rows // PAIR_ROW_TILE),)](
        pair_input, grad, update, coefficients, rows, dim, ROWS=PAIR_ROW_TILE, COLUMNS=COLUMN_TILE
    )
    splits = _splits(tiles, chunks)
    partial = grad.new_empty(splits, 4, dim)
    kernels.pair_backward[(splits, chunks)](
        pair_input, grad, update, coefficients, partial, rows, dim, ROWS=ROW_TILE, COLUMNS=COLUMN_TILE
    )
    return partial.sum(0).to(update.dtype)


def _backward(
    x: torch.Tensor,
    levels: tuple[GivensLevel, ...],
    updates: torch.Tensor,
    blocks: tuple[torch.Tensor, ...],
    grad_output: torch.Tensor,
    input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]:
    """Reruns the forward into one buffer and walks the steps backwards, turning that buffer back
    into each step's input as it goes (every step is orthogonal, so its input is its transpose
    applied to its output): no step's input is kept, so backward holds two activation-sized
    buffers (the rotated x and the gradient), not one per step."""
    buf = _forward(x, levels, updates, blocks)
    # An own copy: each step turns it, in place, into the gradient of its input.
    grad = grad_output.to(dtype=updates.dtype, memory_format=torch.contiguous_format, copy=True)
    block_grads: list[torch.Tensor] = []
    for level, matrices in reversed(list(zip(levels, blocks))):
        block_grads.insert(0, _level_gradients(buf, grad, level, matrices))
    update_grads = torch.zeros_like(updates)
    # (I + U·W)ᵀ = I + Wᵀ·Uᵀ: rows w₀, w₁, e, b (a roll: indexing with a list would copy the
    # index from the host and wait for the device)
    inverses = updates.roll(2, dims=1).contiguous()
    for index in reversed(range(updates.shape[0])):
        _pair_apply(buf, inverses[index])
        update_grads[index] = _pair_gradients(buf, grad, updates[index])
    return (grad.to(x.dtype) if input_grad else None), update_grads, block_grads


TRITON_ENGINE = RotationEngine("triton", _forward, _backward)


def triton_rotate(
    x: torch.Tensor, plan: GivensPlan, updates: torch.Tensor, blocks: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """``fused_rotate`` with Triton kernels: Q·x for every row of ``x`` (..., dim) in the operands'
    dtype, the same gradients for x, ``updates`` and ``blocks``, only x saved for backward."""
    return rotate_with(TRITON_ENGINE, x, plan, updates, blocks)
