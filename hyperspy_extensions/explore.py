"""Replay an automated experiment offline on a recorded image + spectrum image pair.

A thin adapter over :func:`atomsmith.explore.active_learning`: each scan pixel (every
``stride_px``) is a candidate whose features are the image patch around it, and measuring
candidate ``i`` means evaluating ``criterion`` on the recorded spectrum at that pixel. The learner
sees only the spectra it chose, so comparing its predicted map with the criterion evaluated on
the whole grid tells how well the automated experiment would have done on the microscope, and
with how few spectra.

Used by ``AtomsmithEELS.replay_active_learning`` and ``AtomicResolutionImage.replay_active_learning``.
"""

from __future__ import annotations

import time
import typing

import numpy as np

from ._axes import check_finite, record, scan_map


def _criterion_callable(criterion: typing.Any, width_eV: float) -> tuple[typing.Callable, str]:
    """(criterion(spectrum) -> float, description); a string goes through
    :func:`atomsmith.explore.criteria.criterion_from` (``"Si"``, ``"N/C"``, ``"280-300"``)."""
    if isinstance(criterion, str):
        from atomsmith.explore.criteria import criterion_from

        fn = criterion_from(criterion, width_eV)
        return fn, repr(fn)
    if not callable(criterion):
        raise TypeError("criterion must be callable as criterion(spectrum) -> float (spectrum: an "
                        "atomsmith.instrument.Spectrum with energy_eV and counts), an element symbol (\"Si\"), "
                        "a ratio (\"N/C\") or an energy window (\"280-300\")")
    return criterion, getattr(criterion, "__name__", repr(criterion))


def _full_map(data: np.ndarray, energy: np.ndarray, criterion: typing.Callable, xy_of: typing.Callable,
              progress: bool) -> np.ndarray:
    """The criterion at every pixel (vectorised when the criterion has ``map``, e.g. atomsmith's own)."""
    ny, nx = data.shape[:2]
    if callable(getattr(criterion, "map", None)):
        return np.asarray(criterion.map(data, energy), float)
    from atomsmith.explore.criteria import evaluate
    from atomsmith.instrument.protocol import Spectrum

    out = np.full((ny, nx), np.nan)
    rows = range(ny)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="criterion on the full grid")
    for r in rows:
        for c in range(nx):
            out[r, c] = evaluate(criterion, Spectrum(energy, data[r, c], tuple(xy_of(r, c)), 0.0, 0.0))
    return out


def _r2(pred: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(truth)
    t, p = truth[ok], pred[ok]
    ss = float(np.sum((t - t.mean()) ** 2))
    return float(1.0 - np.sum((t - p) ** 2) / ss) if ss > 0 else float("nan")


def replay_active_learning(eels: typing.Any, image: typing.Any, criterion: typing.Any, budget: typing.Any, *,
                           model: str | object = "dkl", patch_px: int = 8, stride_px: int = 1,
                           acquisition: str = "ucb", n_seed: int = 10, beta: float = 4.0, seed: int = 0,
                           width_eV: float = 40.0, top_fraction: float = 0.01, model_options: dict | None = None,
                           progress: bool = False, **kwargs: typing.Any) -> dict:
    """Replay an automated experiment on ``eels`` (scan x energy) steered by ``image`` (same scan grid).

    Args:
        eels: AtomsmithEELS spectrum image with two navigation axes.
        image: HAADF image on the same scan grid (Signal2D or array).
        criterion: ``criterion(spectrum) -> float`` (``spectrum``: an
            :class:`atomsmith.instrument.Spectrum`, the same criterion the Swift plug-in takes), or
            a text for :func:`atomsmith.explore.criteria.criterion_from`: an element symbol (its
            background-subtracted edge integral over ``width_eV``), a ratio ``"N/C"`` or an
            energy window ``"280-300"`` (eV).
        budget: spectra to "measure" (int, seeds included) or :class:`atomsmith.explore.Budget`.
        model, acquisition, n_seed, beta, seed, model_options, kwargs: as
            :func:`atomsmith.explore.active_learning`.
        patch_px: side of the image patch around each candidate pixel (features).
        stride_px: candidate grid step (1: every pixel).
        top_fraction: the "high-criterion region" of the scores: the top ``top_fraction`` of the
            full-grid criterion over the candidates.
        progress: progress bars.

    Returns:
        dict with ``positions`` ((n, 2) calibrated (x, y) of the measured pixels in measurement
        order, the navigation axes' units), ``pixels_yx`` ((n, 2) int row, col), ``values`` (the
        criterion there), ``predicted`` / ``uncertainty`` (Signal2D maps of the surrogate's mean
        and standard deviation, fitted on all measurements), ``criterion_map`` (Signal2D: the
        criterion at every pixel, for comparison), ``markers`` (HyperSpy point markers of the
        measured positions), ``scores`` (dict of numbers, see below) and ``result`` (the core's
        :class:`~atomsmith.explore.ActiveLearningResult`).

        ``scores``: ``fraction_measured`` (n / candidates), ``first_top_hit`` (measurements until
        the first one in the top region, None if none), ``top_measured`` (how many of the top
        region were measured), ``top_found`` (fraction of the top region inside the predicted
        map's own top ``top_fraction``), ``best_over_max`` (best measured / full-grid maximum),
        ``r2`` (predicted vs full-grid criterion over the candidates), ``n_measured``,
        ``n_candidates``, ``top_size`` and ``time_s`` (the replay's wall time).
    """
    import hyperspy.api as hs

    from atomsmith.explore import active_learning
    from atomsmith.explore.criteria import evaluate
    from atomsmith.explore.scenes import cut_patches
    from atomsmith.instrument.protocol import Spectrum

    t0 = time.perf_counter()
    img, data = eels._image_pair(image)
    check_finite(img, "the image")
    energy = eels.energy_axis_eV()
    if not 0.0 < top_fraction < 1.0:
        raise ValueError(f"top_fraction={top_fraction} must be in (0, 1)")
    fn, description = _criterion_callable(criterion, width_eV)

    ny, nx = img.shape
    s = int(stride_px)
    if s < 1:
        raise ValueError(f"stride_px={stride_px} must be >= 1")
    yy, xx = np.mgrid[0:ny:s, 0:nx:s]
    grid_shape = yy.shape
    yx = np.stack([yy.ravel(), xx.ravel()], 1)
    nav_x, nav_y = eels.axes_manager.navigation_axes  # HyperSpy order: x (columns) first

    def xy_of(r: int, c: int) -> tuple[float, float]:
        return (float(nav_x.offset + nav_x.scale * c), float(nav_y.offset + nav_y.scale * r))

    xy = np.array([xy_of(r, c) for r, c in yx])
    features = cut_patches(img.astype(np.float32), yx, patch_px)

    def measure(i: int) -> float:
        r, c = (int(v) for v in yx[i])
        return evaluate(fn, Spectrum(energy, data[r, c], xy_of(r, c), 0.0, 0.0))

    res = active_learning(features, measure, budget, model=model, acquisition=acquisition, n_seed=n_seed,
                          seed=seed, beta=beta, xy=xy, model_options=model_options, progress=progress, **kwargs)
    mean, var = res.predict()

    def to_map(values: np.ndarray) -> np.ndarray:
        m = np.asarray(values, float).reshape(grid_shape)
        if s > 1:
            m = np.repeat(np.repeat(m, s, axis=0), s, axis=1)
        return m[:ny, :nx]

    full = _full_map(data, energy, fn, xy_of, progress)
    truth_c = full[yx[:, 0], yx[:, 1]]
    finite = np.isfinite(truth_c)
    thr = np.quantile(truth_c[finite], 1.0 - top_fraction)
    top = finite & (truth_c >= thr)
    pred_thr = np.quantile(mean, 1.0 - top_fraction)
    pred_top = mean >= pred_thr
    hit = np.flatnonzero(top[res.indices])

    scores = {
        "n_measured": int(len(res.indices)),
        "n_candidates": int(len(yx)),
        "fraction_measured": float(len(res.indices) / len(yx)),
        "first_top_hit": int(hit[0] + 1) if len(hit) else None,
        "top_measured": int(len(hit)),
        "top_size": int(top.sum()),
        "top_found": float((top & pred_top).sum() / max(int(top.sum()), 1)),
        "best_over_max": float(np.nanmax(res.values) / np.nanmax(truth_c)) if np.isfinite(res.values).any()
        else float("nan"),
        "r2": _r2(mean, truth_c),
        "time_s": float(time.perf_counter() - t0),
    }

    predicted = scan_map(eels, to_map(mean), f"predicted {description}", "criterion")
    uncertainty = scan_map(eels, to_map(np.sqrt(np.maximum(var, 0.0))), f"uncertainty of {description}",
                           "criterion std")
    criterion_map = scan_map(eels, full, f"{description} (full grid)", "criterion")
    pixels = yx[res.indices]
    positions = xy[res.indices]
    params = {"budget": str(budget), "model": model if isinstance(model, str) else type(model).__name__,
              "patch_px": patch_px, "stride_px": stride_px, "acquisition": acquisition, "n_seed": n_seed,
              "beta": beta, "seed": seed, "criterion": description}
    for sig in (predicted, uncertainty):
        record(sig, "replay_active_learning", params, **{k: v for k, v in scores.items() if v is not None})
    record(eels, "replay_active_learning", params, **{k: v for k, v in scores.items() if v is not None})
    markers = hs.plot.markers.Points(offsets=positions, color="red", sizes=6)
    return {"positions": positions, "pixels_yx": pixels, "values": res.values, "predicted": predicted,
            "uncertainty": uncertainty, "criterion_map": criterion_map, "markers": markers, "scores": scores,
            "result": res}
