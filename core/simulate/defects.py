"""Point defects: vacancies, substitutions, adatoms and partly occupied columns.

Each function returns a new :class:`~atomsmith.simulate.structure.Structure`; the changed
columns carry a defect label in the ground truth. Sites are chosen at random (``seed``) among
columns inside the field, at least ``edge_margin_A`` from its border and ``min_separation_A``
from each other, unless ``indices`` names them.
"""

from __future__ import annotations

import numpy as np

from .elements import atomic_number
from .structure import ColumnKind, Structure


def _candidates(structure: Structure, sublattice: str | None, species: str | None,
                edge_margin_A: float) -> np.ndarray:
    ok = structure.inside(edge_margin_A) & (structure.label == "lattice") & structure.occupied
    if sublattice is not None:
        ok &= structure.sublattice == structure.material.sublattice_index(sublattice)
    if species is not None:
        atomic_number(species)
        has = np.array([any(s == species for s, _ in k.atoms) for k in structure.kinds])
        ok &= has[structure.kind]
    return np.flatnonzero(ok)


def choose_sites(structure: Structure, count: int, *, sublattice: str | None = None,
                 species: str | None = None, edge_margin_A: float = 3.0,
                 min_separation_A: float = 0.0, avoid: np.ndarray | None = None,
                 seed=None) -> np.ndarray:
    """Pick ``count`` random lattice columns (indices) meeting the constraints.

    ``avoid`` lists other positions (M, 2) in angstrom that chosen sites must keep
    ``min_separation_A`` away from. Raises ``ValueError`` if too few sites qualify.
    """
    if count < 0:
        raise ValueError(f"count={count} must be >= 0")
    rng = np.random.default_rng(seed)
    cand = rng.permutation(_candidates(structure, sublattice, species, edge_margin_A))
    taken: list[np.ndarray] = [] if avoid is None else [np.asarray(a, float) for a in np.atleast_2d(avoid)]
    chosen: list[int] = []
    for idx in cand:
        if len(chosen) == count:
            break
        p = structure.xy_A[idx]
        if min_separation_A > 0 and taken and np.min(np.hypot(*(np.array(taken) - p).T)) < min_separation_A:
            continue
        chosen.append(int(idx))
        taken.append(p)
    if len(chosen) < count:
        raise ValueError(
            f"only {len(chosen)} of {count} requested defect sites fit (sublattice={sublattice}, "
            f"species={species}, min_separation_A={min_separation_A}); use a larger field or fewer defects")
    return np.array(chosen, dtype=int)


def _set_columns(structure: Structure, indices: np.ndarray, new_kinds: list[ColumnKind],
                 label: str) -> Structure:
    kind = structure.kind.copy()
    lab = structure.label.copy()
    s = structure
    for idx, k in zip(indices, new_kinds, strict=True):
        s, ki = s.kind_index(k)
        kind[idx] = ki
        lab[idx] = label
    return s.replace(kind=kind, label=lab)


def add_vacancies(structure: Structure, count: int = 1, *, sublattice: str | None = None,
                  species: str | None = None, indices=None, seed=None,
                  edge_margin_A: float = 3.0, min_separation_A: float = 3.0) -> Structure:
    """Empty ``count`` whole columns (label ``"vacancy"``); the site stays in the truth with Z = 0."""
    idx = np.asarray(indices, int) if indices is not None else choose_sites(
        structure, count, sublattice=sublattice, species=species, edge_margin_A=edge_margin_A,
        min_separation_A=min_separation_A, seed=seed)
    return _set_columns(structure, idx, [ColumnKind(())] * len(idx), "vacancy")


def substitute(structure: Structure, new_species: str, count: int = 1, *, old_species: str | None = None,
               sublattice: str | None = None, indices=None, seed=None,
               edge_margin_A: float = 3.0, min_separation_A: float = 3.0) -> Structure:
    """Replace atoms of ``old_species`` by ``new_species`` in ``count`` columns (label ``"substitution"``).

    With ``old_species=None`` the heaviest element of each chosen column is replaced (the metal
    in MX2, B in ABO3, C in graphene). Example: Si in graphene, W in MoS2, Mo in WS2.
    """
    atomic_number(new_species)
    idx = np.asarray(indices, int) if indices is not None else choose_sites(
        structure, count, sublattice=sublattice, species=old_species, edge_margin_A=edge_margin_A,
        min_separation_A=min_separation_A, seed=seed)
    new = []
    for i in idx:
        atoms = structure.kinds[structure.kind[i]].atoms
        target = old_species or max(atoms, key=lambda a: atomic_number(a[0]))[0]
        new.append(ColumnKind(tuple((new_species if s == target else s, z) for s, z in atoms)))
    return _set_columns(structure, idx, new, "substitution")


def remove_atoms(structure: Structure, count: int = 1, *, n_remove: int = 1, species: str | None = None,
                 sublattice: str | None = None, indices=None, seed=None,
                 edge_margin_A: float = 3.0, min_separation_A: float = 3.0) -> Structure:
    """Partly occupied columns: take ``n_remove`` atoms out of ``count`` columns (label ``"partial"``).

    For example one S out of an S2 column of MoS2 (a single sulphur vacancy). The column must
    keep at least one atom; use :func:`add_vacancies` to empty it.
    """
    idx = np.asarray(indices, int) if indices is not None else choose_sites(
        structure, count, sublattice=sublattice, species=species, edge_margin_A=edge_margin_A,
        min_separation_A=min_separation_A, seed=seed)
    new = []
    for i in idx:
        atoms = list(structure.kinds[structure.kind[i]].atoms)
        if len(atoms) <= n_remove:
            raise ValueError(
                f"column {i} ({structure.species[i]}) has {len(atoms)} atom(s) per cell; cannot remove "
                f"n_remove={n_remove} and keep it partly occupied")
        for _ in range(n_remove):
            j = next((k for k in range(len(atoms) - 1, -1, -1) if species is None or atoms[k][0] == species), None)
            if j is None:
                raise ValueError(f"column {i} has no {species} atom to remove")
            atoms.pop(j)
        new.append(ColumnKind(tuple(atoms)))
    return _set_columns(structure, idx, new, "partial")


def add_adatoms(structure: Structure, species: str, count: int = 1, *, xy_A=None, seed=None,
                edge_margin_A: float = 3.0, min_distance_A: float | None = None) -> Structure:
    """Add single atoms of ``species`` on top of the lattice (label ``"adatom"``).

    Positions are random, at least ``min_distance_A`` (default: the nearest-column distance)
    from every column, unless ``xy_A`` (M, 2) gives them.
    """
    atomic_number(species)
    rng = np.random.default_rng(seed)
    if min_distance_A is None:
        min_distance_A = 0.7 * structure.material.nearest_column_distance_A
    if xy_A is None:
        from scipy.spatial import cKDTree

        tree = cKDTree(structure.xy_A)
        w, h = structure.extent_A
        pts: list[np.ndarray] = []
        for _ in range(20000):
            if len(pts) == count:
                break
            p = rng.uniform([edge_margin_A, edge_margin_A], [w - edge_margin_A, h - edge_margin_A])
            if tree.query(p)[0] < min_distance_A:
                continue
            if pts and np.min(np.hypot(*(np.array(pts) - p).T)) < 3 * min_distance_A:
                continue
            pts.append(p)
        if len(pts) < count:
            raise ValueError(f"could place only {len(pts)} of {count} adatoms; use a larger field")
        xy_A = np.array(pts).reshape(-1, 2)
    xy_A = np.asarray(xy_A, dtype=float).reshape(-1, 2)
    s, ki = structure.kind_index(ColumnKind(((species, 2.0),)))
    n = len(xy_A)
    return s.replace(
        xy_A=np.concatenate([s.xy_A, xy_A]),
        kind=np.concatenate([s.kind, np.full(n, ki)]),
        sublattice=np.concatenate([s.sublattice, np.full(n, -1)]),
        label=np.concatenate([s.label, np.full(n, "adatom", dtype=object)]),
    )
