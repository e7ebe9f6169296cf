"""PCA and NMF denoising of spectrum images (scikit-learn).

The spectra are unfolded to a (pixels, channels) matrix, decomposed into ``n_components``
factors and rebuilt from them. Shot noise is Poisson, so its variance follows the signal; PCA
assumes uniform Gaussian noise and would keep noise in the bright channels. Two standard fixes:

* ``weighting="poisson"`` (default): Keenan & Kotula (Surf. Interface Anal. 36, 203 (2004))
  scaling, ``D / sqrt(mean image (x) mean spectrum)`` before PCA and back afterwards (what
  HyperSpy's ``decomposition(normalize_poissonian_noise=True)`` does).
* ``weighting="anscombe"``: the variance-stabilising transform ``2 sqrt(D + 3/8)``, PCA, then
  the closed-form approximation of the exact unbiased inverse (Makitalo & Foi, IEEE TIP 20,
  2697 (2011)).

NMF (non-negative factors, for counts) uses scikit-learn's ``NMF`` (coordinate descent) on the
Keenan-Kotula scaled data, which stay non-negative. Both return an array of the input's shape (float32 for float32 input,
float64 otherwise). Dask input is computed first: the decomposition needs every pixel.
"""

from __future__ import annotations

import typing
import warnings

import numpy as np

from . import _validate

WEIGHTINGS = ("poisson", "anscombe", None)


def _unfold(data: typing.Any, n_components: int) -> tuple[np.ndarray, tuple[int, ...], np.dtype]:
    if _validate.is_dask(data):
        data = data.compute()
    d = np.asarray(data)
    if d.ndim < 2:
        raise ValueError(f"data must be a spectrum image (..., n_channels) with >= 2 spectra; got "
                         f"shape {d.shape}")
    _validate.spectra(d, d.shape[-1])
    flat = d.reshape(-1, d.shape[-1]).astype(np.float64)
    _validate.finite(flat)
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
        raise ValueError(f"n_components={n_components!r} must be a positive integer")
    if not 1 <= n_components <= min(flat.shape):
        raise ValueError(f"n_components={n_components} must be in 1..{min(flat.shape)} "
                         f"(min of pixels and channels)")
    out_dtype = np.dtype(np.float32) if d.dtype == np.float32 else np.dtype(np.float64)
    return flat, d.shape, out_dtype


def _poisson_scales(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keenan-Kotula scales sqrt(mean image) (P, 1) and sqrt(mean spectrum) (1, n)."""
    img, spec = flat.mean(axis=1), flat.mean(axis=0)
    return (np.sqrt(np.where(img > 0, img, 1.0))[:, None],
            np.sqrt(np.where(spec > 0, spec, 1.0))[None, :])


def _anscombe_inverse(z: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse Anscombe transform."""
    z = np.maximum(z, 1e-3)
    s = np.sqrt(1.5)
    out = 0.25 * z**2 + 0.25 * s / z - 11.0 / 8.0 / z**2 + 5.0 / 8.0 * s / z**3 - 1.0 / 8.0
    return np.maximum(out, 0.0)


def denoise_pca(data: typing.Any, n_components: int, *, weighting: str | None = "poisson",
                random_state: int | None = 0) -> np.ndarray:
    """Rebuild a spectrum image from its first ``n_components`` principal components.

    Args:
        data: (..., n) spectrum image, at least 2 spectra (counts for the Poisson weightings;
            numpy, or dask which is computed).
        n_components: components kept (1..min(pixels, channels)).
        weighting: ``"poisson"`` (Keenan-Kotula scaling, default), ``"anscombe"`` (variance
            stabilisation; counts must be >= 0) or ``None`` (plain PCA).
        random_state: seed of the randomised SVD (reproducible results).

    Returns:
        (..., n) denoised array, same shape (float32 for float32 input, else float64), in the
        units of the data.
    """
    from sklearn.decomposition import PCA

    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not one of {WEIGHTINGS}")
    flat, shape, dtype = _unfold(data, n_components)
    if weighting == "anscombe":
        if flat.min() < 0:
            raise ValueError("weighting='anscombe' needs counts >= 0")
        work = 2.0 * np.sqrt(flat + 0.375)
    elif weighting == "poisson":
        if flat.min() < 0:
            raise ValueError("weighting='poisson' needs counts >= 0")
        a, b = _poisson_scales(flat)
        work = flat / a / b
    else:
        work = flat
    solver = "randomized" if n_components < 0.8 * min(work.shape) else "full"
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=random_state)
    rebuilt = pca.inverse_transform(pca.fit_transform(work))
    if weighting == "anscombe":
        rebuilt = _anscombe_inverse(rebuilt)
    elif weighting == "poisson":
        rebuilt = rebuilt * a * b
    return rebuilt.reshape(shape).astype(dtype, copy=False)


def denoise_nmf(data: typing.Any, n_components: int, *, weighting: str | None = "poisson",
                max_iter: int = 200, random_state: int | None = 0) -> np.ndarray:
    """Rebuild a spectrum image from ``n_components`` non-negative factors (NMF).

    Args:
        data: (..., n) spectrum image of counts >= 0 (numpy, or dask which is computed).
        n_components: factors (1..min(pixels, channels)).
        weighting: ``"poisson"`` (Keenan-Kotula scaling, which keeps the data non-negative;
            default) or ``None``.
        max_iter: coordinate-descent iterations at most.
        random_state: seed of the initialisation.

    Returns:
        (..., n) denoised counts, same shape (float32 for float32 input, else float64).
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    if weighting not in ("poisson", None):
        raise ValueError(f"weighting={weighting!r} is not one of ('poisson', None)")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer")
    flat, shape, dtype = _unfold(data, n_components)
    if flat.min() < 0:
        raise ValueError("NMF needs non-negative data (counts)")
    a, b = _poisson_scales(flat) if weighting == "poisson" else (1.0, float(flat.mean()) or 1.0)
    model = NMF(n_components=n_components, init="nndsvda", solver="cd", max_iter=int(max_iter),
                tol=1e-4, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        w = model.fit_transform(flat / a / b)
    rebuilt = (w @ model.components_) * a * b
    return rebuilt.reshape(shape).astype(dtype, copy=False)
