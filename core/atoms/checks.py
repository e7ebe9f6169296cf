"""Input checks shared by the atom finders: one clear error per kind of bad image."""

from __future__ import annotations

import numpy as np


def as_image(image, name: str = "image", min_size_px: int = 8) -> np.ndarray:
    """Validate a 2D image and return it as float32.

    Raises ``ValueError`` naming the problem for: not 2D, smaller than ``min_size_px`` on a
    side, NaN or inf pixels, or a constant image. Integer and boolean dtypes are converted.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2D (rows, columns); got {arr.ndim} dimensions with shape {arr.shape}")
    if min(arr.shape) < min_size_px:
        raise ValueError(f"{name} is {arr.shape[0]}x{arr.shape[1]} px; at least {min_size_px} px per side needed")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} is complex; pass the magnitude or the real part")
    out = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or inf pixels; mask or inpaint them first")
    if float(out.max()) == float(out.min()):
        raise ValueError(f"{name} is constant (every pixel = {float(out.flat[0]):g}); nothing to find")
    return out
