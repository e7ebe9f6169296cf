"""Nearest-neighbour radius-vector descriptors of local atomic configurations.

After Belianinov et al., "Identification of phases, symmetries and defects through local
crystallography", Nat. Commun. 6, 7801 (2015): each atom is described by the vectors to its
k nearest neighbours. To make descriptors of different atoms comparable, the vectors are sorted
by their direction, counted counter-clockwise (in the x, y frame) from one start angle shared by
all atoms; by default that start is put in the emptiest direction of the neighbour-angle
histogram so that small displacements do not reorder the neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ._validate import as_dict, check_k, check_per_atom, check_xy, px_to_nm
from .neighbours import find_neighbours


@dataclass(frozen=True, eq=False)
class Descriptors:
    """Radius-vector descriptors, one row per atom.

    Attributes:
        features: (N, 2k) neighbour vectors (dx1, dy1, dx2, dy2, ...) in pixels, in the
            consistent order given by ``order``.
        neighbour_indices: (N, k) index of each neighbour into the input positions, same order.
        neighbour_classes: (N, k) class of each neighbour (as given), or None.
        at_edge: (N,) True where the neighbourhood is cut by the image border.
        order: ``"angle"`` or ``"distance"``.
        start_angle_deg: angle (x, y frame, from +x towards +y) where the angular order starts.
        pixel_size_nm: calibration (nm per pixel) or None.
    """

    features: np.ndarray
    neighbour_indices: np.ndarray
    neighbour_classes: np.ndarray | None
    at_edge: np.ndarray
    order: str
    start_angle_deg: float
    pixel_size_nm: float | None = None

    def __len__(self) -> int:
        return len(self.features)

    @property
    def k(self) -> int:
        """Number of neighbours per atom."""
        return self.neighbour_indices.shape[1]

    @property
    def vectors_px(self) -> np.ndarray:
        """(N, k, 2) view of ``features`` as neighbour vectors, pixels."""
        return self.features.reshape(len(self), -1, 2)

    @property
    def features_nm(self) -> np.ndarray | None:
        """(N, 2k) ``features`` in nm, or None without a calibration."""
        return px_to_nm(self.features, self.pixel_size_nm)

    def as_array(self, class_weight: float = 0.0) -> np.ndarray:
        """Feature matrix for learning: (N, 2k), or (N, 3k) with ``class_weight`` * the
        neighbour classes (integer-coded in sorted order of the class values) appended.

        ``class_weight`` is in pixels per class step: it sets how strongly a change of
        neighbour class counts against a displacement.
        """
        if class_weight == 0.0:
            return self.features
        if self.neighbour_classes is None:
            raise ValueError("class_weight needs descriptors built with classes=")
        _, codes = np.unique(self.neighbour_classes, return_inverse=True)
        codes = codes.reshape(self.neighbour_classes.shape).astype(float)
        return np.concatenate([self.features, class_weight * codes], axis=1)

    def to_dict(self) -> dict:
        """Fields as a dict (plus ``features_nm`` when calibrated)."""
        d = as_dict(self)
        d["features_nm"] = self.features_nm
        return d


def _emptiest_angle(angles: np.ndarray, bins: int = 360) -> float:
    """Direction (radians) least populated by ``angles``, from a circularly smoothed histogram."""
    hist, edges = np.histogram(np.mod(angles, 2 * np.pi), bins=bins, range=(0.0, 2 * np.pi))
    smooth = gaussian_filter1d(hist.astype(float), sigma=2.0, mode="wrap")
    low = np.flatnonzero(smooth <= smooth.min() + 1e-9 * max(1.0, smooth.max()))
    # middle of the longest run of minimal bins (runs may wrap around 2 pi)
    if len(low) == bins:
        return 0.0
    runs, start = [], low[0]
    for a, b in zip(low[:-1], low[1:], strict=True):
        if b != a + 1:
            runs.append((start, a))
            start = b
    runs.append((start, low[-1]))
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == bins - 1:
        runs[0] = (runs[-1][0] - bins, runs[0][1])
        runs.pop()
    s, e = max(runs, key=lambda r: r[1] - r[0])
    centre_bin = (s + e) / 2.0 + 0.5
    return float(np.mod(centre_bin * (edges[1] - edges[0]), 2 * np.pi))


def radius_vector_descriptors(
    xy: np.ndarray,
    k: int = 6,
    *,
    classes: np.ndarray | None = None,
    order: str = "angle",
    start_angle_deg: float | None = None,
    image_shape: tuple[int, int] | None = None,
    border_px: float = 0.0,
    pixel_size_nm: float | None = None,
) -> Descriptors:
    """Radius-vector descriptors: the vectors from each atom to its ``k`` nearest neighbours.

    Args:
        xy: (N, 2) positions (x = column, y = row), pixels.
        k: number of neighbours; needs more than ``k`` atoms. Choose k to close a neighbour
            shell (e.g. 3 or 9 in a honeycomb, 6 in a hexagonal lattice): a k that cuts through
            equidistant neighbours picks an arbitrary subset of them.
        classes: optional (N,) class of every atom (e.g. atom-finder labels); the classes of
            the neighbours are returned in ``neighbour_classes``.
        order: ``"angle"`` (counter-clockwise from ``start_angle_deg``, the usual choice) or
            ``"distance"`` (nearest first).
        start_angle_deg: where the angular order starts (x, y frame, degrees from +x towards
            +y); default: the direction least populated by neighbours over all atoms.
        image_shape: (rows, cols) of the image, for flagging atoms at the edge.
        border_px: margin inside the image where atoms may be missing, pixels.
        pixel_size_nm: calibration, nm per pixel.

    Returns:
        :class:`Descriptors` with ``features`` of shape (N, 2k) in pixels.

    Example:
        >>> xy = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2) * 10
        >>> radius_vector_descriptors(xy, k=4).features.shape
        (25, 8)
    """
    xy = check_xy(xy, "xy", min_atoms=2)
    k = check_k(k, len(xy))
    if order not in ("angle", "distance"):
        raise ValueError(f"order={order!r} must be 'angle' or 'distance'")
    if classes is not None:
        classes = check_per_atom(classes, len(xy), "classes")
    if start_angle_deg is not None and not np.isfinite(start_angle_deg):
        raise ValueError(f"start_angle_deg={start_angle_deg!r} must be finite")
    nb = find_neighbours(xy, k, image_shape=image_shape, border_px=border_px,
                         pixel_size_nm=pixel_size_nm)
    vec, idx = nb.vectors_px, nb.indices
    if order == "angle":
        ang = np.arctan2(vec[..., 1], vec[..., 0])
        start = _emptiest_angle(ang.ravel()) if start_angle_deg is None else np.deg2rad(start_angle_deg)
        rel = np.mod(ang - start, 2 * np.pi)
        # ties (same direction) fall back on distance
        perm = np.lexsort((nb.distances_px, rel), axis=-1)
        vec = np.take_along_axis(vec, perm[..., None], axis=1)
        idx = np.take_along_axis(idx, perm, axis=1)
        start_deg = float(np.rad2deg(start))
    else:
        start_deg = 0.0 if start_angle_deg is None else float(start_angle_deg)
    return Descriptors(
        features=vec.reshape(len(xy), 2 * k),
        neighbour_indices=idx,
        neighbour_classes=None if classes is None else classes[idx],
        at_edge=nb.at_edge,
        order=order,
        start_angle_deg=start_deg,
        pixel_size_nm=nb.pixel_size_nm,
    )
