"""HAADF image formation: incoherent column scattering seen through the probe, scanned.

The expected signal at a probe position p (fraction of incident electrons reaching the
detector) is  sum_i sigma_i * PSF(|p - r_i|) + background, with sigma_i the column's summed
detector cross-section (see :mod:`.scattering`) and PSF the probe intensity broadened by the
source and atom size (see :mod:`.probe`). Each pixel is a point sample at the probe's true
position relative to the sample, so scan-line jitter and linear drift enter exactly. Counts
are Poisson with mean dose * pixel area * signal; detector read noise is Gaussian on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from .elements import atomic_number
from .probe import Probe
from .scattering import Detector, haadf_cross_section_A2
from .structure import Structure
from .truth import ColumnTruth


@dataclass(frozen=True)
class ScanSettings:
    """How the probe moves: timing and distortions.

    Attributes:
        dwell_us: time per pixel (microseconds).
        flyback_us: dead time at the start of each line (microseconds).
        jitter_px: standard deviation of the random x offset of each scan line (pixels).
        drift_nm_per_s: linear sample drift (vx, vy) in nm/s.
        t0_s: time at which the frame starts (for drift across a movie), seconds.
    """

    dwell_us: float = 1.0
    flyback_us: float = 0.0
    jitter_px: float = 0.0
    drift_nm_per_s: tuple[float, float] = (0.0, 0.0)
    t0_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.dwell_us > 0:
            raise ValueError(f"dwell_us={self.dwell_us} must be > 0")
        if self.flyback_us < 0 or self.jitter_px < 0:
            raise ValueError("flyback_us and jitter_px must be >= 0")

    def frame_time_s(self, shape_px: tuple[int, int]) -> float:
        """Duration of one frame in seconds."""
        h, w = shape_px
        return h * (w * self.dwell_us + self.flyback_us) * 1e-6


@dataclass(frozen=True, eq=False)
class HAADFImage:
    """A simulated HAADF frame with its ground truth.

    Attributes:
        image: (H, W) float32 detected electrons per pixel (noisy if a dose was given).
        clean: (H, W) float32 expectation of ``image`` (no shot or detector noise).
        truth: the true columns in pixel coordinates.
        pixel_size_nm: calibration, nm per pixel.
        origin_nm: sample position of pixel (0, 0) at the start of the frame, nm.
        dose_e_per_A2: electron dose of the frame (``None`` if noise-free signal fractions).
        metadata: parameters used.
    """

    image: np.ndarray
    clean: np.ndarray
    truth: ColumnTruth
    pixel_size_nm: float
    origin_nm: tuple[float, float]
    dose_e_per_A2: float | None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Arrays and calibration as a dict (truth as a nested dict)."""
        return {"image": self.image, "clean": self.clean, "truth": self.truth.to_dict(),
                "pixel_size_nm": self.pixel_size_nm, "origin_nm": self.origin_nm,
                "dose_e_per_A2": self.dose_e_per_A2, "metadata": self.metadata}


def column_cross_sections_A2(structure: Structure, probe: Probe, detector: Detector,
                             z_exponent: float | None) -> np.ndarray:
    """(N,) summed detector cross-section of each column over its thickness (square angstrom)."""
    per_kind = np.array([
        sum(float(haadf_cross_section_A2(atomic_number(s), probe.energy_keV, detector, z_exponent))
            for s, _ in k.atoms)
        for k in structure.kinds
    ])
    return per_kind[structure.kind] * structure.thickness_cells


def _probe_positions(rows: np.ndarray, cols: np.ndarray, w: int, pixel_size_A: float, origin_A,
                     scan: ScanSettings, jitter_px: np.ndarray) -> np.ndarray:
    """Probe positions relative to the sample at t = 0 (angstrom), (len(rows), len(cols), 2).

    ``w`` is the full line length (for timing); ``jitter_px`` the x offset of every line.
    """
    line_us = w * scan.dwell_us + scan.flyback_us
    t_s = scan.t0_s + (rows[:, None] * line_us + scan.flyback_us + cols[None, :] * scan.dwell_us) * 1e-6
    vx, vy = np.asarray(scan.drift_nm_per_s, dtype=float) * 10.0  # A/s
    px = origin_A[0] + (cols[None, :] + jitter_px[rows][:, None]) * pixel_size_A - vx * t_s
    py = origin_A[1] + rows[:, None] * pixel_size_A - vy * t_s
    return np.stack(np.broadcast_arrays(px, py), axis=-1)


def apparent_positions_px(xy_A: np.ndarray, shape_px, pixel_size_A, origin_A,
                          scan: ScanSettings) -> np.ndarray:
    """Where sample positions ``xy_A`` (at t = 0) appear in the image, in pixels, given drift."""
    h, w = shape_px
    v = np.asarray(scan.drift_nm_per_s, dtype=float) * 10.0
    line_us = w * scan.dwell_us + scan.flyback_us
    pix = (xy_A - np.asarray(origin_A)) / pixel_size_A
    if not np.any(v):
        return pix
    est = pix.copy()
    for _ in range(20):
        t = scan.t0_s + (est[:, 1] * line_us + scan.flyback_us + est[:, 0] * scan.dwell_us) * 1e-6
        new = (xy_A + v[None, :] * t[:, None] - np.asarray(origin_A)) / pixel_size_A
        if np.max(np.abs(new - est)) < 1e-6:
            est = new
            break
        est = new
    return est


def render_haadf(
    structure: Structure,
    shape_px: tuple[int, int],
    pixel_size_nm: float,
    *,
    origin_nm: tuple[float, float] = (0.0, 0.0),
    probe: Probe | None = None,
    detector: Detector | None = None,
    z_exponent: float | None = None,
    dose_e_per_A2: float | None = None,
    background: float = 0.0,
    detector_noise: float = 0.0,
    scan: ScanSettings | None = None,
    seed: int | np.random.Generator | None = None,
    tile_px: int = 32,
    progress: bool | None = None,
) -> HAADFImage:
    """Render a HAADF-STEM frame of ``structure`` with exact ground truth.

    Args:
        structure: the sample (angstrom, sample frame).
        shape_px: (rows, columns) of the frame.
        pixel_size_nm: scan step in nm per pixel (> 0).
        origin_nm: sample position of pixel (0, 0), nm.
        probe: the probe (default 60 kV, 30 mrad, aberration free).
        detector: annular detector (default 80-200 mrad).
        z_exponent: ``None`` for screened-Rutherford cross-sections, or n for a Z^n law.
        dose_e_per_A2: electrons per square angstrom for the frame; ``None`` gives the
            noise-free scattered fraction (no Poisson noise).
        background: extra scattered fraction everywhere (amorphous contamination, offset).
        detector_noise: Gaussian read noise, standard deviation in counts.
        scan: dwell, flyback, jitter and drift (default: 1 us dwell, no distortions).
        seed: seed or Generator for noise and jitter.
        tile_px: tile size used internally (memory/speed trade-off only).
        progress: progress bar over tiles; default on for frames above 1024 x 1024 pixels.

    Returns:
        :class:`HAADFImage` with the image, its expectation and the truth table.
    """
    h, w = (int(shape_px[0]), int(shape_px[1]))
    if h < 1 or w < 1:
        raise ValueError(f"shape_px={shape_px} must be two positive integers")
    if h * w > 16384 * 16384:
        raise ValueError(f"shape_px={shape_px} exceeds the largest scan (16384 x 16384)")
    if not (pixel_size_nm > 0 and np.isfinite(pixel_size_nm)):
        raise ValueError(f"pixel_size_nm={pixel_size_nm} must be > 0")
    if dose_e_per_A2 is not None and not (dose_e_per_A2 > 0 and np.isfinite(dose_e_per_A2)):
        raise ValueError(f"dose_e_per_A2={dose_e_per_A2} must be > 0 (or None for a noise-free image)")
    if background < 0 or detector_noise < 0:
        raise ValueError("background and detector_noise must be >= 0")
    probe = probe or Probe()
    detector = detector or Detector()
    scan = scan or ScanSettings()
    rng = np.random.default_rng(seed)  # a Generator passes through
    if progress is None:
        progress = h * w > 1024 * 1024

    px_A = pixel_size_nm * 10.0
    origin_A = np.asarray(origin_nm, dtype=float) * 10.0
    r_tab, psf_tab, r_max = probe.radial_profile()
    r2_tab = r_tab**2

    occ = structure.occupied
    xy = structure.xy_A[occ]
    sig = column_cross_sections_A2(structure, probe, detector, z_exponent)[occ]

    tree = cKDTree(xy) if len(xy) else None
    jitter = rng.normal(0.0, scan.jitter_px, size=h) if scan.jitter_px > 0 else np.zeros(h)
    signal = np.full((h, w), background, dtype=np.float64)
    n_tiles = -(-h // tile_px) * -(-w // tile_px)
    bar = tqdm(total=n_tiles, desc="HAADF tiles", disable=not progress, leave=False)
    for r0 in range(0, h, tile_px):
        for c0 in range(0, w, tile_px):
            if tree is None:
                continue
            rows = np.arange(r0, min(r0 + tile_px, h))
            cols = np.arange(c0, min(c0 + tile_px, w))
            p = _probe_positions(rows, cols, w, px_A, origin_A, scan, jitter)
            bar.update()
            flat = p.reshape(-1, 2)
            lo, hi = flat.min(axis=0), flat.max(axis=0)
            sel = np.asarray(tree.query_ball_point((lo + hi) / 2, np.hypot(*(hi - lo)) / 2 + r_max), dtype=int)
            if sel.size == 0:
                continue
            d = flat[:, None, :] - xy[sel][None, :, :]
            r2 = d[..., 0] ** 2 + d[..., 1] ** 2
            val = np.interp(r2, r2_tab, psf_tab, right=0.0) @ sig[sel]
            signal[r0:r0 + tile_px, c0:c0 + tile_px] += val.reshape(p.shape[:2])
    bar.close()

    if dose_e_per_A2 is None:
        clean = signal
        image = signal.copy()
        if detector_noise > 0:
            image = image + rng.normal(0.0, detector_noise, size=image.shape)
    else:
        clean = signal * dose_e_per_A2 * px_A**2
        image = rng.poisson(clean).astype(np.float64)
        if detector_noise > 0:
            image = image + rng.normal(0.0, detector_noise, size=image.shape)

    truth = column_truth(structure, (h, w), px_A, origin_A, scan)
    meta = {
        "probe": probe.to_dict(),
        "detector": {"inner_mrad": detector.inner_mrad, "outer_mrad": detector.outer_mrad},
        "z_exponent": z_exponent,
        "background": background,
        "detector_noise": detector_noise,
        "scan": {"dwell_us": scan.dwell_us, "flyback_us": scan.flyback_us, "jitter_px": scan.jitter_px,
                 "drift_nm_per_s": tuple(scan.drift_nm_per_s), "t0_s": scan.t0_s},
        "material": structure.material.name,
        "thickness_cells": structure.thickness_cells,
        "frame_time_s": scan.frame_time_s((h, w)),
    }
    return HAADFImage(
        image=image.astype(np.float32),
        clean=clean.astype(np.float32),
        truth=truth,
        pixel_size_nm=float(pixel_size_nm),
        origin_nm=(float(origin_nm[0]), float(origin_nm[1])),
        dose_e_per_A2=None if dose_e_per_A2 is None else float(dose_e_per_A2),
        metadata=meta,
    )


def column_truth(structure: Structure, shape_px, pixel_size_A: float, origin_A, scan: ScanSettings,
                 margin_px: float = 0.0) -> ColumnTruth:
    """Ground-truth table of the columns that fall inside a frame (within ``margin_px``)."""
    h, w = shape_px
    app = apparent_positions_px(structure.xy_A, shape_px, pixel_size_A, origin_A, scan)
    start = (structure.xy_A - np.asarray(origin_A)) / pixel_size_A
    inside = ((app[:, 0] >= -0.5 - margin_px) & (app[:, 0] <= w - 0.5 + margin_px)
              & (app[:, 1] >= -0.5 - margin_px) & (app[:, 1] <= h - 0.5 + margin_px))
    subnames = np.array([s.name for s in structure.material.sublattices] + [""], dtype=object)
    return ColumnTruth(
        x=app[inside, 0], y=app[inside, 1], x0=start[inside, 0], y0=start[inside, 1],
        species=np.asarray(structure.species[inside], dtype=object),
        Z=structure.z_total[inside],
        label=np.asarray(structure.label[inside], dtype=object),
        sublattice=subnames[structure.sublattice[inside]],
        occupied=structure.occupied[inside],
    )
