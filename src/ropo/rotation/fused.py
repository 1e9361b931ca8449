"""The fused path of ``OrthogonalRotation.forward``: the same Q, a few passes over cache-sized tiles.

Why: the reference applies each Givens stage with its own gather/scatter and, left to autograd,
backward walks hundreds of small ops and full-width zero fills. Here

- consecutive stages whose pairs stay within groups of at most ``max_block`` coordinates form a
  *level*: one block-diagonal rotation (``blocks × b × b``, from the same angles of the same
  layout), applied to the activations as one batched matmul. A log2(d)-stage tree becomes a few
  levels, only the first and last of which touch every coordinate; no d × d matrix is formed.
- a Householder pair is the reference's formula written as a rank-2 update x + U·(W·x).
- a custom autograd function runs all of it without autograd on tiles of rows, saves only the
  input x (the layer input, shared by q/k/v siblings) and, in backward, recomputes each tile's
  level inputs and walks the levels backwards (y_c = M_c·x_c: ∂M_c = ∂y_c·x_cᵀ, ∂x_c = M_cᵀ·∂y_c).

The block matrices and the update vectors are built from the parameters with ordinary autograd
(small tensors, once per forward), so the parameter gradients come from autograd through that
construction. Everything is plain PyTorch and runs on any device; tiling is used on CPU only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ropo.rotation.layout import GivensStage, givens_stages, tensor_cache
from ropo.rotation.operators import householder_pair_vectors

#: Largest group of coordinates one level may mix (measured fastest on CPU; see benchmarks/).
DEFAULT_MAX_BLOCK = 16
#: On CPU, rows are rotated in tiles of about this many bytes of fp32 (a core's L2 cache) …
TILE_BYTES = 1 << 20
#: … and at least this many rows (fewer would make the per-op overhead dominate).
MIN_TILE_ROWS = 64


@dataclass(frozen=True)
class GivensLevel:
    """Consecutive stages applied together as ``blocks`` independent ``block × block`` rotations.

    Slot ``c·block + j`` holds coordinate ``coords[c·block + j]``; ``coords`` is None when the
    slots are exactly coordinates 0 … dim − 1 in order (a plain view, no gather). Groups smaller
    than ``block`` are padded with slots that read coordinate 0, are rotated by the identity and
    are never written back: ``real_slots``/``real_coords`` say which slots go where (``real_slots``
    is None when there is no pad slot).

    The level's angles are ``angles[angle_start:angle_stop]`` (its stages are consecutive); its
    stage matrices (stages × blocks × b × b) start at ``offset`` in ``GivensPlan.identity``.
    """

    block: int
    blocks: int
    stages: int
    angle_start: int
    angle_stop: int
    coords: torch.Tensor | None
    real_slots: torch.Tensor | None
    real_coords: torch.Tensor
    offset: int


@dataclass(frozen=True)
class GivensPlan:
    """A rotation's levels, and where the cos/sin of each angle go in the levels' stage matrices.

    ``identity`` holds every level's stage matrices (flat, one after the other): I with zeros
    where a rotation entry goes. ``entry_index`` gives the position of cos at (p, p) for every
    angle in order, then cos at (q, q), then −sin at (p, q), then sin at (q, p).
    """

    levels: tuple[GivensLevel, ...]
    identity: torch.Tensor
    entry_index: torch.Tensor


class _UnionFind:
    def __init__(self, dim: int) -> None:
        self.parent = list(range(dim))
        self.size = [1] * dim

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.size[ra] += self.size[rb]
        return self.size[ra]


#: Cost model for grouping stages into levels (time per touched coordinate and token, fitted to
#: batched matmuls on CPU, see benchmarks/README.md): a level of ``block``-wide groups costs
#: ``BLOCK_BASE_COST + block`` per coordinate it touches, ``GATHER_COST`` more when its
#: coordinates must be gathered and scattered, and ``LEVEL_COST`` for its fixed overhead.
BLOCK_BASE_COST = 8
GATHER_COST = 22
LEVEL_COST = 1600


def _group_stages(stages: tuple[GivensStage, ...], dim: int, max_block: int) -> list[list[int]]:
    """Split the stages into runs of consecutive stages (levels) at the least modelled cost.

    A run is allowed when every connected group of coordinates it mixes has ≤ ``max_block``
    members. Dynamic programming over split points; each run's groups come from a union-find
    grown one stage at a time.
    """
    count = len(stages)
    best = [0.0] + [float("inf")] * count
    split = [0] * (count + 1)
    for start in range(count):
        groups = _UnionFind(dim)
        touched: set[int] = set()
        for stop in range(start + 1, count + 1):
            stage = stages[stop - 1]
            pairs = list(zip(stage.first.tolist(), stage.second.tolist()))
            if max(groups.join(a, b) for a, b in pairs) > max_block:
                break
            touched.update(c for pair in pairs for c in pair)
            block = max(groups.size[groups.find(c)] for c in touched)
            contiguous = len(touched) == dim and all(
                groups.find(c) == groups.find(c - c % block) for c in range(dim)
            )
            per_coordinate = BLOCK_BASE_COST + block + (0 if contiguous else GATHER_COST)
            cost = best[start] + len(touched) * per_coordinate + LEVEL_COST
            if cost < best[stop]:
                best[stop], split[stop] = cost, start
    levels: list[list[int]] = []
    stop = count
    while stop:
        levels.append(list(range(split[stop], stop)))
        stop = split[stop]
    return levels[::-1]


def _make_level(
    stages: tuple[GivensStage, ...], indices: list[int], dim: int, offset: int, device: str
) -> tuple[GivensLevel, list[list[int]]]:
    """The level of stages ``indices`` and the flat positions of its angles' four entries."""
    groups = _UnionFind(dim)
    touched: set[int] = set()
    for index in indices:
        for a, b in zip(stages[index].first.tolist(), stages[index].second.tolist()):
            groups.join(a, b)
            touched.update((a, b))
    members: dict[int, list[int]] = {}
    for coord in sorted(touched):
        members.setdefault(groups.find(coord), []).append(coord)
    ordered = sorted(members.values())
    block, blocks = max(len(group) for group in ordered), len(ordered)
    where: dict[int, tuple[int, int]] = {}  # coordinate -> (group, position in group)
    coords: list[int] = []
    real_slots: list[int] = []
    for number, group in enumerate(ordered):
        for j in range(block):
            if j < len(group):
                where[group[j]] = (number, j)
                real_slots.append(number * block + j)
            coords.append(group[j] if j < len(group) else 0)
    # (G·x)[p] = x_p·cos − x_q·sin, (G·x)[q] = x_p·sin + x_q·cos: −sin at (p, q), sin at (q, p).
    entries: list[list[int]] = [[], [], [], []]
    for number, index in enumerate(indices):
        for a, b in zip(stages[index].first.tolist(), stages[index].second.tolist()):
            (group, p), (_, q) = where[a], where[b]
            base = offset + (number * blocks + group) * block * block
            for entry, (row, column) in zip(entries, ((p, p), (q, q), (p, q), (q, p))):
                entry.append(base + row * block + column)
    angle_start = sum(stages[i].size for i in range(indices[0]))

    def tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    level = GivensLevel(
        block=block,
        blocks=blocks,
        stages=len(indices),
        angle_start=angle_start,
        angle_stop=angle_start + sum(stages[i].size for i in indices),
        coords=None if coords == list(range(dim)) else tensor(coords),
        real_slots=tensor(real_slots) if len(real_slots) < len(coords) else None,
        real_coords=tensor([coords[s] for s in real_slots]),
        offset=offset,
    )
    return level, entries


@tensor_cache
def givens_plan(
    dim: int, layout: str, device: str = "cpu", max_block: int = DEFAULT_MAX_BLOCK
) -> GivensPlan:
    """The stages of ``givens_stages(dim, layout)`` grouped into block levels, cached per device."""
    stages = givens_stages(dim, layout)
    levels, identities, entries, offset = [], [], [[], [], [], []], 0
    for indices in _group_stages(stages, dim, max_block):
        level, level_entries = _make_level(stages, indices, dim, offset, device)
        levels.append(level)
        identities.append(torch.eye(level.block).repeat(level.stages, level.blocks, 1, 1).view(-1))
        for kind, positions in zip(entries, level_entries):
            kind.extend(positions)
        offset += identities[-1].numel()
    entry_index = torch.tensor([p for kind in entries for p in kind], dtype=torch.long)
    identity = torch.cat(identities) if identities else torch.zeros(0)
    identity[entry_index] = 0.0
    return GivensPlan(tuple(levels), identity.to(device), entry_index.to(device))


def plan_blocks(plan: GivensPlan, angles: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each level's rotation as matrices M (blocks, b, b), y_c = M_c·x_c; exactly I at angle 0.

    Each stage is a block-diagonal G_k holding the 2 × 2 rotations of its pairs; a level's
    M = G_K ⋯ G_1 (stage 1 acts first). Autograd flows from the M back to ``angles``.
    """
    if not plan.levels:
        return ()
    cos, sin = torch.cos(angles), torch.sin(angles)
    values = torch.cat([cos, cos, -sin, sin])
    stages = plan.identity.to(angles.dtype).index_put((plan.entry_index,), values)
    sizes = [level.stages * level.blocks * level.block * level.block for level in plan.levels]
    blocks = []
    # split/unbind rather than slicing: their backward is one cat/stack, not a zero-filled
    # full-size gradient per slice.
    for level, piece in zip(plan.levels, stages.split(sizes)):
        matrices = piece.view(level.stages, level.blocks, level.block, level.block).unbind(0)
        product = matrices[0]
        for stage in matrices[1:]:
            product = torch.bmm(stage, product)
        blocks.append(product)
    return tuple(blocks)


def householder_updates(base: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Each reflection pair as a rank-2 update x ↦ x + U·(W·x); (pairs, 4, d): rows e, b, w₀, w₁.

    ``apply_householder_pair``'s formula H(a)H(b)x = x + e·α + b·β with e = a − b,
    α = 2(s − g + 2hs), β = 2(2hs − g), s = b·x, g = e·x, h = e·b is linear in x:
    α = w₀·x with w₀ = (2 + 4h)·b − 2e and β = w₁·x with w₁ = 4h·b − 2e. At initialisation
    e = 0, so the update adds exactly 0 (U's first column and w₁ are exactly 0).
    """
    first, second = householder_pair_vectors(base, offset)
    diff = second - first
    h = (diff * first).sum(-1, keepdim=True)
    return torch.stack([diff, first, (2 + 4 * h) * first - 2 * diff, 4 * h * first - 2 * diff], dim=1)


def _low_rank_update(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """x + U·(W·x) in place on the columns of ``x`` (dim, tokens), U's columns being update[:2],
    in one pass over x; returns W·x (2, tokens), which backward needs again."""
    coefficients = update[2:] @ x
    x.addmm_(update[:2].T, coefficients)
    return coefficients


def _low_rank_backward(
    x: torch.Tensor, coefficients: torch.Tensor, update: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``_low_rank_update`` w.r.t. its input (in place on ``grad``) and ``update``.

    y = x + Σ_k u_k (w_k·x): ∂x = ∂y + Σ_k w_k (u_k·∂y), ∂u_k = Σ_t ∂y_t (w_k·x_t),
    ∂w_k = Σ_t (u_k·∂y_t) x_t. ``coefficients`` is W·x, kept from the recomputed forward.
    """
    projections = update[:2] @ grad
    update_grad = torch.cat([coefficients @ grad.T, projections @ x.T])
    return grad.addmm_(update[2:].T, projections), update_grad


def _grouped(x: torch.Tensor, level: GivensLevel) -> torch.Tensor:
    """The level's slots of the columns of ``x`` (dim, tokens), as (blocks, block, tokens)."""
    if level.coords is None:
        return x.unflatten(0, (level.blocks, level.block))
    return x.index_select(0, level.coords).view(level.blocks, level.block, -1)


def _scatter(x: torch.Tensor, level: GivensLevel, rotated: torch.Tensor) -> torch.Tensor:
    """Write a level's result (blocks·block, tokens) back: the result itself or into ``x``."""
    if level.coords is None:
        return rotated
    if level.real_slots is not None:
        rotated = rotated.index_select(0, level.real_slots)
    return x.index_copy_(0, level.real_coords, rotated)


def _rotate(
    x: torch.Tensor,
    levels: tuple[GivensLevel, ...],
    updates: torch.Tensor,
    blocks: tuple[torch.Tensor, ...],
    keep: list[torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Q·x on (tokens, dim) rows without autograd, returned as the (dim, tokens) matrix (Q·x)ᵀ.

    Q = G·(I + U_M W_M) ⋯ (I + U_1 W_1): the reflection pairs as in-place rank-2 updates of
    the rows, then the levels on xᵀ, where each is a batched matmul M_c·X_c on (b, tokens) slices
    and each gather a copy of whole rows. With ``keep`` (backward's recomputation), each pair's
    input (rows) and W·x and each level's input (grouped slots) are collected instead, and the last
    level, whose output backward does not need, is not applied (None is returned).
    """
    if updates.shape[0]:
        x = x.to(updates.dtype, copy=True)
        for update in updates:
            if keep is not None:
                keep.append(x)
                x = x.clone()
            coefficients = _low_rank_update(x.T, update)
            if keep is not None:
                keep.append(coefficients)
    else:
        x = x.to(updates.dtype)
    x = x.T
    # The first level can read xᵀ in place; gathers and backward's reductions need a contiguous
    # copy (and must not write into the input). After any level, x is a new contiguous tensor.
    if keep is not None or not levels or levels[0].coords is not None:
        x = x.clone(memory_format=torch.contiguous_format)
    for index, (level, matrices) in enumerate(zip(levels, blocks)):
        grouped = _grouped(x, level)
        if keep is not None:
            keep.append(grouped)
            if index == len(levels) - 1:
                return None
        x = _scatter(x, level, torch.bmm(matrices, grouped).flatten(0, 1))
    return None if keep is not None else x


def without_autocast(device_type: str) -> torch.autocast:
    """A block in which autocast is off on ``device_type``: the rotation's arithmetic (forward and
    backward) stays in the adapter's dtype whatever autocast the caller runs under; its result is
    cast to the input's dtype by the layer."""
    return torch.autocast(device_type=device_type, enabled=False)


def _tiles(x: torch.Tensor) -> list[tuple[int, int]]:
    """Row ranges of equal tiles of at most ``TILE_BYTES`` of fp32 and at least ``MIN_TILE_ROWS``
    rows on CPU (so that every pass over a tile after the first reads the core's cache), one
    tile on an accelerator."""
    rows = x.shape[0]
    if x.device.type != "cpu" or rows <= MIN_TILE_ROWS:
        return [(0, rows)]
    count = min(-(-rows * x.shape[1] * 4 // TILE_BYTES), rows // MIN_TILE_ROWS)
    size = -(-rows // count)
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]


def _backward_tile(
    x: torch.Tensor,
    grad: torch.Tensor,
    levels: tuple[GivensLevel, ...],
    updates: torch.Tensor,
    blocks: tuple[torch.Tensor, ...],
    update_grads: torch.Tensor,
    block_grads: list[torch.Tensor],
    input_grad: bool,
) -> torch.Tensor | None:
    """Backward of one tile of rows: adds into the parameter gradients, returns (∂L/∂x)ᵀ or None."""
    keep: list[torch.Tensor] = []
    _rotate(x, levels, updates, blocks, keep)
    # An own copy, feature-major and contiguous (reductions over tokens on strided data are
    # several times slower); gathered levels and the pairs write into it.
    grad = grad.T.clone(memory_format=torch.contiguous_format)
    for index in reversed(range(len(levels))):
        level, matrices, grouped = levels[index], blocks[index], keep.pop()
        incoming = _grouped(grad, level)
        block_grads[index] += torch.bmm(grouped, incoming.transpose(1, 2)).transpose(1, 2)
        if index or input_grad or updates.shape[0]:
            grad = _scatter(grad, level, torch.bmm(matrices.transpose(1, 2), incoming).flatten(0, 1))
    for index in reversed(range(updates.shape[0])):
        coefficients, pair_input = keep.pop(), keep.pop()
        grad, update_grad = _low_rank_backward(pair_input.T, coefficients, updates[index], grad)
        update_grads[index] += update_grad
    return grad if input_grad else None


def _fused_forward(
    x: torch.Tensor, levels: tuple[GivensLevel, ...], updates: torch.Tensor, blocks: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Q·x tile by tile (``_tiles``): all the passes over one tile stay in cache, and its
    transposes to and from the feature-major layout are cheap there."""
    rotated = torch.empty(x.shape, dtype=updates.dtype, device=x.device)
    for start, stop in _tiles(x):
        rotated[start:stop] = _rotate(x[start:stop], levels, updates, blocks).T
    return rotated


def _fused_backward(
    x: torch.Tensor,
    levels: tuple[GivensLevel, ...],
    updates: torch.Tensor,
    blocks: tuple[torch.Tensor, ...],
    grad_output: torch.Tensor,
    input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]:
    """Tile by tile, each tile's step inputs recomputed and walked backwards (``_backward_tile``)."""
    grad_output = grad_output.to(updates.dtype)
    update_grads = torch.zeros_like(updates)
    block_grads = [torch.zeros_like(matrices) for matrices in blocks]
    grad_x = torch.empty_like(x) if input_grad else None
    for start, stop in _tiles(x):
        grad = _backward_tile(
            x[start:stop], grad_output[start:stop], levels, updates, blocks, update_grads, block_grads, input_grad
        )
        if input_grad:
            grad_x[start:stop] = grad.T
    return grad_x, update_grads, block_grads


@dataclass(frozen=True)
class RotationEngine:
    """How one backend computes Q·x and its gradients from the same operands and plan: the
    batched-matmul path here, the Triton kernels in ``triton_rotation``. ``forward(x, levels,
    updates, blocks)`` returns Q·x in the operands' dtype; ``backward(x, levels, updates, blocks,
    grad_output, input_grad)`` returns (∂x or None, ∂updates, [∂blocks per level])."""

    name: str
    forward: Callable[..., torch.Tensor]
    backward: Callable[..., tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]]


FUSED_ENGINE = RotationEngine("fused", _fused_forward, _fused_backward)


class _Rotation(torch.autograd.Function):
    """Q·x by an engine, saving only x and the (small) operands; backward recomputes what it needs
    from x. One wrapper for every engine, so they share the saved-tensor contract and autocast."""

    @staticmethod
    def forward(ctx, engine, x, levels, updates, *blocks):
        ctx.engine, ctx.levels = engine, levels
        ctx.save_for_backward(x, updates, *blocks)
        return engine.forward(x, levels, updates.contiguous(), blocks)

    @staticmethod
    def backward(ctx, grad_output):
        x, updates, *blocks = ctx.saved_tensors
        with without_autocast(x.device.type):
            grad_x, update_grads, block_grads = ctx.engine.backward(
                x, ctx.levels, updates.contiguous(), tuple(blocks), grad_output, ctx.needs_input_grad[1]
            )
        return (None, grad_x, None, update_grads, *block_grads)


def rotate_with(
    engine: RotationEngine, x: torch.Tensor, plan: GivensPlan, updates: torch.Tensor, blocks: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Q·x for every row of ``x`` (..., dim) by ``engine``, in the operands' dtype."""
    shape = x.shape
    rotated = _Rotation.apply(engine, x.reshape(-1, shape[-1]), plan.levels, updates, *blocks)
    return rotated.reshape(shape)


@dataclass(frozen=True)
class AngleEngine:
    """How a backend computes Q·x straight from the Givens angles, each rotation applied as itself
    (no block matrices): the native CPU kernels, the Triton tree kernels. ``forward(x, updates,
    angles, layout, dtype)`` returns Q·x in ``dtype`` for rows x (rows, dim), computed in fp32;
    ``backward(x, updates, angles, layout, grad_output, input_grad)`` returns (∂x or None,
    ∂updates, ∂angles)."""

    name: str
    forward: Callable[..., torch.Tensor]
    backward: Callable[..., tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]


class _AngleRotation(torch.autograd.Function):
    """``_Rotation`` for engines that take the angles: saves x and the (small) operands only."""

    @staticmethod
    def forward(ctx, engine, layout, dtype, x, updates, angles):
        ctx.engine, ctx.layout = engine, layout
        ctx.save_for_backward(x, updates, angles)
        return engine.forward(x, updates, angles, layout, dtype)

    @staticmethod
    def backward(ctx, grad_output):
        x, updates, angles = ctx.saved_tensors
        with without_autocast(x.device.type):
            grad_x, update_grad, angle_grad = ctx.engine.backward(
                x, updates, angles, ctx.layout, grad_output.contiguous(), ctx.needs_input_grad[3]
            )
        return None, None, None, grad_x, update_grad, angle_grad


def rotate_by_angles(
    engine: AngleEngine, x: torch.Tensor, updates: torch.Tensor, angles: torch.Tensor, layout: str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Q·x in ``dtype`` for every row of ``x`` (..., dim) by ``engine``: ``updates`` the reflection
    pairs' rank-2 updates (``householder_updates``), ``angles`` the Givens angles of ``layout``."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1]).contiguous()
    rotated = _AngleRotation.apply(engine, layout, dtype, rows, updates.contiguous(), angles)
    return rotated.reshape(shape)


def fused_operands(
    angles: torch.Tensor, householder_base: torch.Tensor, householder_offset: torch.Tensor, plan: GivensPlan
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The small tensors ``fused_rotate`` multiplies by: the reflection pairs' rank-2 updates and
    each level's block matrices, built with autograd so the parameter gradients flow back."""
    return householder_updates(householder_base, householder_offset), plan_blocks(plan, angles)


def fused_rotate(
    x: torch.Tensor, plan: GivensPlan, updates: torch.Tensor, blocks: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Q·x for every row of ``x`` (..., dim), in the operands' dtype: the reference's Q and
    gradients, with one saved tensor (x itself) and a few passes over cache-sized tiles."""
    return rotate_with(FUSED_ENGINE, x, plan, updates, blocks)
