"""Atom and defect finding: U-Net and classical finders, sub-pixel refinement, column classes, point defects.

Torch is imported only when a U-Net is used (``AtomFinder``, ``find_atoms(model="generic")``).
"""

from .classify import classify_columns
from .defects import Defects, find_defects
from .find import find_atoms
from .quality import AtomFindingWarning, FindingQuality
from .spacing import LatticePeriod, estimate_lattice_period
from .table import AtomTable

__all__ = ["AtomFinder", "AtomFindingWarning", "AtomTable", "FindingQuality", "Defects", "LatticePeriod", "classify_columns", "estimate_lattice_period",
           "find_atoms", "find_defects", "refine_positions"]


def __getattr__(name: str):
    if name == "AtomFinder":
        from .finder import AtomFinder

        return AtomFinder
    if name == "refine_positions":
        from .refine import refine_positions

        return refine_positions
    raise AttributeError(f"module 'atomsmith.atoms' has no attribute {name!r}")
