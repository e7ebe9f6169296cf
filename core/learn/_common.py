"""Shared pieces of the torch autoencoders in :mod:`atomsmith.learn`.

Every model here learns from square image patches (N, s, s) and follows the same rules:

* patches are validated (shape, empty, NaN / inf) and normalised per patch to zero mean and unit
  standard deviation, so a model sees shapes, not brightness;
* training runs ``n_init`` times from different seeds (``seed``, ``seed + 1``, ...) and keeps the
  run with the lowest final loss (autoencoders with pose or class latents have local minima);
  building and training are seeded inside :func:`seeded`, so torch's global RNG is left as it was;
* each run is Adam over shuffled mini-batches, one tqdm bar per run (``progress=False`` hides
  it); a NaN / inf loss raises :class:`FloatingPointError`;
* ``save`` writes settings and ``state_dict`` tensors only (``torch.save``) and ``load`` reads
  them back with ``weights_only=True`` (no pickled code).

:class:`PatchModel` holds that machinery; a model supplies ``_build`` (create its modules; called
inside :func:`seeded`), ``_modules`` (the modules whose weights are trained and saved),
``_settings`` (the constructor arguments to save) and ``_loss`` (the loss of one mini-batch).
:class:`PoseModel` adds the encoder, pose posterior and spatial decoder shared by the rVAEs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

M = TypeVar("M", bound="PatchModel")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ... as a torch device; None picks the GPU when one is present."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def check_min(name: str, value: Any, lo: int) -> None:
    """Raise ``ValueError("name=value must be >= lo")`` when ``int(value) < lo``."""
    if int(value) < lo:
        raise ValueError(f"{name}={value} must be >= {lo}")


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's RNG seeded by ``seed`` (the CPU's and, for a CUDA ``device``,
    that GPU's) and restore torch's global RNG state afterwards (:func:`torch.random.fork_rng`).

    The draws inside are those after ``torch.manual_seed(seed)``."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))
            yield
    elif device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[idx]):
            torch.default_generator.manual_seed(int(seed))
            with torch.cuda.device(idx):
                torch.cuda.manual_seed(int(seed))
            yield
    else:  # other accelerators: seed them all (their global state is not restored)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield


def validate_patches(patches: Any, patch_px: int) -> np.ndarray:
    """``patches`` as float32 (N, s, s), checked: the shape, N > 0, all values finite.

    Raises:
        ValueError: naming the problem (wrong shape, empty, NaN / inf).
    """
    x = np.asarray(patches, np.float32)
    if x.ndim != 3 or x.shape[1:] != (patch_px, patch_px):
        raise ValueError(f"patches must be (N, {patch_px}, {patch_px}); got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"patches are empty: shape {x.shape}, need at least one patch")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"patches contain NaN / inf ({int(bad.sum())} values in "
                         f"{int(bad.any(axis=(1, 2)).sum())} patches)")
    return x


def normalise_patches(x: np.ndarray) -> np.ndarray:
    """Each patch to zero mean and unit standard deviation (a flat patch stays 0)."""
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return x / (x.std(axis=(1, 2), keepdims=True) + 1e-6)


def prepare_patches(patches: Any, patch_px: int, device: torch.device) -> torch.Tensor:
    """Validated, per-patch normalised (N, s, s) float32 tensor on ``device``."""
    return torch.from_numpy(normalise_patches(validate_patches(patches, patch_px))).to(device)


def validate_vectors(values: Any, n_rows: int | None, n_cols: int, name: str) -> np.ndarray:
    """``values`` as float32 (N, n_cols) (conditions, latents, spectra), checked for shape, N > 0
    and finiteness. ``n_rows`` None accepts any N >= 1.

    Raises:
        ValueError: naming ``name`` and the problem.
    """
    v = np.asarray(values, np.float32)
    want = f"({'N' if n_rows is None else n_rows}, {n_cols})"
    if v.ndim != 2 or v.shape[1] != n_cols or (n_rows is not None and v.shape[0] != n_rows):
        raise ValueError(f"{name} must be {want}; got shape {v.shape}")
    if len(v) == 0:
        raise ValueError(f"{name} are empty: shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contain NaN / inf")
    return v


def prepare_vectors(values: Any, n_rows: int | None, n_cols: int, name: str,
                    device: torch.device) -> torch.Tensor:
    """:func:`validate_vectors` as a tensor on ``device``."""
    return torch.from_numpy(validate_vectors(values, n_rows, n_cols, name)).to(device)


def pixel_grid(patch_px: int, device: torch.device) -> torch.Tensor:
    """(s * s, 2) pixel coordinates as (x, y) in [-1, 1], row-major like a flattened patch."""
    g = torch.linspace(-1, 1, patch_px)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1).to(device)


def pose_coords(coords: torch.Tensor, angle: torch.Tensor, dx: torch.Tensor,
                dy: torch.Tensor) -> torch.Tensor:
    """(B, P, 2) coordinates shifted by ``-(dx, dy)`` and rotated by ``-angle`` (rad).

    ``coords`` (P, 2) from :func:`pixel_grid`; ``angle``, ``dx``, ``dy`` (B,), shifts in units
    of the half-width."""
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    x = coords[None, :, 0] - dx[:, None]
    y = coords[None, :, 1] - dy[:, None]
    return torch.stack([c * x + s * y, -s * x + c * y], -1)


def randomly_rotated(xb: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches (N, s, s) rotated about their centres by random angles ``delta`` (rad, uniform
    in (-pi, pi]), bilinear, corners filled from the border, then normalised again per patch.
    Returns (rotated patches, delta). Used by the rotation-consistency terms of the rVAEs."""
    delta = (torch.rand(len(xb), device=xb.device) * 2 - 1) * math.pi
    zero = torch.zeros_like(delta)
    grid = pose_coords(coords, delta, zero, zero)
    n = xb.shape[-1]
    xr = nn.functional.grid_sample(xb[:, None], grid.reshape(-1, n, n, 2), mode="bilinear",
                                   padding_mode="border", align_corners=True)[:, 0]
    xr = xr - xr.mean((1, 2), keepdim=True)
    return xr / (xr.std((1, 2), keepdim=True) + 1e-6), delta


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the last axis, mean over the batch (nats)."""
    return 0.5 * (torch.exp(logvar) + mu ** 2 - 1 - logvar).sum(1).mean()


def pose_penalty(lv: torch.Tensor) -> torch.Tensor:
    """The rVAEs' pose term from the log-variances ``lv`` (B, 3 + k): the posterior widths of
    angle, dx, dy against a variance of 0.1, ``0.5 * sum(var / 0.1 - 1 - log var)``, batch mean."""
    return 0.5 * (torch.exp(lv)[:, :3] / 0.1 - 1 - lv[:, :3]).sum(1).mean()


def train_epochs(loss_fn: Callable[[tuple[torch.Tensor, ...], float], torch.Tensor],
                 tensors: Sequence[torch.Tensor], params: Sequence[torch.Tensor], *, epochs: int,
                 batch_size: int, lr: float, seed: int, desc: str, progress: bool) -> list[float]:
    """Adam over shuffled mini-batches; returns the mean loss per epoch.

    ``loss_fn(batch, t)`` gets the rows of every tensor in ``tensors`` for one mini-batch and the
    training progress ``t`` in [0, 1] (0 at the first step, 1 at the last; for schedules).

    Raises:
        FloatingPointError: when the loss becomes NaN / inf.
    """
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(tensors[0])
    n_steps = epochs * math.ceil(n / batch_size)
    step = 0
    hist = []
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            batch = tuple(t[idx] for t in tensors)
            loss = loss_fn(batch, step / max(1, n_steps - 1))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the {desc} loss became NaN/inf: lower the learning rate")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            step += 1
        hist.append(total / n)
    return hist


class PatchModel:
    """Base of the patch autoencoders: restarts, the training loop, save / load (see module)."""

    _name = "model"
    patch_px: int
    seed: int
    device: torch.device
    history: list[float]

    # --- supplied by the model
    def _build(self) -> None:
        raise NotImplementedError

    def _modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _loss(self, batch: tuple[torch.Tensor, ...], t: float) -> torch.Tensor:
        raise NotImplementedError

    # --- shared
    def _setup(self, seed: int, device: str | torch.device | None) -> None:
        """End of ``__init__``: seed, device, modules built from ``seed``, empty history."""
        self.seed = int(seed)
        self.device = resolve_device(device)
        with seeded(self.seed, self.device):
            self._build()
        self.history = []

    def _prepare(self, patches: Any) -> torch.Tensor:
        return prepare_patches(patches, self.patch_px, self.device)

    def _fit_patches(self: M, patches: Any, **train: Any) -> M:
        """``fit`` of a model that learns from patches alone (``train``: as :meth:`_fit`)."""
        self._fit((self._prepare(patches),), **train)
        return self

    def transform(self, *data: Any) -> np.ndarray:
        """Posterior means, the first output of ``encode(*data)`` (scikit-learn style)."""
        return self.encode(*data)[0]

    def _fit(self, tensors: Sequence[torch.Tensor], *, epochs: int, n_init: int, batch_size: int,
             lr: float, progress: bool) -> None:
        """Train ``n_init`` runs (seeds ``seed + run``) and keep the lowest final loss."""
        if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, "
                             f"{batch_size}, {lr}")
        best = None
        for run in range(max(1, int(n_init))):
            with seeded(self.seed + run, self.device):
                self._build()
                params = [p for m in self._modules() for p in m.parameters()]
                hist = train_epochs(self._loss, tensors, params, epochs=int(epochs),
                                    batch_size=int(batch_size), lr=lr, seed=self.seed + run,
                                    desc=self._name, progress=progress)
            if best is None or hist[-1] < best[0]:
                best = (hist[-1], [{k: v.clone() for k, v in m.state_dict().items()}
                                   for m in self._modules()], hist)
        for m, st in zip(self._modules(), best[1], strict=True):
            m.load_state_dict(st)
        self.history = best[2]

    def save(self, path: str | Path) -> Path:
        """Weights and settings (no pickled code)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": type(self).__name__, "settings": self._settings(),
                    "state": [m.state_dict() for m in self._modules()],
                    "history": [float(h) for h in self.history]}, path)
        return path

    @classmethod
    def load(cls: type[M], path: str | Path, device: str | None = "cpu") -> M:
        """A model saved by :meth:`save` (``weights_only``)."""
        ck = torch.load(Path(path), map_location="cpu", weights_only=True)
        if ck.get("model", cls.__name__) != cls.__name__:
            raise ValueError(f"{path} holds a {ck['model']}, not a {cls.__name__}")
        m = cls(**ck["settings"], device=device)
        for mod, st in zip(m._modules(), ck["state"], strict=True):
            mod.load_state_dict(st)
        m.history = list(ck.get("history", []))
        return m


class PoseModel(PatchModel):
    """Base of the rVAEs: an encoder to the posterior over ``(angle, dx, dy, z_1..z_k)`` and a
    spatial decoder on the posed pixel grid (see :mod:`atomsmith.learn.rvae`)."""

    n_latent: int
    hidden: int
    max_shift: float
    beta_pose: float
    lambda_rot: float

    def _init_pose(self, patch_px: int, n_latent: int, hidden: int, max_shift: float,
                   beta_pose: float, lambda_rot: float) -> None:
        """Check and store the settings shared by the rVAEs."""
        check_min("patch_px", patch_px, 4)
        check_min("n_latent", n_latent, 0)
        self.patch_px, self.n_latent, self.hidden = int(patch_px), int(n_latent), int(hidden)
        self.max_shift, self.beta_pose = float(max_shift), float(beta_pose)
        self.lambda_rot = float(lambda_rot)

    def _build_encoder(self) -> None:
        """The encoder trunk, the pose / ``z`` mean head and the log-variance head."""
        n, h, k = self.patch_px, self.hidden, self.n_latent
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(n * n, h), nn.Tanh(), nn.Linear(h, h),
                                     nn.Tanh()).to(self.device)
        self.head = nn.Linear(h, 4 + k).to(self.device)  # (u, v) -> angle, dx, dy, z
        self.logvar = nn.Linear(h, 3 + k).to(self.device)
        self.coords = pixel_grid(n, self.device)  # (P, 2) as (x, y)

    def _spatial_decoder(self, n_code: int) -> nn.Module:
        """MLP from a pixel coordinate (2) and a code (``n_code``) to the pixel value."""
        h = self.hidden
        return nn.Sequential(nn.Linear(2 + n_code, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(),
                             nn.Linear(h, 1)).to(self.device)

    def _pose_posterior(self, h: torch.Tensor) -> torch.Tensor:
        """Posterior means (B, 3 + k) from the trunk output: angle (``atan2``), bounded shifts, z."""
        o = self.head(h)
        angle = torch.atan2(o[:, 0], o[:, 1])
        return torch.cat([angle[:, None], self.max_shift * torch.tanh(o[:, 2:4]), o[:, 4:]], 1)

    def _spatial_decode(self, lat: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Flattened patches (B, s * s): the decoder on the grid posed by ``lat[:, :3]``."""
        rc = pose_coords(self.coords, lat[:, 0], lat[:, 1], lat[:, 2])
        return self.decoder(torch.cat([rc, code[:, None, :].expand(-1, rc.shape[1], -1)], -1))[..., 0]

    @staticmethod
    def _consistency(mu: torch.Tensor, mu_r: torch.Tensor,
                     delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per patch, for a batch rotated by ``delta``: ``1 - cos`` of the angle's miss and half
        the squared change of ``z``."""
        return (1 - torch.cos(mu_r[:, 0] - mu[:, 0] - delta),
                0.5 * ((mu_r[:, 3:] - mu[:, 3:]) ** 2).sum(1))
