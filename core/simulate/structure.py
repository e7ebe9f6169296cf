"""A sample in projection: atomic columns with species, heights and defect labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .elements import atomic_number
from .materials import Atom, Material

#: Defect labels used in ground-truth tables.
LABELS = ("lattice", "vacancy", "substitution", "adatom", "partial")


@dataclass(frozen=True)
class ColumnKind:
    """What one column holds per unit cell along the beam: ``(element, z_A)`` pairs."""

    atoms: tuple[Atom, ...]

    @property
    def name(self) -> str:
        """Formula of the column, e.g. ``"S2"``, ``"TiO"``; ``""`` for an empty site."""
        counts: dict[str, int] = {}
        for sym, _ in self.atoms:
            counts[sym] = counts.get(sym, 0) + 1
        return "".join(s if n == 1 else f"{s}{n}" for s, n in counts.items())

    @property
    def z_total(self) -> int:
        """Sum of the atomic numbers in one cell of the column."""
        return int(sum(atomic_number(s) for s, _ in self.atoms))

    def z_power_sum(self, exponent: float) -> float:
        """Sum over atoms of Z**exponent (incoherent HAADF weight of one cell)."""
        return float(sum(atomic_number(s) ** exponent for s, _ in self.atoms))


@dataclass(frozen=True, eq=False)
class Structure:
    """Atomic columns of a sample in projection, in angstrom, in the sample frame.

    Empty sites (vacancies) stay in the table with an empty :class:`ColumnKind` so that ground
    truth can report them. Build one with :func:`atomsmith.simulate.build_crystal`; defect
    functions in :mod:`atomsmith.simulate.defects` return modified copies.

    Attributes:
        xy_A: (N, 2) column positions (x, y) in angstrom.
        kind: (N,) index into ``kinds``.
        kinds: the distinct column contents.
        sublattice: (N,) index of the lattice site's sublattice in ``material`` (-1 for adatoms).
        label: (N,) defect label, one of :data:`LABELS`.
        material: the host crystal.
        thickness_cells: unit cells along the beam (1 for a monolayer).
        extent_A: (width, height) of the field the structure was built for, in angstrom.
    """

    xy_A: np.ndarray
    kind: np.ndarray
    kinds: tuple[ColumnKind, ...]
    sublattice: np.ndarray
    label: np.ndarray
    material: Material
    thickness_cells: int
    extent_A: tuple[float, float]

    def __post_init__(self) -> None:
        n = len(self.xy_A)
        for name in ("kind", "sublattice", "label"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Structure.{name} has {len(getattr(self, name))} entries, expected {n}")

    def __len__(self) -> int:
        return len(self.xy_A)

    def replace(self, **changes) -> Structure:
        """A copy with some fields replaced (arrays are not copied)."""
        return dataclasses.replace(self, **changes)

    @cached_property
    def species(self) -> np.ndarray:
        """(N,) column formula strings (``"C"``, ``"S2"``, ``""`` for a vacancy)."""
        names = np.array([k.name for k in self.kinds], dtype=object)
        return names[self.kind]

    @cached_property
    def z_total(self) -> np.ndarray:
        """(N,) summed atomic number of each column over its full thickness."""
        zs = np.array([k.z_total for k in self.kinds], dtype=int)
        return zs[self.kind] * self.thickness_cells

    @property
    def occupied(self) -> np.ndarray:
        """(N,) True where a column holds at least one atom."""
        return self.z_total > 0

    def column_weights(self, exponent: float) -> np.ndarray:
        """(N,) incoherent HAADF weight: thickness x sum of Z**exponent over the column's atoms."""
        w = np.array([k.z_power_sum(exponent) for k in self.kinds])
        return w[self.kind] * self.thickness_cells

    def kind_index(self, kind: ColumnKind) -> tuple[Structure, int]:
        """Return (structure, index) with ``kind`` added to ``kinds`` if not already present."""
        if kind in self.kinds:
            return self, self.kinds.index(kind)
        return self.replace(kinds=self.kinds + (kind,)), len(self.kinds)

    def atoms_3d(self) -> tuple[np.ndarray, np.ndarray]:
        """All atoms in 3D: positions (M, 3) in angstrom (z along the beam) and atomic numbers (M,).

        Bulk crystals repeat each column ``thickness_cells`` times with the material's period.
        Used to hand the same sample to a multislice simulator or a potential model.
        """
        period = self.material.period_z_A or 0.0
        pos, zs = [], []
        for k_idx, kind in enumerate(self.kinds):
            sel = np.flatnonzero(self.kind == k_idx)
            if sel.size == 0 or not kind.atoms:
                continue
            for sym, z in kind.atoms:
                for cell in range(self.thickness_cells):
                    p = np.empty((sel.size, 3))
                    p[:, :2] = self.xy_A[sel]
                    p[:, 2] = z + cell * period
                    pos.append(p)
                    zs.append(np.full(sel.size, atomic_number(sym)))
        if not pos:
            return np.zeros((0, 3)), np.zeros(0, dtype=int)
        return np.concatenate(pos), np.concatenate(zs)

    def inside(self, margin_A: float = 0.0) -> np.ndarray:
        """(N,) True for columns at least ``margin_A`` inside the field ``extent_A``."""
        w, h = self.extent_A
        x, y = self.xy_A[:, 0], self.xy_A[:, 1]
        return (x >= margin_A) & (x <= w - margin_A) & (y >= margin_A) & (y <= h - margin_A)
