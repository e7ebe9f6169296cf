"""Sliding-window FFT: local diffractograms of an image and their PCA or NMF decomposition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.ndimage import map_coordinates
from scipy.signal.windows import hann
from skimage.util import view_as_windows
from sklearn.decomposition import NMF, PCA

from ._validate import as_dict, check_positive

_METHODS = ("pca", "nmf")


@dataclass(frozen=True, eq=False)
class SlidingFFT:
    """Decomposition of local FFTs taken over a grid of windows.

    Attributes:
        components: (C, w, w) FFT patterns (log-magnitude, zero frequency at the centre
            [w // 2, w // 2]) of the components.
        loadings: (C, R, Q) weight of each component in each window (R rows, Q columns of
            windows).
        explained_variance_ratio: (C,) for PCA, None for NMF.
        reconstruction_error: Frobenius norm of the NMF residual, None for PCA.
        method: ``"pca"`` or ``"nmf"``.
        window_px: window side, pixels.
        step_px: distance between windows, pixels.
        centers_px: (R, Q, 2) window centres (x, y), pixels.
        frequencies_per_px: (w,) spatial frequency of each FFT row / column, cycles per pixel.
        image_shape: (rows, cols) of the image.
        pixel_size_nm: calibration or None.
        spectra: (R, Q, w, w) the local FFTs, when kept (``keep_spectra=True``), else None.
    """

    components: np.ndarray
    loadings: np.ndarray
    explained_variance_ratio: np.ndarray | None
    reconstruction_error: float | None
    method: str
    window_px: int
    step_px: int
    centers_px: np.ndarray
    frequencies_per_px: np.ndarray
    image_shape: tuple[int, int]
    pixel_size_nm: float | None = None
    spectra: np.ndarray | None = None

    @property
    def frequencies_per_nm(self) -> np.ndarray | None:
        """(w,) spatial frequencies in cycles per nm, or None without a calibration."""
        return None if self.pixel_size_nm is None else self.frequencies_per_px / self.pixel_size_nm

    def loading_maps(self) -> np.ndarray:
        """(C, H, W) loadings interpolated (linearly) from the window centres to every pixel."""
        h, w = self.image_shape
        rows = (np.arange(h) - self.centers_px[0, 0, 1]) / self.step_px
        cols = (np.arange(w) - self.centers_px[0, 0, 0]) / self.step_px
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        return np.stack([map_coordinates(m, [rr, cc], order=1, mode="nearest")
                         for m in self.loadings])

    def to_dict(self) -> dict:
        """Fields as a dict of arrays and numbers."""
        return as_dict(self)


def _check_image_and_windows(image, window_px, step_px) -> np.ndarray:
    """The image as finite float32 (H, W), with window and step checked; else ValueError."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2D (rows, cols); got shape {img.shape}")
    try:
        img = img.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError("image must be numeric") from exc
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or infinite values")
    for name, v in (("window_px", window_px), ("step_px", step_px)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    if window_px < 8 or window_px > min(img.shape):
        raise ValueError(f"window_px={window_px} must be between 8 and the smaller image side "
                         f"({min(img.shape)})")
    return img


def local_ffts(image: np.ndarray, window_px: int, step_px: int, *, log: bool = True) -> np.ndarray:
    """(R, Q, w, w) Hann-windowed FFT magnitudes (``log1p`` if ``log``) of windows of ``image``.

    Windows of ``window_px`` pixels are taken every ``step_px`` pixels
    (:func:`skimage.util.view_as_windows`); each has its mean removed before the Hann taper.
    Zero frequency is at the centre [w // 2, w // 2].
    """
    img = _check_image_and_windows(image, window_px, step_px)
    window_px, step_px = int(window_px), int(step_px)
    windows = view_as_windows(img, (window_px, window_px), step_px)
    taper = np.outer(hann(window_px, sym=False), hann(window_px, sym=False)).astype(np.float32)
    win = windows - windows.mean(axis=(-2, -1), keepdims=True)
    spec = np.abs(scipy.fft.fft2(win * taper, axes=(-2, -1), workers=-1))
    spec = scipy.fft.fftshift(spec, axes=(-2, -1))
    return np.log1p(spec) if log else spec


def sliding_fft(
    image: np.ndarray,
    window_px: int = 64,
    step_px: int = 16,
    *,
    n_components: int = 4,
    method: str = "pca",
    log: bool = True,
    pixel_size_nm: float | None = None,
    keep_spectra: bool = False,
    seed: int | np.random.Generator | None = 0,
) -> SlidingFFT:
    """Local FFTs over a sliding window and their decomposition into a few patterns.

    Windows of ``window_px`` x ``window_px`` pixels are taken every ``step_px`` pixels
    (:func:`skimage.util.view_as_windows`), mean-subtracted, Hann-tapered and Fourier
    transformed; the (log-)magnitudes are decomposed by PCA or NMF (scikit-learn) into
    component patterns and per-window loadings, which map grains, rotations and phases.

    Args:
        image: (H, W) image.
        window_px: window side in pixels (>= 8, at most the smaller image side).
        step_px: step between windows in pixels (>= 1).
        n_components: number of components.
        method: ``"pca"`` or ``"nmf"`` (non-negative; the magnitudes, log1p or not, are >= 0).
        log: use ``log1p`` of the FFT magnitude.
        pixel_size_nm: calibration, nm per pixel (for frequencies in 1/nm).
        keep_spectra: keep all local FFTs in the result (memory: R x Q x w x w floats).
        seed: random seed for the decomposition.

    Returns:
        :class:`SlidingFFT`.

    Example:
        >>> img = np.sin(np.arange(128)[None, :] / 2.0) * np.ones((128, 1))
        >>> sliding_fft(img, 32, 16, n_components=2).loadings.shape
        (2, 7, 7)
    """
    img = _check_image_and_windows(image, window_px, step_px)
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) \
            or n_components < 1:
        raise ValueError(f"n_components={n_components!r} must be a positive integer")
    if method not in _METHODS:
        raise ValueError(f"method={method!r} must be one of {_METHODS}")
    pixel_size_nm = check_positive(pixel_size_nm, "pixel_size_nm", allow_none=True)
    window_px, step_px, n_components = int(window_px), int(step_px), int(n_components)

    spec = local_ffts(img, window_px, step_px, log=log)
    n_r, n_q = spec.shape[:2]
    flat = spec.reshape(n_r * n_q, -1)
    if n_components > min(flat.shape):
        raise ValueError(f"n_components={n_components} exceeds the {n_r * n_q} windows "
                         f"(or {flat.shape[1]} frequencies)")
    rs = int(seed.integers(2**31 - 1)) if isinstance(seed, np.random.Generator) else seed
    evr = err = None
    if method == "pca":
        model = PCA(n_components=n_components, random_state=rs)
        scores = model.fit_transform(flat)
        comps = model.components_.copy()
        # sign convention: the largest element of each component is positive
        sign = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
        comps *= sign[:, None]
        scores *= sign[None, :]
        evr = model.explained_variance_ratio_
    else:
        model = NMF(n_components=n_components, init="nndsvda", max_iter=500, random_state=rs)
        scores = model.fit_transform(flat)
        comps = model.components_
        err = float(model.reconstruction_err_)
    half = (window_px - 1) / 2.0
    cy = np.arange(n_r) * step_px + half
    cx = np.arange(n_q) * step_px + half
    centers = np.stack(np.meshgrid(cx, cy, indexing="xy"), axis=-1)
    return SlidingFFT(
        components=comps.reshape(n_components, window_px, window_px),
        loadings=scores.T.reshape(n_components, n_r, n_q),
        explained_variance_ratio=evr,
        reconstruction_error=err,
        method=method,
        window_px=window_px,
        step_px=step_px,
        centers_px=centers,
        frequencies_per_px=scipy.fft.fftshift(scipy.fft.fftfreq(window_px)),
        image_shape=img.shape,
        pixel_size_nm=pixel_size_nm,
        spectra=spec if keep_spectra else None,
    )
