"""Input checks shared by the lattice functions: every failure names the offending parameter."""

from __future__ import annotations

import numbers

import numpy as np


def check_xy(xy, name: str = "xy", min_atoms: int = 1) -> np.ndarray:
    """Return ``xy`` as a float (N, 2) array of finite positions in pixels, or raise ValueError."""
    try:
        arr = np.asarray(xy, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) positions in pixels") from exc
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) (x, y in pixels); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise ValueError(f"{name} contains {bad} row(s) with NaN or infinite coordinates")
    if len(arr) < min_atoms:
        raise ValueError(f"{name} has {len(arr)} atoms; at least {min_atoms} are needed")
    return arr


def check_k(k, n_atoms: int, name: str = "k", xy_name: str = "xy") -> int:
    """Return ``k`` as an int >= 1 that is smaller than the number of atoms, or raise ValueError."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{name}={k!r} must be a positive integer")
    if n_atoms <= k:
        raise ValueError(f"{name}={k} neighbours requested but {xy_name} has only {n_atoms} atoms "
                         f"(need at least {k + 1})")
    return int(k)


def check_positive(value, name: str, allow_none: bool = False) -> float | None:
    """Return ``value`` as a positive finite float (or None when allowed), or raise ValueError."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}={value!r} must be a positive number") from exc
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name}={value!r} must be a positive, finite number")
    return v


def check_shape(shape, name: str = "image_shape") -> tuple[int, int] | None:
    """Return ``shape`` as (rows, cols) of positive ints, None passes through; else ValueError."""
    if shape is None:
        return None
    try:
        h, w = (int(shape[0]), int(shape[1]))
        extra = len(shape) != 2
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"{name}={shape!r} must be (rows, columns)") from exc
    if extra or h < 1 or w < 1:
        raise ValueError(f"{name}={shape!r} must be two positive integers (rows, columns)")
    return h, w


def check_per_atom(values, n_atoms: int, name: str) -> np.ndarray:
    """Return ``values`` as an (N,) array with one entry per atom, or raise ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n_atoms:
        raise ValueError(f"{name} must have one entry per atom, shape ({n_atoms},); got {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def px_to_nm(values: np.ndarray, pixel_size_nm: float | None) -> np.ndarray | None:
    """``values`` (pixels) times the calibration, or None without one."""
    return None if pixel_size_nm is None else np.asarray(values) * pixel_size_nm


def as_dict(obj) -> dict:
    """Fields of a dataclass as a dict; nested objects with ``to_dict`` are converted too."""
    from dataclasses import fields

    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = v.to_dict() if hasattr(v, "to_dict") else v
    return out
