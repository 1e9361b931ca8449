"""Answer length: DPO tends to lengthen answers until they run into the token limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean, median


@dataclass(frozen=True)
class LengthStats:
    mean: float
    median: float
    hit_limit_rate: float  # share of answers cut off by the token limit (no stop token generated)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def length_stats(lengths: Sequence[int], max_new_tokens: int) -> LengthStats:
    """Mean/median answer length in tokens and the share that reached ``max_new_tokens``.

    ``lengths`` count the generated tokens before the stop token, so an answer that stopped on
    its own is shorter than the limit and one that was cut off equals it.
    """
    if not lengths:
        raise ValueError("length_stats needs at least one length")
    bad = [(i, length) for i, length in enumerate(lengths) if not 0 <= length <= max_new_tokens]
    if bad:
        raise ValueError(f"lengths must lie in [0, max_new_tokens={max_new_tokens}]; length[{bad[0][0]}] = {bad[0][1]}")
    return LengthStats(
        mean=fmean(lengths),
        median=float(median(lengths)),
        hit_limit_rate=sum(length >= max_new_tokens for length in lengths) / len(lengths),
    )
