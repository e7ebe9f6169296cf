"""A classical column finder: smoothing, local maxima and an intensity threshold.

Used to label a seed frame when no positions are given, and as a baseline. No learning:
Gaussian smoothing at a fraction of the lattice period, local maxima at least ~0.35 of the
nearest-column distance apart, and a threshold between the background and the column peaks
(Otsu on the maxima, lowered to keep faint columns that stand clearly above the background).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu

from .checks import as_image
from .spacing import estimate_lattice_period


def find_peaks_classical(image: np.ndarray, *, period_px: float | None = None,
                         min_distance_px: float | None = None, smooth_px: float | None = None,
                         threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a smoothed image that stand above the background.

    Args:
        image: (H, W) image.
        period_px: dominant lattice period (default: measured, see :mod:`.spacing`).
        min_distance_px: smallest allowed distance between columns (default 0.3 x period).
        smooth_px: Gaussian smoothing sigma (default 0.08 x period).
        threshold: minimum smoothed value (default: automatic).

    Returns:
        (xy (N, 2) pixel positions of the maxima, peak values (N,)).
    """
    img = as_image(image)
    if period_px is None:
        period_px = estimate_lattice_period(img).period_px
    smooth_px = 0.08 * period_px if smooth_px is None else smooth_px
    min_distance_px = 0.3 * period_px if min_distance_px is None else min_distance_px
    sm = ndimage.gaussian_filter(img.astype(np.float64), max(smooth_px, 0.5))
    rc = peak_local_max(sm, min_distance=max(1, int(round(min_distance_px))), exclude_border=False)
    if len(rc) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    vals = sm[rc[:, 0], rc[:, 1]]
    if threshold is None:
        bg = np.percentile(sm, 5)
        noise = 1.4826 * np.median(np.abs(sm - np.median(sm))) + 1e-12
        try:
            otsu = threshold_otsu(vals)
        except ValueError:
            otsu = vals.min()
        threshold = min(otsu, bg + 0.5 * (np.median(vals) - bg)) if len(vals) > 3 else bg + 3 * noise
        threshold = max(threshold, bg + 2 * noise * 0.5)
    keep = vals >= threshold
    return rc[keep][:, ::-1].astype(float), vals[keep]
