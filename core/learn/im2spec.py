"""im2spec and spec2im: encoder-decoders between image patches and local spectra.

After Kalinin, Roccapriore, Ziatdinov et al. ("im2spec": predict the EEL spectrum recorded at a
pixel from the image patch centred on it; "spec2im": the reverse). :class:`Im2Spec` encodes a
patch with a small CNN into ``n_latent`` numbers and decodes them with an MLP into a spectrum;
:class:`Spec2Im` encodes a spectrum with an MLP and decodes an image patch with an MLP.

Normalisation (stored in the saved state and undone by ``predict``):

* spectra: per channel, ``(y - mean_c) / std_c`` with mean and standard deviation over the
  training spectra;
* patches: ``"global"`` (default) subtracts the training patches' mean and divides by their
  standard deviation (one number each), which keeps absolute intensity, i.e. the Z contrast that
  tells a dopant from a host atom; ``"per_patch"`` standardises every patch on its own (input of
  :class:`Im2Spec` only).

Loss: mean squared error in normalised units. Trained on Poisson-noisy spectra, the prediction
estimates the noise-free (expected) spectrum. :class:`Im2Spec` can augment patches by the eight
rotations / flips of the square (``augment=True``): valid when the spectrum at the centre pixel
depends only on distances to the atoms around it (round probe, isotropic delocalisation).

Non-finite, empty or mis-shaped input raises ``ValueError``; a NaN loss ``FloatingPointError``.

Speed: the networks are small (a 2-layer CNN, MLPs). On a CPU, one torch thread
(``torch.set_num_threads(1)``) is about as fast as two and does not collapse when the cores are
shared (5500 17x17 patches, 256 channels, 30 epochs: ~7 s with 1 thread on a loaded 2-core
machine, 250 s with 2 threads on the same machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._common import (
    check_min,
    normalise_patches,
    resolve_device,
    seeded,
    validate_patches,
    validate_vectors,
)

__all__ = ["Im2Spec", "Spec2Im", "r2_score"]


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination over all outputs of all samples.

    ``R^2 = 1 - SSE / SST`` with ``SSE = sum_{n,c} (y_nc - p_nc)^2`` and
    ``SST = sum_{n,c} (y_nc - mean_n(y_nc))^2``: the total sum of squares is taken about the
    per-output (per-channel, per-pixel) mean of ``y_true`` itself, i.e. of the held-out set.
    This is scikit-learn's ``r2_score(y_true, y_pred, multioutput="variance_weighted")`` on
    ``(N, -1)``-reshaped arrays: outputs weigh by their variance, so channels with many counts
    and much spatial variation dominate. 1 is perfect; 0 is as good as predicting the held-out
    mean (which the model does not know); it can be negative.

    Args:
        y_true: (N, ...) true values, N >= 2.
        y_pred: predictions of the same shape.
    """
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must have the same shape")
    if t.ndim < 1 or len(t) < 2:
        raise ValueError("r2_score needs at least 2 samples")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true / y_pred contain NaN / inf")
    t, p = t.reshape(len(t), -1), p.reshape(len(p), -1)
    sst = float(np.sum((t - t.mean(axis=0)) ** 2))
    if sst <= 0:
        raise ValueError("y_true is constant: R^2 is undefined")
    return 1.0 - float(np.sum((t - p) ** 2)) / sst


class _PairModel:
    """Shared machinery: normalisation, training loop, save / load, transform / predict / score.

    A model maps inputs to targets: :class:`Im2Spec` patches to spectra (``_patches_in``),
    :class:`Spec2Im` spectra to patches."""

    _patches_in = True

    def __init__(self, patch_px: int, n_channels: int, n_latent: int, hidden: int, patch_norm: str,
                 augment: bool, seed: int, device: str | None) -> None:
        check_min("patch_px", patch_px, 4)
        check_min("n_channels", n_channels, 1)
        check_min("n_latent", n_latent, 1)
        check_min("hidden", hidden, 1)
        if patch_norm not in ("global", "per_patch"):
            raise ValueError(f"patch_norm={patch_norm!r} must be 'global' or 'per_patch'")
        self.patch_px, self.n_channels, self.n_latent = int(patch_px), int(n_channels), int(n_latent)
        self.hidden, self.patch_norm, self.augment, self.seed = int(hidden), patch_norm, bool(augment), int(seed)
        self.device = resolve_device(device)
        # normalisation (set by fit): patch mean/std (scalars), spectrum mean/std per channel
        self._pm, self._ps = 0.0, 1.0
        self._sm = np.zeros(self.n_channels, np.float32)
        self._ss = np.ones(self.n_channels, np.float32)
        self.fitted = False
        self.history: list[float] = []
        self.val_history: list[float] = []
        with seeded(self.seed, self.device):
            self._reset()

    def _build(self) -> tuple[nn.Module, nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reset(self) -> None:
        """Fresh encoder and decoder on the device (called inside :func:`seeded`)."""
        self.encoder, self.decoder = (m.to(self.device) for m in self._build())

    def _settings(self) -> dict:
        return {"patch_px": self.patch_px, "n_channels": self.n_channels, "n_latent": self.n_latent,
                "hidden": self.hidden, "patch_norm": self.patch_norm, "augment": self.augment,
                "seed": self.seed}

    # ------------------------------------------------------------------ checks and scaling
    def _check_patches(self, patches: np.ndarray) -> np.ndarray:
        return validate_patches(patches, self.patch_px)

    def _check_spectra(self, spectra: np.ndarray) -> np.ndarray:
        return validate_vectors(spectra, None, self.n_channels, "spectra")

    def _ordered(self, a: object, b: object) -> tuple:
        """(inputs, targets) as (patches, spectra), and back: the model's order, swapped or not."""
        return (a, b) if self._patches_in else (b, a)

    def _checked(self, inputs: np.ndarray, targets: np.ndarray,
                 what: str = "got") -> tuple[np.ndarray, np.ndarray]:
        """Checked (patches, spectra) from the model's (inputs, targets), N matching."""
        p, s = self._ordered(inputs, targets)
        x, y = self._check_patches(p), self._check_spectra(s)
        if len(x) != len(y):
            raise ValueError(f"{what} {len(x)} patches but {len(y)} spectra: N must match")
        return x, y

    def _set_norm(self, x: np.ndarray, y: np.ndarray) -> None:
        self._pm, self._ps = float(x.mean()), float(x.std()) + 1e-6 * (abs(float(x.mean())) + 1e-12)
        self._sm = y.mean(0).astype(np.float32)
        sd = y.std(0)
        self._ss = (sd + 1e-6 * (np.abs(self._sm) + sd.max() + 1e-12)).astype(np.float32)

    def _norm_patches(self, x: np.ndarray) -> np.ndarray:
        if self.patch_norm == "per_patch":
            return normalise_patches(x)
        return (x - self._pm) / self._ps

    def _norm_spectra(self, y: np.ndarray) -> np.ndarray:
        return (y - self._sm) / self._ss

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)

    def _normalised(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) tensors in normalised units from (patches, spectra)."""
        return self._ordered(self._tensor(self._norm_patches(x)), self._tensor(self._norm_spectra(y)))

    def _require_fit(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first (or load())")

    @torch.no_grad()
    def _encode_tensor(self, t: torch.Tensor) -> np.ndarray:
        """Latent codes of normalised inputs, in chunks of 4096."""
        return torch.cat([self.encoder(t[i:i + 4096]) for i in range(0, len(t), 4096)]).cpu().numpy()

    @torch.no_grad()
    def _decode_normalised(self, latents: np.ndarray) -> np.ndarray:
        """Decoder output (normalised units) for checked latent codes (N, n_latent)."""
        self._require_fit()
        z = np.asarray(latents, np.float32)
        if z.ndim != 2 or z.shape[1] != self.n_latent or not np.all(np.isfinite(z)):
            raise ValueError(f"latents must be finite (N, {self.n_latent}); got shape {z.shape}")
        return self.decoder(self._tensor(z)).cpu().numpy()

    # ------------------------------------------------------------------ training
    def _fit_pair(self, inputs: np.ndarray, targets: np.ndarray,
                  validation: tuple[np.ndarray, np.ndarray] | None, *, epochs: int, batch_size: int,
                  lr: float, weight_decay: float, progress: bool) -> Self:
        """``fit``: check, set the normalisation, rebuild the networks from ``seed`` and train."""
        x, y = self._checked(inputs, targets)
        if len(x) < 2:
            raise ValueError("fit needs at least 2 samples")
        checked_val = None if validation is None else self._checked(*validation, what="validation has")
        self._set_norm(x, y)
        val = None if checked_val is None else self._normalised(*checked_val)
        with seeded(self.seed, self.device):
            self._reset()
            self.history = self._train(*self._normalised(x, y), epochs, batch_size, lr, weight_decay,
                                       progress, val)
        return self

    def _train(self, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
               weight_decay: float, progress: bool,
               val: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[float]:
        if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0 or weight_decay < 0:
            raise ValueError(f"epochs={epochs}, batch_size={batch_size} must be >= 1, lr={lr} > 0, "
                             f"weight_decay={weight_decay} >= 0")
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs), eta_min=lr / 30)
        gen = torch.Generator().manual_seed(self.seed)
        n = len(x)
        hist: list[float] = []
        self.val_history = []
        best: tuple[float, list[dict]] | None = None
        for _ in tqdm(range(int(epochs)), desc=type(self).__name__, unit="epoch", disable=not progress):
            self.encoder.train()
            self.decoder.train()
            perm = torch.randperm(n, generator=gen).to(self.device)
            total = 0.0
            for i in range(0, n, int(batch_size)):
                idx = perm[i:i + int(batch_size)]
                xb, yb = self._augment(x[idx], gen), y[idx]
                loss = ((self.decoder(self.encoder(xb)) - yb) ** 2).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the {type(self).__name__} loss became NaN/inf: lower the learning rate")
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            hist.append(total / n)
            if val is not None:
                self.encoder.eval()
                self.decoder.eval()
                with torch.no_grad():
                    vl = float(sum(((self.decoder(self.encoder(val[0][i:i + 4096])) - val[1][i:i + 4096]) ** 2).sum()
                                   for i in range(0, len(val[0]), 4096)) / val[1].numel())
                self.val_history.append(vl)
                if best is None or vl < best[0]:
                    best = (vl, [{k: v.detach().clone() for k, v in m.state_dict().items()}
                                 for m in (self.encoder, self.decoder)])
        if best is not None:
            self.encoder.load_state_dict(best[1][0])
            self.decoder.load_state_dict(best[1][1])
        self.encoder.eval()
        self.decoder.eval()
        self.fitted = True
        return hist

    def _augment(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return xb

    # ------------------------------------------------------------------ use
    def encode(self, inputs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, latents: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        """Latent codes (N, n_latent) (scikit-learn style alias of :meth:`encode`)."""
        return self.encode(inputs)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Predicted targets for the inputs, in the training targets' units."""
        return self.decode(self.encode(inputs))

    def score(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """:func:`r2_score` of ``predict(inputs)`` against ``targets`` (over all outputs)."""
        x, y = self._checked(inputs, targets)
        inputs, targets = self._ordered(x, y)
        return r2_score(targets, self.predict(inputs))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Weights, settings, normalisation and history (no pickled code); returns the path."""
        self._require_fit()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": self._settings(),
                    "norm": {"patch_mean": self._pm, "patch_std": self._ps,
                             "spectrum_mean": torch.from_numpy(self._sm.copy()),
                             "spectrum_std": torch.from_numpy(self._ss.copy())},
                    "history": [float(h) for h in self.history],
                    "encoder": self.encoder.state_dict(), "decoder": self.decoder.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = "cpu") -> Self:
        """A model saved by :meth:`save` (``torch.load(weights_only=True)``)."""
        ck = torch.load(Path(path), map_location="cpu", weights_only=True)
        m = cls(**ck["settings"], device=device)
        m.encoder.load_state_dict(ck["encoder"])
        m.decoder.load_state_dict(ck["decoder"])
        nm = ck["norm"]
        m._pm, m._ps = float(nm["patch_mean"]), float(nm["patch_std"])
        m._sm = nm["spectrum_mean"].numpy().astype(np.float32)
        m._ss = nm["spectrum_std"].numpy().astype(np.float32)
        m.history = list(ck["history"])
        m.encoder.eval()
        m.decoder.eval()
        m.fitted = True
        return m


class Im2Spec(_PairModel):
    """Image patch -> latent -> spectrum (scikit-learn-like: ``fit``, ``predict``, ``score``).

    Args:
        patch_px: side s of the square patches (>= 4).
        n_channels: spectrum length C.
        n_latent: size of the bottleneck.
        hidden: width of the dense layers.
        patch_norm: ``"global"`` (keeps absolute intensity) or ``"per_patch"``.
        augment: train on the 8 rotations / flips of each patch (see module docstring); needs
            an odd ``patch_px`` so the centre pixel stays put; default: on for odd patches.
        seed: torch seed (weights, shuffling, augmentation).
        device: ``"cpu"`` (default), ``"cuda"``, or None for the GPU when present.
    """

    def __init__(self, patch_px: int, n_channels: int, n_latent: int = 8, *, hidden: int = 128,
                 patch_norm: str = "global", augment: bool | None = None, seed: int = 0,
                 device: str | None = "cpu") -> None:
        odd = int(patch_px) % 2 == 1
        if augment and not odd:
            raise ValueError(f"augment=True needs an odd patch_px (a rotation of an even patch moves its "
                             f"centre pixel); got patch_px={patch_px}")
        augment = odd if augment is None else bool(augment)
        super().__init__(patch_px, n_channels, n_latent, hidden, patch_norm, augment, seed, device)

    def _build(self) -> tuple[nn.Module, nn.Module]:
        s, h = self.patch_px, self.hidden
        q = (s + 1) // 2
        q = (q + 1) // 2
        enc = nn.Sequential(
            nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(32 * q * q, h), nn.SiLU(), nn.Linear(h, self.n_latent))
        dec = nn.Sequential(nn.Linear(self.n_latent, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                            nn.Linear(h, self.n_channels))
        return _Channel(enc), dec

    def _augment(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not self.augment:
            return xb
        k = int(torch.randint(0, 4, (1,), generator=gen))
        xb = torch.rot90(xb, k, dims=(1, 2))
        if bool(torch.randint(0, 2, (1,), generator=gen)):
            xb = torch.flip(xb, dims=(2,))
        return xb

    def fit(self, patches: np.ndarray, spectra: np.ndarray, *, epochs: int = 40, batch_size: int = 256,
            lr: float = 2e-3, weight_decay: float = 1e-4,
            validation: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True) -> Im2Spec:
        """Train on (N, s, s) patches and the (N, C) spectra at their centres (any units, e.g.
        counts). ``history`` holds the mean training loss per epoch (normalised units).

        ``validation``: optional ``(patches, spectra)`` kept out of training (best taken from a
        region apart from the training patches); the weights of the epoch with the lowest
        validation loss are kept and ``val_history`` holds that loss per epoch."""
        return self._fit_pair(patches, spectra, validation, epochs=epochs, batch_size=batch_size,
                              lr=lr, weight_decay=weight_decay, progress=progress)

    @torch.no_grad()
    def encode(self, patches: np.ndarray) -> np.ndarray:
        """Latent codes (N, n_latent) of patches."""
        self._require_fit()
        return self._encode_tensor(self._tensor(self._norm_patches(self._check_patches(patches))))

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Spectra (N, C) in the training spectra's units for latent codes (N, n_latent)."""
        return self._decode_normalised(latents) * self._ss + self._sm


class Spec2Im(_PairModel):
    """Spectrum -> latent -> image patch (``fit(spectra, patches)``, ``predict(spectra)``).

    Args:
        n_channels: spectrum length C.
        patch_px: side s of the square patches (>= 4).
        n_latent: size of the bottleneck.
        hidden: width of the dense layers.
        seed: torch seed.
        device: ``"cpu"`` (default), ``"cuda"``, or None for the GPU when present.

    Patches are normalised globally (training mean and standard deviation) and returned in
    input units.
    """

    _patches_in = False

    def __init__(self, n_channels: int, patch_px: int, n_latent: int = 8, *, hidden: int = 256,
                 seed: int = 0, device: str | None = "cpu", patch_norm: str = "global",
                 augment: bool = False) -> None:
        if patch_norm != "global":
            raise ValueError("Spec2Im predicts patches in input units: patch_norm must be 'global'")
        if augment:
            raise ValueError("Spec2Im has no augmentation (a spectrum does not fix a patch's orientation)")
        super().__init__(patch_px, n_channels, n_latent, hidden, "global", False, seed, device)

    def _build(self) -> tuple[nn.Module, nn.Module]:
        c, h, s = self.n_channels, self.hidden, self.patch_px
        enc = nn.Sequential(nn.Linear(c, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, self.n_latent))
        dec = nn.Sequential(nn.Linear(self.n_latent, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                            nn.Linear(h, s * s), nn.Unflatten(1, (s, s)))
        return enc, dec

    def fit(self, spectra: np.ndarray, patches: np.ndarray, *, epochs: int = 40, batch_size: int = 256,
            lr: float = 2e-3, weight_decay: float = 1e-4,
            validation: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True) -> Spec2Im:
        """Train on (N, C) spectra and the (N, s, s) patches centred where they were recorded.

        ``validation``: optional ``(spectra, patches)``; the epoch with the lowest validation
        loss is kept (``val_history``), as in :meth:`Im2Spec.fit`."""
        return self._fit_pair(spectra, patches, validation, epochs=epochs, batch_size=batch_size,
                              lr=lr, weight_decay=weight_decay, progress=progress)

    @torch.no_grad()
    def encode(self, spectra: np.ndarray) -> np.ndarray:
        """Latent codes (N, n_latent) of spectra."""
        self._require_fit()
        return self._encode_tensor(self._tensor(self._norm_spectra(self._check_spectra(spectra))))

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Patches (N, s, s) in the training patches' units for latent codes (N, n_latent)."""
        return self._decode_normalised(latents) * self._ps + self._pm


class _Channel(nn.Module):
    """Adds the channel axis: (N, s, s) -> (N, 1, s, s) before a CNN."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x[:, None])
