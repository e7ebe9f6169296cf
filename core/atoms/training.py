"""Training loop for the column-finding U-Net (CPU by default, GPU when present)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .unet import UNet

Batch = tuple[np.ndarray, np.ndarray]  # (B, H, W) normalised images, (B, H, W) targets in [0, 1]


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def d4(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square applied to the last two axes (k in 0..7)."""
    x = np.rot90(x, k % 4, axes=(-2, -1))
    return np.flip(x, axis=-1) if k >= 4 else x


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (robust to the small foreground fraction).

    Target pixels below zero are "don't care" (e.g. a very weak column that may or may not be
    reported) and count in neither term.
    """
    care = (target >= 0).to(logits.dtype)
    t = target.clamp(min=0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, weight=care, reduction="sum")
    bce = bce / care.sum().clamp(min=1)
    p = torch.sigmoid(logits) * care
    inter = (p * t).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + t.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


def train_unet(
    model: UNet,
    make_batch: Callable[[np.random.Generator], Batch],
    *,
    steps: int = 1000,
    learning_rate: float = 2e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    description: str = "training U-Net",
) -> list[float]:
    """Train ``model`` in place with Adam and a cosine learning-rate schedule.

    Args:
        model: the network.
        make_batch: returns a batch (images, targets) given a Generator.
        steps: optimiser steps.
        learning_rate: initial learning rate.
        seed: seeds the batches (numpy) and torch, for reproducible training; torch's global
            random state is the same afterwards as before (a forked generator is seeded).
        device: ``None`` picks CUDA when present, else the CPU.
        progress: show a progress bar with the running loss.
        should_stop: called every step; return True to cancel (the model keeps what it learnt).

    Returns:
        The loss of every step.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    dev = torch.device(device) if device is not None else default_device()
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return _train(model, make_batch, np.random.default_rng(seed), dev, steps, learning_rate, progress,
                      should_stop, description)


def _train(model: UNet, make_batch: Callable[[np.random.Generator], Batch], rng: np.random.Generator,
           dev: torch.device, steps: int, learning_rate: float, progress: bool,
           should_stop: Callable[[], bool] | None, description: str) -> list[float]:
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=description, disable=not progress)
    for _ in bar:
        if should_stop is not None and should_stop():
            break
        x, y = make_batch(rng)
        xt = torch.from_numpy(np.ascontiguousarray(x[:, None], dtype=np.float32)).to(dev)
        yt = torch.from_numpy(np.ascontiguousarray(y[:, None], dtype=np.float32)).to(dev)
        loss = segmentation_loss(model(xt), yt)
        if not torch.isfinite(loss):
            raise FloatingPointError("training loss became NaN/inf; check the input normalisation")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses
