"""Nearest neighbours of atomic columns (KD-tree), with atoms cut by the image border flagged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._validate import as_dict, check_k, check_positive, check_shape, check_xy, px_to_nm


@dataclass(frozen=True, eq=False)
class Neighbours:
    """Neighbours of every atom, nearest first.

    Rows are padded to the largest neighbour count: padding has index -1 and NaN vectors and
    distances (only radius queries give ragged rows).

    Attributes:
        indices: (N, K) int index of each neighbour into the input positions, -1 for padding.
        vectors_px: (N, K, 2) vector (dx, dy) from the atom to each neighbour, pixels.
        distances_px: (N, K) length of those vectors, pixels.
        count: (N,) number of real neighbours per atom.
        at_edge: (N,) True where the neighbourhood reaches past the image border (or the
            bounding box of the atoms when no image shape was given), so neighbours may be missing.
        pixel_size_nm: calibration (nm per pixel) or None.
    """

    indices: np.ndarray
    vectors_px: np.ndarray
    distances_px: np.ndarray
    count: np.ndarray
    at_edge: np.ndarray
    pixel_size_nm: float | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def vectors_nm(self) -> np.ndarray | None:
        """(N, K, 2) neighbour vectors in nm, or None without a calibration."""
        return px_to_nm(self.vectors_px, self.pixel_size_nm)

    @property
    def distances_nm(self) -> np.ndarray | None:
        """(N, K) neighbour distances in nm, or None without a calibration."""
        return px_to_nm(self.distances_px, self.pixel_size_nm)

    def to_dict(self) -> dict:
        """Fields as a dict of arrays (plus the nm versions when calibrated)."""
        d = as_dict(self)
        d["vectors_nm"], d["distances_nm"] = self.vectors_nm, self.distances_nm
        return d


def border_distance_px(xy: np.ndarray, image_shape: tuple[int, int] | None,
                       border_px: float = 0.0) -> np.ndarray:
    """(N,) distance in pixels from each position to the edge of the usable field.

    The field is the image (pixel centres at integers, edges at -0.5 and size - 0.5) when
    ``image_shape`` = (rows, cols) is given, otherwise the bounding box of ``xy``; it is shrunk
    by ``border_px`` on every side. Positions outside give negative distances.
    """
    if image_shape is not None:
        h, w = image_shape
        lo = np.array([-0.5, -0.5])
        hi = np.array([w - 0.5, h - 0.5])
    else:
        lo, hi = xy.min(axis=0), xy.max(axis=0)
    lo, hi = lo + border_px, hi - border_px
    return np.minimum(xy - lo, hi - xy).min(axis=1)


def find_neighbours(
    xy: np.ndarray,
    k: int | None = None,
    *,
    radius_px: float | None = None,
    image_shape: tuple[int, int] | None = None,
    border_px: float = 0.0,
    pixel_size_nm: float | None = None,
) -> Neighbours:
    """The ``k`` nearest neighbours of each atom, or all neighbours within ``radius_px``.

    Uses :class:`scipy.spatial.cKDTree`. With both ``k`` and ``radius_px``, the ``k`` nearest
    neighbours that lie within ``radius_px`` are returned.

    An atom is flagged ``at_edge`` when the circle holding its neighbourhood (radius
    ``radius_px``, or the distance to its k-th neighbour) crosses the border of the field, so
    that a neighbour outside the image could have been missed.

    Args:
        xy: (N, 2) positions (x = column, y = row), pixels.
        k: number of nearest neighbours (self excluded); needs more than ``k`` atoms.
        radius_px: search radius, pixels.
        image_shape: (rows, cols) of the image the positions come from; default: the bounding
            box of ``xy``.
        border_px: extra margin inside the field where atoms may be missed (e.g. by the atom
            finder), pixels.
        pixel_size_nm: calibration, nm per pixel (only carried to the result).

    Returns:
        :class:`Neighbours`, nearest first.

    Example:
        >>> nb = find_neighbours(np.array([[0, 0], [1, 0], [0, 2.0]]), k=1)
        >>> nb.indices[:, 0].tolist()
        [1, 0, 0]
    """
    xy = check_xy(xy, "xy", min_atoms=2)
    n = len(xy)
    if k is None and radius_px is None:
        raise ValueError("give k (number of neighbours) or radius_px (search radius), or both")
    if k is not None:
        k = check_k(k, n)
    if radius_px is not None:
        radius_px = check_positive(radius_px, "radius_px")
    shape = check_shape(image_shape)
    if not np.isfinite(border_px) or border_px < 0:
        raise ValueError(f"border_px={border_px!r} must be >= 0")
    pixel_size_nm = check_positive(pixel_size_nm, "pixel_size_nm", allow_none=True)

    tree = cKDTree(xy)
    rows = np.arange(n)
    if k is not None:
        ub = np.inf if radius_px is None else radius_px * (1 + 1e-12)
        dist, idx = tree.query(xy, k=k + 1, distance_upper_bound=ub)
        # drop the atom itself (not necessarily the first column when positions coincide)
        is_self = idx == rows[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
        idx = np.take_along_axis(idx, order, axis=1)
        dist = np.take_along_axis(dist, order, axis=1)
        valid = np.isfinite(dist)
    else:
        lists = tree.query_ball_point(xy, radius_px, return_sorted=True)
        lists = [[j for j in lst if j != i] for i, lst in enumerate(lists)]
        kmax = max(1, max(len(lst) for lst in lists))
        idx = np.full((n, kmax), -1, dtype=int)
        for i, lst in enumerate(lists):
            idx[i, :len(lst)] = lst
        valid = idx >= 0
        dist = np.full(idx.shape, np.inf)
        dist[valid] = np.hypot(*(xy[idx[valid]] - xy[np.nonzero(valid)[0]]).T)
        # sort each row by distance (query_ball_point sorts by index)
        order = np.argsort(dist, axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
        dist = np.take_along_axis(dist, order, axis=1)
        valid = idx >= 0
    idx = np.where(valid, idx, -1)
    vec = np.full(idx.shape + (2,), np.nan)
    vec[valid] = xy[idx[valid]] - xy[np.nonzero(valid)[0]]
    dist = np.where(valid, dist, np.nan)
    count = valid.sum(axis=1)

    if radius_px is not None:
        reach = np.full(n, radius_px)
    else:
        reach = dist[rows, np.maximum(count - 1, 0)]
    at_edge = border_distance_px(xy, shape, border_px) < reach
    return Neighbours(indices=idx, vectors_px=vec, distances_px=dist, count=count,
                      at_edge=at_edge, pixel_size_nm=pixel_size_nm)
