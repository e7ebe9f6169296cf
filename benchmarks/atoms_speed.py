"""Atom-finding latency with its accuracy: atomsmith (find + centre of mass) vs atomap.

Frames, each timed end to end (``find_atoms(image, refine="com")``, median of repeats after one
warm-up, torch using the machine's threads) and scored against its truth in the same run (F1,
matched within 0.3 x the nearest column distance, columns one distance from the border not
scored), next to the time a 1 us-dwell scan takes to record it:

* twin MoS2 at 0.02 nm/px, 2e5 e/A^2: 256^2, 512^2 and 1024^2;
* a 512^2 two-type square lattice 11 px apart (bright and half-bright columns alternating, a
  checkerboard; Gaussian sigma 1.6 px; Poisson noise, ~400 counts on the bright peaks), drawn
  here with numpy, not by the twin (the first generic model found 4,355 columns on its ~2,100).

Then the ratios to atomap: its full pipeline (get_atom_positions + centre of mass + 2D Gaussian)
on the 256^2 frame scaled per column, and its per-atom Gaussian rate against atomsmith's batched
Gaussian refinement. On a lent GPU the U-Net runs there (torch picks CUDA). Targets (issue 16):
512^2 find + refine <= 150 ms on 2 CPU cores with F1 >= 0.98; 1024^2 within one 1 us-dwell
frame time (1.05 s).

Usage: python benchmarks/atoms_speed.py [--no-atomap] [--repeats N]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

import atomsmith.simulate as sim
from atomsmith.atoms import find_atoms
from atomsmith.atoms.refine import refine_positions


def frame(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Twin MoS2 frame and its occupied columns."""
    s = sim.build_crystal("MoS2", (n * 0.2, n * 0.2), rotation_deg=13, shift_A=(0.3, 0.1))
    fr = sim.render_haadf(s, (n, n), 0.02, dose_e_per_A2=2e5, seed=0, progress=False)
    return fr.image, fr.truth.xy[fr.truth.occupied]


def two_type_square(n: int = 512, a: float = 11.0, sigma: float = 1.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A square lattice of alternating bright / half-bright Gaussian columns (numpy only)."""
    rng = np.random.default_rng(seed)
    th = np.deg2rad(8.0)
    i, j = np.meshgrid(np.arange(-n // 4, n // 4 * 3), np.arange(-n // 4, n // 4 * 3))
    i, j = i.ravel(), j.ravel()
    x = a * (np.cos(th) * i - np.sin(th) * j) + 0.37 * a
    y = a * (np.sin(th) * i + np.cos(th) * j) + 0.61 * a
    keep = (x > -4 * sigma) & (x < n + 4 * sigma) & (y > -4 * sigma) & (y < n + 4 * sigma)
    x, y, w = x[keep], y[keep], np.where((i + j)[keep] % 2 == 0, 1.0, 0.5)
    gx = np.exp(-(np.arange(n)[None, :] - x[:, None]) ** 2 / (2 * sigma**2))
    gy = np.exp(-(np.arange(n)[None, :] - y[:, None]) ** 2 / (2 * sigma**2))
    img = (gy * w[:, None]).T @ gx
    return rng.poisson(img * 400 + 30).astype(np.float32), np.stack([x, y], 1)


def f1_score(found: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> tuple[float, int, int]:
    """(F1, found, true) within 0.3 nn, columns one nn from the border not scored."""
    nn = float(np.median(cKDTree(truth).query(truth, k=2)[0][:, 1]))
    h, w = shape

    def inside(p):
        return (p[:, 0] >= nn) & (p[:, 0] < w - nn) & (p[:, 1] >= nn) & (p[:, 1] < h - nn)

    f, t = found[inside(found)], truth[inside(truth)]
    if len(f) == 0 or len(t) == 0:
        return 0.0, len(f), len(t)
    pairs = cKDTree(f).sparse_distance_matrix(cKDTree(t), 0.3 * nn, output_type="coo_matrix")
    cost = np.full((len(f), len(t)), 1e6)
    cost[pairs.row, pairs.col] = pairs.data
    r, c = linear_sum_assignment(cost)
    tp = int(np.sum(cost[r, c] < 1e6))
    return 2 * tp / (len(f) + len(t)), len(f), len(t)


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
    print(f"{'frame':>22s} {'columns':>8s} {'true':>6s} {'F1':>6s} {'find+CoM ms':>12s} "
          f"{'frame time @1us ms':>19s} {'keeps up':>9s} {'quality':>8s}")
    per_column = {}
    cases = [(f"twin MoS2 {n}^2", n, *frame(n)) for n in (256, 512, 1024)]
    cases.insert(2, ("two-type square 512^2", 512, *two_type_square()))
    for name, n, img, truth in cases:
        table = find_atoms(img, refine="com")
        f1, n_found, n_true = f1_score(table.xy, truth, img.shape)
        dt = timed(lambda img=img: find_atoms(img, refine="com"), args.repeats)
        ft = n * n * 1e-6
        if name.startswith("twin"):
            per_column[n] = dt / max(len(table), 1)
        print(f"{name:>22s} {len(table):8d} {n_true:6d} {f1:6.3f} {dt * 1000:12.1f} {ft * 1000:19.1f} "
              f"{'yes' if dt <= ft else 'no':>9s} {'ok' if table.quality.ok else 'doubt':>8s}")
    img = frame(256)[0]
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
