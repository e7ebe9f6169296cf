"""Defect dynamics against the twin's truth: classes (ARI), diffusion and Markov matrices with
their 95 % intervals over seeds.

1. **Classes.** Twin movies (graphene with Si / C vacancies, MoS2 with S / S2 vacancies; 160^2
   px, 0.02 nm/px, 24 frames, 2e4 e/A^2 per frame): defects found in every frame
   (``find_atoms`` + ``find_defects``), classified from 0.22 nm sub-images (PCA + GMM, number
   of classes by BIC); adjusted Rand index against the true class of the matched defects.
   Target: ARI >= 0.9.
2. **Diffusion and Markov matrices.** Trajectories of the twin's defect walks
   (``simulate_defect_walks``; MoS2 metal sites, 40 defects, 400 frames of 1 s, two classes with
   D = 0.02 and 0.005 nm^2/s and a known per-frame matrix; > 1000 hops of each class per seed), the true positions jittered by
   a 0.01 nm localisation error; ``diffusion_by_class`` and ``transition_matrix``. Targets: D
   within 10 %, matrix entries within 0.05, and the 95 % intervals covering the truth in >= 90 %
   of seeds.

Run: ``python benchmarks/dynamics_accuracy.py [--seeds 20] [--movies 3]`` (~2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def classes_part(n_movies: int) -> list[float]:
    from sklearn.metrics import adjusted_rand_score

    from atomsmith.atoms.metrics import match_positions
    from atomsmith.dynamics import analyse_movie
    from atomsmith.simulate.movie import simulate_movie

    aris = []
    for k in range(n_movies):
        mat = ("graphene", "MoS2")[k % 2]
        mv = simulate_movie(mat, n_frames=24, shape_px=(160, 160), pixel_size_nm=0.02, n_defects=4,
                            dose_e_per_A2=2e4, seed=10 + k, progress=False)
        t0 = time.perf_counter()
        res = analyse_movie(mv.frames, mv.frame_time_s, mv.pixel_size_nm, progress=False)
        found, true, rec = [], [], []
        for t, p in enumerate(res.positions):
            m = match_positions(p, mv.positions_px[:, t], 3.0)
            rec.append(m.recall)
            found += [res.labels[t][i] for i, _ in m.pairs]
            true += [mv.classes[j, t] for _, j in m.pairs]
        ari = adjusted_rand_score(true, found)
        aris.append(ari)
        print(f"  {mat:8s} seed {10 + k}: {res.classes.n_classes} classes (truth {len(mv.class_names)}: "
              f"{', '.join(mv.class_names)}), ARI {ari:.3f}, defect recall {np.mean(rec):.2f}, "
              f"{time.perf_counter() - t0:.1f} s")
    return aris


def walks_part(n_seeds: int) -> tuple[int, int, int, int, int]:
    from atomsmith.dynamics import diffusion_by_class, transition_matrix
    from atomsmith.simulate.movie import simulate_defect_walks

    p = np.array([[0.95, 0.05], [0.10, 0.90]])
    d = np.array([0.02, 0.005])
    px, dt, nt, n_def = 0.01, 1.0, 400, 40
    d_close = d_cover = m_close = m_cover = m_total = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        start = rng.uniform(0, 600, (n_def, 2))
        pos_A, _, cls, hop_A = simulate_defect_walks("MoS2", nt, dt, start, np.zeros(n_def, int), p, d, ("M",),
                                                     seed=seed)
        pos_px = pos_A / 10 / px + rng.normal(0, 1.0, pos_A.shape)  # 0.01 nm localisation error
        tracks = [np.column_stack([np.arange(nt), q]) for q in pos_px]
        tm = transition_matrix(list(cls), 2)
        res = diffusion_by_class(tracks, list(cls), 2, dt, px, n_boot=300, seed=seed)
        for k in range(2):
            d_close += abs(res[k].D_nm2_per_s / d[k] - 1) < 0.1
            d_cover += res[k].ci_low <= d[k] <= res[k].ci_high
        m_close += np.max(np.abs(tm.matrix - p)) < 0.05
        m_cover += int(np.sum((tm.ci_low <= p) & (p <= tm.ci_high)))
        m_total += p.size
        if seed == 0:
            moved = np.hypot(*np.diff(pos_A, axis=1).T).T > 0.5 * hop_A
            hops = [int(moved[cls[:, :-1] == k].sum()) for k in range(2)]
            print(f"  seed 0: {int(tm.counts.sum())} transitions, frames with a hop per class {hops}; D = {res[0].D_nm2_per_s:.4f} "
                  f"[{res[0].ci_low:.4f}, {res[0].ci_high:.4f}] and {res[1].D_nm2_per_s:.4f} "
                  f"[{res[1].ci_low:.4f}, {res[1].ci_high:.4f}] nm^2/s (truth {d[0]}, {d[1]}); "
                  f"matrix {np.round(tm.matrix, 3).tolist()} (truth {p.tolist()})")
    return d_close, d_cover, m_close, m_cover, m_total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--movies", type=int, default=4)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    print("1. defect classes on twin movies (2e4 e/A^2 per frame):")
    aris = classes_part(args.movies)
    print(f"   ARI: min {min(aris):.3f}, median {np.median(aris):.3f}; target >= 0.9: "
          f"{'PASS' if min(aris) >= 0.9 else 'FAIL'}")
    print(f"2. diffusion and Markov matrix over {args.seeds} seeds of twin defect walks:")
    dc, dcov, mc, mcov, mt = walks_part(args.seeds)
    n = 2 * args.seeds
    print(f"   D within 10 %: {dc}/{n}; 95 % intervals cover the truth: {dcov}/{n} "
          f"({'PASS' if dc >= 0.9 * n and dcov >= 0.9 * n else 'FAIL'})")
    print(f"   matrix entries within 0.05: {mc}/{args.seeds} seeds; intervals cover: {mcov}/{mt} entries "
          f"({'PASS' if mc == args.seeds and mcov >= 0.9 * mt else 'FAIL'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
