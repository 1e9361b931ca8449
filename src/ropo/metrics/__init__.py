"""Metrics of what alignment does to a model."""

from ropo.metrics.diversity import distinct_n, ngrams, repetition_rate, self_bleu
from ropo.metrics.energy import he_change_summary, hyperspherical_energy
from ropo.metrics.lengths import LengthStats, length_stats

__all__ = [
    "LengthStats",
    "distinct_n",
    "he_change_summary",
    "hyperspherical_energy",
    "length_stats",
    "ngrams",
    "repetition_rate",
    "self_bleu",
]
