"""Acquisition functions, the probe-travel penalty and batch selection (all maximised).

The formulas are gpax's (``gpax.acquisition.base_acq``) with ``maximize=True``, computed in
numpy on predicted means and variances (tests check they agree with gpax):

* ``ucb``: ``mean + sqrt(beta * var)`` (gpax's convention: ``beta`` multiplies the *variance*;
  gpax's default 0.25 is half a standard deviation; atomsmith's default 4 is two).
* ``ei``: expected improvement over ``best_f``. gpax's default ``best_f`` is the maximum of the
  *predicted mean over the candidates*; atomsmith passes the best *measured* value (the usual
  definition), so EI stays positive where the model is uncertain.
* ``ue``: the predictive standard deviation (gpax's ``ue`` returns ``sqrt(var)`` though its
  docstring says variance; the argmax is the same).

gpax issues that matter here: its ``EI``/``UCB`` wrappers call ``model.predict`` on the full
candidate set, and ``viDKL.predict`` forms the N x N covariance (4096 candidates: 128 MB in
float64); its ``'delta'`` revisit penalty loops in Python over recent points; its
``hypo.sample_next`` draws from NumPy's global RNG. None of these are used here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtr

ACQUISITIONS = ("ucb", "ei", "ue")


def ucb(mean: np.ndarray, var: np.ndarray, beta: float = 4.0) -> np.ndarray:
    """Upper confidence bound ``mean + sqrt(beta * var)`` (gpax convention, maximise)."""
    if not beta >= 0:
        raise ValueError(f"beta={beta} must be >= 0")
    return np.asarray(mean, float) + np.sqrt(beta * np.maximum(np.asarray(var, float), 0.0))


def ei(mean: np.ndarray, var: np.ndarray, best_f: float, xi: float = 0.0) -> np.ndarray:
    """Expected improvement over ``best_f + xi`` (maximise); 0 where the variance is 0."""
    mean = np.asarray(mean, float)
    sigma = np.sqrt(np.maximum(np.asarray(var, float), 0.0))
    imp = mean - float(best_f) - float(xi)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(sigma > 0, imp / np.where(sigma > 0, sigma, 1.0), 0.0)
    pdf = np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
    out = sigma * (pdf + u * ndtr(u))
    return np.where(sigma > 0, out, np.maximum(imp, 0.0))


def ue(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Uncertainty exploration: the predictive standard deviation."""
    return np.sqrt(np.maximum(np.asarray(var, float), 0.0))


def acquire(name: str, mean: np.ndarray, var: np.ndarray, *, best_f: float | None = None,
            beta: float = 4.0, xi: float = 0.0) -> np.ndarray:
    """Evaluate the acquisition ``name`` (``"ucb"``, ``"ei"``, ``"ue"``) on predicted moments."""
    key = name.lower()
    if key == "ucb":
        return ucb(mean, var, beta)
    if key == "ei":
        if best_f is None:
            raise ValueError("ei needs best_f (the best measured value)")
        return ei(mean, var, best_f, xi)
    if key == "ue":
        return ue(mean, var)
    raise ValueError(f"acquisition={name!r} must be one of {ACQUISITIONS}")


def travel_penalty(xy: np.ndarray, from_xy: np.ndarray | None, weight: float) -> np.ndarray:
    """``weight * distance`` from ``from_xy`` (the probe now) to every candidate ``xy`` (N, 2).

    ``weight`` is in acquisition units per unit of ``xy`` (e.g. per nm). Returns zeros when
    ``from_xy`` is None or ``weight`` is 0.
    """
    xy = np.asarray(xy, float)
    if from_xy is None or weight == 0:
        return np.zeros(len(xy))
    if not weight >= 0:
        raise ValueError(f"travel weight={weight} must be >= 0")
    return float(weight) * np.hypot(*(xy - np.asarray(from_xy, float)[None, :]).T)


def select_batch(score: np.ndarray, available: np.ndarray, batch_size: int = 1, *,
                 correlation: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                 xy: np.ndarray | None = None, exclusion_radius: float | None = None) -> np.ndarray:
    """Pick ``batch_size`` candidates greedily by ``score`` among ``available`` (bool mask).

    After each pick the remaining scores are damped so the batch spreads out (local
    penalisation): with ``correlation(idx_all, idx_picked)`` (the model's kernel correlation,
    0..1), ``score`` is shifted to be >= 0 and multiplied by ``1 - correlation``; else, with
    ``xy`` and ``exclusion_radius``, candidates closer than the radius are dropped.

    Returns:
        (k,) candidate indices, k = min(batch_size, available.sum()).
    """
    s = np.asarray(score, float).copy()
    avail = np.asarray(available, bool).copy()
    if s.shape != avail.shape:
        raise ValueError(f"score {s.shape} and available {avail.shape} differ in shape")
    s[~np.isfinite(s)] = -np.inf
    k = min(int(batch_size), int(avail.sum()))
    if k < 1:
        return np.zeros(0, int)
    out: list[int] = []
    s = np.where(avail, s, -np.inf)
    base = s - np.min(s[avail]) if k > 1 else s
    damp = np.ones_like(s)
    for _ in range(k):
        cand = np.where(avail, base * damp if k > 1 else s, -np.inf)
        if not np.any(np.isfinite(cand)):
            break
        i = int(np.argmax(cand))
        out.append(i)
        avail[i] = False
        if correlation is not None:
            c = np.asarray(correlation(np.arange(len(s)), np.array([i]))).reshape(-1)
            damp *= np.clip(1.0 - c, 0.0, 1.0)
        elif xy is not None and exclusion_radius:
            d = np.hypot(*(np.asarray(xy, float) - np.asarray(xy, float)[i]).T)
            avail &= d >= exclusion_radius
            if not avail.any():
                break
    return np.asarray(out, int)
