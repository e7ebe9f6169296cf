"""Run a per-pixel kernel over a spectrum image: numpy in cache-sized pixel blocks, dask lazily
block by block (navigation chunks as they are, each energy slice whole)."""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence

import numpy as np

from . import _validate

#: float64 elements per working block of the widest spectrum slice (1 MiB, cache-sized)
_BLOCK_ELEMENTS = 1 << 17
_NAV = "abcdefghijklmnop"
_ENERGY = "uvwxy"


def _rows(n_px: int, width: int) -> int:
    return max(1, min(n_px, _BLOCK_ELEMENTS // max(width, 1)))


def run_numpy(kernel: Callable[..., np.ndarray], slices: Sequence[np.ndarray],
              tail: int | None) -> np.ndarray:
    """``kernel(*spectra_2d)`` over pixel blocks of numpy arrays.

    Args:
        kernel: takes (B, m_k) float64 blocks of each slice; returns (B,) or (B, tail) float64.
        slices: (..., m_k) spectrum slices (same navigation shape).
        tail: length of the output's last axis, or None for one value per pixel.

    Raises:
        ValueError: a used channel is NaN or inf.
    """
    nav = slices[0].shape[:-1]
    n_px = int(np.prod(nav, dtype=np.int64))
    flat = [np.asarray(s).reshape(n_px, s.shape[-1]) for s in slices]
    out = np.empty((n_px,) if tail is None else (n_px, tail), np.float64)
    rows = _rows(n_px, max(s.shape[-1] for s in flat))
    for i in range(0, n_px, rows):
        blocks = [np.asarray(s[i:i + rows], dtype=np.float64) for s in flat]
        for b in blocks:
            _validate.finite(b)
        out[i:i + rows] = kernel(*blocks)
    return out.reshape(nav if tail is None else nav + (tail,))


def run(kernel: Callable[..., np.ndarray], slices: Sequence[typing.Any],
        tail: int | None = None) -> typing.Any:
    """Like :func:`run_numpy`, but lazy (a dask array) when the slices are dask arrays.

    Each energy slice is rechunked to one chunk (the navigation chunks are kept), so every
    output block comes from one block of each slice. NaN/inf raise ValueError on compute.
    """
    if not any(_validate.is_dask(a) for a in slices):
        return run_numpy(kernel, slices, tail)
    import dask.array as da

    first = da.asarray(slices[0])
    nd = first.ndim - 1
    if nd > len(_NAV) or len(slices) > len(_ENERGY):
        raise ValueError(f"at most {len(_NAV)} navigation axes are supported for dask input")
    first = first.rechunk({nd: -1})
    nav_chunks = first.chunks[:-1]
    nav = _NAV[:nd]
    args: list[typing.Any] = []
    for k, s in enumerate(slices):
        x = first if k == 0 else da.asarray(s).rechunk(nav_chunks + (-1,))
        args += [x, nav + _ENERGY[k]]

    def block(*blocks: np.ndarray) -> np.ndarray:
        return run_numpy(kernel, blocks, tail)

    if tail is None:
        return da.blockwise(block, nav, *args, dtype=np.float64, concatenate=True)
    return da.blockwise(block, nav + "z", *args, dtype=np.float64, concatenate=True,
                        new_axes={"z": tail})


def split(out: typing.Any) -> list[typing.Any]:
    """The maps stacked on the last axis of a kernel result, each contiguous for numpy (a lazy
    slice for dask)."""
    if _validate.is_dask(out):
        return [out[..., i] for i in range(out.shape[-1])]
    return [out[..., i].copy() for i in range(out.shape[-1])]
