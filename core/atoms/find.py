"""``find_atoms``: one call from an image to a table of columns."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .checks import as_image
from .table import AtomTable


@lru_cache(maxsize=1)
def _generic_finder():
    from .finder import AtomFinder

    return AtomFinder.generic()


def find_atoms(image: np.ndarray, *, pixel_size_nm: float | None = None, model="generic", refine: str | None = "com",
               period_px: float | None = None, classify: bool | int = False, blend: bool = True) -> AtomTable:
    """Find the atomic columns of an atomic-resolution image.

    Args:
        image: (H, W) image, any dtype or intensity scale (NaN/inf, constant or non-2D input is
            refused with a clear error).
        pixel_size_nm: calibration, kept in the result (positions stay in pixels).
        model: ``"generic"`` (the shipped U-Net), ``"classical"`` (local maxima), an
            :class:`~atomsmith.atoms.AtomFinder`, or a path to saved weights.
        refine: ``"com"`` (centre of mass), ``"gaussian"`` (batched 2D Gaussians) or ``None``.
        period_px: dominant lattice period if known; by default measured from the image and
            used to bring it to the model's scale.
        classify: ``True`` (or a number of classes) labels columns by intensity (GMM).
        blend: U-Net models only: blend the refined positions with the network's own, weighted by
            their noise measured on the image (better at low counts; ``False`` keeps the refined
            positions as they are).

    Returns:
        :class:`AtomTable` with ``xy`` in pixels (x = column, y = row).
    """
    img = as_image(image)
    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm={pixel_size_nm} must be > 0")
    if isinstance(model, str) and model == "classical":
        from .classical import find_peaks_classical

        xy, vals = find_peaks_classical(img, period_px=period_px)
        if refine and len(xy):
            from .refine import refine_positions

            table = refine_positions(img, xy, method=refine, pixel_size_nm=pixel_size_nm)
        else:
            table = AtomTable(xy, vals, np.zeros(len(xy), int), np.ones(len(xy)), pixel_size_nm=pixel_size_nm)
        table = table.replace(metadata={**table.metadata, "finder": "classical"})
    else:
        from pathlib import Path

        from .finder import AtomFinder

        if isinstance(model, AtomFinder):
            finder = model
        elif isinstance(model, str | Path) and str(model) != "generic":
            finder = AtomFinder.load(model)
        elif isinstance(model, str):
            finder = _generic_finder()
        else:
            raise ValueError(f"model={model!r}: use 'generic', 'classical', an AtomFinder or a weights path")
        table = finder.predict(img, pixel_size_nm=pixel_size_nm, period_px=period_px, refine=refine,
                               blend=blend)
    if classify:
        from .classify import classify_columns

        table = classify_columns(table, None if classify is True else int(classify))
    return table
