"""Atom-finding accuracy: atomsmith vs atomap on multislice and twin images across doses.

For every image: match found columns one-to-one with the truth within 0.35 x the
nearest-neighbour distance (scoring only columns at least half that distance from the border)
and print precision, recall, F1, the recall of the light columns (C, B, N, S/S2, O), the RMS
position error in pm, and that error divided by the Cramér-Rao bound of the dose (computed from
the noise-free expected counts, see atomsmith.atoms.metrics.crlb_position_px). atomap
(get_atom_positions with the true separation, centre-of-mass then 2D-Gaussian refinement) runs
on the same images in the same run; the last columns are the ratios atomsmith / atomap.

Images:
  * ../shared/data/multislice/*.npz: abTEM multislice (graphene + 2 Si, hBN + vacancies,
    WS2 + Mo + partial S2) noise-free and at 2e4 and 2e5 e/A^2;
  * twin images (graphene + Si + vacancy, MoS2 + S2 vacancy + W, SrTiO3 [001] 2 nm), columns
    off the pixel grid, at 1e3, 1e4, 2e4, 2e5 and 1e6 e/A^2.

Usage: python benchmarks/atoms_accuracy.py [--quick] [--no-atomap] [--refine com|gaussian]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import atomsmith.simulate as sim
from atomsmith.atoms import find_atoms
from atomsmith.atoms.metrics import crlb_position_px, match_positions

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multislice"
LIGHT = {"C", "B", "N", "O", "S", "S2", "Se", "Se2"}


def nn_distance(xy: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def multislice_cases(quick: bool):
    light_z = {6, 5, 7, 8, 16, 32}
    for f in sorted(SHARED.glob("*.npz")):
        z = np.load(f)
        cols, zz, px_A = z["columns"], z["Z"], float(z["px_size_A"])
        light = np.isin(zz, list(light_z))
        for key, dose in [("clean", None), ("noisy_200000", 2e5), ("noisy_20000", 2e4)]:
            if quick and key == "noisy_200000":
                continue
            expected = z["clean"] * (dose or 1e6) * px_A**2
            yield f"abTEM {f.stem}", key.replace("noisy_", ""), z[key], cols, light, px_A, expected


def twin_cases(quick: bool):
    rng = np.random.default_rng(0)
    specs = []
    g = sim.build_crystal("graphene", (192 * 0.14, 192 * 0.14), rotation_deg=11, shift_A=(0.23, 0.61))
    g = sim.add_vacancies(sim.substitute(g, "Si", 2, seed=rng), 1, seed=rng)
    specs.append(("twin graphene+Si+V", g, 0.014))
    m = sim.build_crystal("MoS2", (192 * 0.2, 192 * 0.2), rotation_deg=23, shift_A=(0.37, -0.19))
    m = sim.substitute(sim.add_vacancies(m, 1, sublattice="X2", seed=rng), "W", 2, sublattice="M", seed=rng)
    specs.append(("twin MoS2+V+W", m, 0.02))
    s = sim.build_crystal("SrTiO3", (192 * 0.2, 192 * 0.2), rotation_deg=4, shift_A=(0.41, 0.13), thickness_nm=2)
    specs.append(("twin SrTiO3 2nm", s, 0.02))
    doses = [2e4, 2e5] if quick else [1e3, 1e4, 2e4, 2e5, 1e6]
    for name, st, px_nm in specs:
        clean = sim.render_haadf(st, (192, 192), px_nm)
        t = clean.truth.select(clean.truth.occupied)
        light = np.isin(t.species, list(LIGHT))
        for dose in doses:
            img = sim.render_haadf(st, (192, 192), px_nm, dose_e_per_A2=dose, seed=int(dose) % 1000)
            yield name, f"{dose:.0e}", img.image, t.xy, light, px_nm * 10, img.clean


def run_atomap(image, separation_px):
    import atomap.api as am
    import hyperspy.api as hs

    s = hs.signals.Signal2D(np.asarray(image, float))
    pos = am.get_atom_positions(s, separation=max(2, int(separation_px)))
    sub = am.Sublattice(pos, image=s.data)
    sub.find_nearest_neighbors()
    sub.refine_atom_positions_using_center_of_mass(show_progressbar=False)
    sub.refine_atom_positions_using_2d_gaussian(show_progressbar=False)
    return np.stack([sub.x_position, sub.y_position], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-atomap", action="store_true")
    ap.add_argument("--refine", default="com", choices=["com", "gaussian"])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    use_atomap = not args.no_atomap
    if use_atomap:
        try:
            import atomap.api  # noqa: F401
        except ImportError:
            print("atomap not installed (pip install 'atomsmith[bench]'): skipping the comparison")
            use_atomap = False
    hdr = (f"{'image':24s} {'dose':>7s} | {'P':>5s} {'R':>5s} {'F1':>5s} {'lightR':>6s} {'rms pm':>7s} "
           f"{'/CRLB':>6s} {'ms':>6s}")
    if use_atomap:
        hdr += f" | {'atomap F1':>9s} {'rms pm':>7s} {'s':>6s} | {'F1 ratio':>8s} {'rms ratio':>9s} {'speed x':>7s}"
    print(hdr)
    print("-" * len(hdr))
    f1_all = []
    for case in list(multislice_cases(args.quick)) + list(twin_cases(args.quick)):
        name, dose, image, true_xy, light, px_A, expected = case
        nn = nn_distance(true_xy)
        radius, border = 0.35 * nn, 0.5 * nn
        t0 = time.perf_counter()
        table = find_atoms(image, refine=args.refine)
        dt = time.perf_counter() - t0
        m = match_positions(table.xy, true_xy, radius, shape_px=image.shape, border_px=border)
        pairs = m.pairs
        matched_true = np.zeros(len(true_xy), bool)
        matched_true[pairs[:, 1]] = True
        scored = _inside(true_xy, image.shape, border)
        light_recall = matched_true[scored & light].mean() if np.any(scored & light) else np.nan
        crlb = crlb_position_px(expected, true_xy[pairs[:, 1]]).sigma_r_px
        ratio = m.rms_error_px / float(np.sqrt(np.mean(crlb**2)))
        line = (f"{name:24s} {dose:>7s} | {m.precision:5.3f} {m.recall:5.3f} {m.f1:5.3f} {light_recall:6.3f} "
                f"{m.rms_error_px * px_A * 100:7.2f} {ratio:6.2f} {dt * 1000:6.0f}")
        f1_all.append(m.f1)
        if use_atomap:
            t1 = time.perf_counter()
            try:
                axy = run_atomap(image, 0.8 * nn)
                ma = match_positions(axy, true_xy, radius, shape_px=image.shape, border_px=border)
                ta = time.perf_counter() - t1
                line += (f" | {ma.f1:9.3f} {ma.rms_error_px * px_A * 100:7.2f} {ta:6.1f} | "
                         f"{m.f1 / max(ma.f1, 1e-9):8.2f} {m.rms_error_px / max(ma.rms_error_px, 1e-9):9.2f} "
                         f"{ta / dt:7.0f}")
            except Exception as exc:  # atomap can fail on empty/noisy images
                line += f" | atomap failed: {type(exc).__name__}"
        print(line, flush=True)
    print(f"\nmedian F1 {np.median(f1_all):.3f}, min F1 {np.min(f1_all):.3f} over {len(f1_all)} images")


def _inside(xy, shape, border):
    h, w = shape
    return (xy[:, 0] >= border) & (xy[:, 0] <= w - 1 - border) & (xy[:, 1] >= border) & (xy[:, 1] <= h - 1 - border)


if __name__ == "__main__":
    main()
