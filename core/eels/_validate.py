"""Input checks shared by the EELS analysis modules (energy axis, data, energy windows)."""

from __future__ import annotations

import typing

import numpy as np

#: relative tolerance on the channel spacing for an "evenly spaced" axis
_SPACING_RTOL = 1e-3


def is_dask(a: typing.Any) -> bool:
    """True for a dask array (checked by module name, so dask is never imported here)."""
    return type(a).__module__.split(".")[0] == "dask"


def energy_axis(energy_eV: typing.Any, name: str = "energy_eV") -> tuple[np.ndarray, float]:
    """(n,) float64 channel centres (eV) and the dispersion (eV/channel) after checks."""
    try:
        e = np.asarray(energy_eV, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of channel-centre energies (eV)") from None
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"{name} must be a 1-D axis of at least 2 channel centres (eV); "
                         f"got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{name} contains NaN or inf")
    step = np.diff(e)
    disp = float((e[-1] - e[0]) / (e.size - 1))
    if not np.all(step > 0):
        raise ValueError(f"{name} must be strictly increasing (channel centres in eV)")
    if not np.allclose(step, disp, rtol=_SPACING_RTOL, atol=0.0):
        raise ValueError(f"{name} must be evenly spaced: channel steps range "
                         f"{step.min():.6g}..{step.max():.6g} eV")
    return e, disp


def spectra(data: typing.Any, n_channels: int, name: str = "data") -> typing.Any:
    """Check a (..., n_channels) spectrum image; numpy input is returned as an ndarray, dask
    input unchanged (its values are checked block by block when computed)."""
    if not is_dask(data):
        try:
            data = np.asarray(data)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a numeric array (..., n_channels)") from None
    dtype = np.dtype(getattr(data, "dtype", np.float64))
    if dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {dtype}")
    shape = tuple(data.shape)
    if len(shape) < 1:
        raise ValueError(f"{name} must have an energy axis (..., n_channels); got a scalar")
    if shape[-1] != n_channels:
        raise ValueError(f"{name} has {shape[-1]} channels on its last axis but the energy axis "
                         f"has {n_channels}; data must be (..., n_channels)")
    if 0 in shape:
        raise ValueError(f"{name} is empty: shape {shape}")
    return data


def finite(block: np.ndarray, name: str = "data") -> None:
    """Raise ValueError if a block of values has NaN or inf."""
    if not np.all(np.isfinite(block)):
        raise ValueError(f"{name} contains NaN or inf in the channels used")


def pair(value: typing.Any, name: str) -> tuple[float, float]:
    """(lo, hi) floats with lo < hi, both finite."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (start, stop) pair in eV; got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name}={value!r} must be finite")
    if not lo < hi:
        raise ValueError(f"{name}={value!r}: start must be below stop")
    return lo, hi


def window(energy: np.ndarray, disp: float, value: typing.Any, name: str,
           min_channels: int = 2) -> slice:
    """Channels whose centres lie in ``[lo, hi)`` of an energy window (eV), as a slice.

    The window must lie inside the axis, i.e. within half a channel of its first and last
    centre, and hold at least ``min_channels`` channels.
    """
    lo, hi = pair(value, name)
    a, b = energy[0] - disp / 2, energy[-1] + disp / 2
    tol = 1e-6 * disp
    if lo < a - tol or hi > b + tol:
        raise ValueError(f"{name}=({lo:g}, {hi:g}) eV lies outside the energy axis "
                         f"({a:g}, {b:g}) eV")
    i0 = int(np.searchsorted(energy, lo - tol, side="left"))
    i1 = int(np.searchsorted(energy, hi - tol, side="left"))
    if i1 - i0 < min_channels:
        raise ValueError(f"{name}=({lo:g}, {hi:g}) eV holds {i1 - i0} channel(s); at least "
                         f"{min_channels} are needed")
    return slice(i0, i1)


def clipped(energy: np.ndarray, disp: float, lo: float, hi: float) -> tuple[float, float]:
    """A default window (eV) clipped to the axis (explicit windows are not clipped)."""
    return max(lo, float(energy[0] - disp / 2)), min(hi, float(energy[-1] + disp / 2))
