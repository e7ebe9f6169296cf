"""Peak fitting maps: one Gaussian or Lorentzian peak on a linear background per pixel.

All pixels are fitted at once by a batched Levenberg-Marquardt least-squares fit (numpy, in
blocks of pixels). The peak is integrated over each channel (error function or arctangent
differences), so narrow peaks keep their true width and area. Starting values come from the
spectrum itself: a straight line through the mean of the first and last three channels, the
maximum of the 3-channel smoothed remainder (centre, height) and its sum (area).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from . import _blocks, _validate
from ._lm import levenberg_marquardt

SHAPES = ("gaussian", "lorentzian")
_SQRT_2PI = np.sqrt(2.0 * np.pi)
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True, eq=False)
class PeakFit:
    """Per-pixel peak fit.

    Attributes:
        centre_eV: (...) peak centre (eV).
        fwhm_eV: (...) full width at half maximum (eV).
        area: (...) peak area in units of the data summed over channels (e.g. counts).
        offset: (...) linear background per channel at the window centre (units of data).
        slope: (...) background slope (units of data per channel per eV).
        converged: (...) bool, False where the fit stopped at ``max_iter``.
        shape: ``"gaussian"`` or ``"lorentzian"``.
        window_eV: (start, stop) of the fit window (eV).

    Pixels whose fit failed (non-finite or the peak left the window) are NaN in the maps.
    Arrays are dask arrays (lazy) when the data were.
    """

    centre_eV: typing.Any
    fwhm_eV: typing.Any
    area: typing.Any
    offset: typing.Any
    slope: typing.Any
    converged: typing.Any
    shape: str
    window_eV: tuple[float, float]


def _profile(shape: str, x: np.ndarray, disp: float, c: np.ndarray, w: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-area peak integrated over each channel and its derivatives by centre and width.

    ``w`` is the Gaussian sigma or the Lorentzian half width (eV); arrays (B, n).
    """
    # values at the n + 1 channel boundaries; each channel is the difference of two
    edges = np.append(x - disp / 2, x[-1] + disp / 2)
    u = (edges[None, :] - c[:, None]) / w[:, None]
    if shape == "gaussian":
        p = np.diff(ndtr(u), axis=1)
        phi = np.exp(-0.5 * u * u) * (1.0 / _SQRT_2PI)
        dc = np.diff(phi, axis=1) / -w[:, None]
        dw = np.diff(phi * u, axis=1) / -w[:, None]
    else:
        p = np.diff(np.arctan(u), axis=1) * (1.0 / np.pi)
        lor = 1.0 / (1.0 + u * u)
        dc = np.diff(lor, axis=1) / (-np.pi * w[:, None])
        dw = np.diff(u * lor, axis=1) / (-np.pi * w[:, None])
    return p, dc, dw


def _peak_kernel(shape: str, x: np.ndarray, disp: float, max_iter: int):
    xm = float(x.mean())
    lo_e, hi_e = float(x[0] - disp / 2), float(x[-1] + disp / 2)
    span = hi_e - lo_e
    to_fwhm = _FWHM_PER_SIGMA if shape == "gaussian" else 2.0

    def model(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prof, dc, dw = _profile(shape, x, disp, p[:, 1], p[:, 2])
        f = p[:, 0:1] * prof + p[:, 3:4] + p[:, 4:5] * (x - xm)[None, :]
        jt = np.empty((f.shape[0], 5, f.shape[1]))
        jt[:, 0] = prof
        np.multiply(p[:, 0:1], dc, out=jt[:, 1])
        np.multiply(p[:, 0:1], dw, out=jt[:, 2])
        jt[:, 3] = 1.0
        jt[:, 4] = (x - xm)[None, :]
        return f, jt

    def valid(p: np.ndarray) -> np.ndarray:
        return (p[:, 2] > 0.05 * disp) & (p[:, 2] < 2 * span) & (p[:, 1] > lo_e - span) & (
            p[:, 1] < hi_e + span)

    def kernel(y: np.ndarray) -> np.ndarray:
        k = min(3, max(1, y.shape[1] // 5))
        y0, y1 = y[:, :k].mean(axis=1), y[:, -k:].mean(axis=1)
        x0, x1 = x[:k].mean(), x[-k:].mean()
        slope = (y1 - y0) / (x1 - x0)
        offset = y0 + slope * (xm - x0)
        net = y - offset[:, None] - slope[:, None] * (x - xm)[None, :]
        smooth = (net + np.roll(net, 1, axis=1) + np.roll(net, -1, axis=1)) / 3.0
        smooth[:, 0], smooth[:, -1] = net[:, 0], net[:, -1]
        i = np.argmax(smooth, axis=1)
        height = np.maximum(smooth[np.arange(y.shape[0]), i], 1e-12)
        area = net.sum(axis=1)
        area = np.where(area > 0, area, height * 3.0)
        dens = height / disp  # peak density per eV
        width = area / dens / (_SQRT_2PI if shape == "gaussian" else np.pi)
        width = np.clip(width, disp / 2, span / 2)
        p0 = np.stack([area, x[i], width, offset, slope], axis=1)
        p, conv = levenberg_marquardt(model, p0, y, valid=valid, max_iter=max_iter)
        out = np.stack([p[:, 1], p[:, 2] * to_fwhm, p[:, 0], p[:, 3], p[:, 4],
                        conv.astype(np.float64)], axis=1)
        bad = ~np.all(np.isfinite(p), axis=1) | (p[:, 1] < lo_e) | (p[:, 1] > hi_e)
        out[bad, :5] = np.nan
        return out

    return kernel


def fit_peak(data: typing.Any, energy_eV: typing.Any, window_eV: tuple[float, float], *,
             shape: str = "gaussian", max_iter: int = 60) -> PeakFit:
    """Fit one peak plus a linear background in a window, for every pixel.

    Args:
        data: (..., n) spectra (numpy or dask).
        energy_eV: (n,) evenly spaced, increasing channel centres (eV).
        window_eV: (start, stop) fit window (eV), at least 6 channels; the peak should lie
            inside with some background on both sides.
        shape: ``"gaussian"`` or ``"lorentzian"``.
        max_iter: Levenberg-Marquardt iterations at most.

    Returns:
        :class:`PeakFit` of (...) maps: centre (eV), FWHM (eV), area (data units x channels),
        background offset and slope, converged flag.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r} is not one of {', '.join(SHAPES)}")
    if not (isinstance(max_iter, int | np.integer) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer")
    e, disp = _validate.energy_axis(energy_eV)
    data = _validate.spectra(data, e.size)
    sl = _validate.window(e, disp, window_eV, "window_eV", min_channels=6)
    out = _blocks.run(_peak_kernel(shape, e[sl], disp, int(max_iter)), [data[..., sl]], tail=6)
    centre, fwhm, area, offset, slope, conv = _blocks.split(out)
    return PeakFit(centre_eV=centre, fwhm_eV=fwhm, area=area, offset=offset, slope=slope,
                   converged=conv > 0.5, shape=shape,
                   window_eV=_validate.pair(window_eV, "window_eV"))
