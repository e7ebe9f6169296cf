"""Strain maps from Bragg-disc positions (nanobeam electron diffraction, NBED).

1. :func:`find_bragg_lattice` finds the discs of a reference pattern (e.g. the mean pattern of
   an unstrained region): cross-correlation with a disc template, local maxima, the two shortest
   non-collinear vectors from the direct beam as ``g1, g2`` and a least-squares refinement of
   both over every disc that indexes as ``h g1 + k g2``.
2. :func:`bragg_strain` measures, in every pattern, the centre of mass of each indexed disc in
   a window around its reference position (one matrix product per block of patterns, as for the
   centre of mass, so numpy or dask, lazily), fits that pattern's ``g1, g2`` by least squares
   weighted by the disc intensities (positions relative to the direct beam, so beam shifts
   cancel), and turns the change of the reciprocal lattice into the real-space deformation
   gradient ``F = A^T (A0^T)^-1`` with ``A = (G^T)^-1`` (rows of ``G``: ``g1, g2``). Strain is
   ``(F + F^T) / 2 - I`` and the rotation ``atan2(F10 - F01, F00 + F11)``, in the detector's
   (x, y) frame (x along detector columns; scan rotation is not applied).

The window (radius ``0.4 min |g|``) must hold the disc and nothing else, so the probe's
convergence semi-angle should be below about a third of the smallest Bragg angle (NBED).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np

from .com import _check_data, _is_dask, _weighted_sums


@dataclass(frozen=True, eq=False)
class BraggLattice:
    """Reference Bragg discs of a pattern.

    Attributes:
        g: (2, 2) reciprocal basis, rows ``g1, g2`` as (x, y) in detector pixels.
        center_px: (x, y) of the direct beam, pixels.
        hk: (M, 2) indices of the discs used (the direct beam (0, 0) first).
        disc_px: (M, 2) their reference positions (x, y), pixels.
        window_px: radius of the window each disc is measured in, pixels.
    """

    g: np.ndarray
    center_px: np.ndarray
    hk: np.ndarray
    disc_px: np.ndarray
    window_px: float


@dataclass(frozen=True, eq=False)
class BraggStrain:
    """Strain and rotation of every pattern relative to the reference lattice.

    Attributes:
        exx, eyy, exy: (...) strain components (dimensionless; exy is the tensor shear).
        rotation_deg: (...) lattice rotation, degrees (from +x towards +y).
        g: (..., 2, 2) the fitted reciprocal basis of every pattern (pixels).
        lattice: the reference :class:`BraggLattice`.
    """

    exx: typing.Any
    eyy: typing.Any
    exy: typing.Any
    rotation_deg: typing.Any
    g: typing.Any
    lattice: BraggLattice


def find_bragg_lattice(pattern: np.ndarray, disc_radius_px: float, *, min_relative_intensity: float = 0.02,
                       max_discs: int = 40, tolerance: float = 0.2) -> BraggLattice:
    """The Bragg discs of ``pattern`` (qy, qx) and their reciprocal basis (see the module notes).

    Args:
        pattern: a diffraction pattern with separated discs (e.g. a mean over a region).
        disc_radius_px: radius of the discs, pixels (the convergence semi-angle / mrad per px).
        min_relative_intensity: discs fainter than this fraction of the strongest diffracted
            disc (in the template correlation) are ignored.
        max_discs: at most this many discs (the strongest) are used.
        tolerance: a disc indexes when it lies within this fraction of ``|g|`` of ``h g1 + k g2``.
    """
    from scipy.signal import fftconvolve
    from skimage.feature import peak_local_max

    p = np.asarray(pattern, float)
    if p.ndim != 2 or min(p.shape) < 8:
        raise ValueError(f"pattern must be a 2D diffraction pattern; got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("pattern contains NaN or inf")
    if not disc_radius_px > 0:
        raise ValueError(f"disc_radius_px={disc_radius_px} must be > 0")
    r = float(disc_radius_px)
    n = int(np.ceil(r)) + 1
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    template = (xx**2 + yy**2 <= r * r).astype(float)
    corr = fftconvolve(p, template[::-1, ::-1], mode="same")
    peaks = peak_local_max(corr, min_distance=max(2, int(1.5 * r)), exclude_border=int(r) + 1,
                           num_peaks=max_discs + 1)
    if len(peaks) < 3:
        raise ValueError("fewer than 3 discs found: is this a diffraction pattern with separated Bragg discs?")
    vals = corr[peaks[:, 0], peaks[:, 1]]
    order = np.argsort(vals)[::-1]
    peaks, vals = peaks[order], vals[order]
    center = peaks[0, ::-1].astype(float)  # the direct beam: the strongest disc
    keep = vals >= min_relative_intensity * vals[1]
    vec = peaks[keep, ::-1].astype(float) - center
    vec = vec[np.hypot(*vec.T) > r]  # diffracted discs
    if len(vec) < 2:
        raise ValueError("fewer than 2 diffracted discs above min_relative_intensity")
    lengths = np.hypot(*vec.T)
    g1 = vec[np.argmin(lengths)]
    cosang = np.abs(vec @ g1) / (lengths * np.linalg.norm(g1))
    cand = np.flatnonzero(cosang < np.cos(np.deg2rad(20)))
    if len(cand) == 0:
        raise ValueError("all discs lie on one line: need a zone axis with two independent reflections")
    g2 = vec[cand[np.argmin(lengths[cand])]]
    g = np.stack([g1, g2])
    for _ in range(3):  # index every disc, refine g by least squares
        hk = np.round(vec @ np.linalg.inv(g))
        ok = np.hypot(*(vec - hk @ g).T) < tolerance * np.min(np.hypot(*g.T))
        ok &= np.any(hk != 0, axis=1)
        if ok.sum() < 2:
            raise ValueError("the discs do not index as a lattice")
        g = np.linalg.lstsq(hk[ok], vec[ok], rcond=None)[0]
    hk = np.vstack([[0, 0], hk[ok]]).astype(int)
    disc = center + hk @ g
    window = 0.4 * float(np.min(np.hypot(*g.T)))
    if window < r:
        raise ValueError(f"the discs (radius {r:g} px) overlap their neighbours' windows ({window:.3g} px): "
                         "NBED needs a convergence semi-angle well below the Bragg angles")
    lat = BraggLattice(g=g, center_px=center, hk=hk, disc_px=disc, window_px=window)
    # the reference as bragg_strain will measure it: windowed centres of mass, weighted fit
    sums = p.reshape(1, -1) @ _disc_weights(p.shape, lat)
    g_com = _strain_from_sums(sums, hk, g)[0, 4:].reshape(2, 2)
    s3 = sums.reshape(-1, 3)
    center_com = s3[0, 1:] / s3[0, 0]
    return BraggLattice(g=g_com, center_px=center_com, hk=hk, disc_px=center_com + hk @ g_com, window_px=window)


def _disc_weights(shape: tuple[int, int], lattice: BraggLattice) -> np.ndarray:
    qy, qx = shape
    yy, xx = np.mgrid[:qy, :qx].astype(float)
    cols = []
    for cx, cy in lattice.disc_px:
        m = ((xx - cx) ** 2 + (yy - cy) ** 2 <= lattice.window_px**2).astype(float)
        cols += [m, m * xx, m * yy]
    return np.stack(cols, axis=-1).reshape(qy * qx, -1)


def _strain_from_sums(sums: np.ndarray, hk: np.ndarray, g0: np.ndarray) -> np.ndarray:
    """(..., 3M) disc sums -> (..., 8): exx, eyy, exy, rotation_deg, g (4)."""
    s = np.asarray(sums, float).reshape(sums.shape[:-1] + (-1, 3))
    w = s[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = s[..., 1:] / w[..., None]  # (..., M, 2)
    rel = pos[..., 1:, :] - pos[..., :1, :]  # relative to the direct beam
    wt = np.where(np.isfinite(rel).all(-1), w[..., 1:], 0.0)
    rel = np.nan_to_num(rel)
    h = hk[1:].astype(float)  # (M-1, 2)
    a = np.einsum("mi,...m,mj->...ij", h, wt, h)  # normal equations, (..., 2, 2)
    b = np.einsum("mi,...m,...mj->...ij", h, wt, rel)
    g = np.linalg.solve(a + 1e-12 * np.eye(2), b)  # rows g1, g2
    a_real = np.linalg.inv(np.swapaxes(g, -1, -2))  # rows: real-space basis
    a0 = np.linalg.inv(g0.T)
    f = np.swapaxes(a_real, -1, -2) @ np.linalg.inv(a0.T)
    eps = (f + np.swapaxes(f, -1, -2)) / 2 - np.eye(2)
    rot = np.degrees(np.arctan2(f[..., 1, 0] - f[..., 0, 1], f[..., 0, 0] + f[..., 1, 1]))
    out = np.concatenate([np.stack([eps[..., 0, 0], eps[..., 1, 1], eps[..., 0, 1], rot], -1),
                          g.reshape(g.shape[:-2] + (4,))], -1)
    return out


def bragg_strain(data: typing.Any, lattice: BraggLattice) -> BraggStrain:
    """Strain of every pattern of ``data`` (..., qy, qx) relative to ``lattice`` (numpy or dask;
    dask results stay lazy)."""
    _check_data(data)
    if not isinstance(lattice, BraggLattice):
        raise ValueError("lattice must be a BraggLattice from find_bragg_lattice")
    if len(lattice.hk) < 3:
        raise ValueError("the lattice needs the direct beam and at least two discs")
    sums = _weighted_sums(data, _disc_weights(data.shape[-2:], lattice), None)
    if _is_dask(sums):
        out = sums.map_blocks(_strain_from_sums, lattice.hk, lattice.g, dtype=float,
                              chunks=sums.chunks[:-1] + ((8,),))
    else:
        out = _strain_from_sums(sums, lattice.hk, lattice.g)
    g = out[..., 4:].reshape(out.shape[:-1] + (2, 2))
    return BraggStrain(exx=out[..., 0], eyy=out[..., 1], exy=out[..., 2], rotation_deg=out[..., 3], g=g,
                       lattice=lattice)
