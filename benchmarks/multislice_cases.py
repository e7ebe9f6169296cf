"""abTEM multislice HAADF images with ground truth, for ``benchmarks/atoms_accuracy.py``.

The three structures of the accuracy issue, built exactly as in ``twin_vs_abtem.py`` (an
orthogonal periodic supercell of the lattice, defects placed by atomsmith's defect functions,
the atoms inside the cell handed to abTEM in a periodic ``ase.Atoms``):

* ``graphene+Si+V``: graphene 8 x 4 orthogonal cells with one Si substitution and one C vacancy;
* ``MoS2+VS2+W``: MoS2 7 x 4 cells with one empty S2 column and one W on a Mo site;
* ``SrTiO3[001] 2nm``: SrTiO3 [001], 6 x 6 cells, 2 nm (5 cells) thick.

All at 60 kV, 30 mrad, HAADF 80-200 mrad, no aberrations, static lattice (no frozen phonons),
Lobato potentials on a ~0.04 A grid with a whole number of points per lattice cell, 1 A slices,
PRISM with interpolation 1 (the exact S-matrix form of multislice; see ``twin_vs_abtem.py``).

Scan: the HAADF signal as a function of probe position is a trigonometric polynomial whose
frequencies lie on the reciprocal lattice of the periodic cell and within about
``2 alpha / lambda`` (it is a sum over pairs of the S-matrix's plane waves, which end just
beyond the aperture: abTEM's spectrum reaches ~1.05 x 2 alpha / lambda). So abTEM scans the
whole cell on a grid of 0.85 x ``lambda / (4 alpha)`` (0.34 A at 60 kV; 2900-4600 positions
per structure, 5-7x fewer than the image has pixels) and the image is evaluated exactly from
that scan's Fourier series on the benchmark's pixel grid: square pixels of 0.13-0.16 A,
incommensurate with the lattice, pixel (0, 0) at a sub-pixel offset from the lattice origin, so
columns sit at all sub-pixel phases and none on the pixel grid. The result agrees with scanning
the fine grid directly to 1e-6 of the image maximum (checked on a 3 x 2 graphene cell).

The image is abTEM's detected intensity, the fraction of the incident probe scattered into the
detector (a 0-300 mrad detector sums to 1.000); expected counts per pixel are
``clean * dose * px_A**2``. Truth: every occupied column of the atomsmith ``Structure`` (the
periodic images included) within one nearest-neighbour distance of the image, in pixels.

Noise-free images are cached in ``benchmarks/.cache/<name>_<hash>.npz``; the hash covers every
simulation parameter, the atoms handed to abTEM and the abTEM version. ``quick=True`` uses
smaller fields (6 x 4, 5 x 3 and 4 x 4 cells) and PRISM interpolation 2 (deviations of ~1-2 %
of the image maximum from interpolation 1), cached separately.

Simulation time measured on the 2-core machine shared with another job: 256 s in all
(graphene 36 s, MoS2 103 s, SrTiO3 117 s); quick 32 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from twin_vs_abtem import CASES, Case, abtem_atoms, make_periodic, potential_gpts

from atomsmith.simulate import Structure, add_vacancies, build_crystal, choose_sites, wavelength_A

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CACHE_VERSION = 1
SEMIANGLE_MRAD = 30.0
DETECTOR_MRAD = (80.0, 200.0)
POTENTIAL_SAMPLING_A = 0.04
#: coarse scan step as a fraction of the Nyquist step lambda / (4 alpha) of the HAADF signal
COARSE_FRACTION = 0.85
#: Fourier coefficients of the scan kept up to this factor x 2 alpha / lambda: abTEM's discrete
#: set of plane waves reaches slightly beyond the nominal aperture (content up to ~1.05 x)
BAND_FACTOR = 1.1
#: light columns for the light-column recall (O-only columns in SrTiO3; TiO columns are not light)
LIGHT_SPECIES = frozenset({"C", "S", "S2", "O"})


def _graphene_vacancy(s: Structure) -> Structure:
    """One empty C column, at least 4 A from the Si substitution and 4 A inside the field."""
    avoid = s.xy_A[s.label != "lattice"]
    idx = choose_sites(s, 1, edge_margin_A=4.0, min_separation_A=4.0, avoid=avoid, seed=4)
    return add_vacancies(s, indices=idx)


@dataclass(frozen=True)
class Spec:
    """One benchmark structure: the periodic case, the pixel size and the sub-pixel origin."""

    case: Case
    px_A: float
    offset_px: tuple[float, float]  # (x, y) of pixel (0, 0) in the cell frame, in pixels


_GR, _MOS2, _STO = CASES
SPECS = [
    Spec(dataclasses.replace(_GR, name="graphene+Si+V", reps=(8, 4),
                             defects=[*_GR.defects, _graphene_vacancy]), 0.1317, (0.37, 0.71)),
    Spec(dataclasses.replace(_MOS2, reps=(7, 4)), 0.1523, (0.29, 0.58)),
    Spec(dataclasses.replace(_STO, reps=(6, 6)), 0.1589, (0.63, 0.21)),
]
QUICK_REPS = {"graphene+Si+V": (6, 4), "MoS2+VS2+W": (5, 3), "SrTiO3[001] 2nm": (4, 4)}


@dataclass(frozen=True, eq=False)
class MultisliceImage:
    """A noise-free abTEM image and its ground truth.

    Attributes:
        name: structure name.
        clean: (H, W) noise-free HAADF image, fraction of the incident probe per pixel position.
        xy_px: (N, 2) occupied columns (x, y) in pixels (pixel centres at integers), including
            periodic images up to one nearest-neighbour distance outside the image.
        species: (N,) column formula (``"C"``, ``"S2"``, ``"TiO"``, ...).
        light: (N,) True for light columns (:data:`LIGHT_SPECIES`).
        px_A: pixel size in angstrom.
        info: simulation details (``t_sim`` seconds, ``cached``, ``file``, grids, ...).
    """

    name: str
    clean: np.ndarray
    xy_px: np.ndarray
    species: np.ndarray
    light: np.ndarray
    px_A: float
    info: dict


def periodic_structure(case: Case) -> tuple[Structure, float, float]:
    """The case's structure with its margin made periodic, and the cell (w, h) in angstrom."""
    cw, ch = case.cell_A
    w, h = cw * case.reps[0], ch * case.reps[1]
    s = build_crystal(case.material, (w, h), thickness_nm=case.thickness_nm)
    for fn in case.defects:
        s = fn(s)
    return make_periodic(s, w, h), w, h


def nyquist_step_A(energy_keV: float) -> float:
    """Largest scan step that samples the HAADF signal without aliasing, lambda / (4 alpha)."""
    return wavelength_A(energy_keV) / (4 * SEMIANGLE_MRAD * 1e-3)


def scan_cell(atoms, gpts: tuple[int, int], energy_keV: float, scan_gpts: tuple[int, int],
              interpolation: int) -> np.ndarray:
    """abTEM PRISM HAADF scan of the whole periodic cell on a (nx, ny) grid; returns [y, x].

    Scan position (i, j) is (j w / nx, i h / ny): the grid covers exactly one period in both
    directions (``twin_vs_abtem.run_abtem`` uses one square pixel size, which cannot tile a
    hexagonal cell in both directions).
    """
    import abtem

    w, h = atoms.cell[0, 0], atoms.cell[1, 1]
    nx, ny = scan_gpts
    pot = abtem.Potential(atoms, gpts=gpts, slice_thickness=1.0, parametrization="lobato",
                          projection="infinite")
    scan = abtem.GridScan(start=(0.0, 0.0), end=(w, h), gpts=(nx, ny), endpoint=False)
    pos = scan.get_positions()
    assert np.allclose(pos[:, 0, 0], np.arange(nx) * w / nx, atol=1e-4)
    assert np.allclose(pos[0, :, 1], np.arange(ny) * h / ny, atol=1e-4)
    det = abtem.AnnularDetector(inner=DETECTOR_MRAD[0], outer=DETECTOR_MRAD[1])
    sm = abtem.SMatrix(potential=pot, energy=energy_keV * 1e3, semiangle_cutoff=SEMIANGLE_MRAD,
                       interpolation=interpolation)
    arr = np.asarray(sm.scan(scan=scan, detectors=det).compute().array, dtype=np.float64)
    assert arr.shape == (nx, ny), arr.shape
    return arr.T


def fourier_resample(coarse: np.ndarray, period_A: tuple[float, float], x_A: np.ndarray,
                     y_A: np.ndarray, band_inv_A: float) -> np.ndarray:
    """Evaluate a periodic band-limited image, sampled on one full period, at any (x, y) grid.

    ``coarse[i, j]`` is the signal at (j w / nx, i h / ny). Its Fourier coefficients beyond
    ``band_inv_A`` (1/A) are set to zero (they are round-off when the sampling is fine enough).
    Returns ``f(x_A[j], y_A[i])`` as an (len(y_A), len(x_A)) array.
    """
    ny, nx = coarse.shape
    w, h = period_A
    coef = np.fft.fft2(coarse) / (nx * ny)
    qx = np.fft.fftfreq(nx, 1.0 / nx) / w
    qy = np.fft.fftfreq(ny, 1.0 / ny) / h
    coef = coef * (np.hypot(qx[None, :], qy[:, None]) <= band_inv_A)
    ex = np.exp(2j * np.pi * np.outer(x_A, qx))
    ey = np.exp(2j * np.pi * np.outer(y_A, qy))
    return (ey @ coef @ ex.T).real


def _cache_key(params: dict, atoms) -> str:
    h = hashlib.sha1(json.dumps(params, sort_keys=True).encode())
    h.update(np.round(atoms.positions, 6).tobytes())
    h.update(np.asarray(atoms.numbers, np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.cell), 6).tobytes())
    return h.hexdigest()[:12]


def simulate(spec: Spec, *, quick: bool = False, use_cache: bool = True,
             cache_dir: Path = CACHE_DIR) -> MultisliceImage:
    """The noise-free image of one structure (from the cache when it holds it) and its truth."""
    import abtem

    case = spec.case
    if quick:
        case = dataclasses.replace(case, reps=QUICK_REPS[case.name])
    interpolation = 2 if quick else 1
    s, w, h = periodic_structure(case)
    atoms = abtem_atoms(s, w, h)
    gpts = potential_gpts(case.cell_A, case.reps, POTENTIAL_SAMPLING_A)
    step = COARSE_FRACTION * nyquist_step_A(case.energy_keV)
    scan_gpts = (int(np.ceil(w / step)), int(np.ceil(h / step)))
    px = spec.px_A
    shape = (int(np.floor(h / px)), int(np.floor(w / px)))
    off_A = np.asarray(spec.offset_px) * px
    params = {"version": CACHE_VERSION, "abtem": abtem.__version__, "name": case.name,
              "material": case.material, "reps": list(case.reps), "cell_A": list(case.cell_A),
              "energy_keV": case.energy_keV, "thickness_nm": case.thickness_nm,
              "semiangle_mrad": SEMIANGLE_MRAD, "detector_mrad": list(DETECTOR_MRAD),
              "gpts": list(gpts), "scan_gpts": list(scan_gpts), "interpolation": interpolation,
              "px_A": px, "offset_px": list(spec.offset_px), "shape": list(shape)}
    slug = re.sub(r"[^A-Za-z0-9]+", "_", case.name).strip("_")
    path = cache_dir / f"{slug}_{_cache_key(params, atoms)}.npz"

    if use_cache and path.exists():
        z = np.load(path)
        clean, coarse, t_sim, cached = z["clean"], z["coarse"], float(z["t_sim"]), True
    else:
        abtem.config.set({"diagnostics.progress_bar": False})
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*overspecified.*")
            coarse = scan_cell(atoms, gpts, case.energy_keV, scan_gpts, interpolation)
        x_A = off_A[0] + px * np.arange(shape[1])
        y_A = off_A[1] + px * np.arange(shape[0])
        band = BAND_FACTOR * 2 * SEMIANGLE_MRAD * 1e-3 / wavelength_A(case.energy_keV)
        clean = fourier_resample(coarse, (w, h), x_A, y_A, band)
        t_sim, cached = time.perf_counter() - t0, False
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, clean=clean, coarse=coarse, t_sim=t_sim,
                            params=json.dumps(params))

    occ = s.occupied
    xy = (s.xy_A[occ] - off_A) / px
    species = s.species[occ].astype(str)
    nn_px = s.material.nearest_column_distance_A / px
    keep = ((xy[:, 0] >= -nn_px) & (xy[:, 0] <= shape[1] - 1 + nn_px)
            & (xy[:, 1] >= -nn_px) & (xy[:, 1] <= shape[0] - 1 + nn_px))
    info = {**params, "t_sim": t_sim, "cached": cached, "file": str(path), "atoms": len(atoms),
            "field_A": (w, h), "coarse_step_A": (w / scan_gpts[0], h / scan_gpts[1]),
            "coarse_max": float(coarse.max())}
    return MultisliceImage(case.name, clean, xy[keep], species[keep],
                           np.isin(species[keep], list(LIGHT_SPECIES)), px, info)
