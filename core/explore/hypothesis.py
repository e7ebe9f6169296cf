"""Hypothesis learning: which of several competing physical models generated the data, with as
few measurements as possible (Ziatdinov et al., arXiv:2112.06649; gpax ``hypo``).

Two designs:

``design="discrimination"`` (default; classic sequential model discrimination, Box & Hill
1967): after ``n_seed`` measurements spread over the candidate range, every step fits each
model *alone* (no GP residual, which could absorb the very difference between the models) by
multi-start bounded least squares in its prior box (Latin-hypercube starts plus the previous
optimum: thresholds like Tc make the fit multimodal), turns the fits into model probabilities
(Gaussian noise of unknown variance), and measures next where the models' predictions
disagree most relative to their predictive variances (noise plus linearised parameter
uncertainty), weighted by the probabilities of each pair. The chosen model has the highest
log evidence on all points: Laplace's approximation with the uniform prior boxes (default) or
-BIC/2. The log predictive density of each new point under each
model (prequential score) is kept as ``mean_rewards``.

``design="bandit"`` (gpax's hypo): a model is drawn by a softmax (or epsilon-greedy) policy over
the running mean rewards; its structured GP (:class:`~atomsmith.explore.StructuredGP`) is fitted
and the next point is where it is most uncertain. Before that point is measured, *every* model
predicts it; once measured, each model's reward is its log predictive density of the new value.
The chosen model has the highest summed log predictive density (a prequential Bayes factor).
gpax's original reward, +1/-1 for a drop/rise of the drawing model's integrated uncertainty, is
available with ``reward="uncertainty"``. This design picks the generating phase-transition model
in about 7 of 10 runs; the discrimination design in 57 of 60 (docs/explore.md).

Two phase-transition forms of an order parameter versus a reduced temperature ``x``
(:func:`second_order_transition`, :func:`first_order_transition`) are provided as examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from .models import StructuredGP


@dataclass(frozen=True)
class Hypothesis:
    """A physical model: ``mean_fn(X, params)`` in jax.numpy with uniform prior boxes.

    Attributes:
        name: label.
        mean_fn: ``m(X, params) -> (n,)``; X is (n, d). Define it at module level.
        bounds: {parameter: (low, high)}.
    """

    name: str
    mean_fn: Callable
    bounds: dict[str, tuple[float, float]]


def second_order_transition(X: jnp.ndarray, p: dict) -> jnp.ndarray:
    """Continuous (second-order) transition: ``a * (1 - x / Tc)^beta`` below Tc, 0 above."""
    x = X[:, 0]
    t = jnp.maximum(1.0 - x / p["Tc"], 1e-6)
    return p["a"] * t ** p["beta"] * (x < p["Tc"])


def first_order_transition(X: jnp.ndarray, p: dict) -> jnp.ndarray:
    """Discontinuous (first-order) transition: a jump of height ``a`` at Tc, width ``w``,
    with a linear ``slope`` (per unit x) of the ordered phase."""
    x = X[:, 0]
    step = 1.0 / (1.0 + jnp.exp((x - p["Tc"]) / p["w"]))
    return (p["a"] + p["slope"] * (p["Tc"] - x)) * step


#: The two phase-transition hypotheses (order parameter ~ 0.2 .. 2 vs reduced temperature 0 .. 1).
PHASE_TRANSITION_MODELS: tuple[Hypothesis, ...] = (
    Hypothesis("second order", second_order_transition, {"a": (0.2, 2.0), "Tc": (0.2, 0.9), "beta": (0.1, 0.6)}),
    Hypothesis("first order", first_order_transition,
               {"a": (0.2, 2.0), "Tc": (0.2, 0.9), "w": (0.002, 0.03), "slope": (0.0, 1.0)}),
)


@dataclass(frozen=True, eq=False)
class HypothesisResult:
    """Outcome of :func:`hypothesis_learning`.

    Attributes:
        chosen: index of the model that explains the data best.
        names: model names.
        scores: (M,) ``"discrimination"``: log evidence (Laplace or -BIC/2) of each model on all
            points; ``"bandit"``: summed log predictive density over the added points.
        mean_rewards: (M,) ``"discrimination"``: mean log predictive density of the added
            points (before each was measured); ``"bandit"``: running mean bandit reward.
        draws: (steps,) most probable model (``"discrimination"``) or model drawn
            (``"bandit"``) at each step.
        indices: (n,) candidate indices in measurement order.
        values: (n,) measured values.
        params: fitted mean-function parameters of each model on all points.
        probabilities: (M,) ``"discrimination"`` only: model probabilities from the evidence.
    """

    chosen: int
    names: tuple[str, ...]
    scores: np.ndarray
    mean_rewards: np.ndarray
    draws: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    params: list[dict] = field(default_factory=list)
    probabilities: np.ndarray | None = None

    @property
    def chosen_name(self) -> str:
        """Name of the chosen model."""
        return self.names[self.chosen]

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return {"chosen": self.chosen, "names": self.names, "scores": self.scores,
                "mean_rewards": self.mean_rewards, "draws": self.draws, "indices": self.indices,
                "values": self.values, "params": self.params, "probabilities": self.probabilities}


def _policy(rewards: np.ndarray, rng: np.random.Generator, method: str, temperature: float, eps: float) -> int:
    if method == "softmax":
        z = rewards / temperature
        p = np.exp(z - z.max())
        return int(rng.choice(len(rewards), p=p / p.sum()))
    if method == "eps-greedy":
        return int(rng.integers(len(rewards))) if rng.random() < eps else int(np.argmax(rewards))
    raise ValueError(f"policy={method!r} must be 'softmax' or 'eps-greedy'")


# ----------------------------------------------------------------------------- model discrimination
def _jitted(h: Hypothesis):
    """(f(X, theta), J(X, theta)) of a hypothesis' mean function, jitted, theta a vector."""
    key = (h.mean_fn, tuple(h.bounds))
    if key not in _JIT_CACHE:
        import jax

        names = tuple(h.bounds)

        def f(X, theta):
            return h.mean_fn(X, {k: theta[j] for j, k in enumerate(names)}).reshape(-1)

        _JIT_CACHE[key] = (jax.jit(f), jax.jit(jax.jacfwd(f, argnums=1)))
    return _JIT_CACHE[key]


_JIT_CACHE: dict = {}


@dataclass
class _ModelFit:
    theta: np.ndarray
    rss: float
    n: int
    k: int

    @property
    def sigma2(self) -> float:
        return max(self.rss / self.n, 1e-12)

    @property
    def log_evidence(self) -> float:
        """-BIC / 2 (Gaussian noise of unknown variance, MLE)."""
        return -0.5 * self.n * np.log(self.sigma2) - 0.5 * self.n - 0.5 * (self.k + 1) * np.log(self.n)


def _box(h: Hypothesis) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) arrays of a hypothesis' prior box, in parameter order."""
    return (np.array([b[0] for b in h.bounds.values()], float), np.array([b[1] for b in h.bounds.values()], float))


def _finite(X: np.ndarray, idx: list[int], vals: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, values) of the measurements with a finite value."""
    ok = np.isfinite(vals)
    return X[np.asarray(idx)[ok]], np.asarray(vals)[ok]


def _fit_hypothesis(h: Hypothesis, X: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_starts: int,
                    previous: np.ndarray | None) -> _ModelFit:
    """Least squares of the model alone (no GP residual), multi-start in the prior box: the
    threshold parameters (e.g. Tc) make the objective multimodal."""
    from scipy.optimize import least_squares

    f, jac = _jitted(h)
    lo, hi = _box(h)
    Xj = jnp.asarray(X, jnp.float32)
    yy = np.asarray(y, float)

    def res(t):
        return np.asarray(f(Xj, jnp.asarray(t, jnp.float32)), float) - yy

    def jj(t):
        return np.nan_to_num(np.asarray(jac(Xj, jnp.asarray(t, jnp.float32)), float), posinf=0.0, neginf=0.0)

    # stratified starts: every parameter spread over its box (Latin hypercube)
    u = (np.argsort(rng.random((n_starts, len(lo))), axis=0) + rng.random((n_starts, len(lo)))) / n_starts
    starts = list(lo + u * (hi - lo))
    if previous is not None:
        starts.insert(0, np.clip(previous, lo, hi))
    best_t, best_c = None, np.inf
    pad = 1e-6 * (hi - lo)
    for t0 in starts:
        t0 = np.clip(t0, lo + pad, hi - pad)
        try:
            r = least_squares(res, t0, jac=jj, bounds=(lo, hi), method="trf", x_scale=hi - lo, max_nfev=60)
            t, c = r.x, float(np.sum(r.fun ** 2))
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(c) and c < best_c:
            best_t, best_c = t, c
    if best_t is None:
        best_t, best_c = np.clip(starts[0], lo, hi), float(np.sum(res(starts[0]) ** 2))
    return _ModelFit(theta=best_t, rss=best_c, n=len(yy), k=len(lo))


def _predictive(h: Hypothesis, fit: _ModelFit, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (N,) and Jacobian (N, k) of the fitted model at X (NaN/inf cleaned)."""
    f, jac = _jitted(h)
    Xj = jnp.asarray(X, jnp.float32)
    th = jnp.asarray(fit.theta, jnp.float32)
    mu = np.asarray(f(Xj, th), float)
    J = np.nan_to_num(np.asarray(jac(Xj, th), float), posinf=0.0, neginf=0.0)
    return np.nan_to_num(mu), J


def _log_evidence(h: Hypothesis, fit: _ModelFit, J: np.ndarray, method: str) -> float:
    """Log evidence of a fitted model (``J``: its Jacobian at the fitted points, see
    :func:`_predictive`): ``"bic"`` (-BIC/2) or ``"laplace"`` (Laplace around the optimum with the
    uniform prior boxes; the Gauss-Newton Hessian is regularised by the box's own precision,
    12 / width^2, so flat directions cannot claim more volume than the prior)."""
    if method == "bic":
        return fit.log_evidence
    lo, hi = _box(h)
    width = hi - lo
    H = J.T @ J / fit.sigma2 + np.diag(12.0 / width ** 2)
    sign, logdet = np.linalg.slogdet(H)
    if sign <= 0:
        return fit.log_evidence
    loglik = -0.5 * fit.n * np.log(2 * np.pi * fit.sigma2) - 0.5 * fit.n
    return float(loglik + 0.5 * fit.k * np.log(2 * np.pi) - 0.5 * logdet - np.sum(np.log(width)))


def _discrimination_run(X, measure, models, budget, n_seed, seed, n_starts, evidence="bic"):
    rng = np.random.default_rng(seed)
    N, M = len(X), len(models)
    # seeds spread over the candidate range (one random point in each of n_seed strata of the
    # first coordinate): the models need the whole curve to be located before discrimination
    order = np.argsort(X[:, 0], kind="stable")
    strata = np.array_split(order, int(n_seed))
    idx = [int(rng.choice(s)) for s in strata if len(s)]
    vals = [float(measure(i)) for i in idx]
    measured = np.zeros(N, bool)
    measured[idx] = True
    fits: list[_ModelFit | None] = [None] * M
    lpd_sum = np.zeros(M)
    lpd_n = 0
    draws: list[int] = []

    def refit():
        """Fit every model to the finite points: (Jacobians there, log evidences, probabilities)."""
        Xi, yi = _finite(X, idx, vals)
        Js = []
        for k, h in enumerate(models):
            fits[k] = _fit_hypothesis(h, Xi, yi, rng, n_starts, None if fits[k] is None else fits[k].theta)
            Js.append(_predictive(h, fits[k], Xi)[1])
        le = np.array([_log_evidence(h, ft, J, evidence) for h, ft, J in zip(models, fits, Js, strict=True)])
        P = np.exp(le - le.max())
        return Js, le, P / P.sum()

    while len(idx) < int(budget) and not measured.all():
        Js, _, P = refit()
        draws.append(int(np.argmax(P)))
        mus, vs = [], []
        for k, h in enumerate(models):
            mu, J = _predictive(h, fits[k], X)
            Jt = Js[k]
            s2 = fits[k].sigma2
            # linearised parameter covariance s2 (Jt' Jt)^-1 -> predictive variance of the model
            A = Jt.T @ Jt + 1e-6 * np.eye(Jt.shape[1]) * max(np.trace(Jt.T @ Jt), 1e-12) / Jt.shape[1]
            try:
                cov = s2 * np.linalg.pinv(A)
            except np.linalg.LinAlgError:
                cov = np.zeros_like(A)
            v = np.einsum("nk,kl,nl->n", J, cov, J)
            mus.append(mu)
            vs.append(np.maximum(v, 0.0))
        s2 = np.array([ft.sigma2 for ft in fits])
        s2_pool = float(np.min(s2))  # the noise: the best model's residual variance
        # Box-Hill style discrimination: expected squared disagreement of each pair of models
        # relative to their predictive variances, weighted by the model probabilities
        # (weights normalised over the pairs, so that a lopsided evidence does not turn the
        # criterion into the tie-break; ties fall to the larger parameter uncertainty)
        pairs = [(a, b) for a in range(M) for b in range(a + 1, M)]
        w = np.array([P[a] * P[b] for a, b in pairs])
        w = w / w.sum() if w.sum() > 0 else np.full(len(pairs), 1.0 / len(pairs))
        D = np.zeros(N)
        for wk, (a, b) in zip(w, pairs, strict=True):
            D += wk * ((mus[a] - mus[b]) ** 2 / (2 * s2_pool + vs[a] + vs[b]) + 1e-9 * (vs[a] + vs[b]) / s2_pool)
        D = np.where(measured, -np.inf, D)
        nxt = int(np.argmax(D))
        y_new = float(measure(nxt))
        idx.append(nxt)
        vals.append(y_new)
        measured[nxt] = True
        if np.isfinite(y_new):
            for k in range(M):
                var = s2[k] + vs[k][nxt]
                lpd_sum[k] += -0.5 * (np.log(2 * np.pi * var) + (y_new - mus[k][nxt]) ** 2 / var)
            lpd_n += 1
    _, le, P = refit()
    params = [{n: float(v) for n, v in zip(h.bounds, ft.theta, strict=True)} for h, ft in zip(models, fits, strict=True)]
    return (int(np.argmax(le)), le, lpd_sum / max(lpd_n, 1), np.asarray(draws, int), idx, vals, params, P)


def hypothesis_learning(
    X: np.ndarray,
    measure: Callable[[int], float],
    models: tuple[Hypothesis, ...] | list[Hypothesis] = PHASE_TRANSITION_MODELS,
    budget: int = 50,
    *,
    n_seed: int = 8,
    design: str = "discrimination",
    n_starts: int = 12,
    evidence: str = "laplace",
    reward: str = "predictive",
    policy: str = "softmax",
    temperature: float = 1.0,
    eps: float = 0.3,
    num_steps_initial: int = 400,
    num_steps: int = 80,
    seed: int = 0,
) -> HypothesisResult:
    """Measure where the competing models disagree (or where a bandit-drawn model is most
    uncertain); choose the model that explains the data (see the module docstring).

    Args:
        X: (N, d) candidate inputs (e.g. temperatures as (N, 1)), in the units of the models.
        measure: ``measure(i) -> float``; give values of order 1 (see :class:`StructuredGP`).
        models: the competing hypotheses (>= 2).
        budget: total measurements, seeds included.
        n_seed: measurements before the first fit (>= 2; for ``"discrimination"`` one random
            candidate in each of ``n_seed`` strata of the first input coordinate, and at least
            the largest number of model parameters + 2 is advisable).
        design: ``"discrimination"`` (model-only fits, points where the models disagree,
            choice by evidence) or ``"bandit"`` (gpax: structured GPs, bandit over models, choice
            by summed log predictive density).
        n_starts: ``"discrimination"``: least-squares starts per model and step.
        evidence: ``"discrimination"``: model comparison by ``"bic"`` or ``"laplace"`` (Laplace
            approximation with the uniform prior boxes).
        reward: ``"bandit"`` only: ``"predictive"`` (log predictive density of each new point, for all models)
            or ``"uncertainty"`` (gpax: +1 / -1 when the drawn model's mean predictive
            variance over the candidates falls / rises).
        policy: ``"bandit"`` only: ``"softmax"`` (``temperature``) or ``"eps-greedy"`` (``eps``).
        num_steps_initial, num_steps: ``"bandit"`` only: Adam steps of the first / warm-started fits.
        seed: seeds, policy draws, least-squares starts and model initialisation.

    Returns:
        :class:`HypothesisResult`.
    """
    X = np.asarray(X, np.float32)
    if X.ndim == 1:
        X = X[:, None]
    models = tuple(models)
    if len(models) < 2:
        raise ValueError("hypothesis learning needs at least two models")
    if reward not in ("predictive", "uncertainty"):
        raise ValueError(f"reward={reward!r} must be 'predictive' or 'uncertainty'")
    if int(n_seed) < 2 or int(budget) <= int(n_seed):
        raise ValueError(f"need n_seed >= 2 and budget > n_seed (got {n_seed}, {budget})")
    if evidence not in ("bic", "laplace"):
        raise ValueError(f"evidence={evidence!r} must be 'bic' or 'laplace'")
    if design == "discrimination":
        chosen, le, lpd, draws, idx, vals, params, P = _discrimination_run(
            X, measure, models, int(budget), int(n_seed), int(seed), int(n_starts), evidence)
        return HypothesisResult(chosen=chosen, names=tuple(h.name for h in models), scores=le, mean_rewards=lpd,
                                draws=draws, indices=np.asarray(idx, int), values=np.asarray(vals, float),
                                params=params, probabilities=P)
    if design != "bandit":
        raise ValueError(f"design={design!r} must be 'discrimination' or 'bandit'")
    rng = np.random.default_rng(seed)
    M = len(models)
    gps = [StructuredGP(h.mean_fn, h.bounds, num_steps_initial=num_steps_initial, num_steps=num_steps,
                        seed=seed + k) for k, h in enumerate(models)]
    idx = [int(i) for i in rng.choice(len(X), int(n_seed), replace=False)]
    vals = [float(measure(i)) for i in idx]
    measured = np.zeros(len(X), bool)
    measured[idx] = True
    reward_sum, reward_n = np.zeros(M), np.zeros(M)
    scores = np.zeros(M)
    prev_unc = np.full(M, np.nan)
    draws: list[int] = []
    while len(idx) < int(budget) and not measured.all():
        Xi, yi = _finite(X, idx, vals)
        mean_r = np.where(reward_n > 0, reward_sum / np.maximum(reward_n, 1), 0.0)
        m = _policy(mean_r, rng, policy, float(temperature), float(eps))
        draws.append(m)
        preds = []
        for k, gp in enumerate(gps):  # every model predicts the next point (for its score)
            if k == m or reward == "predictive":
                gp.fit(Xi, yi)
        mu, var = gps[m].predict(X, noiseless=True)
        var_open = np.where(measured, -np.inf, var)
        nxt = int(np.argmax(var_open))
        for k, gp in enumerate(gps):
            if reward == "predictive" or k == m:
                mk, vk = gp.predict(X[nxt:nxt + 1], noiseless=False)
                preds.append((k, float(mk[0]), float(vk[0])))
        y_new = float(measure(nxt))
        idx.append(nxt)
        vals.append(y_new)
        measured[nxt] = True
        if not np.isfinite(y_new):
            continue
        for k, mk, vk in preds:
            lpd = -0.5 * (np.log(2 * np.pi * vk) + (y_new - mk) ** 2 / vk)
            scores[k] += lpd
            if reward == "predictive":
                reward_sum[k] += lpd
                reward_n[k] += 1
        if reward == "uncertainty":
            unc = float(np.mean(var[~measured])) if (~measured).any() else 0.0
            r = 0.0 if np.isnan(prev_unc[m]) else (1.0 if unc < prev_unc[m] else -1.0)
            prev_unc[m] = unc
            reward_sum[m] += r
            reward_n[m] += 1
    if reward == "uncertainty":  # the choice is still made on the predictive score: fit all models
        Xi, yi = _finite(X, idx, vals)
        for gp in gps:
            gp.fit(Xi, yi)
    mean_r = np.where(reward_n > 0, reward_sum / np.maximum(reward_n, 1), 0.0)
    params = [gp.mean_params_ if gp.params is not None else {} for gp in gps]
    return HypothesisResult(chosen=int(np.argmax(scores)), names=tuple(h.name for h in models), scores=scores,
                            mean_rewards=mean_r, draws=np.asarray(draws, int), indices=np.asarray(idx, int),
                            values=np.asarray(vals, float), params=params)
