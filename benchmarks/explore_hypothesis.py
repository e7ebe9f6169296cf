"""Hypothesis learning: how often the generating phase-transition model is chosen within 50 points.

For each seed and each of the two forms in ``PHASE_TRANSITION_MODELS`` (second order
``a (1 - x/Tc)^beta``; first order: sloped jump), the generating parameters are drawn uniformly
in the inner ``1 - 2 margin`` of each prior box and the Gaussian noise sd uniformly in
0.02-0.08; 150 candidate temperatures in [0, 1]. Printed: per run the chosen model and scores,
then the fraction of runs (per generating model and overall) that pick the generating model.

Run: ``PYTHONPATH=. python benchmarks/explore_hypothesis.py [--seeds 20] [--margin 0.1]
[--design discrimination|bandit] [--evidence laplace|bic]``. A discrimination run takes ~5-20 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import jax.numpy as jnp

    from atomsmith.explore import PHASE_TRANSITION_MODELS, hypothesis_learning

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--design", default="discrimination")
    ap.add_argument("--evidence", default="laplace")
    a = ap.parse_args()
    X = np.linspace(0, 1, 150)[:, None].astype(np.float32)
    ok = {0: [], 1: []}
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for true in (0, 1):
            rng = np.random.default_rng(1000 * true + seed)
            h = PHASE_TRANSITION_MODELS[true]
            p = {k: jnp.float32(rng.uniform(lo + a.margin * (hi - lo), hi - a.margin * (hi - lo)))
                 for k, (lo, hi) in h.bounds.items()}
            noise = rng.uniform(0.02, 0.08)
            y = np.asarray(h.mean_fn(jnp.asarray(X), p))
            t = time.perf_counter()
            r = hypothesis_learning(X, lambda i, y=y, rng=rng, noise=noise: float(y[i] + rng.normal(0, noise)), budget=a.budget, seed=seed,
                                    design=a.design, evidence=a.evidence)
            ok[true].append(r.chosen == true)
            print(f"seed {seed} true={h.name!r:15} chosen={r.chosen_name!r:15} scores={np.round(r.scores, 1)} "
                  f"params={ {k: round(float(v), 3) for k, v in p.items()} } noise={noise:.3f} "
                  f"{time.perf_counter() - t:.1f}s", flush=True)
    for k, h in enumerate(PHASE_TRANSITION_MODELS):
        print(f"{h.name} generates: {sum(ok[k])}/{len(ok[k])}")
    n = len(ok[0]) + len(ok[1])
    print(f"overall: {sum(ok[0]) + sum(ok[1])}/{n} = {(sum(ok[0]) + sum(ok[1])) / n:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
