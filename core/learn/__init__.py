"""Representation learning with torch (in progress): :class:`RotationalVAE` (rVAE)."""

from .rvae import RotationalVAE

__all__ = ["RotationalVAE"]
