"""The active-learning loop over a fixed set of candidates: fit, acquire, measure, repeat.

:func:`active_learning` knows nothing about microscopes: a candidate is a row of ``features``
and ``measure(i)`` returns its scalar value. :class:`~atomsmith.explore.ActiveLearner` builds
features and ``measure`` from an :class:`~atomsmith.instrument.Instrument`.

Indexing (the DTMicroscope DKL tutorial's bug is not repeated): the acquisition is evaluated on
*all* candidates and the measured ones are masked out, so the chosen index is always an index
into ``features`` (the tutorial takes ``argmax`` over the unmeasured subset and then uses it
on the full array).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .acquisition import ACQUISITIONS, acquire, select_batch, travel_penalty


def standardize_features(features: np.ndarray) -> np.ndarray:
    """Features scaled to zero mean and unit variance per column (constant columns stay 0).

    Args:
        features: (N, d) array, one row per candidate (e.g. a flattened image patch).

    Returns:
        (N, d) float32 array.

    Raises:
        ValueError: if ``features`` is not 2D or holds NaN/inf.
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"features must be (N, d) with N, d >= 1; got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"features hold {int(np.sum(~np.isfinite(X)))} NaN/inf values")
    sd = X.std(0)
    sd[sd < 1e-12] = 1.0
    return ((X - X.mean(0)) / sd).astype(np.float32)


@dataclass(frozen=True)
class Budget:
    """When to stop: any limit reached ends the run (None: no limit of that kind).

    Attributes:
        points: total measurements, seeds included.
        time_s: wall-clock seconds since the run (or resumed run) started.
        dose_e_per_A2: peak dose anywhere on the instrument's dose map, e/A^2 (instrument runs only).
    """

    points: int | None = None
    time_s: float | None = None
    dose_e_per_A2: float | None = None

    def __post_init__(self) -> None:
        if self.points is None and self.time_s is None and self.dose_e_per_A2 is None:
            raise ValueError("a Budget needs at least one of points, time_s, dose_e_per_A2")
        if self.points is not None and int(self.points) < 1:
            raise ValueError(f"points={self.points} must be >= 1")

    @classmethod
    def coerce(cls, budget: int | Budget) -> Budget:
        """An int means ``Budget(points=budget)``."""
        if isinstance(budget, Budget):
            return budget
        if isinstance(budget, (int, np.integer)) and not isinstance(budget, bool):
            return cls(points=int(budget))
        raise TypeError(f"budget={budget!r} must be an int (points) or a Budget")

    def reached(self, n_points: int, elapsed_s: float, peak_dose_e_per_A2: float | None = None) -> bool:
        """True when any limit is reached."""
        if self.points is not None and n_points >= self.points:
            return True
        if self.time_s is not None and elapsed_s >= self.time_s:
            return True
        return (self.dose_e_per_A2 is not None and peak_dose_e_per_A2 is not None
                and peak_dose_e_per_A2 >= self.dose_e_per_A2)


@dataclass(frozen=True, eq=False)
class ActiveLearningResult:
    """The measurements of an active-learning run and the surrogate fitted to them.

    Attributes:
        indices: (n,) candidate indices in measurement order (seeds first).
        values: (n,) measured values (NaN where a measurement failed).
        n_seed: how many of them were seed (random) measurements.
        decision_time_s: (n - n_seed,) seconds spent per decision (fit + predict + acquisition);
            0 for picks of a batch after its first.
        model_name: surrogate used (``"random"`` for random sampling).
        acquisition: acquisition used.
        features: (N, d) standardised features the model saw.
    """

    indices: np.ndarray
    values: np.ndarray
    n_seed: int
    decision_time_s: np.ndarray
    model_name: str
    acquisition: str
    features: np.ndarray = field(repr=False)
    _model: object = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def best_index(self) -> int:
        """Candidate index of the highest measured value."""
        v = np.where(np.isfinite(self.values), self.values, -np.inf)
        return int(self.indices[int(np.argmax(v))])

    @property
    def best_value(self) -> float:
        """Highest measured value."""
        return float(np.nanmax(self.values))

    def best_so_far(self) -> np.ndarray:
        """(n,) running maximum of the measured values."""
        v = np.where(np.isfinite(self.values), self.values, -np.inf)
        return np.maximum.accumulate(v)

    def predict(self, *, noiseless: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (N,) for every candidate from a model fitted to *all* measurements.

        The model is refitted once (warm) on every finite measurement; the fit and the prediction
        for each ``noiseless`` are cached. For the ``"random"`` baseline a GP is fitted.
        """
        key = ("mv", bool(noiseless))
        if key not in self._cache:
            if "model" not in self._cache:
                ok = np.isfinite(self.values)
                if ok.sum() < 1:
                    raise RuntimeError("no finite measurement to fit")
                from .models import make_model

                model = self._model if self._model is not None else make_model("gp")
                model.fit(self.features[self.indices[ok]], self.values[ok])
                self._cache["model"] = model
            self._cache[key] = self._cache["model"].predict(self.features, noiseless=noiseless)
        return self._cache[key]

    def to_dict(self) -> dict:
        """Arrays and settings as a dict (no model)."""
        return {"indices": self.indices, "values": self.values, "n_seed": self.n_seed,
                "decision_time_s": self.decision_time_s, "model_name": self.model_name,
                "acquisition": self.acquisition}


def _choose(model, X: np.ndarray, idx: list[int], vals: list[float], measured: np.ndarray, *,
            acquisition: str, beta: float, xi: float, batch_size: int, xy: np.ndarray | None,
            probe_xy: np.ndarray | None, travel_weight: float, exclusion_radius: float | None,
            rng: np.random.Generator) -> np.ndarray:
    """Fit the model to the finite measurements and pick the next ``batch_size`` candidates."""
    available = ~measured
    ok = np.isfinite(vals)
    if ok.sum() < 2:  # nothing to learn from yet: random
        return rng.choice(np.flatnonzero(available), size=min(batch_size, int(available.sum())), replace=False)
    ii = np.asarray(idx)[ok]
    vv = np.asarray(vals, float)[ok]
    model.fit(X[ii], vv)
    mean, var = model.predict(X)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
        raise FloatingPointError("the surrogate predicted NaN/inf")
    # acquisitions work in standardised target units so beta, xi and the travel weight do not
    # depend on the units of the measured quantity
    mu, sd = float(vv.mean()), float(vv.std()) or 1.0
    score = acquire(acquisition, (mean - mu) / sd, var / sd ** 2, best_f=(vv.max() - mu) / sd, beta=beta, xi=xi)
    if xy is not None and travel_weight:
        score = score - travel_penalty(xy, probe_xy, travel_weight)
    corr = None
    if batch_size > 1 and hasattr(model, "correlation"):
        def corr(a, b):
            return model.correlation(X[a], X[b])
    return select_batch(score, available, batch_size, correlation=corr, xy=xy, exclusion_radius=exclusion_radius)


SEED_DESIGNS = ("diverse", "mixed", "random")


def diverse_seeds(features: np.ndarray, n: int, *, exclude: np.ndarray | None = None,
                  n_components: int = 20) -> np.ndarray:
    """``n`` candidate indices that cover the feature space, unusual ones first.

    The (standardised) features are projected on their first ``n_components`` principal
    components. The first pick is the candidate with the largest Mahalanobis distance from the
    mean (the most unusual patch: on an atomic-resolution survey a heavy dopant, a vacancy or a
    contamination spot); each further pick is the candidate farthest from all picks so far
    (farthest-point sampling). Why not random seeds: a rare site (1 in 300 columns) is almost
    never among 5 random seeds, and a surrogate that never saw it has nothing to generalise
    from; on the graphene twin with one Si among ~300 columns the Si is the first or second
    pick in most scenes (``benchmarks/explore_dopants.py --n-si 1``).

    Args:
        features: (N, d) features, e.g. standardised flattened patches.
        n: number of picks (at most the candidates not excluded).
        exclude: (N,) bool, candidates not to pick (e.g. already measured); they still count
            as covered for the farthest-point distances.
        n_components: principal components kept (the rest is mostly noise).

    Returns:
        (n,) int indices in pick order.
    """
    X = np.asarray(features, np.float64)
    N = len(X)
    excl = np.zeros(N, bool) if exclude is None else np.asarray(exclude, bool).copy()
    n = int(min(n, int((~excl).sum())))
    if n <= 0:
        return np.zeros(0, int)
    mu = X.mean(0)
    k = int(max(1, min(n_components, N - 1, X.shape[1])))
    # principal axes from at most 20000 rows (the projection of all rows is cheap)
    fit_rows = X if N <= 20000 else X[np.random.default_rng(0).choice(N, 20000, replace=False)]
    F = fit_rows - mu
    if F.shape[1] <= F.shape[0]:  # d x d covariance: cheaper and steadier than an SVD of the rows
        w, V = np.linalg.eigh(F.T @ F / max(len(F) - 1, 1))
        order = np.argsort(w)[::-1][:k]
        axes, sd = V[:, order].T, np.sqrt(np.maximum(w[order], 0.0))
    else:
        _, S, Vt = np.linalg.svd(F, full_matrices=False)
        axes, sd = Vt[:k], S[:k] / np.sqrt(max(len(F) - 1, 1))
    Z = (X - mu) @ axes.T
    white = Z / np.where(sd > 1e-12, sd, 1.0)
    d = np.full(N, np.inf)
    for j in np.flatnonzero(excl):  # distance to the nearest already-measured candidate
        d = np.minimum(d, np.linalg.norm(Z - Z[j], axis=1))
    picks: list[int] = []
    novelty = np.sum(white ** 2, 1)
    for _ in range(n):
        if np.isinf(d).all():
            j = int(np.argmax(np.where(excl, -np.inf, novelty)))
        else:
            j = int(np.argmax(np.where(excl, -np.inf, d)))
        picks.append(j)
        excl[j] = True
        d = np.minimum(d, np.linalg.norm(Z - Z[j], axis=1))
    return np.asarray(picks, int)


def active_learning(
    features: np.ndarray,
    measure: Callable[[int], float],
    budget: int | Budget,
    *,
    model: str | object = "dkl",
    acquisition: str = "ucb",
    n_seed: int = 10,
    seed: int = 0,
    beta: float = 4.0,
    xi: float = 0.0,
    batch_size: int = 1,
    xy: np.ndarray | None = None,
    travel_penalty: float = 0.0,
    exclusion_radius: float | None = None,
    model_options: dict | None = None,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
    callback: Callable[[int, float], None] | None = None,
    seed_design: str = "diverse",
    progress: bool = False,
) -> ActiveLearningResult:
    """Find the candidates where ``measure`` is highest with as few measurements as possible.

    Seeds ``n_seed`` candidates (``seed_design``), then repeats: fit the surrogate to all measured values,
    evaluate the acquisition on every candidate, measure the best unmeasured one (or a batch),
    until the budget is spent or every candidate is measured.

    Args:
        features: (N, d) array, one row per candidate (e.g. a flattened image patch);
            standardised per column here.
        measure: ``measure(i) -> float`` measures candidate ``i``; a non-finite return is kept
            as NaN and not fitted (the candidate is not measured again).
        budget: total measurements (int, seeds included) or a :class:`Budget` (``points``,
            ``time_s``; ``dose_e_per_A2`` is ignored here).
        model: ``"dkl"`` (:class:`DKLRegressor`), ``"gp"`` (:class:`GPRegressor`),
            ``"gpax-dkl"`` / ``"gpax-gp"`` (gpax's own, fresh fit per step: slow), ``"random"``
            (random sampling baseline) or an estimator with ``fit`` / ``predict``.
        acquisition: ``"ucb"``, ``"ei"`` or ``"ue"`` (on standardised targets).
        n_seed: random measurements before the first fit (>= 1).
        seed: seed of the seed choice, model initialisation and random tie-breaks.
        beta: UCB's ``beta`` (mean + sqrt(beta var), gpax convention).
        xi: EI's improvement margin (standardised units).
        batch_size: candidates measured per decision (greedy with local penalisation by the
            model's kernel correlation, or by ``exclusion_radius`` in ``xy``).
        xy: (N, 2) candidate positions (any unit, e.g. nm); needed for ``travel_penalty``.
        travel_penalty: acquisition units (standardised) subtracted per unit of distance from
            the last measured position.
        exclusion_radius: with batches and a model without ``correlation``: minimum distance
            between picks in ``xy`` units.
        model_options: keyword arguments of the model class.
        initial: (indices, values) already measured (e.g. a resumed run); they count towards
            the budget and replace the seeds when at least ``n_seed`` long.
        callback: ``callback(i, value)`` after every measurement (e.g. to store it).
        seed_design: how the seeds are chosen: ``"diverse"`` (default, :func:`diverse_seeds`:
            the most unusual candidate, then farthest-point sampling in the features'
            principal components, so that rare sites such as dopants are among them),
            ``"mixed"`` (the first half diverse, the rest at random: common sites are
            represented too, which keeps the predicted map closer to the truth) or
            ``"random"``. The ``"random"`` model always seeds at random.
        progress: show a tqdm progress bar.

    Returns:
        :class:`ActiveLearningResult`.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 4))
        >>> r = active_learning(X, lambda i: float(-np.sum((X[i] - 1) ** 2)), 25, model="gp", n_seed=5)
        >>> len(r.indices), r.values.shape
        (25, (25,))
    """
    from .models import make_model

    X = standardize_features(features)
    N = len(X)
    bud = Budget.coerce(budget)
    if acquisition.lower() not in ACQUISITIONS:
        raise ValueError(f"acquisition={acquisition!r} must be one of {ACQUISITIONS}")
    if int(n_seed) < 1:
        raise ValueError(f"n_seed={n_seed} must be >= 1")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if seed_design not in SEED_DESIGNS:
        raise ValueError(f"seed_design={seed_design!r} must be one of {SEED_DESIGNS}")
    if xy is not None:
        xy = np.asarray(xy, float)
        if xy.shape != (N, 2) or not np.all(np.isfinite(xy)):
            raise ValueError(f"xy must be a finite (N, 2) = ({N}, 2) array; got {xy.shape}")
    elif travel_penalty:
        raise ValueError("travel_penalty needs the candidate positions xy")
    rng = np.random.default_rng(seed)
    is_random = isinstance(model, str) and model.lower() == "random"
    surrogate = None if is_random else make_model(model, seed=seed, **(model_options or {}))
    name = "random" if is_random else getattr(surrogate, "name", type(surrogate).__name__)

    idx: list[int] = []
    vals: list[float] = []
    measured = np.zeros(N, bool)
    if initial is not None:
        ii, vv = (np.asarray(a).reshape(-1) for a in initial)
        if len(ii) != len(vv) or (len(ii) and (ii.min() < 0 or ii.max() >= N)):
            raise ValueError("initial must be (indices, values) of equal length with indices in 0..N-1")
        idx, vals = [int(i) for i in ii], [float(v) for v in vv]
        measured[ii.astype(int)] = True
    times: list[float] = []
    t0 = time.perf_counter()
    probe_xy = xy[idx[-1]] if (xy is not None and idx) else None

    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=bud.points, initial=len(idx), desc=f"active learning ({name})")

    def do(i: int) -> None:
        nonlocal probe_xy
        v = float(measure(int(i)))
        idx.append(int(i))
        vals.append(v if np.isfinite(v) else float("nan"))
        measured[int(i)] = True
        if xy is not None:
            probe_xy = xy[int(i)]
        if callback is not None:
            callback(int(i), vals[-1])
        if bar is not None:
            bar.update(1)

    def done() -> bool:
        return measured.all() or bud.reached(len(idx), time.perf_counter() - t0)

    try:
        n_seed_eff = max(0, int(n_seed) - len(idx))
        if n_seed_eff:
            pool = np.flatnonzero(~measured)
            if seed_design == "diverse" and not is_random:  # the random baseline stays random
                seeds = diverse_seeds(X, n_seed_eff, exclude=measured)
            elif seed_design == "mixed" and not is_random:
                n_div = (n_seed_eff + 1) // 2
                first = diverse_seeds(X, n_div, exclude=measured)
                rest = np.setdiff1d(pool, first)
                seeds = np.concatenate([first, rng.choice(rest, size=min(n_seed_eff - n_div, len(rest)),
                                                          replace=False)]).astype(int)
            else:
                seeds = rng.choice(pool, size=min(n_seed_eff, len(pool)), replace=False)
            for i in seeds:
                if done():
                    break
                do(int(i))
        n_seeded = len(idx)
        while not done():
            if is_random:
                picks = [int(rng.choice(np.flatnonzero(~measured)))]
                times.append(0.0)
            else:
                t = time.perf_counter()
                picks = _choose(surrogate, X, idx, vals, measured, acquisition=acquisition.lower(), beta=beta,
                                xi=xi, batch_size=int(batch_size), xy=xy, probe_xy=probe_xy,
                                travel_weight=float(travel_penalty), exclusion_radius=exclusion_radius, rng=rng)
                times.append(time.perf_counter() - t)
                times.extend([0.0] * (len(picks) - 1))
            for i in picks:
                if done():
                    break
                do(int(i))
    finally:
        if bar is not None:
            bar.close()
    n_dec = len(idx) - n_seeded
    return ActiveLearningResult(indices=np.asarray(idx, int), values=np.asarray(vals, float), n_seed=n_seeded,
                                decision_time_s=np.asarray(times[:n_dec], float), model_name=name,
                                acquisition=acquisition.lower(), features=X, _model=surrogate)
