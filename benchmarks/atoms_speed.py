"""Atom-finding latency: atomsmith (find + centre of mass) vs atomap, with the scan's frame time.

For 256^2, 512^2 and 1024^2 twin frames of MoS2 at 0.02 nm/px (2e5 e/A^2), prints the
end-to-end latency of ``find_atoms(image, refine="com")`` (median of repeats, after one warm-up,
torch using the machine's threads), the time a 1 us-dwell scan takes to record that frame, and
the ratios to atomap: its full pipeline (get_atom_positions + centre of mass + 2D Gaussian) on the
256^2 frame scaled per column, and its per-atom Gaussian rate against atomsmith's batched
Gaussian refinement. On a lent GPU the U-Net runs there (torch picks CUDA).

Usage: python benchmarks/atoms_speed.py [--no-atomap] [--repeats N]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import atomsmith.simulate as sim
from atomsmith.atoms import find_atoms
from atomsmith.atoms.refine import refine_positions


def frame(n: int) -> np.ndarray:
    s = sim.build_crystal("MoS2", (n * 0.2, n * 0.2), rotation_deg=13, shift_A=(0.3, 0.1))
    return sim.render_haadf(s, (n, n), 0.02, dose_e_per_A2=2e5, seed=0, progress=False).image


def timed(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-atomap", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    print(f"{'frame':>6s} {'columns':>8s} {'find+CoM ms':>12s} {'frame time @1us ms':>19s} {'keeps up':>9s}")
    per_column = {}
    for n in (256, 512, 1024):
        img = frame(n)
        table = find_atoms(img, refine="com")
        dt = timed(lambda img=img: find_atoms(img, refine="com"), args.repeats)
        ft = n * n * 1e-6
        per_column[n] = dt / max(len(table), 1)
        print(f"{n:>4d}^2 {len(table):8d} {dt * 1000:12.1f} {ft * 1000:19.1f} {'yes' if dt <= ft else 'no':>9s}")
    img = frame(256)
    table = find_atoms(img, refine="com")
    tg = timed(lambda: refine_positions(img, table.xy, method="gaussian"), args.repeats)
    gauss_rate = len(table) / tg
    print(f"batched Gaussian refinement: {gauss_rate:,.0f} columns/s ({len(table)} columns in {tg * 1000:.0f} ms)")
    if args.no_atomap:
        return
    try:
        import atomap.api as am
        import hyperspy.api as hs
    except ImportError:
        print("atomap not installed (pip install 'atomsmith[bench]'): no ratios")
        return
    s = hs.signals.Signal2D(img.astype(float))
    t0 = time.perf_counter()
    pos = am.get_atom_positions(s, separation=5)
    sub = am.Sublattice(pos, image=s.data)
    sub.find_nearest_neighbors()
    sub.refine_atom_positions_using_center_of_mass(show_progressbar=False)
    t1 = time.perf_counter()
    sub.refine_atom_positions_using_2d_gaussian(show_progressbar=False)
    t2 = time.perf_counter()
    n_at = len(pos)
    atomap_full = (t2 - t0) / n_at
    atomap_gauss_rate = n_at / (t2 - t1)
    print(f"atomap on 256^2: {n_at} columns, full pipeline {t2 - t0:.1f} s, Gaussian {atomap_gauss_rate:.0f} columns/s")
    for n, pc in per_column.items():
        print(f"  {n}^2: atomsmith find+CoM is {atomap_full / pc:.0f}x faster per column than atomap's full pipeline")
    print(f"  batched Gaussian vs atomap's per-atom Gaussian: {gauss_rate / atomap_gauss_rate:.0f}x")


if __name__ == "__main__":
    main()
