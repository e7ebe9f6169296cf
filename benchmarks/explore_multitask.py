"""Multitask surrogates: held-out RMSE of a sparsely measured task, multitask against single-task.

Synthetic problem: each input is an 8 x 8 image patch (a Gaussian blob, sd 0.18 of the patch,
at a hidden position ``u`` in [0.1, 0.9]^2, plus pixel noise 0.02), flattened to 64 features and
standardised with the training statistics. Two correlated scalar properties:
``f1(u) = sin(4 u_x) + cos(5 u_y)`` and ``f2(u) = 0.8 f1(u) + 0.3 + 0.15 cos(3 u_x)`` (a part of
task 2 that task 1 does not explain); measurement noise sd 0.02. Task 1 is measured at
``--n1`` patches, task 2 at ``--n2`` other patches; the RMSE of task 2 is taken on 200 held-out
patches (noise-free truth).

Models: ``MultiTaskDKLRegressor`` (gpax viMTDKL) and ``MultiTaskGPRegressor`` (gpax MultiTaskGP)
on both tasks; the single-task references ``GPRegressor``, ``DKLRegressor`` and ``GpaxDKL``
(gpax viDKL, same SVI steps as the multitask DKL) fitted on the task-2 points alone. Printed: per seed the task-2 RMSE of each model, then the medians over the
seeds and each median's ratio to the single-task references, all measured in this run.

Run: ``PYTHONPATH=. python benchmarks/explore_multitask.py [--seeds 5]``. ~30-40 s per seed
on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

PATCH = 8


def patches(u: np.ndarray, rng: np.random.Generator, noise: float = 0.02) -> np.ndarray:
    """(n, PATCH * PATCH) flattened blob patches for hidden positions ``u`` (n, 2)."""
    yy, xx = np.mgrid[0:PATCH, 0:PATCH] / (PATCH - 1)
    P = np.exp(-((xx[None] - u[:, 0, None, None]) ** 2 + (yy[None] - u[:, 1, None, None]) ** 2)
               / (2 * 0.18 ** 2))
    return (P + noise * rng.normal(size=P.shape)).reshape(len(u), -1)


def f1(u: np.ndarray) -> np.ndarray:
    return np.sin(4 * u[:, 0]) + np.cos(5 * u[:, 1])


def f2(u: np.ndarray) -> np.ndarray:
    return 0.8 * f1(u) + 0.3 + 0.15 * np.cos(3 * u[:, 0])


def make_problem(seed: int, n1: int = 80, n2: int = 8, n_test: int = 200) -> dict:
    """Training patches of both tasks, held-out task-2 patches, all standardised by the training
    statistics."""
    rng = np.random.default_rng(seed)
    u1, u2, ut = (rng.uniform(0.1, 0.9, (n, 2)) for n in (n1, n2, n_test))
    X1, X2, Xt = patches(u1, rng), patches(u2, rng), patches(ut, rng)
    Xtr = np.vstack([X1, X2])
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    y1 = f1(u1) + 0.02 * rng.normal(size=n1)
    y2 = f2(u2) + 0.02 * rng.normal(size=n2)
    return {"X": (Xtr - mu) / sd, "y": np.r_[y1, y2], "task": np.r_[np.zeros(n1, int), np.ones(n2, int)],
            "X2": (X2 - mu) / sd, "y2": y2, "Xt": (Xt - mu) / sd, "f2t": f2(ut)}


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def main() -> None:
    from atomsmith.explore import DKLRegressor, GPRegressor
    from atomsmith.explore.gpax_models import GpaxDKL
    from atomsmith.explore.multitask import MultiTaskDKLRegressor, MultiTaskGPRegressor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--n1", type=int, default=80)
    ap.add_argument("--n2", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1000, help="SVI steps of MultiTaskDKLRegressor")
    ap.add_argument("--step-size", type=float, default=0.01, help="Adam step size of MultiTaskDKLRegressor")
    a = ap.parse_args()

    names = ["mtdkl", "mtgp", "gp (task 2 only)", "dkl (task 2 only)", "gpax-dkl (task 2 only)"]
    singles = names[2:]
    res: dict[str, list[float]] = {k: [] for k in names}
    secs: dict[str, list[float]] = {k: [] for k in names}
    print(f"task 1: {a.n1} patches, task 2: {a.n2} patches, {PATCH}x{PATCH} px; "
          f"task-2 RMSE on 200 held-out patches (std of f2 there ~0.55)")
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        p = make_problem(seed, a.n1, a.n2)
        models = {
            "mtdkl": lambda p=p, seed=seed: MultiTaskDKLRegressor(
                num_steps=a.steps, step_size=a.step_size, seed=seed).fit(p["X"], p["y"], p["task"]),
            "mtgp": lambda p=p, seed=seed: MultiTaskGPRegressor(seed=seed).fit(p["X"], p["y"], p["task"]),
            "gp (task 2 only)": lambda p=p, seed=seed: GPRegressor(seed=seed).fit(p["X2"], p["y2"]),
            "dkl (task 2 only)": lambda p=p, seed=seed: DKLRegressor(seed=seed).fit(p["X2"], p["y2"]),
            "gpax-dkl (task 2 only)": lambda p=p, seed=seed: GpaxDKL(
                num_steps=a.steps, step_size=a.step_size, seed=seed).fit(p["X2"], p["y2"]),
        }
        line = []
        for name, build in models.items():
            t0 = time.perf_counter()
            m = build()
            mean = m.predict(p["Xt"], task=1)[0] if name.startswith("mt") else m.predict(p["Xt"])[0]
            secs[name].append(time.perf_counter() - t0)
            res[name].append(rmse(mean, p["f2t"]))
            line.append(f"{name} {res[name][-1]:.3f}")
        print(f"seed {seed}: " + ", ".join(line), flush=True)

    med = {k: float(np.median(v)) for k, v in res.items()}
    print(f"\nmedian task-2 RMSE over {a.seeds} seeds (fit + predict time, median):")
    for k in names:
        print(f"  {k:22s} {med[k]:.3f}   ({np.median(secs[k]):.1f} s)")
    for ref in singles:
        print(f"ratio to single-task {ref.split()[0]}: "
              + ", ".join(f"{k} {med[k] / med[ref]:.3f}" for k in ("mtdkl", "mtgp")))
    best = min(singles, key=med.get)
    print(f"reference = best single-task model ({best}, {med[best]:.3f}): "
          f"mtdkl / reference = {med['mtdkl'] / med[best]:.3f}")


if __name__ == "__main__":
    main()
