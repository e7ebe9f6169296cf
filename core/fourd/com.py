"""Per-pattern reductions of 4D-STEM data: centre of mass and virtual detectors.

Both are one weighted sum per pattern, done as a matrix product of the flattened patterns with a
small weight matrix (``[1, x, y]`` for the centre of mass, one column per detector for virtual
images): one pass over the data through BLAS, in cache-sized blocks of patterns shared among
threads (float32/float64 data are read in place, other dtypes converted a block at a time;
NaN/inf are caught in the sums, not by a pass over the pixels). Dask arrays are reduced chunk by
chunk (``map_blocks``; the detector axes are rechunked whole if they are split), so data larger
than memory runs on any Dask scheduler, a ``dask.distributed`` cluster included, and stays lazy
until computed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import threading
import typing

import numpy as np

#: bytes of patterns per matrix product (and of each thread's conversion buffer): one block
#: stays in L2 cache while it is converted, thresholded and multiplied
_BLOCK_BYTES = 1 << 20
#: bytes of patterns a thread claims at a time (the in-memory reduction's unit of work)
_TASK_BYTES = 16 << 20
#: most threads of the in-memory reduction (it is bound by memory bandwidth)
_MAX_THREADS = 8


def _is_dask(a: typing.Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask"


def _check_data(data: typing.Any) -> None:
    if getattr(data, "ndim", 0) < 3:
        raise ValueError(f"4D-STEM data must have navigation axes and two detector axes (..., qy, qx); "
                         f"got shape {getattr(data, 'shape', None)}")
    if min(data.shape[-2:]) < 2:
        raise ValueError(f"the detector axes {data.shape[-2:]} must be at least 2 x 2 pixels")
    if 0 in data.shape:
        raise ValueError(f"empty 4D-STEM data: shape {data.shape}")


def detector_mask(shape: tuple[int, int], mask: typing.Any = None) -> np.ndarray:
    """(qy, qx) float mask from ``None`` (all ones), a boolean/float array, or a circle
    ``(x, y, r)`` in detector pixels (pyxem's convention)."""
    qy, qx = int(shape[0]), int(shape[1])
    if mask is None:
        return np.ones((qy, qx), np.float32)
    if isinstance(mask, tuple | list) and len(mask) == 3:
        x0, y0, r = (float(v) for v in mask)
        if not r > 0:
            raise ValueError(f"mask radius {r} must be > 0")
        yy, xx = np.mgrid[:qy, :qx]
        return ((xx - x0) ** 2 + (yy - y0) ** 2 <= r * r).astype(np.float32)
    m = np.asarray(mask, np.float32)
    if m.shape != (qy, qx):
        raise ValueError(f"mask shape {m.shape} differs from the detector {(qy, qx)}")
    if not np.all(np.isfinite(m)):
        raise ValueError("mask contains NaN or inf")
    return m


def detector_offsets(shape: tuple[int, int], center_px: tuple[float, float] | None = None,
                     mrad_per_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) of every detector pixel from the zero-angle pixel ``center_px`` (qy, qx; default
    the middle), in mrad with ``mrad_per_px``, else in pixels: two (qy, qx) arrays."""
    qy, qx = int(shape[0]), int(shape[1])
    cy, cx = (qy // 2, qx // 2) if center_px is None else (float(center_px[0]), float(center_px[1]))
    scale = 1.0 if mrad_per_px is None else float(mrad_per_px)
    yy, xx = np.mgrid[:qy, :qx].astype(np.float64)
    return (xx - cx) * scale, (yy - cy) * scale


def annulus(radius: np.ndarray, inner: float, outer: float | None) -> np.ndarray:
    """Boolean mask ``inner <= radius < outer`` (``outer=None``: no upper bound); a clear error
    for ``inner >= outer``."""
    hi = np.inf if outer is None else float(outer)
    if not 0 <= inner < hi:
        raise ValueError(f"need 0 <= inner ({inner}) < outer ({outer})")
    return (radius >= inner) & (radius < hi)


def _weighted_sums(data: typing.Any, weights: np.ndarray, threshold: float | None) -> typing.Any:
    """(..., k) sums of each pattern times each of the k weight images (weights (qy*qx, k))."""
    if _is_dask(data):
        import dask.array as da

        if len(data.chunks[-1]) > 1 or len(data.chunks[-2]) > 1:
            data = data.rechunk({data.ndim - 2: -1, data.ndim - 1: -1})
        k = weights.shape[1]
        # one thread per chunk: the scheduler runs the chunks in parallel
        return da.map_blocks(_weighted_sums_np, data, weights, threshold, threads=1,
                             dtype=np.float64, drop_axis=[data.ndim - 1],
                             chunks=data.chunks[:-2] + ((k,),))
    return _weighted_sums_np(np.asarray(data), weights, threshold)


_blas_lock = threading.Lock()
_blas_state: dict[str, typing.Any] = {"users": 0, "limiter": None, "controller": None}


@contextlib.contextmanager
def _one_blas_thread() -> typing.Iterator[None]:
    """BLAS limited to one thread while any reduction runs (restored when the last one ends).

    The reduction's matrix products are small (a block of patterns times a few weight images)
    and memory bound: multithreaded BLAS gains nothing there, and its threads wait on each other
    when a core is busy with other work (2-5x slower on a loaded 2-core machine) or when Dask
    threads already use every core. The count of users makes concurrent calls safe."""
    with _blas_lock:
        if _blas_state["users"] == 0:
            try:
                if _blas_state["controller"] is None:
                    from threadpoolctl import ThreadpoolController

                    _blas_state["controller"] = ThreadpoolController().select(user_api="blas")
                _blas_state["limiter"] = _blas_state["controller"].limit(limits=1)
            except Exception:  # threadpoolctl missing or failing: run with BLAS as it is
                _blas_state["limiter"] = None
        _blas_state["users"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["users"] -= 1
            if _blas_state["users"] == 0 and _blas_state["limiter"] is not None:
                _blas_state["limiter"].restore_original_limits()
                _blas_state["limiter"] = None


def _n_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _weighted_sums_np(data: np.ndarray, weights: np.ndarray, threshold: float | None,
                      threads: int | None = None) -> np.ndarray:
    """Blocks of patterns times the weights: float32 and float64 data straight from memory (no
    copy, no per-pixel check), other dtypes (e.g. uint16 counts) or a threshold through a small
    per-thread buffer that stays in cache; ``threads`` threads (default: the CPUs) claim blocks
    of work in turn, each with one BLAS thread."""
    nav, npx, k = data.shape[:-2], data.shape[-2] * data.shape[-1], weights.shape[1]
    dt = np.dtype(np.float64 if data.dtype == np.float64 else np.float32)  # float64 stays float64
    # (k, qy*qx) contiguous, i.e. Fortran order: BLAS reads the weights without packing them into
    # a scratch buffer on every call (1.5x faster per block, 3x where malloc trims eagerly, as in
    # dask.distributed workers with MALLOC_TRIM_THRESHOLD_ set)
    w = np.asfortranarray(weights, dt)
    flat = data.reshape(-1, npx)  # a view for contiguous detector axes (numpy copies otherwise)
    n = flat.shape[0]
    out = np.full((n, k), np.nan)  # NaN until written (a missed block cannot pass unseen)
    convert = data.dtype != dt or threshold is not None
    rows = max(1, _BLOCK_BYTES // (npx * dt.itemsize))
    step = rows * max(1, _TASK_BYTES // (rows * npx * dt.itemsize))
    starts = itertools.count(0, step)  # next() on a count is atomic under the GIL
    failed = threading.Event()

    @np.errstate(invalid="ignore", over="ignore")  # per thread; NaN/inf are reported below
    def work() -> None:
        buf = np.empty((min(rows, n), npx), dt) if convert else None
        while not failed.is_set() and (i := next(starts)) < n:
            for j in range(i, min(i + step, n), rows):
                b = flat[j:j + rows]
                if convert:
                    b = buf[:b.shape[0]]
                    np.copyto(b, flat[j:j + rows], casting="unsafe")
                    if threshold is not None:
                        # pixels below a fraction of their pattern's maximum are ignored; checked
                        # here as the threshold would zero NaN/inf before the sums see them
                        if not np.isfinite(b).all():
                            failed.set()
                            raise ValueError("4D-STEM data contain NaN or inf")
                        np.multiply(b, b >= threshold * b.max(axis=1, keepdims=True), out=b)
                out[j:j + b.shape[0]] = b @ w

    n_threads = min(_n_threads() if threads is None else threads, _MAX_THREADS, -(-n // step))
    with _one_blas_thread():
        if n_threads <= 1:
            work()
        else:
            with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
                for f in [pool.submit(work) for _ in range(n_threads)]:
                    f.result()
    # NaN and inf propagate into every weighted sum of their pattern (0 * NaN is NaN), so a
    # check of the few sums replaces a pass over the data; a non-finite sum from finite data
    # (float32 overflow) is left as it is
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any() and not np.isfinite(flat[bad]).all():
        raise ValueError("4D-STEM data contain NaN or inf")
    return out.reshape(nav + (k,))


def center_of_mass(data: typing.Any, *, center_px: tuple[float, float] | None = None,
                   mrad_per_px: float | None = None, mask: typing.Any = None,
                   threshold: float | None = None) -> typing.Any:
    """Centre of mass of every diffraction pattern.

    Args:
        data: (..., qy, qx) patterns (numpy or dask; any real dtype).
        center_px: detector pixel (qy, qx) of zero scattering angle (default the middle,
            ``(qy // 2, qx // 2)``).
        mrad_per_px: detector calibration; given, the result is in mrad, else in pixels.
        mask: ``None``, a (qy, qx) array, or a circle ``(x, y, r)`` in pixels: only pixels
            inside count (e.g. the bright-field disc).
        threshold: ignore pixels below this fraction (0..1) of their pattern's maximum.

    Returns:
        (..., 2) shift (x, y) of each pattern's centre of mass from ``center_px`` (x along qx),
        in mrad or pixels; the same array type as ``data`` (dask stays lazy). Patterns with no
        counts give NaN.
    """
    _check_data(data)
    qy, qx = data.shape[-2:]
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1)")
    if mrad_per_px is not None and not (np.isfinite(mrad_per_px) and mrad_per_px > 0):
        raise ValueError(f"mrad_per_px={mrad_per_px} must be > 0")
    m = detector_mask((qy, qx), mask)
    dx, dy = detector_offsets((qy, qx), center_px)
    w = np.stack([m, m * dx, m * dy], axis=-1).reshape(qy * qx, 3)
    sums = _weighted_sums(data, w, threshold)
    scale = 1.0 if mrad_per_px is None else float(mrad_per_px)
    if _is_dask(sums):
        # one blockwise step after the sums (not two slices of them): Dask then fuses reading,
        # reducing and dividing into one task per chunk, so a chunk is reduced right after it
        # is read rather than in a task of its own (~1.2-1.5x faster on a distributed worker)
        return sums.map_blocks(_com_from_sums, scale, dtype=np.float64,
                               chunks=sums.chunks[:-1] + ((2,),))
    return _com_from_sums(sums, scale)


def _com_from_sums(sums: np.ndarray, scale: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., 1:] / sums[..., :1] * scale


def virtual_image(data: typing.Any, *, inner: float = 0.0, outer: float | None = None,
                  center_px: tuple[float, float] | None = None, mrad_per_px: float | None = None) -> typing.Any:
    """Virtual (annular) detector image: each pattern summed over ``inner <= angle < outer``.

    Args:
        data: (..., qy, qx) patterns (numpy or dask).
        inner, outer: annulus radii in mrad when ``mrad_per_px`` is given, else in pixels;
            ``inner=0`` is a bright-field disc, ``outer=None`` reaches the detector's corners.
        center_px: detector pixel (qy, qx) of zero angle (default the middle).
        mrad_per_px: detector calibration.

    Returns:
        (...) image of summed counts (dask stays lazy).
    """
    _check_data(data)
    qy, qx = data.shape[-2:]
    w = annulus(np.hypot(*detector_offsets((qy, qx), center_px, mrad_per_px)), inner, outer)
    w = w.astype(np.float64).reshape(qy * qx, 1)
    if not w.any():
        raise ValueError(f"no detector pixel lies between {inner} and {outer}")
    return _weighted_sums(data, w, None)[..., 0]
