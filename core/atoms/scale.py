"""Bring an image to the U-Net's working scale and map positions back."""

from __future__ import annotations

import warnings
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
        period_px: measured dominant lattice period of the image (px).
    """

    factor: float
    period_px: float

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return {"factor": self.factor, "period_px": self.period_px}


def choose_scale(image: np.ndarray, period_px: float | None = None, margin: float = 0.05) -> ModelScale:
    """Measure the lattice period (unless given) and pick the resampling factor.

    Images whose period lies inside the training band (with a small margin) are not resampled;
    others are resampled so that the period becomes ``MODEL_PERIOD_PX``. When no period can be
    measured (very low dose), the image is used as it is, with a warning.
    """
    if period_px is None:
        try:
            period_px = estimate_lattice_period(image).period_px
        except ValueError as exc:
            warnings.warn(f"{exc}; using the image at its own scale", stacklevel=3)
            return ModelScale(1.0, float("nan"))
    lo, hi = TRAIN_PERIOD_RANGE_PX
    if lo * (1 + margin) <= period_px <= hi * (1 - margin):
        return ModelScale(1.0, float(period_px))
    return ModelScale(float(MODEL_PERIOD_PX / period_px), float(period_px))


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
