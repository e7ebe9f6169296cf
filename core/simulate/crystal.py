"""Build a crystal of columns covering a field of view, at any rotation."""

from __future__ import annotations

import numpy as np

from .materials import Material, get_material
from .structure import ColumnKind, Structure


def build_crystal(
    material: str | Material,
    extent_A: tuple[float, float],
    *,
    rotation_deg: float = 0.0,
    shift_A: tuple[float, float] = (0.0, 0.0),
    thickness_nm: float | None = None,
    margin_A: float = 6.0,
    polarization_pm: tuple[float, float] | np.ndarray | None = None,
) -> Structure:
    """Columns of ``material`` filling a rectangle of ``extent_A`` = (width, height) angstrom.

    The lattice is rotated by ``rotation_deg`` (counter-clockwise in the (x, y) image frame,
    about the field centre) and translated by ``shift_A``. Columns within ``margin_A`` outside
    the field are kept so that images have no empty border.

    Args:
        material: a built-in name (see :func:`get_material`) or a :class:`Material`.
        extent_A: field (width, height) in angstrom; both must be > 0.
        rotation_deg: in-plane rotation of the crystal, degrees.
        shift_A: translation of the lattice origin, angstrom.
        thickness_nm: sample thickness for bulk crystals (rounded to whole cells, at least one);
            ignored for monolayers.
        margin_A: extra border filled with columns, angstrom.
        polarization_pm: B-site displacement (dx, dy) in picometres for perovskites: one
            vector for all cells or an (N_B, 2) array, one per B column in build order.

    Returns:
        A :class:`Structure` with every column labelled ``"lattice"``.

    Example:
        >>> s = build_crystal("graphene", (20.0, 20.0), rotation_deg=12)
        >>> sorted(set(s.species))
        ['C']
    """
    mat = get_material(material)
    w, h = (float(extent_A[0]), float(extent_A[1]))
    if not (w > 0 and h > 0 and np.isfinite(w) and np.isfinite(h)):
        raise ValueError(f"extent_A={extent_A} must be two positive, finite lengths in angstrom")
    theta = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cell = rot @ mat.cell_matrix_A  # columns: rotated a1, a2
    center = np.array([w / 2.0, h / 2.0])
    origin = center + np.asarray(shift_A, dtype=float)

    # integer cell indices covering the (margin-padded) rectangle
    corners = np.array([[-margin_A, -margin_A], [w + margin_A, -margin_A],
                        [-margin_A, h + margin_A], [w + margin_A, h + margin_A]]) - origin
    frac = np.linalg.solve(cell, corners.T)  # (2, 4)
    lo = np.floor(frac.min(axis=1)).astype(int) - 1
    hi = np.ceil(frac.max(axis=1)).astype(int) + 1
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    ij = np.stack([ii.ravel(), jj.ravel()], axis=1).astype(float)

    xy, kind, sub = [], [], []
    kinds = tuple(ColumnKind(s.atoms) for s in mat.sublattices)
    for s_idx, s in enumerate(mat.sublattices):
        pos = (ij + np.asarray(s.frac)) @ cell.T + origin
        keep = ((pos[:, 0] >= -margin_A) & (pos[:, 0] <= w + margin_A)
                & (pos[:, 1] >= -margin_A) & (pos[:, 1] <= h + margin_A))
        pos = pos[keep]
        if s.name == "B" and polarization_pm is not None:
            disp = np.asarray(polarization_pm, dtype=float) / 100.0
            if disp.ndim == 1:
                disp = np.broadcast_to(disp, pos.shape)
            elif disp.shape != pos.shape:
                raise ValueError(f"polarization_pm has shape {disp.shape}; expected (2,) or {pos.shape}")
            pos = pos + disp
        xy.append(pos)
        kind.append(np.full(len(pos), kinds.index(ColumnKind(s.atoms))))
        sub.append(np.full(len(pos), s_idx))
    xy_all = np.concatenate(xy)
    n = len(xy_all)

    cells = 1
    if mat.period_z_A is not None and thickness_nm is not None:
        if not thickness_nm > 0:
            raise ValueError(f"thickness_nm={thickness_nm} must be > 0")
        cells = max(1, int(round(thickness_nm * 10.0 / mat.period_z_A)))
    # unique kinds in order of first appearance (sublattices may share a kind, e.g. graphene)
    uniq: list[ColumnKind] = []
    for k in kinds:
        if k not in uniq:
            uniq.append(k)
    remap = np.array([uniq.index(k) for k in kinds])
    return Structure(
        xy_A=xy_all,
        kind=remap[np.concatenate(kind)],
        kinds=tuple(uniq),
        sublattice=np.concatenate(sub),
        label=np.full(n, "lattice", dtype=object),
        material=mat,
        thickness_cells=cells,
        extent_A=(w, h),
    )
