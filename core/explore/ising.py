"""Lattice-model fitting: Ising-type pair interactions of two species on a square lattice,
learned from one observed configuration (Vlcek et al., ACS Nano 13, 718 (2019)).

Model (energies in units of kT, species as spins ``s = +1`` (B) / ``-1`` (A))::

    E = -J1 sum_<ij> s_i s_j  -  J2 sum_<<ij>> s_i s_j  -  h sum_i s_i

(<ij>: nearest neighbours, <<ij>>: next-nearest (diagonal) neighbours, periodic boundaries).

Fit: the statistical distance ``arccos(sum sqrt(p q))`` (Wootters) between the observed
histogram of site neighbourhoods (own species x like nearest neighbours x like next-nearest
neighbours: 2 x 5 x 5 bins) and the mean histogram of Monte Carlo configurations of the model is
minimised over (J1, J2, h) by Nelder-Mead. The Monte Carlo (Metropolis on the four independent
sublattices ``(i % 2, j % 2)``, vectorised) starts from the observed configuration and uses the
same random numbers at every evaluation, so the objective is smooth enough for the simplex.
The simplex starts from the pseudo-likelihood estimate (logistic regression of each spin on its
neighbour sums, consistent for this model), which is also returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _neighbour_sums(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n1 = np.roll(s, 1, 0) + np.roll(s, -1, 0) + np.roll(s, 1, 1) + np.roll(s, -1, 1)
    n2 = (np.roll(np.roll(s, 1, 0), 1, 1) + np.roll(np.roll(s, 1, 0), -1, 1)
          + np.roll(np.roll(s, -1, 0), 1, 1) + np.roll(np.roll(s, -1, 0), -1, 1))
    return n1, n2


def _check_config(config: np.ndarray) -> np.ndarray:
    c = np.asarray(config)
    if c.ndim != 2 or c.shape[0] % 2 or c.shape[1] % 2 or min(c.shape) < 4:
        raise ValueError(f"config must be a 2D array with even sides >= 4; got shape {c.shape}")
    vals = np.unique(c)
    if not set(vals.tolist()) <= {0, 1, -1}:
        raise ValueError("config must hold two species as 0/1 or -1/+1")
    return np.where(c > 0, 1, -1).astype(np.int8)


def neighbourhood_histogram(config: np.ndarray) -> np.ndarray:
    """(50,) normalised histogram of (species, like nearest neighbours 0-4, like next-nearest 0-4).

    Args:
        config: (L1, L2) two species as 0/1 or -1/+1 (even sides, periodic).
    """
    s = _check_config(config).astype(np.int16)
    n1, n2 = _neighbour_sums(s)
    like1 = (4 + s * n1) // 2  # number of like nearest neighbours
    like2 = (4 + s * n2) // 2
    idx = ((s > 0).astype(int) * 25 + like1 * 5 + like2).ravel()
    h = np.bincount(idx, minlength=50).astype(float)
    return h / h.sum()


def statistical_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Wootters' statistical distance ``arccos(sum sqrt(p q))`` between two histograms (radians)."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    return float(np.arccos(np.clip(np.sum(np.sqrt(p * q)), 0.0, 1.0)))


def monte_carlo(J1: float, J2: float, h: float = 0.0, *, shape: tuple[int, int] = (64, 64),
                sweeps: int = 200, start: np.ndarray | None = None, sample_every: int = 0,
                seed: int | np.random.Generator | None = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Metropolis Monte Carlo of the model (energies in kT), vectorised over four sublattices.

    Args:
        J1, J2, h: nearest, next-nearest pair interaction and field (kT).
        shape: lattice shape (even sides) when ``start`` is None (random start).
        sweeps: full-lattice sweeps.
        start: initial configuration (0/1 or -1/+1).
        sample_every: keep a copy every this many sweeps (0: none).
        seed: random seed or Generator.

    Returns:
        (final configuration as -1/+1 int8, list of sampled configurations).
    """
    rng = np.random.default_rng(seed)
    if start is None:
        if shape[0] % 2 or shape[1] % 2:
            raise ValueError(f"shape={shape} must have even sides")
        s = np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8)
    else:
        s = _check_config(start).copy()
    L1, L2 = s.shape
    masks = []
    for a in (0, 1):
        for b in (0, 1):
            m = np.zeros((L1, L2), bool)
            m[a::2, b::2] = True
            masks.append(m)
    samples: list[np.ndarray] = []
    sf = s.astype(np.float64)
    for k in range(int(sweeps)):
        u = rng.random((4, L1, L2))
        for c, m in enumerate(masks):
            n1, n2 = _neighbour_sums(sf)
            dE = 2.0 * sf * (J1 * n1 + J2 * n2 + h)  # energy change of flipping each site
            flip = m & (u[c] < np.exp(-np.maximum(dE, 0.0)))
            sf[flip] *= -1.0
        if sample_every and (k + 1) % int(sample_every) == 0:
            samples.append(sf.astype(np.int8))
    return sf.astype(np.int8), samples


def pseudo_likelihood_fit(config: np.ndarray) -> tuple[float, float, float]:
    """(J1, J2, h) in kT by maximum pseudo-likelihood: ``P(s_i | rest) = sigmoid(2 s_i (J1 n1 + J2 n2 + h))``."""
    from scipy.optimize import minimize

    s = _check_config(config).astype(np.float64)
    n1, n2 = _neighbour_sums(s)
    F = np.stack([n1.ravel(), n2.ravel(), np.ones(s.size)], 1)
    t = s.ravel()

    def nll(w):
        z = 2.0 * t * (F @ w)
        return float(np.sum(np.logaddexp(0.0, -z)))

    def grad(w):
        z = 2.0 * t * (F @ w)
        g = -1.0 / (1.0 + np.exp(z))  # d/dz log(1+exp(-z))
        return F.T @ (g * 2.0 * t)

    r = minimize(nll, np.zeros(3), jac=grad, method="L-BFGS-B")
    return float(r.x[0]), float(r.x[1]), float(r.x[2])


@dataclass(frozen=True)
class LatticeModelFit:
    """Fitted pair interactions.

    Attributes:
        J1, J2, h: fitted nearest, next-nearest interaction and field, kT.
        distance: final statistical distance between observed and model histograms (rad).
        start: (J1, J2, h) pseudo-likelihood start.
        evaluations: Monte Carlo evaluations of the objective.
        observed_histogram, model_histogram: (50,) histograms.
    """

    J1: float
    J2: float
    h: float
    distance: float
    start: tuple[float, float, float]
    evaluations: int
    observed_histogram: np.ndarray
    model_histogram: np.ndarray

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return {"J1": self.J1, "J2": self.J2, "h": self.h, "distance": self.distance, "start": self.start,
                "evaluations": self.evaluations, "observed_histogram": self.observed_histogram,
                "model_histogram": self.model_histogram}


def fit_lattice_model(config: np.ndarray, *, burn_sweeps: int = 30, sample_sweeps: int = 120,
                      sample_every: int = 4, max_evaluations: int = 60, seed: int = 0) -> LatticeModelFit:
    """Fit (J1, J2, h) in kT to an observed two-species configuration (see the module docstring).

    Args:
        config: (L1, L2) species as 0/1 or -1/+1 on a square lattice (even sides, periodic).
        burn_sweeps: Monte Carlo sweeps from the observed configuration before sampling.
        sample_sweeps: sweeps over which histograms are averaged.
        sample_every: sweeps between sampled configurations.
        max_evaluations: Nelder-Mead objective evaluations.
        seed: the Monte Carlo random numbers (the same at every evaluation).

    Returns:
        :class:`LatticeModelFit`.
    """
    from scipy.optimize import minimize

    s0 = _check_config(config)
    target = neighbourhood_histogram(s0)
    start = pseudo_likelihood_fit(s0)
    cache: dict[tuple, tuple[float, np.ndarray]] = {}

    def model_hist(p: np.ndarray) -> np.ndarray:
        _, samples = monte_carlo(float(p[0]), float(p[1]), float(p[2]), start=s0,
                                 sweeps=int(burn_sweeps) + int(sample_sweeps), sample_every=int(sample_every),
                                 seed=seed)
        keep = samples[int(burn_sweeps) // int(sample_every):]
        return np.mean([neighbourhood_histogram(c) for c in keep], 0)

    def objective(p: np.ndarray) -> float:
        key = tuple(np.round(p, 6))
        if key not in cache:
            hist = model_hist(p)
            cache[key] = (statistical_distance(target, hist), hist)
        return cache[key][0]

    x0 = np.asarray(start)
    step = np.maximum(0.1 * np.abs(x0), 0.02)
    simplex = np.vstack([x0] + [x0 + np.eye(3)[k] * step[k] for k in range(3)])
    minimize(objective, x0, method="Nelder-Mead",
             options={"initial_simplex": simplex, "maxfev": int(max_evaluations), "xatol": 1e-3, "fatol": 1e-7})
    best = min(cache.items(), key=lambda kv: kv[1][0])
    p = np.asarray(best[0])
    return LatticeModelFit(J1=float(p[0]), J2=float(p[1]), h=float(p[2]), distance=float(best[1][0]),
                           start=start, evaluations=len(cache), observed_histogram=target,
                           model_histogram=best[1][1])
