"""4D-STEM centre of mass on a lazy dataset on disk, larger than the workers' memory, with
``dask.distributed``: throughput with 1 and 2 worker processes and the scaling between them.

Data: ``--gb`` GB (default 3) of (ny, ``--nx`` 256, ``--det`` 128, 128) ``--dtype`` uint16
counts (or float32) in a temporary directory, written as an uncompressed zarr array
(``--format zarr``, the default when zarr is installed; zarr 2 or 3) or as one raw C-order
file (``--format raw``, as many detectors write; read by a small picklable reader through
``da.from_array``; h5py datasets cannot be pickled to worker processes), chunked ``--chunk-mb``
(32) MB along the scan rows. Every pattern is one of 256 Poisson-noisy bright-field discs
(radius det * 5 / 32 px, ~5,000 counts, 0.02 counts/px background) with random sub-pixel shifts
within +-3 px, picked at random per scan position, so writing costs little more than the disk
write. The expected result of every position is the bank's centre of mass computed in memory:
the distributed result is checked number for number. The temporary directory is removed at the
end, also on errors.

For each cluster (``LocalCluster``, ``--workers`` 1 2 processes, one thread each,
``--worker-memory`` 1 GB each, i.e. below the dataset size): ``center_of_mass(lazy)`` (the graph
reads chunk by chunk; nothing is loaded whole) is computed after a warm-up on one chunk,
``--repeats`` (2) times with the file's pages dropped from the OS page cache first ("cold":
``fsync`` + ``posix_fadvise(DONTNEED)`` on this dataset's own files, so the chunks come from the
disk) and ``--repeats`` times with the file in the page cache ("warm"). Reference, timed the
same way: a plain ``lazy.sum(axis=(-2, -1))`` on the same cluster, the floor of any per-pattern
reduction there (reading, Dask, the workers' allocations); ``--no-sum`` skips it.

Printed: dataset size and worker memory limit, per cluster and cache state the best time,
patterns/s, GB/s (dataset bytes / time) and atomsmith / sum throughput; each worker's peak RSS
during the timed runs (``VmHWM``, reset after the warm-up; its RSS before the runs, i.e. the
imports, is shown too) against the memory limit and the dataset size; the scaling 2 workers vs
1 (time ratio, cold and warm) and the largest difference from the in-memory expectation.
On 2 cores the scaling is at most 2x; cold runs are also bound by the disk (~1.4 GB/s here) and
zarr 3 reads uncompressed chunks at ~1 GB/s per process from the page cache (``--format raw``
~3 GB/s), so these figures are I/O-bound, not the in-memory reduction's (fourd_speed.py).
A default run takes ~2-3 min on the shared 2-core machine. Exit code 0 regardless.

Usage: python benchmarks/fourd_scale.py [--gb 3] [--workers 1 2] [--worker-memory 1GB]
                                        [--format zarr|raw] [--dtype uint16|float32]
                                        [--repeats 2] [--no-sum] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from atomsmith.fourd import center_of_mass

BANK = 256


def make_bank(det: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    qy, qx = np.mgrid[:det, :det].astype(np.float64)
    shifts = rng.uniform(-3, 3, (BANK, 2))
    r = np.hypot(
        qx[None] - det / 2 - shifts[:, 0, None, None], qy[None] - det / 2 - shifts[:, 1, None, None]
    )
    disc = np.clip(det * 5 / 32 + 0.5 - r, 0.0, 1.0)
    return rng.poisson(4.0 * disc + 0.02).astype(dtype)


def write_dataset(
    path: Path, fmt: str, bank: np.ndarray, ny: int, nx: int, rows: int, seed: int = 1
) -> np.ndarray:
    """Write the (ny, nx, det, det) patterns to ``path``; returns each position's bank index."""
    det = bank.shape[-1]
    idx = np.random.default_rng(seed).integers(0, BANK, (ny, nx))
    if fmt == "zarr":
        import zarr

        kw = {"shape": (ny, nx, det, det), "chunks": (rows, nx, det, det), "dtype": bank.dtype}
        if int(zarr.__version__.split(".")[0]) >= 3:
            z = zarr.create_array(str(path), compressors=None, overwrite=True, **kw)
        else:
            z = zarr.open_array(str(path), mode="w", compressor=None, **kw)
        for r0 in range(0, ny, rows):
            z[r0 : r0 + rows] = bank[idx[r0 : r0 + rows]]
    else:  # one C-order raw file, as many detectors write
        with open(path, "wb") as f:
            for r0 in range(0, ny, rows):
                bank[idx[r0 : r0 + rows]].tofile(f)
    return idx


class RawFile:
    """Lazy (ny, nx, qy, qx) view of a raw C-order file for ``da.from_array``: each read opens
    the file and reads only the scan rows asked for (picklable: it holds the path only)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str):
        self.path, self.shape, self.dtype, self.ndim = str(path), shape, np.dtype(dtype), len(shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        r0, r1, _ = key[0].indices(self.shape[0])
        row = int(np.prod(self.shape[1:]))
        n = max(0, r1 - r0)
        a = np.fromfile(self.path, self.dtype, n * row, offset=r0 * row * self.dtype.itemsize)
        return a.reshape((n,) + self.shape[1:])[(slice(None),) + key[1:]]


def open_lazy(path: Path, fmt: str, shape: tuple[int, ...], dtype: str, rows: int):
    import dask.array as da

    if fmt == "zarr":
        return da.from_zarr(str(path))
    return da.from_array(
        RawFile(path, shape, dtype),
        chunks=(rows, -1, -1, -1),
        lock=False,
        meta=np.empty((0,) * len(shape), dtype),
    )


def drop_cache(path: Path) -> None:
    """Write back and drop this dataset's own files from the OS page cache (no root needed)."""
    for f in [path] if path.is_file() else path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def _reset_peak() -> int:
    """Reset this process's peak RSS (Linux >= 4.0: ``clear_refs`` 5 resets VmHWM); returns the
    RSS now, or -1 if it could not be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS")
    except OSError:
        return -1


def _peak_rss() -> int:
    """Peak RSS of this process (VmHWM; ``ru_maxrss`` would include the parent's at spawn)."""
    try:
        return _status_bytes("VmHWM")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=0)


def run_cluster(n: int, args, path: Path, expected: np.ndarray, center, shape, rows) -> dict:
    from dask.distributed import Client, LocalCluster

    res: dict = {}
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.worker_memory,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        a = open_lazy(path, args.format, shape, args.dtype, rows)
        res["chunks"] = a.numblocks
        center_of_mass(
            a[: a.chunks[0][0]], center_px=center
        ).compute()  # warm-up: imports, one chunk
        res["blas"] = sorted(set(client.run(_blas_threads).values()))
        res["base"] = sorted(client.run(_reset_peak).values())  # peak RSS of the timed runs only
        res["reset"] = min(res["base"]) >= 0
        jobs = {"atomsmith": lambda: center_of_mass(a, center_px=center).compute()}
        if not args.no_sum:
            jobs["sum"] = lambda: a.sum(axis=(-2, -1)).compute()
        for cache in ("cold", "warm"):
            for name, job in jobs.items():
                ts = []
                for _ in range(args.repeats):
                    if cache == "cold":
                        drop_cache(path)
                    t0 = time.perf_counter()
                    out = job()
                    ts.append(time.perf_counter() - t0)
                    if name == "atomsmith":
                        res["maxdiff"] = max(
                            res.get("maxdiff", 0.0), float(np.max(np.abs(out - expected)))
                        )
                res[(cache, name)] = min(ts)
        res["rss"] = sorted(client.run(_peak_rss).values())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0, help="dataset size on disk in GB")
    ap.add_argument("--nx", type=int, default=256, help="scan width (positions)")
    ap.add_argument("--det", type=int, default=128, help="detector side in pixels")
    ap.add_argument("--dtype", choices=["uint16", "float32"], default="uint16")
    ap.add_argument("--chunk-mb", type=float, default=32.0, help="approximate chunk size")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--worker-memory", default="1GB", help="memory_limit of each worker")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--format",
        choices=["zarr", "raw"],
        default=None,
        help="zarr (default when installed) or one raw C-order file",
    )
    ap.add_argument("--no-sum", action="store_true", help="skip the dask sum reference")
    ap.add_argument(
        "--tmpdir", default=None, help="where to write the dataset (default: system temp)"
    )
    args = ap.parse_args()

    from dask.utils import format_bytes, parse_bytes

    if args.format is None:
        try:
            import zarr  # noqa: F401

            args.format = "zarr"
        except ImportError:
            args.format = "raw"
    item = np.dtype(args.dtype).itemsize
    row_bytes = args.nx * args.det * args.det * item
    ny = max(1, round(args.gb * 1e9 / row_bytes))
    rows = max(1, min(ny, round(args.chunk_mb * 1e6 / row_bytes)))
    n_pat, nbytes = ny * args.nx, ny * row_bytes
    limit = parse_bytes(args.worker_memory)
    center = (args.det / 2, args.det / 2)

    tmp = Path(tempfile.mkdtemp(prefix="atomsmith_fourd_scale_", dir=args.tmpdir))
    try:
        t0 = time.perf_counter()
        bank = make_bank(args.det, args.dtype)
        path = tmp / f"scan.{args.format}"
        shape = (ny, args.nx, args.det, args.det)
        idx = write_dataset(path, args.format, bank, ny, args.nx, rows)
        drop_cache(path)
        expected = center_of_mass(bank, center_px=center)[idx]  # in memory, per position
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        on_disk = sum(f.stat().st_size for f in files)
        t_write = time.perf_counter() - t0
        print(
            f"dataset: {args.format} {shape} {args.dtype}, {nbytes / 1e9:.2f} GB "
            f"({format_bytes(on_disk)} on disk, uncompressed), {n_pat:,} patterns, chunks of "
            f"{rows} scan rows = {rows * row_bytes / 1e6:.0f} MB; written in {t_write:.1f} s"
        )
        print(
            f"workers: processes, 1 thread each, memory_limit {format_bytes(limit)} each "
            f"({'below' if limit < nbytes else 'NOT below'} the dataset: {nbytes / limit:.1f}x); "
            f"{os.cpu_count()} CPUs"
        )

        results = {}
        for n in args.workers:
            t0 = time.perf_counter()
            results[n] = run_cluster(n, args, path, expected, center, shape, rows)
            print(
                f"  cluster of {n} done in {time.perf_counter() - t0:.1f} s "
                f"({results[n]['chunks'][0]} chunks, worker BLAS threads {results[n]['blas']})"
            )

        print(
            f"\n{'workers':>7} {'cache':>5} {'method':<10}{'time s':>8}{'patterns/s':>13}"
            f"{'GB/s':>7}{'vs sum':>8}"
        )
        for n, r in results.items():
            for cache in ("cold", "warm"):
                for name in ("atomsmith", "sum"):
                    if (cache, name) not in r:
                        continue
                    t = r[(cache, name)]
                    vs = (
                        f"{r[(cache, 'sum')] / t:8.2f}"
                        if name == "atomsmith" and (cache, "sum") in r
                        else ""
                    )
                    rate = f"{n_pat / t:13,.0f}{nbytes / 1e9 / t:7.2f}"
                    print(f"{n:>7} {cache:>5} {name:<10}{t:8.2f}{rate}{vs}")
        reset = all(r["reset"] for r in results.values())
        when = "timed runs" if reset else "whole life of each worker"
        print(
            f"\npeak worker memory (RSS, {when}) vs memory_limit {format_bytes(limit)} "
            f"and dataset {format_bytes(nbytes)}:"
        )
        for n, r in results.items():
            base = f" (RSS before the runs {format_bytes(max(r['base']))})" if r["reset"] else ""
            peak = max(r["rss"])
            print(
                f"  {n} worker(s): "
                + ", ".join(format_bytes(v) for v in r["rss"])
                + f"; max {peak / limit:.0%} of the limit, {peak / nbytes:.1%} of the data"
                + base
            )
        ns = sorted(results)
        if len(ns) > 1:
            lo, hi = ns[0], ns[-1]
            for cache in ("cold", "warm"):
                s = results[lo][(cache, "atomsmith")] / results[hi][(cache, "atomsmith")]
                print(
                    f"scaling {hi} vs {lo} workers ({cache}): {s:.2f}x "
                    f"(ideal {hi / lo:.0f}x; efficiency {s / (hi / lo):.0%})"
                )
        worst = max(r["maxdiff"] for r in results.values())
        print(
            f"max |distributed - in-memory| centre of mass: {worst:.1e} px "
            f"({'agrees' if worst < 1e-6 else 'DIFFERS'})"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"removed {tmp}" + (" (still there!)" if tmp.exists() else ""))


if __name__ == "__main__":
    main()
