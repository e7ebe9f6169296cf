"""Edge integral maps: background-subtracted counts over ``[onset, onset + width)`` per pixel.

The power law is fitted over a pre-edge window (default: the 40 eV ending 5 eV below the onset,
clipped to the axis) and its channel sum over the integration window is subtracted from the
summed counts, so a pixel costs two passes over a few hundred channels. The integral is in the
units of the data (counts), over the channels whose centres lie in ``[onset, onset + width)``,
the convention of :attr:`atomsmith.simulate.EELSTruth.edge_integral`.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable

import numpy as np

from . import _blocks, _validate
from .background import METHODS, PowerSum, _kernel

#: default pre-edge window: ``_PRE_WIDTH_EV`` wide, ending ``_PRE_GAP_EV`` below the onset
_PRE_WIDTH_EV = 40.0
_PRE_GAP_EV = 5.0


def default_pre_edge(energy_eV: typing.Any, onset_eV: float, width_eV: float = _PRE_WIDTH_EV,
                     gap_eV: float = _PRE_GAP_EV) -> tuple[float, float]:
    """Pre-edge fit window (eV): ``(onset - gap - width, onset - gap)`` clipped to the axis.

    Raises:
        ValueError: no room for the window between the axis start and ``onset - gap``.
    """
    e, disp = _validate.energy_axis(energy_eV)
    if not (np.isfinite(width_eV) and np.isfinite(gap_eV) and width_eV > 0 and gap_eV >= 0):
        raise ValueError(f"pre-edge width_eV={width_eV} must be > 0 and gap_eV={gap_eV} >= 0")
    lo, hi = _validate.clipped(e, disp, onset_eV - gap_eV - width_eV, onset_eV - gap_eV)
    if not hi - lo >= 2 * disp:
        raise ValueError(f"no room for a pre-edge window below {onset_eV:g} - {gap_eV:g} eV on the "
                         f"axis starting at {e[0]:g} eV; give the pre-edge window explicitly")
    return lo, hi


def _edge_kernel(method: str, e_pre: np.ndarray, e_win: np.ndarray):
    fit = _kernel(method, e_pre)
    psum = PowerSum(e_win)

    def kernel(pre: np.ndarray, win: np.ndarray) -> np.ndarray:
        ar = fit(pre)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            bg = np.exp(np.log(ar[:, 0]) + psum(ar[:, 1]))
        return win.sum(axis=1) - bg

    return kernel


def edge_map(data: typing.Any, energy_eV: typing.Any, onset_eV: float, width_eV: float = 50.0,
             *, pre_edge_eV: tuple[float, float] | None = None, method: str = "mle",
             ) -> typing.Any:
    """Background-subtracted edge integral of every pixel.

    Args:
        data: (..., n) spectrum image (numpy or dask).
        energy_eV: (n,) evenly spaced, increasing channel centres (eV).
        onset_eV: edge onset (eV); the integral starts at the first channel centre >= onset.
        width_eV: integration width (eV, > 0): channels with centres in [onset, onset + width).
        pre_edge_eV: (start, stop) power-law fit window (eV); default the 40 eV ending 5 eV
            below the onset, clipped to the axis.
        method: power-law estimator, see :func:`~atomsmith.eels.fit_power_law`.

    Returns:
        (...) float64 map of edge counts (units of the data summed over channels); a lazy dask
        array for dask input. NaN where the background fit failed.

    Raises:
        ValueError: bad shapes/axis, a window outside the axis or with too few channels, a
            pre-edge window that does not end below the onset, NaN/inf in the used channels.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    e, disp = _validate.energy_axis(energy_eV)
    data = _validate.spectra(data, e.size)
    onset, width = float(onset_eV), float(width_eV)
    if not (np.isfinite(onset) and np.isfinite(width) and width > 0):
        raise ValueError(f"onset_eV={onset_eV} and width_eV={width_eV} must be finite, width > 0")
    win = _validate.window(e, disp, (onset, onset + width), "edge window (onset, onset + width)",
                           min_channels=1)
    if pre_edge_eV is None:
        pre_edge_eV = default_pre_edge(e, onset)
    lo, hi = _validate.pair(pre_edge_eV, "pre_edge_eV")
    if hi > onset + 1e-9:
        raise ValueError(f"pre_edge_eV=({lo:g}, {hi:g}) must end at or below the onset {onset:g} eV")
    pre = _validate.window(e, disp, (lo, hi), "pre_edge_eV",
                           min_channels=4 if method == "two_area" else 2)
    if e[pre][0] <= 0:
        raise ValueError(f"pre_edge_eV=({lo:g}, {hi:g}) must lie at positive energy loss")
    kernel = _edge_kernel(method, e[pre], e[win])
    return _blocks.run(kernel, [data[..., pre], data[..., win]])


def edge_maps(data: typing.Any, energy_eV: typing.Any, elements: Iterable[str],
              width_eV: float = 50.0, *, pre_edge_width_eV: float = _PRE_WIDTH_EV,
              gap_eV: float = _PRE_GAP_EV, method: str = "mle") -> dict[str, typing.Any]:
    """Edge integral maps for elements, onsets (K or L3) from :data:`atomsmith.simulate.eels.EDGES`.

    Args:
        data: (..., n) spectrum image (numpy or dask).
        energy_eV: (n,) channel centres (eV).
        elements: element symbols, e.g. ``("C", "Ti", "O")``.
        width_eV: integration width above each onset (eV).
        pre_edge_width_eV, gap_eV: pre-edge window ``(onset - gap - width, onset - gap)`` (eV).
        method: power-law estimator.

    Returns:
        element -> (...) edge counts map (lazy for dask input), see :func:`edge_map`.
    """
    from atomsmith.simulate.eels import EDGES

    out = {}
    for el in elements:
        if el not in EDGES:
            raise ValueError(f"unknown element {el!r}; known edges: {', '.join(EDGES)}")
        onset = EDGES[el].onset_eV
        pre = default_pre_edge(energy_eV, onset, pre_edge_width_eV, gap_eV)
        out[el] = edge_map(data, energy_eV, onset, width_eV, pre_edge_eV=pre, method=method)
    return out
