"""Hypothesis learning: competing physical models as structured-GP mean functions, a reward
bandit that decides which model steers the next measurement, and the choice of the model that
explains the data best (Ziatdinov et al., arXiv:2112.06649; gpax ``hypo``).

Each step: a model is drawn by a softmax (or epsilon-greedy) policy over the running mean
rewards; its structured GP (:class:`~atomsmith.explore.StructuredGP`) is fitted to the points so
far and the next point is where it is most uncertain. Before that point is measured, *every*
model predicts it; once measured, each model's reward is its log predictive density of the new
value (a proper score: a model that explains the data predicts new points best). The chosen
model is the one with the highest summed log predictive density over the points added after
the seeds (a prequential Bayes factor). gpax's original reward, +1/-1 for a drop/rise of the
drawing model's integrated uncertainty, is available with ``reward="uncertainty"`` (it then only
steers the bandit; the choice still uses the predictive score).

Two phase-transition forms of an order parameter versus a reduced temperature ``x``
(:func:`second_order_transition`, :func:`first_order_transition`) are provided as examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
        scores: (M,) summed log predictive density of each model over the added points.
        mean_rewards: (M,) running mean bandit reward of each model.
        draws: (steps,) model drawn at each step.
        indices: (n,) candidate indices in measurement order.
        values: (n,) measured values.
        params: fitted mean-function parameters of each model on all points.
    """

    chosen: int
    names: tuple[str, ...]
    scores: np.ndarray
    mean_rewards: np.ndarray
    draws: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    params: list[dict] = field(default_factory=list)

    @property
    def chosen_name(self) -> str:
        """Name of the chosen model."""
        return self.names[self.chosen]

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return {"chosen": self.chosen, "names": self.names, "scores": self.scores,
                "mean_rewards": self.mean_rewards, "draws": self.draws, "indices": self.indices,
                "values": self.values, "params": self.params}


def _policy(rewards: np.ndarray, rng: np.random.Generator, method: str, temperature: float, eps: float) -> int:
    if method == "softmax":
        z = rewards / temperature
        p = np.exp(z - z.max())
        return int(rng.choice(len(rewards), p=p / p.sum()))
    if method == "eps-greedy":
        return int(rng.integers(len(rewards))) if rng.random() < eps else int(np.argmax(rewards))
    raise ValueError(f"policy={method!r} must be 'softmax' or 'eps-greedy'")


def hypothesis_learning(
    X: np.ndarray,
    measure: Callable[[int], float],
    models: tuple[Hypothesis, ...] | list[Hypothesis] = PHASE_TRANSITION_MODELS,
    budget: int = 50,
    *,
    n_seed: int = 5,
    reward: str = "predictive",
    policy: str = "softmax",
    temperature: float = 1.0,
    eps: float = 0.3,
    num_steps_initial: int = 400,
    num_steps: int = 80,
    seed: int = 0,
) -> HypothesisResult:
    """Measure where the drawn model is most uncertain; choose the model that explains the data.

    Args:
        X: (N, d) candidate inputs (e.g. temperatures as (N, 1)), in the units of the models.
        measure: ``measure(i) -> float``; give values of order 1 (see :class:`StructuredGP`).
        models: the competing hypotheses (>= 2).
        budget: total measurements, seeds included.
        n_seed: random measurements before the first fit (>= 2).
        reward: ``"predictive"`` (log predictive density of each new point, for all models)
            or ``"uncertainty"`` (gpax: +1 / -1 when the drawn model's mean predictive
            variance over the candidates falls / rises).
        policy: ``"softmax"`` (``temperature``) or ``"eps-greedy"`` (``eps``).
        num_steps_initial, num_steps: Adam steps of the first / warm-started fits.
        seed: seeds, policy draws and model initialisation.

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
        ok = np.isfinite(vals)
        Xi, yi = X[np.asarray(idx)[ok]], np.asarray(vals)[ok]
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
        ok = np.isfinite(vals)
        for gp in gps:
            gp.fit(X[np.asarray(idx)[ok]], np.asarray(vals)[ok])
    mean_r = np.where(reward_n > 0, reward_sum / np.maximum(reward_n, 1), 0.0)
    params = [gp.mean_params_ if gp.params is not None else {} for gp in gps]
    return HypothesisResult(chosen=int(np.argmax(scores)), names=tuple(h.name for h in models), scores=scores,
                            mean_rewards=mean_r, draws=np.asarray(draws, int), indices=np.asarray(idx, int),
                            values=np.asarray(vals, float), params=params)
