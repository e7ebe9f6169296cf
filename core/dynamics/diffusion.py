"""Diffusion coefficients from tracks (2D random walk).

Estimator: the covariance-based estimator of Vestergaard, Blainey & Flyvbjerg (Phys. Rev. E 89,
022726 (2014)), per axis ``D = <dx_n^2> / (2 dt) + <dx_n dx_(n+1)> / dt``, averaged over x and
y: unbiased under localisation noise and motion blur, unlike a straight MSD fit, and optimal for
short tracks. Only steps between consecutive frames are used (gaps split a track). The 95 %
interval is a bootstrap over tracks (resampling whole tracks keeps their correlations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DiffusionResult:
    """Diffusion coefficient with its 95 % interval.

    Attributes:
        D_nm2_per_s: estimate (nm^2/s).
        ci_low, ci_high: 95 % bootstrap interval (nm^2/s).
        n_steps: frame-to-frame steps used.
        n_tracks: tracks that contributed.
        localisation_nm: localisation noise implied by the estimate (nm; NaN if negative).
    """

    D_nm2_per_s: float
    ci_low: float
    ci_high: float
    n_steps: int
    n_tracks: int
    localisation_nm: float


def _segments(track: np.ndarray) -> list[np.ndarray]:
    t = np.asarray(track, float)
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"a track has shape {t.shape}; expected (n, 3) rows of (frame, x, y)")
    if not np.all(np.isfinite(t)):
        raise ValueError("a track contains NaN or inf")
    t = t[np.argsort(t[:, 0])]
    breaks = np.flatnonzero(np.diff(t[:, 0]) != 1) + 1
    return [s[:, 1:] for s in np.split(t, breaks) if len(s) >= 2]


def _sums(seg: np.ndarray) -> tuple[float, float, int, int]:
    d = np.diff(seg, axis=0)
    s2 = float(np.sum(d * d))
    s1 = float(np.sum(d[1:] * d[:-1])) if len(d) > 1 else 0.0
    return s2, s1, len(d), max(len(d) - 1, 0)


def diffusion(tracks, frame_time_s: float, pixel_size_nm: float, *, n_boot: int = 1000,
              seed: int | None = 0) -> DiffusionResult:
    """Diffusion coefficient (nm^2/s) of a set of tracks of (frame, x, y) in pixels."""
    if not (np.isfinite(frame_time_s) and frame_time_s > 0):
        raise ValueError(f"frame_time_s={frame_time_s} must be > 0")
    if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm={pixel_size_nm} must be > 0")
    per_track = []
    for tr in tracks:
        segs = _segments(tr)
        if segs:
            per_track.append(np.sum([_sums(s * pixel_size_nm) for s in segs], axis=0))
    if not per_track:
        raise ValueError("no track has two consecutive frames: nothing to measure")
    sums = np.array(per_track)  # (tracks, 4): sum dx^2 (both axes), sum dx dx', n steps, n pairs

    def estimate(s: np.ndarray) -> tuple[float, float]:
        msd = s[:, 0].sum() / s[:, 2].sum() / 2  # per axis
        cov = s[:, 1].sum() / s[:, 3].sum() / 2 if s[:, 3].sum() > 0 else 0.0
        return (msd / 2 + cov) / frame_time_s, -cov

    d, neg_cov = estimate(sums)
    rng = np.random.default_rng(seed)
    boot = [estimate(sums[rng.integers(0, len(sums), len(sums))])[0] for _ in range(int(n_boot))]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return DiffusionResult(D_nm2_per_s=float(d), ci_low=float(lo), ci_high=float(hi),
                           n_steps=int(sums[:, 2].sum()), n_tracks=len(sums),
                           localisation_nm=float(np.sqrt(neg_cov)) if neg_cov > 0 else float("nan"))


def split_by_class(tracks, label_sequences, n_classes: int) -> list[list[np.ndarray]]:
    """Cut tracks into pieces of constant class: for each class, the pieces (frame, x, y) that
    cover a run of frames of that class plus the next frame (the step out of the run was made
    while the defect had the run's class). ``label_sequences``: one label per row of each track."""
    out: list[list[np.ndarray]] = [[] for _ in range(int(n_classes))]
    for tr, lab in zip(tracks, label_sequences, strict=True):
        t = np.asarray(tr, float)
        lab = np.asarray(lab).reshape(-1)
        if len(lab) != len(t):
            raise ValueError(f"a track has {len(t)} rows but {len(lab)} labels")
        start = 0
        for i in range(1, len(t) + 1):
            if i == len(t) or lab[i] != lab[start]:
                k = int(lab[start])
                if 0 <= k < n_classes:
                    piece = t[start:min(i + 1, len(t))]
                    if len(piece) >= 2:
                        out[k].append(piece)
                start = i
    return out


def diffusion_by_class(tracks, label_sequences, n_classes: int, frame_time_s: float, pixel_size_nm: float,
                       **kwargs) -> list[DiffusionResult | None]:
    """:func:`diffusion` of each class (None for a class without steps)."""
    out: list[DiffusionResult | None] = []
    for pieces in split_by_class(tracks, label_sequences, n_classes):
        try:
            out.append(diffusion(pieces, frame_time_s, pixel_size_nm, **kwargs))
        except ValueError:
            out.append(None)
    return out
