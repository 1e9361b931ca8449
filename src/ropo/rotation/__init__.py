"""Orthogonal operators applied to activations: Householder reflection pairs and Givens stages."""

from ropo.rotation.layout import GIVENS_LAYOUTS, givens_angle_count, givens_stages
from ropo.rotation.module import KeepsAdapterDtype, OrthogonalRotation

__all__ = [
    "GIVENS_LAYOUTS",
    "KeepsAdapterDtype",
    "OrthogonalRotation",
    "givens_angle_count",
    "givens_stages",
]
