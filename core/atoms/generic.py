"""The generic column finder shipped with atomsmith: how its weights are made and loaded.

``atomsmith train-generic`` runs :func:`train_generic_model`: it renders a pool of twin images
across graphene, hBN, MX2 and perovskites (see :func:`.training_data.random_twin_sample`) and a
larger pool of parametric lattices (any Bravais lattice and basis, widths 0.07-0.37 of the
column spacing, holes, steps, gradients, contamination, scan noise; see
:mod:`.training_lattices`), then trains the U-Net with the eight square symmetries drawn for
every batch (and fresh Poisson noise, gain and offset for the twin images). The twin alone
taught the network its materials' lattices as a prior (a column painted into every empty cell
of a square lattice); the parametric lattices break that prior. The shipped file is
``weights/generic_unet.pt``.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .training import d4, train_unet
from .training_data import TrainingSample, noisy_counts, normalize_image, random_twin_sample
from .training_lattices import random_lattice_sample
from .unet import UNet

WEIGHTS_DIR = Path(__file__).with_name("weights")
GENERIC_WEIGHTS = WEIGHTS_DIR / "generic_unet.pt"
#: the first generic model, trained on the twin alone (1200 twin images, 1600 steps: the recipe of
#: ``train_generic_model(n_lattice=0, steps=1600, n_samples=1200, finetune_steps=0)``); consulted
#: by the generic finder on low-count images (``AtomFinder._with_companion``)
TWIN_WEIGHTS = WEIGHTS_DIR / "twin_unet.pt"
GENERIC_ARCH = {"base": 8, "depth": 3}
GENERIC_THRESHOLD = 0.4


def _make_samples(args: tuple[int, int, int, str]) -> list[TrainingSample]:
    """A worker process's share of the pool."""
    seed, n, size, kind = args
    rng = np.random.default_rng(seed)
    make = random_twin_sample if kind == "twin" else random_lattice_sample
    return [make(rng, size) for _ in range(n)]


def sample_pool(n_samples: int, *, size_px: int = 128, seed: int = 0, workers: int = 2, progress: bool = True,
                kind: str = "twin") -> list[TrainingSample]:
    """Render ``n_samples`` training images in ``workers`` processes, reproducible by seed.

    ``kind``: ``"twin"`` (the twin's materials) or ``"lattice"`` (parametric lattices).
    """
    if kind not in ("twin", "lattice"):
        raise ValueError(f"kind={kind!r}: use 'twin' or 'lattice'")
    chunk = 25 if kind == "twin" else 200
    salt = 0 if kind == "twin" else 7919
    jobs = [(seed * 100003 + i + salt, min(chunk, n_samples - i * chunk), size_px, kind)
            for i in range(-(-n_samples // chunk))]
    out: list[TrainingSample] = []
    # one torch thread per worker process: the processes already use the cores
    with ProcessPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)) as ex:
        for part in tqdm(ex.map(_make_samples, jobs), total=len(jobs), desc=f"{kind} training images",
                         disable=not progress):
            out.extend(part)
    return out


def pool_batches(pool: list[TrainingSample], batch_size: int = 16, twin_fraction: float = 0.45):
    """A ``make_batch`` function drawing D4-augmented batches from a pool.

    Twin samples (noise-free, with a pixel area) get fresh noise at every draw, and make
    ``twin_fraction`` of every batch on average (they carry the real materials and the lowest
    doses); parametric samples (``pixel_area_A2 == 0``) already hold their counts.
    """

    twin = [s for s in pool if s.pixel_area_A2 > 0]
    lattice = [s for s in pool if s.pixel_area_A2 <= 0]
    groups = [g for g in (twin, lattice) if g]
    p_twin = twin_fraction if twin and lattice else (1.0 if twin else 0.0)

    def make_batch(rng: np.random.Generator):
        xs, ys = [], []
        for _ in range(batch_size):
            k = int(rng.integers(8))
            group = groups[0] if len(groups) == 1 else (twin if rng.random() < p_twin else lattice)
            s = group[int(rng.integers(len(group)))]
            img = noisy_counts(s, rng) if s.pixel_area_A2 > 0 else s.signal
            xs.append(d4(normalize_image(img), k))
            ys.append(d4(s.target, k))
        return np.stack(xs), np.stack(ys)

    return make_batch


def train_generic_model(out_path: str | Path = GENERIC_WEIGHTS, *, n_samples: int = 800, n_lattice: int = 4000,
                        steps: int = 5000, batch_size: int = 16, seed: int = 0, progress: bool = True,
                        finetune_steps: int = 0, n_finetune: int = 300) -> dict:
    """Reproduce the shipped generic U-Net; returns a summary (times, final loss).

    Args:
        n_samples: twin images; n_lattice: parametric lattice images; steps, batch_size, seed:
            training settings (the shipped weights use the defaults).
        finetune_steps, n_finetune: an optional second stage (80 % twin, learning rate 3e-4)
            on ``n_finetune`` further twin images. 0 (the shipped weights): none; 800 steps were
            tried and did not remove the twin-movie false vacancies that the companion network
            removes, and let columns through on a smooth noise-only background.
    """
    t0 = time.perf_counter()
    pool = sample_pool(n_samples, seed=seed, progress=progress, kind="twin")
    pool += sample_pool(n_lattice, seed=seed, progress=progress, kind="lattice")
    t1 = time.perf_counter()
    model = UNet(**GENERIC_ARCH)
    losses = train_unet(model, pool_batches(pool, batch_size), steps=steps, seed=seed, progress=progress,
                        description="training generic U-Net")
    # optional stage 2: a short, gentle fine-tune weighted to the twin's materials and doses; a
    # fifth of each batch stays parametric so that the lattice prior does not come back
    if finetune_steps:
        pool2 = sample_pool(n_finetune, seed=seed + 1, progress=progress, kind="twin")
        lattice = [s for s in pool if s.pixel_area_A2 <= 0]
        losses += train_unet(model, pool_batches(pool2 + lattice, batch_size, twin_fraction=0.8),
                             steps=finetune_steps, learning_rate=3e-4, seed=seed + 1, progress=progress,
                             description="fine-tuning on the twin")
    t2 = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # threshold 0.4: columns at low counts (twin graphene at 2e4 e/A^2) whose probability blob
    # peaks just under 0.5 are kept (missed ones became false vacancies in movies); the
    # significance filter removes what a lower threshold lets through on noise
    torch.save({"arch": GENERIC_ARCH, "state_dict": model.state_dict(), "threshold": GENERIC_THRESHOLD,
                "info": {"n_samples": n_samples, "n_lattice": n_lattice, "steps": steps, "batch_size": batch_size,
                         "finetune_steps": finetune_steps, "n_finetune": n_finetune,
                         "seed": seed, "final_loss": float(np.mean(losses[-100:]))}}, out_path)
    return {"path": str(out_path), "render_s": t1 - t0, "train_s": t2 - t1,
            "final_loss": float(np.mean(losses[-100:]))}
