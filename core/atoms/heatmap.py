"""From a column-probability map to column positions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def heatmap_to_xy(prob: np.ndarray, threshold: float = 0.5, min_area_px: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the blobs where ``prob`` exceeds ``threshold``.

    Each connected blob (8-connected) gives one column at its probability-weighted centre of
    mass; its confidence is the blob's peak probability. Blobs smaller than ``min_area_px``
    pixels are dropped.

    Returns:
        (xy (N, 2) in pixels, confidence (N,)).
    """
    mask = prob > threshold
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0)
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(prob), lab, idx)
    com = np.array(ndimage.center_of_mass(prob, lab, idx)).reshape(-1, 2)
    conf = ndimage.maximum(prob, lab, idx)
    keep = area >= min_area_px
    return com[keep][:, ::-1].copy(), np.asarray(conf)[keep]
