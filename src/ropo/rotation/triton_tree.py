"""Triton kernels for the bidirectional Givens tree: a whole rotation in one kernel per tile of rows.

Why: the level kernels (``triton_rotation``) apply a rotation as ~10 kernels, each a full pass
over the activations, from block matrices built on the host in ~50 small launches; on an H200 one
rotation cost 150 times a plain copy of its input (benchmarks/README.md). The default layout has
a structure they ignore. Its tree stage of stride s rotates (i, i + s) for i a multiple of 2s, so

- the stages of stride < C stay inside chunks of C consecutive coordinates (*fine* stages), and
- the stages of stride ≥ C touch only each chunk's first coordinate, its *representative*
  (*coarse* stages: the same tree on the chunks' representatives).

So Q·x for a tile of ``ROWS`` whole rows is, in one program:

1. the reflection pair's two dot products with each row (one read of x);
2. per chunk: the pair's update, the fine stages of the tree; keep the representative (a read of x);
3. the coarse stages, the tree and its reverse, on the tile's representatives, in registers;
4. per chunk: 2. again, the representative replaced, the fine stages of the reversed tree → y.

x is read three times and y written once; nothing between the steps goes through memory, and
nothing is built on the host (the kernels take the angles and compute cos/sin themselves).
Backward is the same walk with each stage undone from its output (every stage is orthogonal):
the parameter gradients are per-program partial sums reduced with torch, no atomics.

A stage on a register tile (rows, W): viewed as (rows, W/2S, 2, S) and split into the pair's
members p (column 2S·g + k) and q (2S·g + S + k); only k = 0 is a pair of the tree, the others
get angle 0 (the identity), so every stage is the same dense, branch-free code. Shapes are
compile-time constants: ``tree_shape`` picks them per width. Other layouts, or more than one
reflection pair, use the level kernels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from ropo.rotation.fused import AngleEngine
from ropo.rotation.layout import givens_stages, tensor_cache

#: ``triton.language``, bound on first use (the kernels below look it up as a module global).
tl: Any = None

#: Rows per program: every per-chunk tensor is (ROWS, chunk) and the representatives
#: (ROWS, chunks) stay in registers for the whole program.
ROWS = 16
#: Warps per program. ptxas for sm_90 at d = 4 096 (chunks of 64, 16 rows): 94 registers forward and
#: 128 backward (128 bytes spilled) at 8 warps; 128 and 224 (no spill) at 4, where fewer programs
#: fit an SM. Not yet timed on a GPU: benchmarks/gpu/kernel_sweep.py times both.
WARPS = 8
#: Chunk widths: the smallest power of two from which the representatives fit in
#: ``MAX_REPRESENTATIVES`` (64 coordinates a chunk up to d = 4 096, 128 up to 16 384).
SMALLEST_CHUNK = 64
MAX_REPRESENTATIVES = 128
#: Largest chunk: wider ones would not fit the registers (a width past 128 × 128 = 16 384 uses
#: the level kernels).
LARGEST_CHUNK = 128
#: Programs of a backward at most: each keeps its own partial sums of the angles' and update
#: vectors' gradients (programs × (angles + 4·d) floats), and loops over row tiles beyond that.
BACKWARD_PROGRAMS = 512


def _pairs(v, R: tl.constexpr, W: tl.constexpr, S: tl.constexpr):
    """The members p (columns 2S·g + k) and q (2S·g + S + k) of tile v (R, W), each (R, W/2S, S)."""
    return tl.split(tl.permute(tl.reshape(v, (R, W // (2 * S), 2, S)), (0, 1, 3, 2)))


def _unpairs(p, q, R: tl.constexpr, W: tl.constexpr):
    """The inverse of ``_pairs``: the tile (R, W) whose members are p and q."""
    return tl.reshape(tl.permute(tl.join(p, q), (0, 1, 3, 2)), (R, W))


def _stage_angles(angle_ptr, offset, start, limit, W: tl.constexpr, S: tl.constexpr):
    """cos, sin (W/2S, S) of a stage of stride S on units start … start + W − 1 of ``limit``, and
    the angle index and mask: the pair (start + 2S·g, start + 2S·g + S) exists when its second
    member is below ``limit``; its angle is ``offset + start / 2S + g``. Non-pairs get angle 0."""
    g = tl.arange(0, W // (2 * S))[:, None]
    k = tl.arange(0, S)[None, :]
    valid = (k == 0) & (start + 2 * S * g + S < limit)
    index = offset + start // (2 * S) + g + 0 * k
    theta = tl.load(angle_ptr + index, mask=valid, other=0.0)
    return tl.cos(theta), tl.sin(theta), index, valid


def _stage(v, angle_ptr, offset_ptr, start, limit, R: tl.constexpr, W: tl.constexpr, LEVEL: tl.constexpr):
    """The tree stage of stride 2^LEVEL on tile v (R, W); its first angle is ``offset_ptr[LEVEL]``.
    (G·x)_p = x_p·cos − x_q·sin, (G·x)_q = x_p·sin + x_q·cos."""
    cos, sin, _, _ = _stage_angles(angle_ptr, tl.load(offset_ptr + LEVEL), start, limit, W, 1 << LEVEL)
    p, q = _pairs(v, R, W, 1 << LEVEL)
    return _unpairs(p * cos[None] - q * sin[None], p * sin[None] + q * cos[None], R, W)


def _stage_back(y, g, angle_ptr, offset_ptr, partial_ptr, start, limit, R: tl.constexpr, W: tl.constexpr,
                LEVEL: tl.constexpr, STORE: tl.constexpr):
    """Undoes ``_stage`` from its output y and output gradient g: returns its input and input
    gradient; with STORE adds each angle's ∂θ = Σ_rows (∂y_q·y_p − ∂y_p·y_q) into ``partial_ptr``
    (this program's own row)."""
    cos, sin, index, valid = _stage_angles(angle_ptr, tl.load(offset_ptr + LEVEL), start, limit, W, 1 << LEVEL)
    p, q = _pairs(y, R, W, 1 << LEVEL)
    gp, gq = _pairs(g, R, W, 1 << LEVEL)
    if STORE:
        here = partial_ptr + index
        tl.store(here, tl.load(here, mask=valid, other=0.0) + tl.sum(gq * p - gp * q, axis=0), mask=valid)
    y = _unpairs(p * cos[None] + q * sin[None], q * cos[None] - p * sin[None], R, W)
    return y, _unpairs(gp * cos[None] + gq * sin[None], gq * cos[None] - gp * sin[None], R, W)


def _tree(v, angle_ptr, offset_ptr, start, limit, R: tl.constexpr, W: tl.constexpr, LOG_W: tl.constexpr,
          REVERSE: tl.constexpr):
    """The tree's stages of stride 1 … W/2 (REVERSE: W/2 … 1) on tile v (R, W)."""
    for i in tl.static_range(LOG_W):
        v = _stage(v, angle_ptr, offset_ptr, start, limit, R, W, i + REVERSE * (LOG_W - 1 - 2 * i))
    return v


def _tree_back(y, g, angle_ptr, offset_ptr, partial_ptr, start, limit, R: tl.constexpr, W: tl.constexpr,
               LOG_W: tl.constexpr, REVERSE: tl.constexpr, STORE: tl.constexpr):
    """Undoes ``_tree(…, REVERSE)`` stage by stage, the last applied first (``_stage_back``)."""
    for i in tl.static_range(LOG_W):
        y, g = _stage_back(y, g, angle_ptr, offset_ptr, partial_ptr, start, limit, R, W,
                           (LOG_W - 1 - i) + REVERSE * (2 * i + 1 - LOG_W), STORE)
    return y, g


def _load(ptr, row, rows, dim, start, C: tl.constexpr):
    """Columns start … start + C − 1 of ``rows`` × ``dim`` rows ``row``, in fp32 (0 outside)."""
    col = start + tl.arange(0, C)
    mask = (row < rows)[:, None] & (col < dim)[None, :]
    return tl.load(ptr + row.to(tl.int64)[:, None] * dim + col[None, :], mask=mask, other=0.0).to(tl.float32)


def _vector(ptr, dim, start, C: tl.constexpr):
    col = start + tl.arange(0, C)
    return tl.load(ptr + col, mask=col < dim, other=0.0)[None, :]


def _dots(x_ptr, first_ptr, second_ptr, row, rows, dim, chunks, HAS_PAIR: tl.constexpr, R: tl.constexpr,
          C: tl.constexpr):
    """Each row's dot products with two vectors of width ``dim`` (zeros without a pair)."""
    d0 = tl.zeros([R], dtype=tl.float32)
    d1 = tl.zeros([R], dtype=tl.float32)
    if HAS_PAIR:
        for j in range(chunks):
            x = _load(x_ptr, row, rows, dim, j * C, C)
            d0 += tl.sum(x * _vector(first_ptr, dim, j * C, C), axis=1)
            d1 += tl.sum(x * _vector(second_ptr, dim, j * C, C), axis=1)
    return d0, d1


def _fine_input(x, update_ptr, c0, c1, dim, start, HAS_PAIR: tl.constexpr, C: tl.constexpr):
    """The pair's output x + e·(w₀·x) + b·(w₁·x) on one chunk (x itself without a pair)."""
    if HAS_PAIR:
        x = x + _vector(update_ptr, dim, start, C) * c0[:, None] + _vector(update_ptr + dim, dim, start, C) * c1[:, None]
    return x


def _accumulate(ptr, col, dim, values):
    """ptr[col] += values where col < dim (a program's own partial sums)."""
    mask = col < dim
    tl.store(ptr + col, tl.load(ptr + col, mask=mask, other=0.0) + values, mask=mask)


def _column(tile, j, W: tl.constexpr):
    """Column j of a tile, one value per row."""
    return tl.sum(tl.where(tl.arange(0, W)[None, :] == j, tile, 0.0), axis=1)


def _put(tile, j, values, W: tl.constexpr):
    """The tile with column j replaced by ``values``."""
    return tl.where(tl.arange(0, W)[None, :] == j, values[:, None], tile)


def _coarse(x_ptr, update_ptr, angle_ptr, offset_ptr, c0, c1, row, rows, dim, chunks, HAS_PAIR: tl.constexpr,
            R: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, NP: tl.constexpr, LOG_NP: tl.constexpr):
    """Steps 2 and 3: the representatives after the coarse stages."""
    reps = tl.zeros([R, NP], dtype=tl.float32)
    for j in range(chunks):
        u = _fine_input(_load(x_ptr, row, rows, dim, j * C, C), update_ptr, c0, c1, dim, j * C, HAS_PAIR, C)
        reps = _put(reps, j, _column(_tree(u, angle_ptr, offset_ptr, j * C, dim, R, C, LOG_C, 0), 0, C), NP)
    coarse = _tree(reps, angle_ptr, offset_ptr + LOG_C, 0, chunks, R, NP, LOG_NP, 0)
    return _tree(coarse, angle_ptr, offset_ptr + LOG_C + LOG_NP + LOG_C, 0, chunks, R, NP, LOG_NP, 1)


def _tree_forward(
    x_ptr, out_ptr, update_ptr, angle_ptr, offset_ptr, rows, dim, chunks,
    HAS_PAIR: tl.constexpr, DOWNCAST: tl.constexpr, R: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, NP: tl.constexpr,
    LOG_NP: tl.constexpr,
):
    """Q·x for ``R`` rows of x (rows, dim) into ``out`` (any float dtype; computed in fp32): steps
    1-4 of the module's docstring.

    ``offset_ptr``: the first angle of each tree stage (stride 2^ℓ, ℓ < LOG_C + LOG_NP), then of
    each stage of the reversed tree; ``update_ptr``: the pair's rows e, b, w₀, w₁ (HAS_PAIR)."""
    row = tl.program_id(0) * R + tl.arange(0, R)
    c0, c1 = _dots(x_ptr, update_ptr + 2 * dim, update_ptr + 3 * dim, row, rows, dim, chunks, HAS_PAIR, R, C)
    coarse = _coarse(x_ptr, update_ptr, angle_ptr, offset_ptr, c0, c1, row, rows, dim, chunks, HAS_PAIR,
                        R, C, LOG_C, NP, LOG_NP)
    reverse = offset_ptr + LOG_C + LOG_NP
    for j in range(chunks):
        u = _fine_input(_load(x_ptr, row, rows, dim, j * C, C), update_ptr, c0, c1, dim, j * C, HAS_PAIR, C)
        a = _put(_tree(u, angle_ptr, offset_ptr, j * C, dim, R, C, LOG_C, 0), 0, _column(coarse, j, NP), C)
        y = _tree(a, angle_ptr, reverse, j * C, dim, R, C, LOG_C, 1)
        col = j * C + tl.arange(0, C)
        mask = (row < rows)[:, None] & (col < dim)[None, :]
        if DOWNCAST:  # rounded to nearest, as torch casts (Triton's interpreter truncates regardless)
            y = y.to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne")
        tl.store(out_ptr + row.to(tl.int64)[:, None] * dim + col[None, :], y, mask=mask)


def _tree_backward(
    x_ptr, grad_ptr, grad_x_ptr, update_ptr, rotated_ptr, angle_ptr, offset_ptr, angle_partial_ptr,
    update_partial_ptr, rows, dim, chunks, angles,
    HAS_PAIR: tl.constexpr, INPUT_GRAD: tl.constexpr, R: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr,
    NP: tl.constexpr, LOG_NP: tl.constexpr,
):
    """Every ``num_programs(0)``-th tile of ``R`` rows: ∂x into ``grad_x`` (INPUT_GRAD) and this
    program's partial sums of ∂angles (``angle_partial``, one row of ``angles``) and of ∂(e, b,
    w₀, w₁) (``update_partial``, 4 rows of ``dim``).

    Per tile: the forward's steps 1-3 again (a and b: the representatives before and after the
    coarse stages); per chunk, y rebuilt and the reversed tree's fine stages undone from (y, ∂y),
    which gives the representatives' gradients; the coarse stages undone from (b, ∂b); per chunk
    again, the fine stages of both trees undone, the representative's gradient put in between.
    The pair: ∂x = ∂u + w₀·(e·∂u) + w₁·(b·∂u), where e·∂u = (G·e)·∂y and G·e, G·b are in
    ``rotated`` (the Givens part applied to e and b), so its dot products need only ∂y.
    """
    programs = tl.num_programs(0)
    reverse = offset_ptr + LOG_C + LOG_NP
    angle_partial = angle_partial_ptr + tl.program_id(0) * angles
    update_partial = update_partial_ptr + tl.program_id(0) * 4 * dim
    for tile in range(tl.program_id(0), tl.cdiv(rows, R), programs):
        row = tile * R + tl.arange(0, R)
        c0, c1 = _dots(x_ptr, update_ptr + 2 * dim, update_ptr + 3 * dim, row, rows, dim, chunks, HAS_PAIR, R, C)
        p0, p1 = _dots(grad_ptr, rotated_ptr, rotated_ptr + dim, row, rows, dim, chunks, HAS_PAIR, R, C)
        coarse = _coarse(x_ptr, update_ptr, angle_ptr, offset_ptr, c0, c1, row, rows, dim, chunks, HAS_PAIR,
                               R, C, LOG_C, NP, LOG_NP)
        coarse_grad = tl.zeros([R, NP], dtype=tl.float32)
        for j in range(chunks):
            u = _fine_input(_load(x_ptr, row, rows, dim, j * C, C), update_ptr, c0, c1, dim, j * C, HAS_PAIR, C)
            a = _put(_tree(u, angle_ptr, offset_ptr, j * C, dim, R, C, LOG_C, 0), 0, _column(coarse, j, NP), C)
            y = _tree(a, angle_ptr, reverse, j * C, dim, R, C, LOG_C, 1)
            g = _load(grad_ptr, row, rows, dim, j * C, C)
            b, g = _tree_back(y, g, angle_ptr, reverse, angle_partial, j * C, dim, R, C, LOG_C, 1, True)
            coarse_grad = _put(coarse_grad, j, _column(g, 0, C), NP)
        back, fine_grad = _tree_back(coarse, coarse_grad, angle_ptr, reverse + LOG_C, angle_partial, 0, chunks,
                                     R, NP, LOG_NP, 1, True)
        back, fine_grad = _tree_back(back, fine_grad, angle_ptr, offset_ptr + LOG_C, angle_partial, 0, chunks,
                                  R, NP, LOG_NP, 0, True)
        for j in range(chunks):
            x = _load(x_ptr, row, rows, dim, j * C, C)
            a = _tree(_fine_input(x, update_ptr, c0, c1, dim, j * C, HAS_PAIR, C), angle_ptr, offset_ptr, j * C, dim,
                      R, C, LOG_C, 0)
            y = _tree(_put(a, 0, _column(coarse, j, NP), C), angle_ptr, reverse, j * C, dim, R, C, LOG_C, 1)
            g = _load(grad_ptr, row, rows, dim, j * C, C)
            b, g = _tree_back(y, g, angle_ptr, reverse, angle_partial, j * C, dim, R, C, LOG_C, 1, False)
            u, g = _tree_back(a, _put(g, 0, _column(fine_grad, j, NP), C), angle_ptr, offset_ptr, angle_partial,
                              j * C, dim, R, C, LOG_C, 0, True)
            col = j * C + tl.arange(0, C)
            if HAS_PAIR:
                _accumulate(update_partial, col, dim, tl.sum(g * c0[:, None], axis=0))
                _accumulate(update_partial + dim, col, dim, tl.sum(g * c1[:, None], axis=0))
                _accumulate(update_partial + 2 * dim, col, dim, tl.sum(x * p0[:, None], axis=0))
                _accumulate(update_partial + 3 * dim, col, dim, tl.sum(x * p1[:, None], axis=0))
                w0 = _vector(update_ptr + 2 * dim, dim, j * C, C)
                w1 = _vector(update_ptr + 3 * dim, dim, j * C, C)
                g = g + w0 * p0[:, None] + w1 * p1[:, None]
            if INPUT_GRAD:
                mask = (row < rows)[:, None] & (col < dim)[None, :]
                tl.store(grad_x_ptr + row.to(tl.int64)[:, None] * dim + col[None, :], g, mask=mask)


#: Device functions: the kernels call them by their global name, so they are jitted in place.
_HELPERS = (_pairs, _unpairs, _stage_angles, _stage, _stage_back, _tree, _tree_back, _load, _vector, _dots, _fine_input, _accumulate,
            _column, _put, _coarse)


@functools.lru_cache(maxsize=None)
def _kernels() -> SimpleNamespace:
    """The jitted kernels (interpreted ones under ``TRITON_INTERPRET=1``), built on first use."""
    global tl
    import triton
    import triton.language

    tl = triton.language
    for helper in _HELPERS:
        globals()[helper.__name__] = triton.jit(helper)
    return SimpleNamespace(forward=triton.jit(_tree_forward), backward=triton.jit(_tree_backward))


@dataclass(frozen=True)
class TreeShape:
    """The compile-time shape of one width's kernels: chunks of ``chunk`` coordinates, ``chunks``
    of them, their representatives padded to ``representatives`` (a power of two)."""

    chunk: int
    chunks: int
    representatives: int

    @property
    def constants(self) -> dict[str, int]:
        return {
            "R": ROWS, "C": self.chunk, "LOG_C": self.chunk.bit_length() - 1,
            "NP": self.representatives, "LOG_NP": self.representatives.bit_length() - 1,
        }


def _power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def tree_shape(dim: int) -> TreeShape | None:
    """The kernels' shape for width ``dim``, or None when it is too wide for them."""
    chunk = max(2, min(SMALLEST_CHUNK, _power_of_two(dim)))
    while -(-dim // chunk) > MAX_REPRESENTATIVES and chunk < LARGEST_CHUNK:
        chunk *= 2
    chunks = -(-dim // chunk)
    return None if chunks > MAX_REPRESENTATIVES else TreeShape(chunk, chunks, _power_of_two(chunks))


def tree_applies(dim: int, layout: str, pairs: int, adapter_dtype: torch.dtype) -> bool:
    """Whether the tree kernels compute this rotation: the bidirectional layout (at least one
    angle), at most one reflection pair, an fp32 adapter and a width ``tree_shape`` covers."""
    return (
        layout == "bidirectional" and dim >= 2 and pairs <= 1 and adapter_dtype == torch.float32
        and tree_shape(dim) is not None
    )


@tensor_cache
def stage_offsets(dim: int, device: torch.device) -> torch.Tensor:
    """The first angle of each tree stage (stride 2^ℓ, ℓ < LOG_C + LOG_NP), then of each stage of
    the reversed tree, as the kernels index them (int32; 0 for strides the width has no pair at)."""
    shape = tree_shape(dim)
    levels = shape.constants["LOG_C"] + shape.constants["LOG_NP"]
    sizes = [stage.size for stage in givens_stages(dim, "bidirectional")]
    tree = len(sizes) // 2
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    forward = [starts[level] if level < tree else 0 for level in range(levels)]
    reverse = [starts[2 * tree - 1 - level] if level < tree else 0 for level in range(levels)]
    return torch.tensor(forward + reverse, dtype=torch.int32, device=device)


def _givens_forward(
    x: torch.Tensor, update: torch.Tensor | None, angles: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Q·x in ``dtype`` (fp32 or narrower) for rows x (rows, dim), contiguous; ``update``: the pair's
    (4, dim) or None."""
    rows, dim = x.shape
    shape = tree_shape(dim)
    out = torch.empty(rows, dim, dtype=dtype, device=x.device)
    _kernels().forward[(max(1, -(-rows // ROWS)),)](
        x, out, angles if update is None else update, angles, stage_offsets(dim, x.device), rows, dim, shape.chunks,
        HAS_PAIR=update is not None, DOWNCAST=dtype != torch.float32, **shape.constants, num_warps=WARPS,
    )
    return out


def tree_forward(
    x: torch.Tensor, updates: torch.Tensor, angles: torch.Tensor, layout: str, dtype: torch.dtype
) -> torch.Tensor:
    """Q·x in ``dtype``, written by the kernel (the ``AngleEngine`` contract; ``layout`` is always
    bidirectional here)."""
    return _givens_forward(x, updates[0] if updates.shape[0] else None, angles, dtype)


def tree_backward(
    x: torch.Tensor, updates: torch.Tensor, angles: torch.Tensor, layout: str, grad_output: torch.Tensor,
    input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(∂x or None, ∂updates, ∂angles) from the saved x (the ``AngleEngine`` contract)."""
    rows, dim = x.shape
    shape = tree_shape(dim)
    update = updates[0] if updates.shape[0] else None
    # The Givens part applied to e and b: the pair's backward dot products e·∂u = (G·e)·∂y.
    rotated = angles if update is None else _givens_forward(update[:2].contiguous(), None, angles)
    programs = max(1, min(-(-rows // ROWS), BACKWARD_PROGRAMS))
    angle_partial = torch.zeros(programs, angles.numel(), dtype=torch.float32, device=x.device)
    update_partial = torch.zeros(programs, 4, dim if update is not None else 1, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x) if input_grad else angle_partial
    _kernels().backward[(programs,)](
        x, grad_output, grad_x, angles if update is None else update, rotated, angles, stage_offsets(dim, x.device),
        angle_partial, update_partial, rows, dim, shape.chunks, angles.numel(),
        HAS_PAIR=update is not None, INPUT_GRAD=input_grad, **shape.constants, num_warps=WARPS,
    )
    update_grad = update_partial.sum(0, keepdim=True) if update is not None else torch.zeros_like(updates)
    return (grad_x if input_grad else None), update_grad.to(updates.dtype), angle_partial.sum(0).to(angles.dtype)


#: The tree kernels as an engine of ``rotate_by_angles`` (which saves only x and the operands).
TREE_ENGINE = AngleEngine("triton-tree", tree_forward, tree_backward)
