"""The lattice-averaged unit cell and what the found columns leave unexplained in it.

A column sublattice can hide as a shoulder: with columns 0.3-0.35 of their spacing wide, a
half-bright column beside bright ones makes no local maximum and no concave Laplacian at
the scales that part neighbours, so neither the network nor the sublattice passes
(:mod:`.sublattice`) see it. Averaged over every cell of the lattice, though, it stands far
above the noise. :func:`unexplained_motif` folds the central crop of the image into the cell
of the lattice fitted to the found columns, fits that average with one Gaussian per found
basis site (common width, flat background), and reports the strongest residual away from
the basis sites. Used as a check (a warning), not to add columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from .quality import nearest_distance
from .sublattice import LatticeSites

#: bins per cell axis of the averaged cell
_BINS = 24
#: side (px) of the central crop that is folded
_CROP_PX = 160
#: columns narrower than this (Gaussian width / nearest distance) are not checked: a sharp
#: column makes its own maximum, which the network and the sublattice passes see; and the
#: pixel sampling of sharp columns is what a Gaussian cell model fits worst
MIN_WIDTH_RATIO = 0.22


@dataclass(frozen=True)
class MotifResidual:
    """The strongest unexplained intensity in the lattice-averaged cell.

    Attributes:
        offset: fractional cell position (u, v) of the residual's maximum.
        z: its significance (noise sigmas of the cell average, 3x3 bins).
        relative: its height over the brightest fitted column's.
        width_ratio: fitted column width / nearest distance of the found columns.
    """

    offset: tuple[float, float]
    z: float
    relative: float
    width_ratio: float


def unexplained_motif(image: np.ndarray, xy: np.ndarray, lattice_xy: np.ndarray | None = None) -> MotifResidual | None:
    """The lattice-averaged cell's strongest residual away from the found basis sites, or None
    (too few columns, no lattice, columns too narrow to hide a neighbour, or a failed fit).

    Args:
        image: (H, W) image.
        xy: (N, 2) found columns (x, y) px, at least 40.
        lattice_xy: the columns to fit the lattice on (default ``xy``; the lattice passes' own
            fit is reused from their memo when it is given the same columns).
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) < 40:
        return None
    h, w = np.shape(image)
    lat = LatticeSites.fit(xy if lattice_xy is None else lattice_xy, (h, w))
    nn = nearest_distance(xy)
    if lat is None or not np.isfinite(nn):
        return None
    side = int(max(_CROP_PX, 8 * nn))
    r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    sub = np.asarray(image[r0:r0 + side, c0:c0 + side], float)
    f = _cell_fractions(lat, r0, c0, sub.shape, nn)
    ib = np.minimum((f * _BINS).astype(int), _BINS - 1)
    k = ib[:, 0] * _BINS + ib[:, 1]
    v = sub.ravel()
    n = np.bincount(k, minlength=_BINS * _BINS)
    if n.min() < 4:
        return None
    mean = np.bincount(k, v, _BINS * _BINS) / n
    var = np.maximum(np.bincount(k, v * v, _BINS * _BINS) / n - mean**2, 1e-12)
    se = np.sqrt(var / n)
    mat = lat.matrix_px
    grid = (np.stack(np.meshgrid(np.arange(_BINS), np.arange(_BINS), indexing="ij"), -1).reshape(-1, 2) + 0.5) / _BINS
    q = grid @ mat.T
    shifts = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)], float)
    d2 = [((q[:, None, :] - ((b + shifts) @ mat.T)[None]) ** 2).sum(-1) for b in lat.basis_frac]

    def model(par: np.ndarray) -> np.ndarray:
        out = np.full(len(q), par[0])
        for amp, dd in zip(par[2:], d2, strict=True):
            out = out + amp * np.exp(-dd / (2 * par[1] ** 2)).sum(1)
        return out

    lo, hi = float(mean.min()), float(mean.max())
    start = np.array([lo, 0.2 * nn] + [hi - lo] * len(d2))
    lower = np.array([lo - (hi - lo), 0.3] + [0.0] * len(d2))
    upper = np.array([hi, nn] + [3 * (hi - lo) + 1e-9] * len(d2))
    try:
        fit = least_squares(lambda p: (model(p) - mean) / se, start, bounds=(lower, upper))
    except ValueError:
        return None
    if not fit.success:
        return None
    width_ratio = float(fit.x[1] / nn)
    if width_ratio < MIN_WIDTH_RATIO:
        return None
    amp = float(np.max(fit.x[2:]))
    if not amp > 0:
        return None
    resid = (mean - model(fit.x)).reshape(_BINS, _BINS)
    smooth = ndimage.uniform_filter(resid, 3, mode="wrap")
    noise = ndimage.uniform_filter(se.reshape(_BINS, _BINS), 3, mode="wrap") / 3.0
    far = (np.min(np.stack([dd.min(1) for dd in d2]), axis=0) > (0.45 * nn) ** 2).reshape(_BINS, _BINS)
    if not far.any():
        return None
    z = np.where(far, smooth / noise, -np.inf)
    i = np.unravel_index(int(np.argmax(z)), z.shape)
    return MotifResidual(offset=(float((i[0] + 0.5) / _BINS), float((i[1] + 0.5) / _BINS)), z=float(z[i]),
                         relative=float(smooth[i] / amp), width_ratio=width_ratio)


def _cell_fractions(lat: LatticeSites, r0: int, c0: int, shape: tuple[int, int], nn: float) -> np.ndarray:
    """Fractional cell coordinates (modulo 1) of every pixel of a crop, (rows * cols, 2) in
    row-major order, with the lattice's local misfit read on a grid of half the nearest distance
    and interpolated (the misfit varies over many cells; per pixel it cost ~16 ms a crop)."""
    h, w = shape
    step = max(2.0, 0.5 * nn)
    gy, gx = np.arange(0.0, h + step, step), np.arange(0.0, w + step, step)
    gp = np.stack(np.meshgrid(gx + c0, gy + r0), -1).reshape(-1, 2)
    corr = lat.correction(gp).reshape(len(gy), len(gx), 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    coords = [yy.ravel() / step, xx.ravel() / step]
    cx = ndimage.map_coordinates(corr[..., 0], coords, order=1, mode="nearest")
    cy = ndimage.map_coordinates(corr[..., 1], coords, order=1, mode="nearest")
    p = np.stack([xx.ravel() + c0 - cx, yy.ravel() + r0 - cy], 1)
    return ((p - lat.origin_px) @ np.linalg.inv(lat.matrix_px).T) % 1.0
