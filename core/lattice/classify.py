"""Local crystallography: PCA, k-means and Gaussian-mixture classes of neighbour descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from ._validate import as_dict
from .descriptors import Descriptors

_METHODS = ("gmm", "kmeans")
# Descriptor matrices are small (D ~ 10): multithreaded BLAS only adds overhead there (10x
# slower GMM fits on 2 cores), so the models are fitted with one BLAS thread.
_ONE_BLAS_THREAD = {"limits": 1, "user_api": "blas"}


@dataclass(frozen=True, eq=False)
class LocalCrystallography:
    """Classes of local atomic configurations.

    Attributes:
        labels: (N,) class of every atom, 0 = most populous class.
        n_classes: number of classes.
        method: ``"gmm"`` or ``"kmeans"``.
        centers: (n_classes, D) mean descriptor of each class, in descriptor units (pixels for
            radius-vector descriptors): the average neighbour geometry of the class.
        probabilities: (N, n_classes) class membership probabilities (GMM) or None.
        components: (n_pca, D) principal axes of the descriptors.
        scores: (N, n_pca) PCA scores of every atom.
        explained_variance_ratio: (n_pca,) fraction of the variance along each axis.
        bic: Bayesian information criterion of the GMM on the fitted atoms (None for k-means).
        inertia: k-means sum of squared distances to the centres (None for GMM).
        fit_mask: (N,) True for the atoms the models were fitted on (not at the edge, in ``mask``).
        n_components: number of PCA scores the classes were found in (None: all descriptors).
    """

    labels: np.ndarray
    n_classes: int
    method: str
    centers: np.ndarray
    probabilities: np.ndarray | None
    components: np.ndarray
    scores: np.ndarray
    explained_variance_ratio: np.ndarray
    bic: float | None
    inertia: float | None
    fit_mask: np.ndarray
    n_components: int | None

    def __len__(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        """Fields as a dict of arrays and numbers."""
        return as_dict(self)


@dataclass(frozen=True)
class ClassSelection:
    """Number of classes chosen by the Bayesian information criterion of Gaussian mixtures.

    Attributes:
        n_classes: the number of classes with the lowest BIC.
        candidates: (M,) numbers of classes tried.
        bic: (M,) BIC of each (lower is better).
    """

    n_classes: int
    candidates: np.ndarray
    bic: np.ndarray

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return as_dict(self)


def _features(descriptors, class_weight: float, use_edge: bool,
              mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and the mask of rows to fit on, from Descriptors or an (N, D) array."""
    if isinstance(descriptors, Descriptors):
        x = np.asarray(descriptors.as_array(class_weight), dtype=float)
        fit = np.ones(len(x), bool) if use_edge else ~descriptors.at_edge
    else:
        try:
            x = np.asarray(descriptors, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError("descriptors must be Descriptors or an (N, D) numeric array") from exc
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"descriptors must have shape (N, D); got {x.shape}")
        fit = np.ones(len(x), bool)
    if not np.all(np.isfinite(x)):
        raise ValueError("descriptors contain NaN or infinite values")
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (len(x),) or m.dtype != bool:
            raise ValueError(f"mask must be a boolean array of shape ({len(x)},); got "
                             f"{m.dtype} {m.shape}")
        fit = fit & m
    return x, fit


def _check_n(n, name: str, n_fit: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"{name}={n!r} must be a positive integer")
    if n > n_fit:
        raise ValueError(f"{name}={n} is larger than the {n_fit} atoms available to fit "
                         "(atoms at the edge are left out unless use_edge=True)")
    return int(n)


def _gmm(n: int, covariance_type: str, reg_covar: float, seed, n_init: int) -> GaussianMixture:
    if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer) or n_init < 1:
        raise ValueError(f"n_init={n_init!r} must be a positive integer")
    return GaussianMixture(n_components=n, covariance_type=covariance_type, reg_covar=reg_covar,
                           n_init=int(n_init), random_state=_seed_int(seed))


def _seed_int(seed) -> int | None:
    """scikit-learn random_state from an int, None or a numpy Generator."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**31 - 1))
    return seed


def choose_n_classes(
    descriptors: Descriptors | np.ndarray,
    max_classes: int = 8,
    *,
    min_classes: int = 1,
    n_components: int | None = None,
    covariance_type: str = "full",
    reg_covar: float = 1e-4,
    class_weight: float = 0.0,
    use_edge: bool = False,
    mask: np.ndarray | None = None,
    n_init: int = 1,
    seed: int | np.random.Generator | None = 0,
) -> ClassSelection:
    """Choose the number of classes by the BIC of Gaussian mixtures fitted for each candidate.

    Args:
        descriptors: :class:`Descriptors` (edge atoms left out) or an (N, D) feature array.
        max_classes, min_classes: range of class numbers to try (inclusive).
        n_components: fit in the first ``n_components`` PCA scores instead of the raw descriptors.
        covariance_type: scikit-learn ``GaussianMixture`` covariance type.
        reg_covar: variance floor added to the covariances, descriptor units squared (px^2):
            about the square of the smallest meaningful position scatter.
        class_weight: see :meth:`Descriptors.as_array`.
        use_edge: also fit atoms whose neighbourhood is cut by the image border.
        mask: (N,) bool, fit only these atoms (e.g. away from grain boundaries or defects).
        n_init: GMM initialisations per candidate (the best is kept).
        seed: random seed.

    Returns:
        :class:`ClassSelection` with the BIC of every candidate.
    """
    _check_n(n_init, "n_init", 10**9)
    x, fit = _features(descriptors, class_weight, use_edge, mask)
    n_fit = int(fit.sum())
    min_classes = _check_n(min_classes, "min_classes", n_fit)
    max_classes = _check_n(max_classes, "max_classes", n_fit)
    if max_classes < min_classes:
        raise ValueError(f"max_classes={max_classes} is smaller than min_classes={min_classes}")
    cands = np.arange(min_classes, max_classes + 1)
    with threadpool_limits(**_ONE_BLAS_THREAD):
        z = _reduce(x, fit, n_components, seed)[2]
        bic = np.array([_gmm(int(c), covariance_type, reg_covar, seed, n_init).fit(z[fit]).bic(z[fit])
                        for c in cands])
    return ClassSelection(n_classes=int(cands[np.argmin(bic)]), candidates=cands, bic=bic)


def _reduce(x: np.ndarray, fit: np.ndarray, n_components: int | None, seed):
    """PCA on the fitted rows; returns (pca, scores of all rows, matrix to cluster)."""
    n_fit = int(fit.sum())
    if n_fit < 2:
        raise ValueError(f"only {n_fit} atoms to fit; need at least 2 (edge atoms are left out)")
    max_pca = min(x.shape[1], n_fit)
    if n_components is not None:
        n_components = _check_n(n_components, "n_components", max_pca)
    pca = PCA(n_components=max_pca, random_state=_seed_int(seed)).fit(x[fit])
    scores = pca.transform(x)
    z = x if n_components is None else scores[:, :n_components]
    return pca, scores, z


def local_crystallography(
    descriptors: Descriptors | np.ndarray,
    n_classes: int | None = 2,
    *,
    method: str = "gmm",
    n_components: int | None = None,
    covariance_type: str = "full",
    reg_covar: float = 1e-4,
    max_classes: int = 8,
    class_weight: float = 0.0,
    use_edge: bool = False,
    mask: np.ndarray | None = None,
    n_init: int = 3,
    seed: int | np.random.Generator | None = 0,
) -> LocalCrystallography:
    """Classify atoms by their local neighbourhood: PCA, then k-means or a Gaussian mixture.

    The models are fitted on the atoms whose neighbourhood is complete (not ``at_edge``) and
    then applied to all atoms. Classes are numbered by decreasing size.

    Args:
        descriptors: :class:`Descriptors` (see :func:`radius_vector_descriptors`) or an
            (N, D) feature array.
        n_classes: number of classes, or None to choose it by BIC (:func:`choose_n_classes`,
            from 1 to ``max_classes``).
        method: ``"gmm"`` (scikit-learn GaussianMixture) or ``"kmeans"``.
        n_components: cluster in the first ``n_components`` PCA scores instead of the raw
            descriptors (None: raw descriptors; the full PCA is reported either way).
        covariance_type: GaussianMixture covariance type.
        reg_covar: GMM variance floor, descriptor units squared (px^2).
        max_classes: upper limit when ``n_classes`` is None (capped at the number of atoms).
        class_weight: see :meth:`Descriptors.as_array`.
        use_edge: also fit atoms whose neighbourhood is cut by the image border.
        mask: (N,) bool, fit only these atoms (all atoms are still classified).
        n_init: GMM / k-means initialisations (the best is kept).
        seed: random seed (same seed, same result).

    Returns:
        :class:`LocalCrystallography`.
    """
    if method not in _METHODS:
        raise ValueError(f"method={method!r} must be one of {_METHODS}")
    _check_n(n_init, "n_init", 10**9)
    x, fit = _features(descriptors, class_weight, use_edge, mask)
    if n_classes is None:
        max_classes = min(_check_n(max_classes, "max_classes", 10**9), int(fit.sum()))
        n_classes = choose_n_classes(descriptors, max_classes, n_components=n_components,
                                     covariance_type=covariance_type, reg_covar=reg_covar,
                                     class_weight=class_weight, use_edge=use_edge, mask=mask,
                                     seed=seed).n_classes
    n_classes = _check_n(n_classes, "n_classes", int(fit.sum()))
    with threadpool_limits(**_ONE_BLAS_THREAD):
        return _classify(x, fit, n_classes, method, n_components, covariance_type, reg_covar,
                         n_init, seed)


def _classify(x, fit, n_classes, method, n_components, covariance_type, reg_covar, n_init,
              seed) -> LocalCrystallography:
    pca, scores, z = _reduce(x, fit, n_components, seed)
    probs = bic = inertia = None
    if method == "gmm":
        model = _gmm(n_classes, covariance_type, reg_covar, seed, n_init).fit(z[fit])
        raw = model.predict(z)
        probs = model.predict_proba(z)
        bic = float(model.bic(z[fit]))
        centers = model.means_
    else:
        model = KMeans(n_clusters=n_classes, n_init=_check_n(n_init, "n_init", 10**9),
                       random_state=_seed_int(seed)).fit(z[fit])
        raw = model.predict(z)
        inertia = float(model.inertia_)
        centers = model.cluster_centers_
    # number classes by decreasing size (ties: by the first PCA score of the centre)
    counts = np.bincount(raw[fit], minlength=n_classes)
    centers_x = centers if n_components is None else (
        centers @ pca.components_[:n_components] + pca.mean_)
    first = (centers_x - pca.mean_) @ pca.components_[0]
    perm = np.lexsort((first, -counts))
    relabel = np.empty(n_classes, int)
    relabel[perm] = np.arange(n_classes)
    return LocalCrystallography(
        labels=relabel[raw],
        n_classes=n_classes,
        method=method,
        centers=centers_x[perm],
        probabilities=None if probs is None else probs[:, perm],
        components=pca.components_,
        scores=scores,
        explained_variance_ratio=pca.explained_variance_ratio_,
        bic=bic,
        inertia=inertia,
        fit_mask=fit,
        n_components=n_components,
    )
