"""``find_atoms``: one call from an image to a table of columns."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .checks import as_image
from .quality import AtomFindingWarning, frame_memo, warn_if_doubtful
from .scale import check_period
from .table import AtomTable

__all__ = ["AtomFindingWarning", "check_pixel_size", "find_atoms"]


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
        :class:`AtomTable` with ``xy`` in pixels (x = column, y = row) and a quality report in
        ``table.quality`` (:class:`~atomsmith.atoms.quality.FindingQuality`). When its checks
        doubt the result (wrong scale, no lattice, the network and a classical finder disagree,
        columns without the usual neighbours) one :class:`AtomFindingWarning` says what is
        wrong and what to try; an image with no lattice and no column above the noise gives an
        empty table and that warning.

    Raises:
        ValueError / TypeError: a bad image (see :func:`~atomsmith.atoms.checks.as_image`), or a
        ``pixel_size_nm``, ``period_px`` or ``refine`` that is not a usable value.
    """
    img = as_image(image)
    pixel_size_nm = check_pixel_size(pixel_size_nm)
    period_px = check_period(period_px, img.shape)
    if refine not in (None, False, "com", "gaussian"):
        raise ValueError(f"refine={refine!r}: use 'com', 'gaussian' or None")
    if isinstance(model, str) and model == "classical":
        with frame_memo():
            table = _find_classical(img, period_px, refine, pixel_size_nm)
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
    if table.quality is not None:
        warn_if_doubtful(table.quality, stacklevel=3)
    return table


def check_pixel_size(pixel_size_nm) -> float | None:
    """Validate a calibration: a finite number of nm per pixel, from 1e-4 to 10 nm."""
    if pixel_size_nm is None:
        return None
    if isinstance(pixel_size_nm, bool) or not isinstance(pixel_size_nm, int | float | np.integer | np.floating):
        raise TypeError(f"pixel_size_nm must be a number (nm per pixel), got {type(pixel_size_nm).__name__} "
                        f"{pixel_size_nm!r}")
    p = float(pixel_size_nm)
    if not np.isfinite(p) or p <= 0:
        raise ValueError(f"pixel_size_nm={pixel_size_nm} must be a finite number > 0 (nm per pixel)")
    if not 1e-4 <= p <= 10.0:
        raise ValueError(f"pixel_size_nm={pixel_size_nm} nm per pixel is not an atomic-resolution calibration "
                         "(expected 1e-4 to 10 nm; is it in metres or angstrom?)")
    return p


def _find_classical(img: np.ndarray, period_px: float | None, refine, pixel_size_nm) -> AtomTable:
    """The classical path, with the same significance filter and quality report as the network's."""
    from .classical import find_peaks_classical
    from .quality import assess, filter_columns, noise_sigma
    from .spacing import estimate_lattice_period

    how = "given" if period_px is not None else "fft"
    if period_px is None:
        try:
            period_px = estimate_lattice_period(img).period_px
        except ValueError:
            sigma = noise_sigma(img)
            q = assess(img, np.zeros((0, 2)), period_px=float("nan"), period_method="none", sigma=sigma)
            return AtomTable.empty(pixel_size_nm, finder="classical").replace(quality=q)
    xy, vals = find_peaks_classical(img, period_px=period_px)
    sigma = noise_sigma(img)
    n_det = len(xy)
    contrast, notes = None, ()
    if len(xy) > 1:
        keep, contrast, notes = filter_columns(img, xy, period_px=period_px, sigma=sigma)
        xy, vals, contrast = xy[keep], vals[keep], contrast[keep]
    q = assess(img, xy, period_px=period_px, period_method=how, n_rejected=n_det - len(xy), contrast=contrast,
               sigma=sigma, agreement=False, notes=notes)
    if refine and len(xy):
        from .refine import refine_positions

        table = refine_positions(img, xy, method=refine, pixel_size_nm=pixel_size_nm)
    else:
        table = AtomTable(xy, vals, np.zeros(len(xy), int), np.ones(len(xy)), pixel_size_nm=pixel_size_nm)
    return table.replace(metadata={**table.metadata, "finder": "classical"}, quality=q)
