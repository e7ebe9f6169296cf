"""im2spec and spec2im on one image + spectrum-image pair: cut the patches, hold out a region,
train, score on the held-out region and predict everywhere.

The held-out region is a strip of the field (:func:`spatial_split`), not random pixels: a
random pixel's neighbours overlap its patch, so a random split scores interpolation, not
prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .im2spec import Im2Spec, Spec2Im, r2_score


@dataclass(frozen=True, eq=False)
class ImageSpectrumFit:
    """A trained im2spec or spec2im model on one pair, with its held-out score.

    Attributes:
        model: the trained :class:`Im2Spec` or :class:`Spec2Im`.
        r2_held_out: R^2 (:func:`r2_score`) on the held-out strip.
        r2_train: R^2 on the training patches.
        predicted: im2spec: (ny, nx, C) spectra predicted from the image patches (NaN where no
            patch fits); spec2im: (ny, nx, s, s) patches predicted from the spectra (NaN there).
        test_mask: (ny, nx) True at held-out patch centres.
        train_mask: (ny, nx) True at training patch centres.
        patch_px: patch side (pixels).
    """

    model: Im2Spec | Spec2Im
    r2_held_out: float
    r2_train: float
    predicted: np.ndarray
    test_mask: np.ndarray
    train_mask: np.ndarray
    patch_px: int


def default_patch_px(image: np.ndarray) -> int:
    """An odd patch side of about two lattice periods of ``image`` (the column under the probe
    and its first neighbours), 9 px if no lattice is found."""
    from atomsmith.atoms.spacing import estimate_lattice_period

    try:
        period = estimate_lattice_period(np.asarray(image, float)).period_px
    except ValueError:
        return 9
    return int(np.clip(round(2 * period), 5, 64)) | 1


def _pairs(image, spectrum_image, patch_px, test_fraction, side, stride):
    from atomsmith.simulate.haadf_eels_pair import patches_and_spectra, spatial_split

    img = np.asarray(image, float)
    si = np.asarray(spectrum_image, float)
    if img.ndim != 2 or si.ndim != 3 or si.shape[:2] != img.shape:
        raise ValueError(f"image must be (ny, nx) and spectrum_image (ny, nx, C) on the same scan grid; "
                         f"got {img.shape} and {si.shape}")
    if not (np.all(np.isfinite(img)) and np.all(np.isfinite(si))):
        raise ValueError("the image or the spectrum image contains NaN or inf")
    s = int(patch_px) if patch_px else default_patch_px(img)
    every = patches_and_spectra(img, si, s, stride=1)
    train, test = spatial_split(every.centers_yx, img.shape, s, test_fraction=test_fraction, side=side)
    if stride > 1:  # train on a sub-grid (fewer, less redundant patches); score on all held-out
        c = every.centers_yx
        train &= (c[:, 0] % stride == 0) & (c[:, 1] % stride == 0)
    if train.sum() < 10 or test.sum() < 1:
        raise ValueError(f"too few patches for training ({int(train.sum())}) or held out ({int(test.sum())}): "
                         "use a larger field or a smaller patch_px")
    return img, si, s, every, train, test


def _masks(shape, centers, train, test):
    tm = np.zeros(shape, bool)
    hm = np.zeros(shape, bool)
    tm[centers[train, 0], centers[train, 1]] = True
    hm[centers[test, 0], centers[test, 1]] = True
    return tm, hm


def fit_im2spec(image: np.ndarray, spectrum_image: np.ndarray, patch_px: int | None = None, *,
                test_fraction: float = 0.25, side: str = "right", stride: int = 1, epochs: int = 40,
                n_latent: int = 8, seed: int = 0, device: str | None = "cpu", progress: bool = True) -> ImageSpectrumFit:
    """Train :class:`Im2Spec` (image patch -> spectrum at its centre) on one pair, score it on a
    held-out strip and predict the spectrum at every pixel.

    Args:
        image: (ny, nx) image (e.g. HAADF) on the spectrum image's scan grid.
        spectrum_image: (ny, nx, C) spectra (any units, e.g. counts).
        patch_px: patch side (default :func:`default_patch_px`).
        test_fraction: width of the held-out strip, fraction of the field.
        side: where the strip is: ``"right"``, ``"left"``, ``"top"`` or ``"bottom"``.
        stride: train on every ``stride``-th pixel in x and y.
        epochs, n_latent, seed, device, progress: passed to :class:`Im2Spec`.
    """
    return _fit_pair(Im2Spec, image, spectrum_image, patch_px, test_fraction=test_fraction, side=side,
                     stride=stride, epochs=epochs, n_latent=n_latent, seed=seed, device=device,
                     progress=progress)


def fit_spec2im(image: np.ndarray, spectrum_image: np.ndarray, patch_px: int | None = None, *,
                test_fraction: float = 0.25, side: str = "right", stride: int = 1, epochs: int = 40,
                n_latent: int = 8, seed: int = 0, device: str | None = "cpu", progress: bool = True) -> ImageSpectrumFit:
    """Train :class:`Spec2Im` (spectrum -> the image patch around its pixel) on one pair, score
    it on a held-out strip and predict the patch at every pixel (arguments as
    :func:`fit_im2spec`)."""
    return _fit_pair(Spec2Im, image, spectrum_image, patch_px, test_fraction=test_fraction, side=side,
                     stride=stride, epochs=epochs, n_latent=n_latent, seed=seed, device=device,
                     progress=progress)


def _fit_pair(kind: type[Im2Spec] | type[Spec2Im], image: np.ndarray, spectrum_image: np.ndarray,
              patch_px: int | None, *, test_fraction: float, side: str, stride: int, epochs: int,
              n_latent: int, seed: int, device: str | None, progress: bool) -> ImageSpectrumFit:
    """:func:`fit_im2spec` (``kind`` :class:`Im2Spec`) or :func:`fit_spec2im` (:class:`Spec2Im`)."""
    img, si, s, every, train, test = _pairs(image, spectrum_image, patch_px, test_fraction, side, stride)
    model = kind(patch_px=s, n_channels=si.shape[2], n_latent=n_latent, seed=seed, device=device)
    inputs, targets = ((every.patches, every.spectra) if kind is Im2Spec
                       else (every.spectra, every.patches))
    model.fit(inputs[train], targets[train], epochs=epochs, progress=progress)
    pred = model.predict(inputs)
    out = np.full(img.shape + pred.shape[1:], np.nan, np.float32)
    out[every.centers_yx[:, 0], every.centers_yx[:, 1]] = pred
    tm, hm = _masks(img.shape, every.centers_yx, train, test)
    return ImageSpectrumFit(model=model, r2_held_out=r2_score(targets[test], pred[test]),
                            r2_train=r2_score(targets[train], pred[train]), predicted=out, test_mask=hm,
                            train_mask=tm, patch_px=s)
