"""Column classes from integrated intensity (Gaussian mixture), e.g. Si vs C, W vs Mo, Sr vs Ti-O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from .table import AtomTable

_MIN_ASHMAN_D = 2.5


def _merge_overlapping(w, m, s2, groups):
    """Merge mixture components adjacent in mean while Ashman's D between them is below
    ``_MIN_ASHMAN_D`` (closest pair first); returns the groups of original components."""
    comps = [(float(w[i]), float(m[i]), float(s2[i]), list(g)) for i, g in enumerate(groups)]
    while len(comps) > 1:
        comps.sort(key=lambda c: c[1])
        d = [np.sqrt(2.0) * (b[1] - a[1]) / np.sqrt(a[2] + b[2] + 1e-300) for a, b in zip(comps[:-1], comps[1:], strict=False)]
        j = int(np.argmin(d))
        if d[j] >= _MIN_ASHMAN_D:
            break
        (wa, ma, va, ga), (wb, mb, vb, gb) = comps[j], comps[j + 1]
        wt = wa + wb
        mt = (wa * ma + wb * mb) / wt
        vt = (wa * (va + ma * ma) + wb * (vb + mb * mb)) / wt - mt * mt
        comps[j:j + 2] = [(wt, mt, vt, ga + gb)]
    return [c[3] for c in comps]


@dataclass(frozen=True, eq=False)
class ColumnClasses:
    """Column classes fitted on one frame's intensities, to label other frames quickly.

    Attributes:
        mixture: the 1D Gaussian mixture (scikit-learn) on integrated intensity.
        groups: mixture components making up each class (overlapping ones merged).
        order: class index -> rank in intensity (0 = dimmest).
        means: (K,) mean intensity per class, dimmest first.
        class_names: names in order of increasing intensity.
        bic: BIC of the mixture on the fitting frame.
    """

    mixture: GaussianMixture
    groups: tuple[tuple[int, ...], ...]
    rank: np.ndarray
    means: np.ndarray
    class_names: tuple[str, ...]
    bic: float

    def apply(self, table: AtomTable) -> AtomTable:
        """Label ``table``'s columns with these classes (posterior of each class, no refit)."""
        if len(table) == 0:
            return table
        v = np.asarray(table.intensity, float).reshape(-1, 1)
        if not np.all(np.isfinite(v)):
            raise ValueError("table.intensity has NaN or inf values")
        post_k = self.mixture.predict_proba(v)
        post = np.stack([post_k[:, list(g)].sum(axis=1) for g in self.groups], axis=1)
        labels = self.rank[post.argmax(axis=1)]
        meta = {**table.metadata, "classes": {"method": "gmm-intensity", "n_classes": len(self.groups),
                                              "means": self.means.tolist(), "bic": self.bic}}
        return table.replace(label=labels, confidence=table.confidence * post.max(axis=1),
                             class_names=self.class_names, metadata=meta)

    def to_dict(self) -> dict:
        """Means, names and BIC (the mixture itself is not included)."""
        return {"means": self.means.tolist(), "class_names": list(self.class_names), "bic": self.bic}


def fit_column_classes(table: AtomTable, n_classes: int | None = None, *, max_classes: int = 4,
                       class_names: tuple[str, ...] | None = None, seed: int = 0) -> ColumnClasses:
    """Fit the column classes of :func:`classify_columns` without labelling (for reuse on a movie)."""
    n = len(table)
    if n == 0:
        raise ValueError("no columns to fit classes on")
    v = np.asarray(table.intensity, float).reshape(-1, 1)
    if not np.all(np.isfinite(v)):
        raise ValueError("table.intensity has NaN or inf values")
    if n_classes is not None and not 1 <= n_classes <= n:
        raise ValueError(f"n_classes={n_classes} must be between 1 and the number of columns ({n})")
    candidates = [n_classes] if n_classes else list(range(1, min(max_classes, n) + 1))
    fits = {}

    def fit(k: int) -> GaussianMixture:
        if k not in fits:  # k-means start (it isolates a few bright dopants), seeded
            fits[k] = GaussianMixture(k, random_state=seed, n_init=1,
                                      reg_covar=1e-6 * float(np.var(v) + 1e-12)).fit(v)
        return fits[k]

    best = min((fit(k) for k in candidates), key=lambda g: g.bic(v))
    groups = [[i] for i in range(best.n_components)]
    if n_classes is None:
        # BIC splits a host class whose intensities are not Gaussian (border and defect-side
        # columns, shot noise) into several components; merge neighbours in intensity that are
        # not clearly apart (Ashman's D < 2.5; D > 2 is a clean bimodal split), moment-matched
        groups = _merge_overlapping(best.weights_, best.means_.ravel(),
                                    best.covariances_.reshape(best.n_components, -1)[:, 0], groups)
    w = best.weights_
    means = np.array([np.sum(w[g] * best.means_.ravel()[g]) / np.sum(w[g]) for g in groups])
    order = np.argsort(means)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    names = tuple(class_names) if class_names is not None else tuple(f"class {i}" for i in range(len(order)))
    if len(names) != len(order):
        raise ValueError(f"class_names has {len(names)} names for {len(order)} classes")
    return ColumnClasses(best, tuple(tuple(g) for g in groups), rank, means[order], names, float(best.bic(v)))


def classify_columns(table: AtomTable, n_classes: int | None = None, *, max_classes: int = 4,
                     class_names: tuple[str, ...] | None = None, seed: int = 0) -> AtomTable:
    """Label columns by a 1D Gaussian mixture on their integrated intensity.

    Args:
        table: found columns with ``intensity``.
        n_classes: number of classes; ``None`` picks 1..``max_classes`` by the lowest BIC, then
            fewer while two classes adjacent in intensity overlap (Ashman's D < 2.5).
        class_names: names for the classes in order of increasing intensity.
        seed: seed of the mixture fit.

    Returns:
        A copy with ``label`` (0 = dimmest class) and ``confidence`` multiplied by the posterior
        probability of the chosen class.
    """
    if len(table) == 0:
        return table
    return fit_column_classes(table, n_classes, max_classes=max_classes, class_names=class_names,
                              seed=seed).apply(table)
