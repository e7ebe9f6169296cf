"""Differential phase contrast (DPC) from segmented detectors.

A segmented annular detector (``n_segments`` equal sectors between ``inner`` and ``outer``,
the first starting at ``rotation_deg`` from +x towards +y) records one intensity per segment and
probe position: :func:`segment_images` makes those virtual segments from 4D-STEM data (one
matrix product per block, numpy or dask), or they come from a real segmented detector.

:func:`dpc_shift` turns segment intensities into a beam shift. The first moment of the segments,
``D = sum_k I_k (cos t_k, sin t_k) / sum_k I_k`` (t_k: centre angle of segment k), is linear in
a small shift ``s`` of a uniformly filled bright-field disc of semi-angle ``alpha`` that the
detector covers (``inner = 0``, ``outer >= alpha + |s|``): for n equal sectors
``D = n sin(pi / n) s / (pi alpha)`` (each segment gains ``2 alpha s cos(t_k) sin(pi / n)`` of
the disc's edge), ``2 sqrt(2) s / (pi alpha)`` for four quadrants. :func:`dpc_shift` inverts it, so its result is in the same angle unit as ``alpha``. It
is the classical quadrant-DPC estimate: exact for a uniform disc and small shifts, an
approximation where the disc has structure (measure it against the centre of mass with
:func:`atomsmith.fourd.center_of_mass` on 4D data).
"""

from __future__ import annotations

import typing

import numpy as np

from .com import _check_data, _weighted_sums, annulus, detector_offsets


def segment_weights(shape: tuple[int, int], n_segments: int = 4, *, inner: float = 0.0, outer: float | None = None,
                    rotation_deg: float = 0.0, center_px: tuple[float, float] | None = None,
                    mrad_per_px: float | None = None) -> np.ndarray:
    """(qy, qx, n) masks of ``n_segments`` equal sectors of the annulus ``inner <= r < outer``
    (mrad with ``mrad_per_px``, else pixels), the first from ``rotation_deg``."""
    if int(n_segments) < 2:
        raise ValueError(f"n_segments={n_segments} must be >= 2")
    n = int(n_segments)
    dx, dy = detector_offsets(shape, center_px, mrad_per_px)
    ring = annulus(np.hypot(dx, dy), inner, outer)
    t = np.mod(np.arctan2(dy, dx) - np.deg2rad(rotation_deg), 2 * np.pi)
    k = np.minimum((t / (2 * np.pi / n)).astype(int), n - 1)
    w = (ring[..., None] & (k[..., None] == np.arange(n))).astype(float)
    if not np.all(w.reshape(-1, n_segments).sum(0) > 0):
        raise ValueError("a segment covers no detector pixel: check inner / outer / the calibration")
    return w


def segment_images(data: typing.Any, n_segments: int = 4, *, inner: float = 0.0, outer: float | None = None,
                   rotation_deg: float = 0.0, center_px: tuple[float, float] | None = None,
                   mrad_per_px: float | None = None) -> typing.Any:
    """Virtual segmented-detector signals of 4D-STEM data: (..., n_segments) summed counts
    (numpy, or a lazy dask array for dask input)."""
    _check_data(data)
    w = segment_weights(data.shape[-2:], n_segments, inner=inner, outer=outer, rotation_deg=rotation_deg,
                        center_px=center_px, mrad_per_px=mrad_per_px)
    return _weighted_sums(data, w.reshape(-1, w.shape[-1]), None)


def dpc_shift(segments: typing.Any, alpha: float, *, rotation_deg: float = 0.0) -> typing.Any:
    """Beam shift (x, y) from segment intensities (..., n) of equal sectors, in the unit of the
    bright-field semi-angle ``alpha`` (e.g. mrad); see the module notes for the model."""
    seg = segments
    n = int(seg.shape[-1])
    if n < 2:
        raise ValueError(f"need at least 2 segments; got {n}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha} must be > 0 (the bright-field semi-angle)")
    t = np.deg2rad(rotation_deg) + (np.arange(n) + 0.5) * 2 * np.pi / n
    basis = np.stack([np.cos(t), np.sin(t)], axis=-1)  # (n, 2)
    total = seg.sum(axis=-1)[..., None]
    moment = (seg @ basis) / total
    gain = n * np.sin(np.pi / n) / (np.pi * float(alpha))
    return moment / gain
