"""Per-pattern reductions of 4D-STEM data: centre of mass and virtual detectors.

Both are one weighted sum per pattern, done as a single matrix product of the flattened
patterns with a small weight matrix (``[1, x, y]`` for the centre of mass, one column per
detector for virtual images): one pass over the data through BLAS, in blocks of patterns so the
float32 copy stays small. Dask arrays are reduced chunk by chunk (``map_blocks``; the detector
axes are rechunked whole if they are split), so data larger than memory runs on any Dask
scheduler, a ``dask.distributed`` cluster included, and stays lazy until computed.
"""

from __future__ import annotations

import typing

import numpy as np

#: patterns per block of the in-memory reduction (a float32 copy of one block is made)
_BLOCK_PATTERNS = 2048


def _is_dask(a: typing.Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask"


def _check_data(data: typing.Any) -> None:
    if getattr(data, "ndim", 0) < 3:
        raise ValueError(f"4D-STEM data must have navigation axes and two detector axes (..., qy, qx); "
                         f"got shape {getattr(data, 'shape', None)}")
    if min(data.shape[-2:]) < 2:
        raise ValueError(f"the detector axes {data.shape[-2:]} must be at least 2 x 2 pixels")
    if 0 in data.shape:
        raise ValueError(f"empty 4D-STEM data: shape {data.shape}")


def detector_mask(shape: tuple[int, int], mask: typing.Any = None) -> np.ndarray:
    """(qy, qx) float mask from ``None`` (all ones), a boolean/float array, or a circle
    ``(x, y, r)`` in detector pixels (pyxem's convention)."""
    qy, qx = int(shape[0]), int(shape[1])
    if mask is None:
        return np.ones((qy, qx), np.float32)
    if isinstance(mask, tuple | list) and len(mask) == 3:
        x0, y0, r = (float(v) for v in mask)
        if not r > 0:
            raise ValueError(f"mask radius {r} must be > 0")
        yy, xx = np.mgrid[:qy, :qx]
        return ((xx - x0) ** 2 + (yy - y0) ** 2 <= r * r).astype(np.float32)
    m = np.asarray(mask, np.float32)
    if m.shape != (qy, qx):
        raise ValueError(f"mask shape {m.shape} differs from the detector {(qy, qx)}")
    if not np.all(np.isfinite(m)):
        raise ValueError("mask contains NaN or inf")
    return m


def _weighted_sums(data: typing.Any, weights: np.ndarray, threshold: float | None) -> typing.Any:
    """(..., k) sums of each pattern times each of the k weight images (weights (qy*qx, k))."""
    if _is_dask(data):
        import dask.array as da

        if len(data.chunks[-1]) > 1 or len(data.chunks[-2]) > 1:
            data = data.rechunk({data.ndim - 2: -1, data.ndim - 1: -1})
        k = weights.shape[1]
        return da.map_blocks(_weighted_sums_np, data, weights, threshold, dtype=np.float64,
                             drop_axis=[data.ndim - 1], chunks=data.chunks[:-2] + ((k,),))
    return _weighted_sums_np(np.asarray(data), weights, threshold)


def _weighted_sums_np(data: np.ndarray, weights: np.ndarray, threshold: float | None) -> np.ndarray:
    nav = data.shape[:-2]
    flat = data.reshape(-1, data.shape[-2] * data.shape[-1])
    out = np.empty((flat.shape[0], weights.shape[1]), np.float64)
    w32 = weights.astype(np.float32)
    for i in range(0, flat.shape[0], _BLOCK_PATTERNS):
        block = np.asarray(flat[i:i + _BLOCK_PATTERNS], np.float32)
        if not np.all(np.isfinite(block)):
            raise ValueError("4D-STEM data contain NaN or inf")
        if threshold is not None:  # pixels below a fraction of their pattern's maximum are ignored
            block = np.where(block >= threshold * block.max(axis=1, keepdims=True), block, 0.0)
        out[i:i + block.shape[0]] = block @ w32
    return out.reshape(nav + (weights.shape[1],))


def center_of_mass(data: typing.Any, *, center_px: tuple[float, float] | None = None,
                   mrad_per_px: float | None = None, mask: typing.Any = None,
                   threshold: float | None = None) -> typing.Any:
    """Centre of mass of every diffraction pattern.

    Args:
        data: (..., qy, qx) patterns (numpy or dask; any real dtype).
        center_px: detector pixel (qy, qx) of zero scattering angle (default the middle,
            ``(qy // 2, qx // 2)``).
        mrad_per_px: detector calibration; given, the result is in mrad, else in pixels.
        mask: ``None``, a (qy, qx) array, or a circle ``(x, y, r)`` in pixels: only pixels
            inside count (e.g. the bright-field disc).
        threshold: ignore pixels below this fraction (0..1) of their pattern's maximum.

    Returns:
        (..., 2) shift (x, y) of each pattern's centre of mass from ``center_px`` (x along qx),
        in mrad or pixels; the same array type as ``data`` (dask stays lazy). Patterns with no
        counts give NaN.
    """
    _check_data(data)
    qy, qx = data.shape[-2:]
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1)")
    if mrad_per_px is not None and not (np.isfinite(mrad_per_px) and mrad_per_px > 0):
        raise ValueError(f"mrad_per_px={mrad_per_px} must be > 0")
    cy, cx = (qy // 2, qx // 2) if center_px is None else (float(center_px[0]), float(center_px[1]))
    m = detector_mask((qy, qx), mask)
    yy, xx = np.mgrid[:qy, :qx].astype(np.float64)
    w = np.stack([m, m * (xx - cx), m * (yy - cy)], axis=-1).reshape(qy * qx, 3)
    sums = _weighted_sums(data, w, threshold)
    scale = 1.0 if mrad_per_px is None else float(mrad_per_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        com = sums[..., 1:] / sums[..., :1] * scale
    return com


def virtual_image(data: typing.Any, *, inner: float = 0.0, outer: float | None = None,
                  center_px: tuple[float, float] | None = None, mrad_per_px: float | None = None) -> typing.Any:
    """Virtual (annular) detector image: each pattern summed over ``inner <= angle < outer``.

    Args:
        data: (..., qy, qx) patterns (numpy or dask).
        inner, outer: annulus radii in mrad when ``mrad_per_px`` is given, else in pixels;
            ``inner=0`` is a bright-field disc, ``outer=None`` reaches the detector's corners.
        center_px: detector pixel (qy, qx) of zero angle (default the middle).
        mrad_per_px: detector calibration.

    Returns:
        (...) image of summed counts (dask stays lazy).
    """
    _check_data(data)
    qy, qx = data.shape[-2:]
    scale = 1.0 if mrad_per_px is None else float(mrad_per_px)
    cy, cx = (qy // 2, qx // 2) if center_px is None else (float(center_px[0]), float(center_px[1]))
    yy, xx = np.mgrid[:qy, :qx]
    r = np.hypot(xx - cx, yy - cy) * scale
    hi = np.inf if outer is None else float(outer)
    if not 0 <= inner < hi:
        raise ValueError(f"need 0 <= inner ({inner}) < outer ({outer})")
    w = ((r >= inner) & (r < hi)).astype(np.float64).reshape(qy * qx, 1)
    if not w.any():
        raise ValueError(f"no detector pixel lies between {inner} and {outer}")
    return _weighted_sums(data, w, None)[..., 0]
