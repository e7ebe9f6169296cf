"""Ground-truth tables that come with simulated data."""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class ColumnTruth:
    """The true atomic columns of a simulated image, one row per lattice site or adatom.

    Positions are pixels of the image, x = column index, y = row index (pixel centres at
    integers). ``x, y`` is where the column appears in the image (linear drift included);
    ``x0, y0`` is where it was when the frame started.

    Attributes:
        x, y: (N,) apparent column positions in pixels.
        x0, y0: (N,) positions at the start of the frame in pixels.
        species: (N,) column formula (``"C"``, ``"S2"``, ``"TiO"``; ``""`` for a vacancy).
        Z: (N,) summed atomic number over the full column (0 for a vacancy).
        label: (N,) ``"lattice"``, ``"vacancy"``, ``"substitution"``, ``"adatom"`` or ``"partial"``.
        sublattice: (N,) sublattice name (``""`` for adatoms).
        occupied: (N,) True where the column holds atoms.
    """

    x: np.ndarray
    y: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    species: np.ndarray
    Z: np.ndarray
    label: np.ndarray
    sublattice: np.ndarray
    occupied: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) apparent positions (x, y) in pixels."""
        return np.stack([self.x, self.y], axis=1)

    def select(self, mask: np.ndarray) -> ColumnTruth:
        """Rows where ``mask`` is True."""
        return ColumnTruth(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns as a dict of arrays."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV with a header row; returns the path."""
        path = Path(path)
        d = self.to_dict()
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(d.keys())
            for row in zip(*d.values(), strict=True):
                w.writerow([f"{v:.4f}" if isinstance(v, float | np.floating) else v for v in row])
        return path
