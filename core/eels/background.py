"""Power-law background ``A E^-r`` of core-loss EELS, fitted for every pixel at once.

The background under an edge is fitted over a pre-edge window and extrapolated under the edge
(Egerton, *Electron Energy-Loss Spectroscopy in the Electron Microscope*, 3rd ed., sec. 4.4).
Three estimators, all vectorised over pixels (a few passes over the window, no per-pixel loop):

* ``"lsq"``: closed-form weighted least squares of ``log y = log A - r log E`` with weights
  ``y`` (the inverse variance of ``log y`` for Poisson counts). Channels with ``y <= 0`` are
  masked. Fast; biased low by about ``1/(2 y)`` in ``log A`` at a few counts per channel.
* ``"mle"`` (default): the ``"lsq"`` result refined by Newton steps on the Poisson likelihood
  (a log-link GLM, 2 x 2 per pixel). Unbiased down to ~1 count per channel; zero counts are
  used as they are, and the estimate does not depend on the units of the data.
* ``"two_area"``: Egerton's two-area method (the estimator of HyperSpy's ``fast=True``), solved
  exactly for channel sums: fastest, slightly noisier.

Units: ``A`` is the background per channel at E = 1 eV, in the units of the data (counts per
channel when the data are counts), so the background in channel ``i`` is ``A * E_i**-r``
(E in eV, channel centres). Pixels whose fit fails (fewer than two positive channels, a
non-positive sum, no convergence) get NaN in both maps, never an exception.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from . import _blocks, _validate

METHODS = ("mle", "lsq", "two_area")
#: at most this many Newton steps of the Poisson refinement (usually 3-4 from the lsq start)
_MLE_STEPS = 25
#: relative change of the exponent r after the last step above which a fit counts as failed
_MLE_TOL = 1e-4
#: exponents r for which channel sums of E^-r are tabulated (linear interpolation error < 1e-7)
_R_GRID = np.linspace(-10.0, 30.0, 4001)


@dataclass(frozen=True, eq=False)
class PowerLawFit:
    """Per-pixel power-law background ``A * E**-r``.

    Attributes:
        A: (...) prefactor: background per channel at E = 1 eV, units of the data (NaN: failed).
        r: (...) exponent (dimensionless; NaN where the fit failed).
        window_eV: (start, stop) fit window (eV); channels with centres in [start, stop).
        method: estimator used (``"mle"``, ``"lsq"`` or ``"two_area"``).

    ``A`` and ``r`` are dask arrays (lazy) when the data were.
    """

    A: typing.Any
    r: typing.Any
    window_eV: tuple[float, float]
    method: str

    @property
    def failed(self) -> typing.Any:
        """(...) bool: pixels whose fit failed (NaN maps)."""
        return ~(np.isfinite(self.A) & np.isfinite(self.r))

    def evaluate(self, energy_eV: typing.Any) -> typing.Any:
        """(..., n) background per channel at the channel centres ``energy_eV`` (eV)."""
        return power_law(self.A, self.r, energy_eV)


class PowerSum:
    """``log sum_i E_i**-r`` over fixed channels for many exponents r (tabulated, exact outside
    the table)."""

    def __init__(self, energy: np.ndarray):
        self.log_e = np.log(np.asarray(energy, dtype=np.float64))
        self.table = logsumexp(-_R_GRID[:, None] * self.log_e[None, :], axis=1)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        out = np.interp(r, _R_GRID, self.table)
        far = np.isfinite(r) & ((r < _R_GRID[0]) | (r > _R_GRID[-1]))
        if far.any():
            out[far] = logsumexp(-r[far, None] * self.log_e[None, :], axis=1)
        out[~np.isfinite(r)] = np.nan
        return out


def _lsq(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted LSQ of log y = c0 + c1 x (weights y, y <= 0 masked): (c0, c1) per row."""
    pos = y > 0
    w = np.where(pos, y, 0.0)
    ly = np.log(np.where(pos, y, 1.0))
    wly = w * ly
    s, sx, sxx = w.sum(axis=1), w @ x, w @ (x * x)
    sy, sxy = wly.sum(axis=1), wly @ x
    with np.errstate(divide="ignore", invalid="ignore"):
        den = s * sxx - sx * sx
        c1 = (s * sxy - sx * sy) / den
        c0 = (sy - c1 * sx) / s
    bad = (pos.sum(axis=1) < 2) | ~(den > 1e-12 * s * s)
    c0[bad] = np.nan
    c1[bad] = np.nan
    return c0, c1


def _mle(y: np.ndarray, x: np.ndarray, c0: np.ndarray, c1: np.ndarray,
         ) -> tuple[np.ndarray, np.ndarray]:
    """Newton steps on the Poisson log-likelihood of mu = exp(c0 + c1 x), from (c0, c1)."""
    total = y.sum(axis=1)
    start = np.isfinite(c0) & np.isfinite(c1)
    # pixels the log fit could not start (e.g. mostly zeros) start from a flat spectrum
    c0 = np.where(start, c0, np.log(np.maximum(total, 1e-300) / y.shape[1]))
    c1 = np.where(start, c1, 0.0)
    x2 = x * x
    d1 = np.full_like(c1, np.inf)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(_MLE_STEPS):
            mu = np.exp(c0[:, None] + c1[:, None] * x[None, :])
            res = y - mu
            g0, g1 = res.sum(axis=1), res @ x
            h00, h01, h11 = mu.sum(axis=1), mu @ x, mu @ x2
            det = h00 * h11 - h01 * h01
            d0 = (h11 * g0 - h01 * g1) / det
            d1 = (h00 * g1 - h01 * g0) / det
            # damp wild first steps (a bad start); Newton is exact near the optimum
            d0 = np.clip(d0, -3.0, 3.0)
            d1 = np.clip(d1, -1.0, 1.0)
            c0 = c0 + d0
            c1 = c1 + d1
            if not np.any(np.abs(d1) > _MLE_TOL * np.maximum(1.0, np.abs(c1))):
                break
    ok = (total > 0) & np.isfinite(c0) & np.isfinite(c1) & (np.abs(d1) <= _MLE_TOL * np.maximum(
        1.0, np.abs(c1)))
    return np.where(ok, c0, np.nan), np.where(ok, c1, np.nan)


def _kernel(method: str, energy: np.ndarray) -> typing.Callable[[np.ndarray], np.ndarray]:
    """(B, m) window counts -> (B, 2) [A, r] for one estimator and window energies."""
    log_e = np.log(energy)
    xm = float(log_e.mean())
    x = log_e - xm

    if method == "two_area":
        half = energy.size // 2
        lo, hi, full = PowerSum(energy[:half]), PowerSum(energy[half:2 * half]), PowerSum(energy)
        # log(I1 / I2) as a function of r is increasing: invert the table by interpolation
        g = lo.table - hi.table

        def kernel(y: np.ndarray) -> np.ndarray:
            i1, i2 = y[:, :half].sum(axis=1), y[:, half:2 * half].sum(axis=1)
            out = np.full((y.shape[0], 2), np.nan)
            ok = (i1 > 0) & (i2 > 0)
            q = np.log(i1[ok] / i2[ok])
            inside = (q >= g[0]) & (q <= g[-1])
            r = np.where(inside, np.interp(q, g, _R_GRID), np.nan)
            out[ok, 1] = r
            out[ok, 0] = np.exp(np.log(y[ok].sum(axis=1)) - full(r))
            return out

        return kernel

    def kernel(y: np.ndarray) -> np.ndarray:
        c0, c1 = _lsq(y, x)
        if method == "mle":
            c0, c1 = _mle(y, x, c0, c1)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.stack([np.exp(c0 - c1 * xm), -c1], axis=1)

    return kernel


def fit_power_law(data: typing.Any, energy_eV: typing.Any, window_eV: tuple[float, float], *,
                  method: str = "mle") -> PowerLawFit:
    """Fit ``A * E**-r`` to every spectrum over a pre-edge window.

    Args:
        data: (..., n) spectrum image (counts or any linear intensity unit; numpy or dask).
        energy_eV: (n,) evenly spaced, increasing channel centres (eV).
        window_eV: (start, stop) fit window (eV), at positive energy loss; channels with
            centres in [start, stop) are used (>= 2; >= 4 for ``"two_area"``).
        method: ``"mle"`` (Poisson maximum likelihood, default), ``"lsq"`` (weighted log-log
            least squares) or ``"two_area"``; see the module docstring.

    Returns:
        :class:`PowerLawFit` with (...) maps ``A`` (units of data per channel at 1 eV) and
        ``r``; lazy dask arrays for dask input. Failed pixels are NaN.

    Raises:
        ValueError: bad shapes, an axis that is not increasing or evenly spaced, a window
            outside the axis or at E <= 0, too few channels, NaN/inf in the window (for dask on
            compute), an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    e, disp = _validate.energy_axis(energy_eV)
    data = _validate.spectra(data, e.size)
    sl = _validate.window(e, disp, window_eV, "window_eV",
                          min_channels=4 if method == "two_area" else 2)
    ew = e[sl]
    if ew[0] <= 0:
        raise ValueError(f"window_eV={tuple(window_eV)} must lie at positive energy loss for a "
                         "power law")
    out = _blocks.run(_kernel(method, ew), [data[..., sl]], tail=2)
    a, r = _blocks.split(out)
    return PowerLawFit(A=a, r=r, window_eV=_validate.pair(window_eV, "window_eV"), method=method)


def power_law(A: typing.Any, r: typing.Any, energy_eV: typing.Any) -> typing.Any:
    """(..., n) power law ``A * E**-r`` at the energies ``energy_eV`` (eV, > 0).

    ``A`` and ``r`` are (...) maps (numpy or dask; dask stays lazy); the result is in the units
    of ``A`` (per channel when ``A`` came from :func:`fit_power_law`).
    """
    e = np.asarray(energy_eV, dtype=np.float64)
    if e.ndim != 1 or not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise ValueError("energy_eV must be a 1-D array of finite, positive energies (eV)")
    log_e = np.log(e)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.exp(np.log(A)[..., None] - r[..., None] * log_e)


def subtract_background(data: typing.Any, energy_eV: typing.Any, fit: PowerLawFit,
                        window_eV: tuple[float, float] | None = None,
                        ) -> tuple[typing.Any, np.ndarray]:
    """Background-subtracted spectra over a window.

    Args:
        data: (..., n) spectrum image (numpy or dask; dask stays lazy).
        energy_eV: (n,) channel centres (eV).
        fit: power law from :func:`fit_power_law` on the same data.
        window_eV: (start, stop) in eV; ``None``: every channel at positive energy loss.

    Returns:
        ``(net, energy)``: (..., m) float64 data minus background (units of data per channel)
        and the (m,) channel centres (eV) of the window.
    """
    e, disp = _validate.energy_axis(energy_eV)
    data = _validate.spectra(data, e.size)
    if window_eV is None:
        first = int(np.searchsorted(e, 0.0, side="right"))
        if first >= e.size:
            raise ValueError("energy_eV has no channel at positive energy loss")
        sl = slice(first, e.size)
    else:
        sl = _validate.window(e, disp, window_eV, "window_eV", min_channels=1)
        if e[sl][0] <= 0:
            raise ValueError(f"window_eV={tuple(window_eV)} must lie at positive energy loss")
    if tuple(np.shape(fit.A)) != tuple(data.shape[:-1]):
        raise ValueError(f"the fit maps have shape {np.shape(fit.A)} but the data's navigation "
                         f"shape is {tuple(data.shape[:-1])}")
    part = data[..., sl]
    if not _validate.is_dask(part):
        _validate.finite(part)
        part = part.astype(np.float64)
    return part - power_law(fit.A, fit.r, e[sl]), e[sl]
