"""Calibrations between HyperSpy axes and atomsmith's units (nm, mrad, keV), both ways."""

from __future__ import annotations

import typing

import numpy as np

#: length units HyperSpy files use, in nm
_LENGTH_NM = {"nm": 1.0, "å": 0.1, "a": 0.1, "angstrom": 0.1, "ang": 0.1, "pm": 1e-3, "µm": 1e3, "um": 1e3,
              "μm": 1e3, "m": 1e9, "mm": 1e6}
_UNDEFINED = ("", "<undefined>", "px", "pixel", "pixels", "none")


def length_scale_nm(axis: typing.Any) -> float | None:
    """nm per pixel of a HyperSpy axis, or None when the axis is not calibrated in a length unit."""
    units = str(getattr(axis, "units", "") or "").strip()
    factor = _LENGTH_NM.get(units.lower()) if units.lower() not in _UNDEFINED else None
    if factor is None:
        return None
    scale = float(axis.scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"axis '{axis.name}' has scale {axis.scale}; it must be > 0")
    return abs(scale) * factor


def image_pixel_size_nm(signal: typing.Any, *, required: bool = False, what: str = "this") -> float | None:
    """The (square) pixel size in nm of a 2D signal's signal axes (None if uncalibrated)."""
    ax = signal.axes_manager.signal_axes
    sizes = [length_scale_nm(a) for a in ax]
    if any(s is None for s in sizes):
        if required:
            raise ValueError(f"{what} needs calibrated signal axes (a length unit such as nm or Å); "
                             f"got units {[str(a.units) for a in ax]} - set them with "
                             f"s.axes_manager.signal_axes[i].scale / .units")
        return None
    if not np.isclose(sizes[0], sizes[1], rtol=1e-3):
        raise ValueError(f"the pixels are not square: {sizes[0]:g} nm x {sizes[1]:g} nm")
    return float(sizes[0])


def set_image_axes(target: typing.Any, source: typing.Any, scale_px: float = 1.0, offset_px: float = 0.0) -> None:
    """Copy ``source``'s signal-axis calibration onto ``target``'s signal axes, for a map whose
    pixel i lies at source pixel ``offset_px + i * scale_px``."""
    for t, s in zip(target.axes_manager.signal_axes, source.axes_manager.signal_axes, strict=True):
        t.name = s.name
        t.units = s.units
        t.scale = s.scale * scale_px
        t.offset = s.offset + s.scale * offset_px


def copy_axes(targets: typing.Iterable, sources: typing.Iterable) -> None:
    """Copy name, units, scale and offset from each source axis to the matching target axis."""
    for t, s in zip(targets, sources, strict=True):
        t.name, t.units, t.scale, t.offset = s.name, s.units, s.scale, s.offset


def scan_map(source: typing.Any, data: typing.Any, title: str, quantity: str) -> typing.Any:
    """A map on ``source``'s navigation (scan) axes: ``Signal2D`` for a 2D scan, else a
    ``BaseSignal``; lazy for dask data; ``metadata.Signal.quantity`` set."""
    import hyperspy.api as hs

    nav = source.axes_manager.navigation_axes
    out = (hs.signals.Signal2D if len(nav) == 2 else hs.signals.BaseSignal)(data)
    if hasattr(data, "compute"):
        out = out.as_lazy()
    copy_axes(out.axes_manager.signal_axes if len(nav) == 2 else out.axes_manager._axes, nav)
    out.metadata.General.title = title
    out.metadata.set_item("Signal.quantity", quantity)
    return out


def px_to_axes(signal: typing.Any, xy_px: np.ndarray) -> np.ndarray:
    """(N, 2) pixel positions (x = column, y = row) -> the signal axes' calibrated values."""
    ax_x, ax_y = signal.axes_manager.signal_axes
    xy = np.asarray(xy_px, float).reshape(-1, 2)
    return np.column_stack([ax_x.offset + ax_x.scale * xy[:, 0], ax_y.offset + ax_y.scale * xy[:, 1]])


def check_finite(data: np.ndarray, what: str) -> np.ndarray:
    """Raise a clear error for NaN / inf in a frame."""
    a = np.asarray(data)
    if a.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf values; fill or crop them first")
    return a


def record(signal: typing.Any, method: str, params: dict, **results: typing.Any) -> None:
    """Record in ``metadata.atomsmith.<method>`` what was run, with which parameters."""
    import atomsmith

    entry = {"atomsmith_version": atomsmith.__version__,
             "parameters": {k: _plain(v) for k, v in params.items()}}
    entry.update({k: _plain(v) for k, v in results.items()})
    signal.metadata.set_item(f"atomsmith.{method}", entry)


def _plain(v: typing.Any) -> typing.Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v
    return str(v)
