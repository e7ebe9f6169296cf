"""4D-STEM field maps on independent data: atomsmith.fourd on abTEM multislice 4D-STEM.

For MoS2 (an exact periodic supercell, built as in ``twin_vs_abtem.py``) abTEM simulates a
4D-STEM scan with a pixelated detector (multislice, 60 kV, 30 mrad, Lobato potentials, no
noise). atomsmith reduces it: centre of mass -> projected electric field -> charge density
(div E) and projected potential (Fourier integration). The reference is the twin's ground truth
for the same sample, probe and scan grid (``simulate_4dstem(...).truth``: the probe-averaged
field, charge and potential of the twin's own potential model), so the comparison
spans two independent forward models (abTEM multislice with Lobato potentials vs the twin's
thin phase object) and tests the reduction on data it was not built on.

Printed: Pearson r of each map against the reference and the amplitude ratio (std abTEM-derived
/ std reference). The amplitude ratio measures the twin's potential model against abTEM's Lobato
potentials (the twin's smooth 3-Gaussian atoms with integral 20 Z^0.6 V A^3 are weaker and
smoother), not the reduction. Target (issue): r >= 0.95 for field, charge and potential. The same reduction
on the twin's own 4D data is printed alongside (its upper bound).

Run: ``python benchmarks/fourd_accuracy.py [--scan 16] [--reps 3 2]`` (~1 min on 2 cores).
Needs the ``bench`` extra (abtem, ase). Note: abtem >= 1.0.11 needs zarr >= 3.1 and pyxem 0.21
needs zarr < 3, so run this in an environment without the ``hyperspy`` extra's pyxem, or accept
pip's warning; pyxem is not used here.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_R = 0.95


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=16, help="probe positions per cell side of the supercell scan")
    ap.add_argument("--reps", type=int, nargs=2, default=[3, 2], help="supercell repeats (x, y)")
    ap.add_argument("--detector-mrad", type=float, default=60.0, help="half-width of the pixelated detector")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import abtem
    from twin_vs_abtem import A_MOS2, Case, abtem_atoms, make_periodic

    from atomsmith.fourd import center_of_mass, charge_density, com_to_field, projected_potential
    from atomsmith.simulate import build_crystal, simulate_4dstem
    from atomsmith.simulate.probe import Probe

    abtem.config.set({"diagnostics.progress_bar": False})
    case = Case("MoS2", "MoS2", (A_MOS2, A_MOS2 * np.sqrt(3)), tuple(args.reps), "Mo")
    w, h = case.cell_A[0] * case.reps[0], case.cell_A[1] * case.reps[1]
    s = make_periodic(build_crystal(case.material, (w, h)), w, h)
    atoms = abtem_atoms(s, w, h)
    n = args.scan
    step_x = w / (n * case.reps[0])
    nx, ny = n * case.reps[0], int(round(h / step_x))
    step = step_x
    print(f"MoS2 {case.reps[0]}x{case.reps[1]} cells ({w:.2f} x {h:.2f} A, {len(atoms)} atoms); scan {ny} x {nx} "
          f"at {step:.3f} A; 60 kV, 30 mrad; abtem {abtem.__version__}")
    t0 = time.perf_counter()
    pot = abtem.Potential(atoms, sampling=0.05, slice_thickness=1.0, parametrization="lobato", projection="infinite")
    probe = abtem.Probe(energy=60e3, semiangle_cutoff=30.0, defocus=0.0, Cs=0.0)
    probe.grid.match(pot)
    scan = abtem.GridScan(start=(0.0, 0.0), end=(nx * step, ny * step), gpts=(nx, ny), endpoint=False)
    det = abtem.PixelatedDetector(max_angle=args.detector_mrad)
    meas = probe.scan(pot, scan=scan, detectors=det).compute()
    data = np.asarray(meas.array, np.float32).transpose(1, 0, 3, 2)  # [x, y, kx, ky] -> [y, x, ky, kx]
    sampling = np.asarray(meas.angular_sampling, float)  # (kx, ky) mrad per pixel: the cell is not square
    mrad_per_px = sampling[::-1]  # (qy, qx) order after the transpose
    qy, qx = data.shape[-2:]
    t_abtem = time.perf_counter() - t0
    print(f"abTEM 4D-STEM {data.shape}, {sampling[0]:.3f} x {sampling[1]:.3f} mrad/px: {t_abtem:.1f} s")

    twin = simulate_4dstem(s, (ny, nx), step / 10.0, origin_nm=(0.0, 0.0), probe=Probe(semiangle_mrad=30.0),
                           detector_pixels=64, max_angle_mrad=args.detector_mrad, dose_e_per_A2=None,
                           progress=False)
    truth = twin.truth

    def reduce(d: np.ndarray, center: tuple[float, float], mpp) -> dict:
        t = time.perf_counter()
        com = center_of_mass(d, center_px=center) * np.asarray(mpp, float)[::-1]  # px -> mrad per axis (x, y)
        field = com_to_field(com, 60.0)
        out = {"field": field, "charge": charge_density(field, step), "potential": projected_potential(field, step)}
        out["seconds"] = time.perf_counter() - t
        return out

    ab = reduce(data, (qy // 2, qx // 2), mrad_per_px)
    tw = reduce(twin.data, twin.center_px, (twin.mrad_per_px, twin.mrad_per_px))
    ref = {"field": truth.field_probe_V, "charge": truth.charge_probe_V_per_A2,
           "potential": truth.potential_probe_V_A}
    print(f"\n{'map':>10} {'r (abTEM)':>10} {'amplitude':>10} {'r (twin)':>9}  target r >= {TARGET_R}")
    ok = True
    for k in ("field", "charge", "potential"):
        r_ab, r_tw = _r(ab[k], ref[k]), _r(tw[k], ref[k])
        amp = float(np.std(ab[k]) / np.std(ref[k]))
        ok &= r_ab >= TARGET_R
        print(f"{k:>10} {r_ab:>10.3f} {amp:>10.2f} {r_tw:>9.3f}  {'PASS' if r_ab >= TARGET_R else 'FAIL'}")
    print(f"\natomsmith reduction of the abTEM data: {ab['seconds'] * 1e3:.0f} ms; overall: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
