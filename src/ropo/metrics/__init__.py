"""Metrics of what alignment does to a model."""

from ropo.metrics.energy import hyperspherical_energy

__all__ = ["hyperspherical_energy"]
