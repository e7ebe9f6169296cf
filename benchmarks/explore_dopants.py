"""The instrument loop finds Si dopant columns on ``SimulatedInstrument``: DKL vs random order.

Scene per seed: graphene 3 x 3 nm with 5 Si substitutions (``substitute(..., seed=seed + 1)``),
no beam-induced swaps. ``ActiveLearner``: survey 128 x 128 px over 2.9 nm at 4 us/px;
candidates = the columns ``find_atoms`` finds (~300); features = 12 x 12 px patches; criterion =
background-subtracted Si L2,3 edge integral (``edge_map``, onset 99 eV, 40 eV window) of a 20 ms
spectrum; 5 random seeds, budget 30 points. Printed per run: candidates, Si columns among them
(< 0.05 nm from a Si atom), the number of the first measurement on a Si column (budget + 1 when
none), how many Si columns were measured, and run time; then the summary over seeds. Random
order's expectation of the first hit is (N + 1) / (K + 1) ~ 50.

Run: ``PYTHONPATH=. python benchmarks/explore_dopants.py [--seeds 5] [--budget 30] [--n-si 5]
[--models dkl,gp,random] [--exposure-ms 20] [--seed-design diverse|mixed|random]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main() -> None:
    from atomsmith.explore import ActiveLearner, EdgeIntegral
    from atomsmith.instrument import SimulatedInstrument
    from atomsmith.simulate import build_crystal, substitute

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--n-si", type=int, default=5, help="Si substitutions per scene")
    ap.add_argument("--models", default="dkl,random", help="comma-separated surrogates to compare")
    ap.add_argument("--exposure-ms", type=float, default=20.0)
    ap.add_argument("--seed-design", default="diverse", choices=["diverse", "mixed", "random"],
                    help="how the surrogates' seed points are chosen (random order stays random)")
    a = ap.parse_args()
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    si_edge = EdgeIntegral("Si", 40.0)  # onset 99 eV
    summary = {m: [] for m in models}
    for seed in range(a.seeds):
        for model in models:
            s = substitute(build_crystal("graphene", (30.0, 30.0)), "Si", a.n_si, min_separation_A=5.0, edge_margin_A=4.0,
                           seed=seed + 1)
            inst = SimulatedInstrument(s, field_nm=(3.0, 3.0), swap_cross_sections_barn={}, seed=seed)
            si = inst.sample.xy_A[inst.sample.species == "Si"] / 10
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                res = ActiveLearner(inst, si_edge, d + "/run", budget=a.budget, survey_shape_px=(128, 128),
                                    survey_fov_nm=2.9, dwell_us=4.0, candidates="atoms", patch_px=12, n_seed=5,
                                    exposure_ms=a.exposure_ms, model=model, seed=seed,
                                    seed_design=a.seed_design).run()
            cand = res.candidates_xy_nm
            on = np.min(np.hypot(*(cand[:, None] - si[None]).transpose(2, 0, 1)), axis=1) < 0.05
            hits = on[res.indices]
            first = int(np.flatnonzero(hits)[0]) + 1 if hits.any() else a.budget + 1
            summary[model].append(first)
            print(f"seed {seed} {model:6} N={len(cand)} Si columns={on.sum()} first hit={first} "
                  f"Si measured={hits.sum()} {time.perf_counter() - t:.1f}s", flush=True)
    for m, f in summary.items():
        print(f"{m}: first hits {f}, found within budget {sum(x <= a.budget for x in f)}/{len(f)}, mean {np.mean(f):.1f}")


if __name__ == "__main__":
    main()
