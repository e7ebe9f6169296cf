"""Rotationally invariant VAEs on the patches around found columns (or defects) of an image:
the local orientation of each column's surroundings, its remaining content latents, and with
``n_classes`` the classes learned without labels (joint rVAE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class PatchLatents:
    """Latents of the patches around positions.

    Attributes:
        model: the trained :class:`RotationalVAE` or :class:`JointRotationalVAE`.
        xy: (N, 2) patch centres (x, y), pixels.
        angle_rad: (N,) latent rotation of each patch (rad, (-pi, pi]; the sense and zero are
            the model's own: compare angles, do not read them as absolute).
        shift: (N, 2) latent translation (fractions of the patch half-width).
        z: (N, k) content latents.
        classes: (N,) learned classes (joint rVAE) or None.
        patch_px: patch side (pixels).
    """

    model: object
    xy: np.ndarray
    angle_rad: np.ndarray
    shift: np.ndarray
    z: np.ndarray
    classes: np.ndarray | None
    patch_px: int


def rvae_on_positions(image: np.ndarray, xy: np.ndarray, patch_px: int | None = None, *, n_latent: int = 1,
                      n_classes: int | None = None, epochs: int = 30, n_init: int = 3, seed: int = 0,
                      device: str | None = "cpu", model_options: dict | None = None,
                      progress: bool = True) -> PatchLatents:
    """Train an rVAE (or, with ``n_classes``, a joint rVAE with a discrete latent) on the patches
    of ``image`` centred on ``xy`` and return every patch's latents.

    Args:
        image: (H, W) image.
        xy: (N, 2) positions (x, y) in pixels, e.g. found columns; N >= 10.
        patch_px: patch side (default about two lattice periods, odd; see
            :func:`atomsmith.learn.image_spectrum.default_patch_px`).
        n_latent: content latents besides angle and shift.
        n_classes: classes of the discrete latent (joint rVAE), None for a plain rVAE.
        epochs, n_init, seed, device, progress: training settings.
        model_options: further model settings, e.g. ``{"lambda_balance": 10}`` for a joint rVAE
            on classes of unequal size (its balance term pulls towards equal sizes: on SrTiO3
            columns, Sr : TiO : O = 1 : 1 : 2, the ARI was 0.45 at the default 100 and 0.75 at 10).
    """
    from atomsmith.dynamics import subimage_stack

    from .image_spectrum import default_patch_px
    from .jrvae import JointRotationalVAE
    from .rvae import RotationalVAE

    img = np.asarray(image, float)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise ValueError(f"image must be a finite 2D array; got shape {img.shape}")
    pos = np.asarray(xy, float).reshape(-1, 2)
    if len(pos) < 10 or not np.all(np.isfinite(pos)):
        raise ValueError(f"need >= 10 finite positions; got {len(pos)}")
    s = int(patch_px) if patch_px else default_patch_px(img)
    stack, _ = subimage_stack([img], [pos], s)
    if n_classes:
        model = JointRotationalVAE(s, n_latent, n_classes=int(n_classes), seed=seed, device=device,
                                   **(model_options or {}))
    else:
        model = RotationalVAE(s, n_latent, seed=seed, device=device, **(model_options or {}))
    model.fit(stack, epochs=epochs, n_init=n_init, progress=progress)
    lat = model.transform(stack)
    return PatchLatents(model=model, xy=pos, angle_rad=lat[:, 0], shift=lat[:, 1:3], z=lat[:, 3:3 + n_latent],
                        classes=model.predict(stack) if n_classes else None, patch_px=s)
