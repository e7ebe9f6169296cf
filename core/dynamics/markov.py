"""Markov transition matrices between defect classes, with intervals and the stationary state.

Counts ``n_ij`` of class i followed by class j in the next frame along each track give the
maximum-likelihood matrix ``n_ij / n_i``. Intervals: the posterior of each row under a Jeffreys
Dirichlet prior (0.5 per entry) has Beta marginals ``Beta(n_ij + 0.5, n_i - n_ij + 0.5 (K - 1))``;
the 2.5 and 97.5 % quantiles are reported. Rows never visited are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta


@dataclass(frozen=True, eq=False)
class TransitionMatrix:
    """Per-frame transition matrix between classes.

    Attributes:
        matrix: (K, K) row-stochastic maximum-likelihood estimate (NaN rows: never seen).
        ci_low, ci_high: (K, K) 95 % intervals.
        counts: (K, K) transition counts.
        stationary: (K,) stationary distribution of ``matrix`` (NaN if a row is missing).
    """

    matrix: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    counts: np.ndarray
    stationary: np.ndarray


def stationary_distribution(matrix: np.ndarray) -> np.ndarray:
    """Stationary distribution pi (pi P = pi, sum 1) of a row-stochastic matrix."""
    p = np.asarray(matrix, float)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or not np.all(np.isfinite(p)):
        return np.full(p.shape[0] if p.ndim else 0, np.nan)
    vals, vecs = np.linalg.eig(p.T)
    v = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1))]))
    return v / v.sum()


def transition_matrix(label_sequences, n_classes: int, *, prior: float = 0.5) -> TransitionMatrix:
    """Transition matrix from class sequences (one integer array per track, a class per frame;
    negative labels mark frames without a class and break the chain)."""
    k = int(n_classes)
    if k < 1:
        raise ValueError(f"n_classes={n_classes} must be >= 1")
    counts = np.zeros((k, k))
    for seq in label_sequences:
        s = np.asarray(seq).reshape(-1)
        if s.size and not np.issubdtype(s.dtype, np.integer):
            if not np.all(np.equal(np.mod(s, 1), 0)):
                raise ValueError("labels must be integers")
            s = s.astype(int)
        if np.any(s >= k):
            raise ValueError(f"a label {int(s.max())} is >= n_classes={k}")
        a, b = s[:-1], s[1:]
        ok = (a >= 0) & (b >= 0)
        np.add.at(counts, (a[ok], b[ok]), 1)
    n = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mle = counts / n
    lo = beta.ppf(0.025, counts + prior, n - counts + prior * (k - 1))
    hi = beta.ppf(0.975, counts + prior, n - counts + prior * (k - 1))
    empty = n[:, 0] == 0
    lo[empty], hi[empty] = np.nan, np.nan
    return TransitionMatrix(matrix=mle, ci_low=lo, ci_high=hi, counts=counts,
                            stationary=stationary_distribution(mle))
