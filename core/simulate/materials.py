"""Crystal structures in projection: the unit cells the digital twin is built from.

A :class:`Material` is a 2D projected unit cell (two in-plane lattice vectors, in angstrom) and a
basis of atomic *columns*. Each column lists the atoms stacked along the beam in one unit cell,
as ``(element, z_A)`` pairs; a 2D material is one cell thick, a bulk crystal along a zone axis
repeats its cell ``thickness_cells`` times along the beam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Atom = tuple[str, float]  # (element symbol, height along the beam in angstrom)


@dataclass(frozen=True)
class Sublattice:
    """One column of the basis: a name, its fractional position and the atoms in it."""

    name: str
    frac: tuple[float, float]
    atoms: tuple[Atom, ...]


@dataclass(frozen=True)
class Material:
    """A crystal in projection.

    Attributes:
        name: short name (``"graphene"``).
        a1_A, a2_A: in-plane lattice vectors in angstrom.
        sublattices: the columns of one unit cell.
        period_z_A: repeat distance along the beam (angstrom) for bulk crystals; ``None`` for
            a single layer.
        description: a human-readable line.
    """

    name: str
    a1_A: tuple[float, float]
    a2_A: tuple[float, float]
    sublattices: tuple[Sublattice, ...]
    period_z_A: float | None = None
    description: str = ""

    @property
    def cell_matrix_A(self) -> np.ndarray:
        """(2, 2) array whose columns are a1 and a2 (angstrom)."""
        return np.array([self.a1_A, self.a2_A], dtype=float).T

    @property
    def nearest_column_distance_A(self) -> float:
        """Smallest distance between two columns of the infinite crystal (angstrom)."""
        m = self.cell_matrix_A
        fr = np.array([s.frac for s in self.sublattices])
        best = np.inf
        for i in range(-2, 3):
            for j in range(-2, 3):
                shifted = fr + np.array([i, j])
                d = (shifted[None, :, :] - fr[:, None, :]) @ m.T
                r = np.hypot(d[..., 0], d[..., 1])
                r = r[r > 1e-9]
                if r.size:
                    best = min(best, float(r.min()))
        return best

    def sublattice_index(self, name: str) -> int:
        """Index of a sublattice by name; raises ``ValueError`` listing the valid names."""
        for i, s in enumerate(self.sublattices):
            if s.name == name:
                return i
        names = ", ".join(s.name for s in self.sublattices)
        raise ValueError(f"material {self.name!r} has no sublattice {name!r}; choose one of: {names}")


def _hexagonal(name: str, a: float, site_a: tuple[Atom, ...], site_b: tuple[Atom, ...],
               names: tuple[str, str], description: str) -> Material:
    """Honeycomb lattice in projection: two sublattices at (0, 0) and (1/3, 1/3)."""
    a1 = (a, 0.0)
    a2 = (a / 2.0, a * np.sqrt(3.0) / 2.0)
    return Material(
        name=name,
        a1_A=a1,
        a2_A=(float(a2[0]), float(a2[1])),
        sublattices=(
            Sublattice(names[0], (0.0, 0.0), site_a),
            Sublattice(names[1], (1.0 / 3.0, 1.0 / 3.0), site_b),
        ),
        description=description,
    )


def _mx2(metal: str, chalcogen: str, a: float, half_height: float) -> Material:
    return _hexagonal(
        f"{metal}{chalcogen}2",
        a,
        ((metal, 0.0),),
        ((chalcogen, -half_height), (chalcogen, half_height)),
        ("M", "X2"),
        f"2H-{metal}{chalcogen}2 monolayer, a = {a} A; metal columns and {chalcogen}2 columns",
    )


def _perovskite(a_site: str, b_site: str, a: float) -> Material:
    """Cubic ABO3 seen along [001]: A, B-O and two pure O columns per cell."""
    return Material(
        name=f"{a_site}{b_site}O3",
        a1_A=(a, 0.0),
        a2_A=(0.0, a),
        sublattices=(
            Sublattice("A", (0.0, 0.0), ((a_site, 0.0),)),
            Sublattice("B", (0.5, 0.5), ((b_site, a / 2.0), ("O", 0.0))),
            Sublattice("O1", (0.5, 0.0), (("O", a / 2.0),)),
            Sublattice("O2", (0.0, 0.5), (("O", a / 2.0),)),
        ),
        period_z_A=a,
        description=f"cubic perovskite {a_site}{b_site}O3 along [001], a = {a} A",
    )


MATERIALS: dict[str, Material] = {
    "graphene": _hexagonal("graphene", 2.46, (("C", 0.0),), (("C", 0.0),), ("A", "B"),
                           "graphene monolayer, a = 2.46 A, C-C = 1.42 A"),
    "hBN": _hexagonal("hBN", 2.504, (("B", 0.0),), (("N", 0.0),), ("B", "N"),
                      "hexagonal boron nitride monolayer, a = 2.504 A"),
    "MoS2": _mx2("Mo", "S", 3.160, 1.585),
    "WS2": _mx2("W", "S", 3.153, 1.571),
    "MoSe2": _mx2("Mo", "Se", 3.289, 1.669),
    "WSe2": _mx2("W", "Se", 3.282, 1.680),
    "SrTiO3": _perovskite("Sr", "Ti", 3.905),
    "BaTiO3": _perovskite("Ba", "Ti", 3.992),
    "PbTiO3": _perovskite("Pb", "Ti", 3.904),
    "LaMnO3": _perovskite("La", "Mn", 3.935),
    "BiFeO3": _perovskite("Bi", "Fe", 3.965),
}


def get_material(name: str | Material) -> Material:
    """Look up a built-in material by name (case-insensitive) or pass a :class:`Material` through.

    Built-ins: graphene, hBN, MoS2, WS2, MoSe2, WSe2 and the cubic perovskites SrTiO3, BaTiO3,
    PbTiO3, LaMnO3, BiFeO3 (along [001]). Use :func:`perovskite` for another ABO3.
    """
    if isinstance(name, Material):
        return name
    for key, mat in MATERIALS.items():
        if key.lower() == str(name).lower():
            return mat
    raise ValueError(f"unknown material {name!r}; choose one of: {', '.join(MATERIALS)}")


def perovskite(a_site: str, b_site: str, lattice_constant_A: float) -> Material:
    """A cubic ABO3 perovskite along [001] with any A and B elements (checked) and cell size."""
    from .elements import atomic_number

    atomic_number(a_site)
    atomic_number(b_site)
    if not 2.0 < lattice_constant_A < 10.0:
        raise ValueError(f"lattice_constant_A={lattice_constant_A} outside the allowed range 2..10 A")
    return _perovskite(a_site, b_site, float(lattice_constant_A))
