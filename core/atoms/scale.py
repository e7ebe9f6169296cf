"""Bring an image to the U-Net's working scale and map positions back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .spacing import estimate_lattice_period
from .training_data import MODEL_PERIOD_PX, TRAIN_PERIOD_RANGE_PX


@dataclass(frozen=True)
class ModelScale:
    """How an image was resampled for the U-Net.

    Attributes:
        factor: model pixels per image pixel (1.0: not resampled).
        period_px: lattice period of the image (px) that set the scale (NaN: none).
        method: how the scale was found: ``"given"``, ``"fft"`` (power-spectrum period),
            ``"fft+columns"`` (the period's scale corrected by the spacing of the columns a quick
            classical detection finds), ``"columns"`` (no lattice period; the columns' spacing),
            ``"none"`` (the image as it is).
        columns_nn_px: nearest-column distance (px) of the quick classical detection (NaN: not
            measured or too few columns).
    """

    factor: float
    period_px: float
    method: str = "fft"
    columns_nn_px: float = float("nan")

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return {"factor": self.factor, "period_px": self.period_px, "method": self.method,
                "columns_nn_px": self.columns_nn_px}


#: nearest-column distances (px) at model scale that the network handles well; outside this
#: band the image is brought to ``TARGET_NN_PX``
NN_BAND_PX = (4.5, 16.0)
TARGET_NN_PX = 9.0


def columns_spacing(image: np.ndarray, period_px: float = float("nan")) -> float:
    """Median nearest distance (px) of the significant local maxima of the lightly smoothed image.

    A second measure of scale, independent of the power spectrum: it sees a dumbbell's pair,
    which the period hides, and it is not fooled by a slow modulation or the seams of a tiled
    image that the spectrum may take for the lattice. Two smoothings are tried (one set by
    ``period_px``, one of 1 px); the answer kept is the self-consistent one: the maxima that
    stand above the noise must look like a lattice (most with the same number of neighbours).
    NaN when neither is.
    """
    from .quality import noise_sigma

    img = image
    sigma = noise_sigma(img)
    widths = [1.0]
    if np.isfinite(period_px):
        sp = float(np.clip(0.05 * period_px, 0.7, 3.0))
        if abs(sp - 1.0) > 0.2:
            widths.insert(0, sp)
    # a spacing is a property of the whole lattice: a large frame is measured on its central
    # part first (at least 12 periods wide; 4x less work on 512^2), on the whole when that fails
    side = int(max(_CROP_PX, 12 * period_px if np.isfinite(period_px) else _CROP_PX))
    h, w = img.shape
    regions = [img]
    if h > 1.5 * side or w > 1.5 * side:
        r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        regions.insert(0, img[r0:r0 + side, c0:c0 + side])
    for region in regions:
        best = (0.0, float("nan"))
        for s in widths:
            nn, nf = _maxima_spacing(region, s, period_px, sigma)
            if np.isfinite(nf) and nf >= 0.5 and nf > best[0]:
                best = (nf, nn)
        if np.isfinite(best[1]):
            return best[1]
    return float("nan")


_CROP_PX = 256


def _maxima_spacing(img: np.ndarray, s: float, period_px: float, sigma: float) -> tuple[float, float]:
    """(median nearest distance, neighbour fraction) of the significant maxima at smoothing ``s``."""
    from .quality import (
        Z_MIN,
        column_contrast,
        local_maxima,
        nearest_distance,
        neighbour_fraction,
        smoothed,
    )

    sm = smoothed(img, s)
    xy = local_maxima(sm, max(2, int(round(2 * s))))
    if len(xy) < 10:
        return float("nan"), float("nan")
    guess = max(4.0, nearest_distance(xy))
    contrast, z = column_contrast(img, xy, guess, sigma=sigma)
    keep = z >= Z_MIN
    if keep.sum() < 10:
        return float("nan"), float("nan")
    keep &= contrast >= 0.25 * np.percentile(contrast[keep], 90)
    if keep.sum() < 10:
        return float("nan"), float("nan")
    nn = nearest_distance(xy[keep])
    return nn, neighbour_fraction(xy[keep], img.shape, nn)


def choose_scale(image: np.ndarray, period_px: float | None = None, margin: float = 0.05) -> ModelScale:
    """Measure the lattice period (unless given), check it against the columns, pick the factor.

    Images whose period lies inside the training band (with a small margin), or whose columns
    are 5-15 px apart, are not resampled; others are resampled so that the period becomes
    ``MODEL_PERIOD_PX``. The period is then
    checked against the spacing of the columns a quick classical detection finds
    (:func:`columns_spacing`): when that spacing would land outside ``NN_BAND_PX`` at the
    chosen scale (a dumbbell's pair, a slow modulation taken for the lattice), the columns set
    the scale instead. Without any measurable period or columns the image is used as it is.
    """
    lo, hi = TRAIN_PERIOD_RANGE_PX
    if period_px is not None:
        if lo * (1 + margin) <= period_px <= hi * (1 - margin):
            return ModelScale(1.0, float(period_px), "given")
        return ModelScale(float(MODEL_PERIOD_PX / period_px), float(period_px), "given")
    try:
        period = estimate_lattice_period(image).period_px
    except ValueError:
        period = float("nan")
    nn = columns_spacing(image, period)
    if not np.isfinite(period):
        if np.isfinite(nn) and nn >= 2.0:
            f = TARGET_NN_PX / nn
            return ModelScale(float(f), float(MODEL_PERIOD_PX / f), "columns", nn)
        return ModelScale(1.0, float("nan"), "none", nn)
    method = "fft"
    if np.isfinite(nn) and nn >= 2.0 and not 0.35 <= nn / period <= 1.3:
        # the spectrum's period disagrees with the columns (a tiled image's seams or a slow
        # modulation took it; a dumbbell's pair hides under it): the period is sought again
        # among those the columns allow (a lattice period is at most ~3 column spacings)
        method = "fft+columns"
        near = period_near_columns(image, nn)
        period = near if np.isfinite(near) else period
    f = 1.0 if lo * (1 + margin) <= period <= hi * (1 - margin) else MODEL_PERIOD_PX / period
    if f != 1.0 and np.isfinite(nn) and 5.0 <= nn <= 15.0:
        f = 1.0  # the columns are at a spacing the network knows: no resampling (faster, exact)
    if np.isfinite(nn) and nn >= 2.0 and not NN_BAND_PX[0] <= nn * f <= NN_BAND_PX[1]:
        f = TARGET_NN_PX / nn  # the columns set the scale
        method = "fft+columns"
    return ModelScale(float(f), float(period), method, nn)


def period_near_columns(image: np.ndarray, nn_px: float) -> float:
    """The lattice period (px) among those columns ``nn_px`` apart allow: 0.8-3 spacings.

    The strongest reflection in that range is taken (not the lowest-frequency one that stands
    out, as :func:`estimate_lattice_period` does by default: on a sparse frame a noise bump at
    twice the period can). NaN when none stands above the noise there.
    """
    try:
        return estimate_lattice_period(image, min_period_px=max(3.0, 0.8 * nn_px), max_period_px=3.0 * nn_px,
                                       relative_threshold=1.0).period_px
    except ValueError:
        return float("nan")


def check_period(period_px, shape: tuple[int, int]) -> float | None:
    """Validate a user's ``period_px``: a finite number of pixels from 3 px to half the image.

    A period of 0.5 px would blow a 512^2 image up to 12,000^2 px (minutes of work for
    nothing); a string or NaN is a mistake. Returns the period as float (or ``None``).
    """
    if period_px is None:
        return None
    if isinstance(period_px, bool) or not isinstance(period_px, int | float | np.integer | np.floating):
        raise TypeError(f"period_px must be a number of pixels, got {type(period_px).__name__} {period_px!r}")
    p = float(period_px)
    hi = max(shape) / 2
    if not np.isfinite(p) or not 3.0 <= p <= hi:
        raise ValueError(f"period_px={period_px} is outside 3-{hi:g} px (the lattice period of this "
                         f"{shape[0]}x{shape[1]} image must span at least 3 px and fit twice); "
                         "leave it out to have it measured")
    return p


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Resample by ``factor`` so that model pixel j sits at image coordinate j / factor.

    Down-sampling is preceded by a Gaussian anti-alias blur; up-sampling is cubic.
    """
    if factor == 1.0:
        return image
    h, w = image.shape
    src = image
    if factor < 1.0:
        src = ndimage.gaussian_filter(image, sigma=0.45 / factor)
    oh, ow = max(1, int(np.floor((h - 1) * factor)) + 1), max(1, int(np.floor((w - 1) * factor)) + 1)
    yy = np.arange(oh, dtype=np.float64) / factor
    xx = np.arange(ow, dtype=np.float64) / factor
    return ndimage.map_coordinates(src, np.meshgrid(yy, xx, indexing="ij"), order=1 if factor < 1 else 3,
                                   mode="nearest").astype(np.float32)
