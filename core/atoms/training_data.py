"""Training images from the digital twin, at the U-Net's working scale, with column masks.

The U-Net works at a fixed scale: the dominant lattice period (see :mod:`.spacing`) is
``MODEL_PERIOD_PX`` = 12 px (nearest columns 6-8 px apart); training covers 8.5-17 px so that
images within that band need no rescaling. Each twin image is stored noise-free (scattered
fraction) with its pixel area, and noise is drawn afresh every time it is used, at a dose drawn
log-uniformly from 1e3 to 1e6 e/A^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import simulate as sim

#: Dominant lattice period (px) the U-Net is trained around.
MODEL_PERIOD_PX = 12.0
#: Periods (px) seen in training; images in this band are not rescaled.
TRAIN_PERIOD_RANGE_PX = (8.5, 17.0)

GENERIC_MATERIALS = ("graphene", "hBN", "MoS2", "WS2", "MoSe2", "WSe2", "SrTiO3", "BaTiO3", "PbTiO3",
                     "LaMnO3", "BiFeO3")


def dominant_period_A(material: sim.Material) -> float:
    """The lattice-plane spacing that dominates the power spectrum (first order), angstrom."""
    a1 = np.asarray(material.a1_A)
    a2 = np.asarray(material.a2_A)
    area = abs(a1[0] * a2[1] - a1[1] * a2[0])
    return float(area / max(np.hypot(*a1), np.hypot(*a2)))


@dataclass(frozen=True, eq=False)
class TrainingSample:
    """One noise-free twin image at model scale and its target mask.

    Attributes:
        signal: (H, W) float32 scattered fraction (noise-free, background included).
        target: (H, W) float32 in [0, 1]: discs at occupied column centres.
        pixel_area_A2: pixel area, for turning a dose into counts.
        xy: (N, 2) true occupied column positions (px).
    """

    signal: np.ndarray
    target: np.ndarray
    pixel_area_A2: float
    xy: np.ndarray


def column_mask(xy: np.ndarray, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """Soft discs (1 inside ``radius_px``, linear edge one pixel wide) at positions ``xy``."""
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    r = int(np.ceil(radius_px + 1))
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    for x, y in xy:
        cx, cy = int(round(x)), int(round(y))
        yy, xx = oy + cy, ox + cx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        d = np.hypot(xx - x, yy - y)
        v = np.clip(radius_px + 0.5 - d, 0.0, 1.0)
        np.maximum.at(out, (yy[ok], xx[ok]), v[ok].astype(np.float32))
    return out


def random_twin_sample(rng: np.random.Generator, size_px: int = 128,
                       materials: tuple[str, ...] = GENERIC_MATERIALS) -> TrainingSample:
    """A random twin image (material, scale, rotation, defects, optics, distortions)."""
    mat = sim.get_material(materials[rng.integers(len(materials))])
    lo, hi = TRAIN_PERIOD_RANGE_PX
    period_px = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    px_A = dominant_period_A(mat) / period_px
    extent = size_px * px_A
    bulk = mat.period_z_A is not None
    s = sim.build_crystal(mat, (extent, extent), rotation_deg=rng.uniform(0, 360),
                          shift_A=tuple(rng.uniform(-3, 3, 2)),
                          thickness_nm=rng.uniform(0.8, 8.0) if bulk else None,
                          polarization_pm=tuple(rng.normal(0, 8, 2)) if bulk else None)
    n_sites = int(s.inside(0).sum())
    edge = 0.0
    try:
        if rng.random() < 0.85:  # empty sites must stay empty: the network must not paint the lattice
            s = sim.add_vacancies(s, int(rng.poisson(0.03 * n_sites) + 1), seed=rng, edge_margin_A=edge,
                                  min_separation_A=0.0)
        if rng.random() < 0.5:
            heavy = {"graphene": "Si", "hBN": "C", "MoS2": "W", "WS2": "Mo", "MoSe2": "W", "WSe2": "Mo"}
            sub = heavy.get(mat.name, "Fe" if mat.name != "BiFeO3" else "Mn")
            s = sim.substitute(s, sub, int(rng.poisson(0.01 * n_sites) + 1), seed=rng,
                               edge_margin_A=edge, min_separation_A=0.0)
        multi = [sl.name for sl in mat.sublattices if len(sl.atoms) > 1 and not bulk]
        if multi and rng.random() < 0.5:
            s = sim.remove_atoms(s, int(rng.poisson(0.02 * n_sites) + 1), sublattice=multi[0], seed=rng,
                                 edge_margin_A=edge, min_separation_A=0.0)
        if rng.random() < 0.2:
            s = sim.add_adatoms(s, ("Si", "Mo", "W", "Fe")[rng.integers(4)], int(rng.integers(1, 3)), seed=rng,
                                edge_margin_A=edge)
    except ValueError:
        pass  # small fields sometimes cannot host the requested defects
    probe = sim.Probe(energy_keV=float(rng.choice([60.0, 80.0, 100.0, 200.0, 300.0])),
                      semiangle_mrad=float(rng.uniform(18, 35)), defocus_A=float(rng.normal(0, 15)),
                      source_fwhm_A=float(rng.uniform(0.0, 0.9)))
    scan = sim.ScanSettings(jitter_px=float(rng.uniform(0, 0.6)) if rng.random() < 0.5 else 0.0,
                            dwell_us=1.0, drift_nm_per_s=tuple(rng.normal(0, 1.0, 2) * px_A / 10.0 / 0.016))
    img = sim.render_haadf(s, (size_px, size_px), px_A / 10.0, probe=probe, scan=scan, seed=rng, progress=False)
    signal = img.clean.astype(np.float32)
    if rng.random() < 0.4:  # amorphous contamination / carbon support: smooth random background
        field = ndimage.gaussian_filter(rng.normal(size=(size_px, size_px)), rng.uniform(2, 10) * period_px / 10)
        field = (field - field.min()) / (np.ptp(field) + 1e-12)
        signal = signal + float(rng.uniform(0.05, 0.6) * signal.mean()) * field.astype(np.float32)
    t = img.truth
    xy = t.xy[t.occupied]
    nearest = mat.nearest_column_distance_A / px_A
    target = column_mask(xy, (size_px, size_px), max(1.2, 0.2 * nearest))
    return TrainingSample(signal=signal, target=target, pixel_area_A2=px_A**2, xy=xy)


def noisy_counts(sample: TrainingSample, rng: np.random.Generator, dose_range=(1e3, 1e6)) -> np.ndarray:
    """Draw a noisy image of ``sample`` at a random dose, gain, offset and read noise."""
    dose = float(np.exp(rng.uniform(np.log(dose_range[0]), np.log(dose_range[1]))))
    counts = rng.poisson(sample.signal.astype(np.float64) * dose * sample.pixel_area_A2).astype(np.float32)
    if rng.random() < 0.3:
        counts = counts + rng.normal(0, rng.uniform(0.1, 2.0), counts.shape).astype(np.float32)
    gain = float(np.exp(rng.uniform(-3, 3)))
    return counts * gain + float(rng.uniform(-50, 50)) * gain


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Robust standardisation the U-Net expects: median 0, 0.5-99.5 percentile range ~ 1."""
    img = np.asarray(image, dtype=np.float32)
    lo, med, hi = np.percentile(img, [0.5, 50.0, 99.5])
    scale = float(hi - lo)
    if scale <= 0:
        scale = float(img.std()) or 1.0
    return ((img - med) / scale).astype(np.float32)
