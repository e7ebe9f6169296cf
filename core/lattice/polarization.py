"""Polar displacements in ABO3 perovskites: B-site offset from the centre of its four A sites."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._validate import as_dict, check_per_atom, check_positive, check_xy


@dataclass(frozen=True, eq=False)
class Polarization:
    """Displacement of every B column from the centre of the four A columns around it.

    In PbTiO3-type ferroelectrics the spontaneous polarization is usually taken antiparallel to
    this displacement (e.g. Tang et al., Science 348, 547 (2015)); no sign is applied here.

    Attributes:
        b_index: (M,) index of each B site into the input positions.
        b_xy_px: (M, 2) B-site positions, pixels.
        center_xy_px: (M, 2) centre of the four surrounding A sites, pixels.
        displacement_px: (M, 2) B position minus that centre, pixels (NaN where not valid).
        displacement_pm: (M, 2) the same in picometres, or None without a calibration.
        a_neighbours: (M, 4) indices of the four A sites into the input positions.
        valid: (M,) True where four A sites surround the B site (False at edges and defects).
        pixel_size_nm: calibration or None.
    """

    b_index: np.ndarray
    b_xy_px: np.ndarray
    center_xy_px: np.ndarray
    displacement_px: np.ndarray
    displacement_pm: np.ndarray | None
    a_neighbours: np.ndarray
    valid: np.ndarray
    pixel_size_nm: float | None = None

    def __len__(self) -> int:
        return len(self.b_index)

    @property
    def magnitude_px(self) -> np.ndarray:
        """(M,) length of the displacement, pixels."""
        return np.hypot(*self.displacement_px.T)

    @property
    def magnitude_pm(self) -> np.ndarray | None:
        """(M,) length of the displacement, picometres, or None without a calibration."""
        return None if self.displacement_pm is None else np.hypot(*self.displacement_pm.T)

    @property
    def angle_deg(self) -> np.ndarray:
        """(M,) direction of the displacement, degrees from +x towards +y."""
        return np.rad2deg(np.arctan2(self.displacement_px[:, 1], self.displacement_px[:, 0]))

    def to_dict(self) -> dict:
        """Fields as a dict of arrays."""
        return as_dict(self)


def _masks(n: int, a_mask, b_mask, labels, a_label, b_label) -> tuple[np.ndarray, np.ndarray]:
    if labels is not None:
        if a_mask is not None or b_mask is not None:
            raise ValueError("give either labels or a_mask/b_mask, not both")
        labels = check_per_atom(labels, n, "labels")
        a, b = labels == a_label, labels == b_label
        if not a.any():
            raise ValueError(f"labels has no A sites labelled {a_label!r}")
        if not b.any():
            raise ValueError(f"labels has no B sites labelled {b_label!r}")
        return a, b
    if a_mask is None:
        raise ValueError("give a_mask (True for A sites) or labels to tell A from B columns")
    a = check_per_atom(a_mask, n, "a_mask")
    if a.dtype != bool:
        raise ValueError(f"a_mask must be a boolean array; got dtype {a.dtype}")
    if b_mask is None:
        b = ~a
    else:
        b = check_per_atom(b_mask, n, "b_mask")
        if b.dtype != bool:
            raise ValueError(f"b_mask must be a boolean array; got dtype {b.dtype}")
        if np.any(a & b):
            raise ValueError("a_mask and b_mask overlap: a column cannot be both A and B")
    if a.sum() < 4:
        raise ValueError(f"a_mask marks {int(a.sum())} A sites; at least 4 are needed")
    if not b.any():
        raise ValueError("b_mask marks no B sites")
    return a, b


def polarization(
    xy: np.ndarray,
    *,
    a_mask: np.ndarray | None = None,
    b_mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    a_label="A",
    b_label="B",
    pixel_size_nm: float | None = None,
    max_distortion: float = 0.25,
) -> Polarization:
    """B-site displacements in an ABO3 perovskite relative to the centre of the four A sites.

    Tell A from B columns either with boolean masks (``a_mask``; ``b_mask`` defaults to every
    other column) or with per-column ``labels`` and the label values of A and B.

    A B site is ``valid`` when its four nearest A sites lie in four different directions around
    it (one per 90 degree sector about their centre) and their distances agree within
    ``max_distortion`` (fraction of the mean): this rejects B sites at the image edge or next
    to missing A columns.

    Args:
        xy: (N, 2) positions (x = column, y = row), pixels.
        a_mask: (N,) bool, True for A-site columns.
        b_mask: (N,) bool, True for B-site columns (default: not A).
        labels: (N,) column labels, instead of the masks.
        a_label, b_label: label values of A and B columns.
        pixel_size_nm: calibration, nm per pixel; gives ``displacement_pm``.
        max_distortion: allowed spread of the four A distances, fraction of their mean.

    Returns:
        :class:`Polarization`, one row per B site in input order.

    Example:
        >>> xy = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5.5, 5.0]])
        >>> p = polarization(xy, a_mask=np.array([True] * 4 + [False]), pixel_size_nm=0.01)
        >>> p.displacement_pm.round(3).tolist()
        [[5.0, 0.0]]
    """
    xy = check_xy(xy, "xy", min_atoms=5)
    a, b = _masks(len(xy), a_mask, b_mask, labels, a_label, b_label)
    pixel_size_nm = check_positive(pixel_size_nm, "pixel_size_nm", allow_none=True)
    max_distortion = check_positive(max_distortion, "max_distortion")
    a_idx, b_idx = np.flatnonzero(a), np.flatnonzero(b)
    if len(a_idx) < 4:
        raise ValueError(f"only {len(a_idx)} A sites; at least 4 are needed")

    dist, nn = cKDTree(xy[a_idx]).query(xy[b_idx], k=4)
    corners = xy[a_idx][nn]  # (M, 4, 2)
    centre = corners.mean(axis=1)
    # four A sites in four different quadrants around their centre, at similar distances
    rel = corners - centre[:, None, :]
    ang = np.sort(np.mod(np.arctan2(rel[..., 1], rel[..., 0]), 2 * np.pi), axis=1)
    gaps = np.diff(np.concatenate([ang, ang[:, :1] + 2 * np.pi], axis=1), axis=1)
    spread = (dist.max(axis=1) - dist.min(axis=1)) / dist.mean(axis=1)
    valid = np.all(np.abs(gaps - np.pi / 2) < np.pi / 4, axis=1) & (spread <= max_distortion)
    disp = xy[b_idx] - centre
    disp[~valid] = np.nan
    return Polarization(
        b_index=b_idx, b_xy_px=xy[b_idx], center_xy_px=centre, displacement_px=disp,
        displacement_pm=None if pixel_size_nm is None else disp * pixel_size_nm * 1000.0,
        a_neighbours=a_idx[nn], valid=valid, pixel_size_nm=pixel_size_nm,
    )
