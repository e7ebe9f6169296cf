"""Variational autoencoders for image patches: a plain :class:`VAE` and a :class:`ConditionalVAE`.

VAE (Kingma & Welling 2014): an MLP encoder maps a flattened (s, s) patch to the mean and the
log-variance of a Gaussian posterior over ``n_latent`` latents ``z``; an MLP decoder maps ``z``
back to the s * s pixels. Loss per patch: ``0.5 * sum((x - x_hat)^2) + beta * KL(q(z|x) || N(0, 1))``
(a Gaussian likelihood of unit variance in normalised units; nats). Training samples ``z`` with
the reparameterisation trick.

Conditional VAE (Sohn et al. 2015): the encoder and the decoder both receive a condition vector
``c`` (N, n_conditions): a one-hot class label (see :func:`one_hot`) or any continuous
descriptor. What ``c`` explains need not be stored in ``z``, so the KL term pushes it out of
``z``: ``z`` then holds the variation within a condition, and decoding one ``z`` under
different conditions shows the same variation on each condition's pattern.

Patches are normalised per patch (zero mean, unit standard deviation); conditions are used as
given. Non-finite input is refused with a ValueError; a NaN loss raises FloatingPointError.
Training runs ``n_init`` times from seeds ``seed``, ``seed + 1``, ... and keeps the lowest final
loss (see :mod:`atomsmith.learn._common`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import PatchModel, check_min, gaussian_kl, prepare_vectors


def one_hot(labels: Any, n_classes: int) -> np.ndarray:
    """Integer labels (N,) in ``0 .. n_classes - 1`` as float32 one-hot rows (N, n_classes)."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array; got {lab.dtype} shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
        raise ValueError(f"labels must lie in 0 .. {n_classes - 1}; got {lab.min()} .. {lab.max()}")
    return np.eye(n_classes, dtype=np.float32)[lab]


class VAE(PatchModel):
    """Plain VAE with Gaussian latents: ``fit``, ``encode`` / ``transform``, ``decode``,
    ``save`` / ``load`` (weights only).

    Args:
        patch_px: side of the square patches (pixels).
        n_latent: number of latents ``z``.
        hidden: width of the hidden layers of encoder and decoder.
        beta: weight of the KL term (1 = the ELBO).
        seed: torch seed of the first run.
        device: ``"cpu"`` (default), ``"cuda"``, or None for the GPU when present.

    Attributes:
        history: mean loss per epoch (nats per patch) of the run kept by :meth:`fit`.
    """

    _name = "VAE"
    _n_cond = 0

    def __init__(self, patch_px: int, n_latent: int = 2, *, hidden: int = 128, beta: float = 1.0,
                 seed: int = 0, device: str | None = "cpu") -> None:
        self._init(patch_px, n_latent, hidden, beta, seed, device)

    def _init(self, patch_px: int, n_latent: int, hidden: int, beta: float, seed: int,
              device: str | None) -> None:
        check_min("patch_px", patch_px, 2)
        check_min("n_latent", n_latent, 1)
        check_min("hidden", hidden, 1)
        if not beta >= 0:
            raise ValueError(f"beta={beta} must be >= 0")
        self.patch_px, self.n_latent, self.hidden = int(patch_px), int(n_latent), int(hidden)
        self.beta = float(beta)
        self._setup(seed, device)

    def _build(self) -> None:
        p, h, k, c = self.patch_px ** 2, self.hidden, self.n_latent, self._n_cond
        self.encoder = nn.Sequential(nn.Linear(p + c, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(),
                                     nn.Linear(h, 2 * k)).to(self.device)  # -> mean, log-variance
        self.decoder = nn.Sequential(nn.Linear(k + c, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(),
                                     nn.Linear(h, p)).to(self.device)

    def _modules(self) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def _settings(self) -> dict[str, Any]:
        return {"patch_px": self.patch_px, "n_latent": self.n_latent, "hidden": self.hidden,
                "beta": self.beta, "seed": self.seed}

    # ------------------------------------------------------------------ model
    def _posterior(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        inp = x.reshape(len(x), -1)
        if c is not None:
            inp = torch.cat([inp, c], 1)
        o = self.encoder(inp)
        return o[:, :self.n_latent], o[:, self.n_latent:]

    def _decode(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(z if c is None else torch.cat([z, c], 1))

    def _loss(self, batch: tuple[torch.Tensor, ...], t: float) -> torch.Tensor:
        xb = batch[0]
        c = batch[1] if len(batch) > 1 else None
        mu, lv = self._posterior(xb, c)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * lv)
        rec = 0.5 * ((self._decode(z, c) - xb.reshape(len(xb), -1)) ** 2).sum(1).mean()
        return rec + self.beta * gaussian_kl(mu, lv)

    # ------------------------------------------------------------------ public
    def fit(self, patches: np.ndarray, *, epochs: int = 50, n_init: int = 1, batch_size: int = 100,
            lr: float = 1e-3, progress: bool = True) -> VAE:
        """Train on (N, s, s) patches; keeps the run (of ``n_init``) with the lowest final loss.

        Args:
            epochs: passes over the data per run.
            n_init: runs from seeds ``seed``, ``seed + 1``, ...
            batch_size: patches per Adam step.
            lr: Adam learning rate.
            progress: show a tqdm bar per run.
        """
        return self._fit_patches(patches, epochs=epochs, n_init=n_init, batch_size=batch_size,
                                 lr=lr, progress=progress)

    @torch.no_grad()
    def encode(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and standard deviations of ``z``, each (N, n_latent); ``transform``
        gives the means."""
        mu, lv = self._posterior(self._prepare(patches), None)
        return mu.cpu().numpy(), torch.exp(0.5 * lv).cpu().numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Patches (N, s, s), in normalised units (zero mean, unit std), for latents (N, n_latent)."""
        z = prepare_vectors(latents, None, self.n_latent, "latents", self.device)
        return self._decode(z, None).reshape(-1, self.patch_px, self.patch_px).cpu().numpy()


class ConditionalVAE(VAE):
    """Conditional VAE: encoder and decoder both see a condition vector (N, n_conditions).

    ``fit(patches, conditions)``, ``encode(patches, conditions)``, ``transform(patches,
    conditions)``, ``decode(latents, conditions)``, ``save`` / ``load`` (weights only).
    Conditions are one-hot class labels (:func:`one_hot`) or continuous descriptors, used as
    given (no normalisation).

    Args:
        patch_px: side of the square patches (pixels).
        n_latent: number of latents ``z``.
        n_conditions: length of the condition vector.
        hidden: width of the hidden layers.
        beta: weight of the KL term.
        seed: torch seed of the first run.
        device: ``"cpu"`` (default), ``"cuda"``, or None for the GPU when present.
    """

    _name = "cVAE"

    def __init__(self, patch_px: int, n_latent: int, n_conditions: int, *, hidden: int = 128,
                 beta: float = 1.0, seed: int = 0, device: str | None = "cpu") -> None:
        check_min("n_conditions", n_conditions, 1)
        self.n_conditions = self._n_cond = int(n_conditions)
        self._init(patch_px, n_latent, hidden, beta, seed, device)

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "n_conditions": self.n_conditions}

    def _cond(self, conditions: Any, n_rows: int | None) -> torch.Tensor:
        return prepare_vectors(conditions, n_rows, self.n_conditions, "conditions", self.device)

    def fit(self, patches: np.ndarray, conditions: np.ndarray, *, epochs: int = 50, n_init: int = 1,
            batch_size: int = 100, lr: float = 1e-3, progress: bool = True) -> ConditionalVAE:
        """Train on (N, s, s) patches with their conditions (N, n_conditions); other arguments
        as :meth:`VAE.fit`."""
        x = self._prepare(patches)
        c = self._cond(conditions, len(x))
        self._fit((x, c), epochs=epochs, n_init=n_init, batch_size=batch_size, lr=lr, progress=progress)
        return self

    @torch.no_grad()
    def encode(self, patches: np.ndarray, conditions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and standard deviations of ``z``, each (N, n_latent)."""
        x = self._prepare(patches)
        mu, lv = self._posterior(x, self._cond(conditions, len(x)))
        return mu.cpu().numpy(), torch.exp(0.5 * lv).cpu().numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        """Patches (N, s, s), in normalised units, for latents (N, n_latent) under conditions
        (N, n_conditions)."""
        z = prepare_vectors(latents, None, self.n_latent, "latents", self.device)
        c = self._cond(conditions, len(z))
        return self._decode(z, c).reshape(-1, self.patch_px, self.patch_px).cpu().numpy()
