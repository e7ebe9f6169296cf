"""Column classes from integrated intensity (Gaussian mixture), e.g. Si vs C, W vs Mo, Sr vs Ti-O."""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from .table import AtomTable


def classify_columns(table: AtomTable, n_classes: int | None = None, *, max_classes: int = 4,
                     class_names: tuple[str, ...] | None = None, seed: int = 0) -> AtomTable:
    """Label columns by a 1D Gaussian mixture on their integrated intensity.

    Args:
        table: found columns with ``intensity``.
        n_classes: number of classes; ``None`` picks 1..``max_classes`` by the lowest BIC.
        class_names: names for the classes in order of increasing intensity.
        seed: seed of the mixture fit.

    Returns:
        A copy with ``label`` (0 = dimmest class) and ``confidence`` multiplied by the posterior
        probability of the chosen class.
    """
    n = len(table)
    if n == 0:
        return table
    v = np.asarray(table.intensity, float).reshape(-1, 1)
    if not np.all(np.isfinite(v)):
        raise ValueError("table.intensity has NaN or inf values")
    if n_classes is not None and not 1 <= n_classes <= n:
        raise ValueError(f"n_classes={n_classes} must be between 1 and the number of columns ({n})")
    candidates = [n_classes] if n_classes else list(range(1, min(max_classes, n) + 1))
    best, best_bic = None, np.inf
    for k in candidates:
        gm = GaussianMixture(k, random_state=seed, n_init=2, reg_covar=1e-6 * float(np.var(v) + 1e-12)).fit(v)
        bic = gm.bic(v)
        if bic < best_bic:
            best, best_bic = gm, bic
    order = np.argsort(best.means_.ravel())
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    post = best.predict_proba(v)
    raw = post.argmax(axis=1)
    labels = rank[raw]
    names = tuple(class_names) if class_names is not None else tuple(f"class {i}" for i in range(len(order)))
    if len(names) != len(order):
        raise ValueError(f"class_names has {len(names)} names for {len(order)} classes")
    meta = {**table.metadata, "classes": {"method": "gmm-intensity", "n_classes": len(order),
                                          "means": best.means_.ravel()[order].tolist(), "bic": float(best_bic)}}
    return table.replace(label=labels, confidence=table.confidence * post.max(axis=1), class_names=names,
                         metadata=meta)
