"""Batched Levenberg-Marquardt least squares: many small independent fits at once in numpy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Model = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def numeric_jacobian(fun: Callable[[np.ndarray], np.ndarray], rel_step: float = 1e-6) -> Model:
    """Wrap ``fun(p (B, k)) -> f (B, n)`` into a model returning ``(f, J^T (B, k, n))`` by
    forward differences (for small problems where an analytic Jacobian is not worth it)."""

    def model(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = fun(p)
        jt = np.empty((f.shape[0], p.shape[1], f.shape[1]))
        for j in range(p.shape[1]):
            h = rel_step * np.maximum(np.abs(p[:, j]), 1e-3)
            q = p.copy()
            q[:, j] += h
            jt[:, j, :] = (fun(q) - f) / h[:, None]
        return f, jt

    return model


def levenberg_marquardt(model: Model, p0: np.ndarray, y: np.ndarray, *,
                        valid: Callable[[np.ndarray], np.ndarray] | None = None,
                        max_iter: int = 60, rtol: float = 1e-6,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``sum((y - f(p))**2)`` for every row independently.

    Args:
        model: ``p (B, k) -> (f (B, n), J^T (B, k, n))`` model values and the transposed
            Jacobian (parameter-major, so each derivative is written contiguously).
        p0: (B, k) starting parameters.
        y: (B, n) data.
        valid: ``p (B, k) -> (B,) bool``; steps to invalid parameters are rejected.
        max_iter: iterations at most.
        rtol: a row has converged when an accepted step changes no parameter by more than
            ``rtol`` relative (or the cost by less than ``rtol / 1000`` relative).

    Returns:
        ``(p, converged)``: (B, k) parameters and (B,) bool.
    """
    p = np.array(p0, dtype=np.float64)
    nb, k = p.shape

    def normal(q: np.ndarray, yq: np.ndarray):
        # only J^T J, J^T r and the cost are kept, not the (B, n, k) Jacobian
        f, jt = model(q)
        r = yq - f
        return np.einsum("bn,bn->b", r, r), jt @ jt.transpose(0, 2, 1), (jt @ r[..., None])[..., 0]

    with np.errstate(all="ignore"):
        cost, jtj, g = normal(p, y)
    lam = np.full(nb, 1e-3)
    done = ~np.isfinite(cost)
    conv = np.zeros(nb, bool)
    eye = np.eye(k)
    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        ja, ga = jtj[act], g[act]
        dg = np.einsum("bkk->bk", ja)
        scale = np.where(dg > 0, dg, 1.0)
        a = ja + ((lam[act, None] + 1e-12) * scale)[:, :, None] * eye
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(a, ga[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(ai, gi, rcond=None)[0] for ai, gi in zip(a, ga,
                                 strict=True)])
            pn = p[act] + step
            cn, jn, gn = normal(pn, y[act])
        ok = np.isfinite(cn) & np.all(np.isfinite(pn), axis=1)
        if valid is not None:
            ok &= valid(pn)
        acc = ok & (cn <= cost[act])
        ia = act[acc]
        small = np.all(np.abs(step[acc]) <= rtol * (np.abs(pn[acc]) + rtol), axis=1) | (
            cost[ia] - cn[acc] <= 1e-3 * rtol * cost[ia])
        p[ia], cost[ia], jtj[ia], g[ia] = pn[acc], cn[acc], jn[acc], gn[acc]
        lam[ia] = np.maximum(lam[ia] / 3.0, 1e-12)
        lam[act[~acc]] *= 4.0
        conv[ia[small]] = True
        done[ia[small]] = True
        # no downhill step left even at a tiny step size: a minimum to machine precision
        stuck = act[~acc][lam[act[~acc]] > 1e12]
        conv[stuck] = True
        done[stuck] = True
    return p, conv
