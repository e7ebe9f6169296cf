"""Live soak: many twin frames through Swift's Live Atom Finding and Live Defect Counts.

A headless Swift with the plug-in (the harness of ``live_accuracy.py``) gets ``--frames-128``
frames of 128^2 and ``--frames-512`` of 512^2 (defaults 1000 and 200) written into one scan data
item each, the way a live scan completes frames (with its hardware-source frame index), as fast
as the worker takes them (a new frame when the previous one was analysed: every frame counts);
both live computations are attached to it. The frames come from a pool of 12 twin frames
(graphene + Si, 20 pA, 16 us dwell, 3 nm field) with a fresh Poisson draw each time. Printed per size:

- frames analysed by each computation, and computation errors (target: none);
- RSS of this process after the warm-up (the first 10 % of the frames) and at the end, and the
  growth (target <= 5 %);
- the longest UI-loop pass (one event-loop pass and Swift's periodic tasks, as Swift runs them;
  target <= 0.25 s);
- Abort: a part-written frame (the scan stopped at row 30) and an all-zero frame are written
  last; the overlay must still show the last good result ("kept on Abort": yes / no).

Usage: ``python benchmarks/live_soak.py [--frames-128 N] [--frames-512 N] [--trim-every N]``
(~5-10 min with the defaults on 2 cores; ``--trim-every 0`` turns off the workers' hand-back
of freed heap memory, for an A/B).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import types
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rss_mb() -> float:
    """Resident set size of this process (MB, from /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def pool_of(n: int, count: int = 12) -> list[tuple[np.ndarray, float]]:
    """Expected-count twin frames (noise drawn per use) of n x n over 3 nm."""
    from atomsmith.instrument import SimulatedInstrument

    twin = SimulatedInstrument(seed=1, beam_current_pA=20.0)
    out = []
    rng = np.random.default_rng(0)
    for _ in range(count):
        centre = tuple(float(v) for v in rng.uniform(2.6, 3.4, 2))
        f = twin.subscan(centre, (n, n), 3.0, 16.0)
        out.append((np.asarray(f.image, np.float32), f.pixel_size_nm))
    return out


def soak(h, n: int, frames: int) -> dict:
    from nion.data import Calibration, DataAndMetadata

    from nionswift_plugin.atomsmith import live

    pool = pool_of(n)
    px = pool[0][1]
    cal = [Calibration.Calibration(0, px, "nm")] * 2
    rng = np.random.default_rng(n)

    def xd(k: int, img: np.ndarray, valid_rows: int | None = None):
        md = {"hardware_source": {"frame_index": k}}
        if valid_rows is not None:
            md["hardware_source"]["valid_rows"] = valid_rows
        return DataAndMetadata.new_data_and_metadata(img, dimensional_calibrations=cal, metadata=md)

    di = h.api.library.create_data_item_from_data_and_metadata(xd(0, pool[0][0]), f"soak {n}")
    atoms = live.attach(h.api, di)
    counts = h.ext.handlers["live_defect_counts"]
    counts.execute(types.SimpleNamespace(target_data_item=di))
    h.dc.document_model.recompute_all()
    sources = [live.live_source(atoms), live.live_source(counts.computation)]
    for ls in sources:
        ls.wait_idle(120)
    longest, rss_warm, t0 = 0.0, float("nan"), time.perf_counter()
    last_good = None  # (frame index, title) of the last result shown that passed its checks
    for k in range(1, frames + 1):
        img = rng.poisson(pool[k % len(pool)][0]).astype(np.float32)
        di.set_data_and_metadata(xd(k, img))
        h.dc.document_model.recompute_all()
        while any(not ls.wait_idle(0.001) for ls in sources):
            t = time.perf_counter()
            h.idle()
            longest = max(longest, time.perf_counter() - t)
        t = time.perf_counter()
        h.idle()
        longest = max(longest, time.perf_counter() - t)
        h.records.clear()  # (the harness keeps every frame's table for live_accuracy: not the plug-in's memory)
        if k == max(1, frames // 10):
            gc.collect()
            rss_warm = rss_mb()
        out = atoms.get_result("overlay")
        md = ((out.xdata.metadata if out is not None and out.xdata is not None else None) or {}).get("atomsmith", {})
        if out is not None and md.get("problem") is None and md.get("frame_index") is not None:
            last_good = (md.get("frame_index"), out.title.split(";")[0])
    gc.collect()
    rss_end = rss_mb()
    # Abort: the scan stops mid-frame (30 rows written), then an all-zero frame
    part = np.zeros((n, n), np.float32)
    part[:30] = rng.poisson(pool[0][0][:30])
    for k, (img, rows) in enumerate(((part, 30), (np.zeros((n, n), np.float32), None)), start=frames + 1):
        di.set_data_and_metadata(xd(k, img, rows))
        h.dc.document_model.recompute_all()
        for ls in sources:
            ls.wait_idle(120)
        h.idle()
    out = atoms.get_result("overlay")
    md = ((out.xdata.metadata if out is not None and out.xdata is not None else None) or {}).get("atomsmith", {})
    # kept: the overlay still shows the last good frame's result (not the aborted frames')
    kept = (out is not None and last_good is not None and md.get("frame_index") == last_good[0]
            and out.title.split(";")[0] == last_good[1])
    errors = sum(1 for ls in sources if getattr(ls, "error", None))
    row = {"n": n, "frames": frames, "done": [getattr(ls, "done", None) for ls in sources], "errors": errors,
           "rss_warm": rss_warm, "rss_end": rss_end, "growth": rss_end / rss_warm - 1.0,
           "longest_s": longest, "kept": kept, "title": out.title if out is not None else None,
           "seconds": time.perf_counter() - t0}
    for ls in sources:
        ls.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames-128", type=int, default=1000)
    ap.add_argument("--frames-512", type=int, default=200)
    ap.add_argument("--trim-every", type=int, default=None,
                    help="frames between hand-backs of freed heap memory (live.TRIM_EVERY; 0: never)")
    args = ap.parse_args()
    if args.trim_every is not None:
        from nionswift_plugin.atomsmith import live

        live.TRIM_EVERY = args.trim_every if args.trim_every > 0 else 10**12
    warnings.simplefilter("ignore")
    import tempfile

    from live_accuracy import Harness

    os.chdir(tempfile.mkdtemp())
    h = Harness()
    rows = []
    try:
        for n, frames in ((128, args.frames_128), (512, args.frames_512)):
            if frames > 0:
                rows.append(soak(h, n, frames))
    finally:
        h.close()
    print(f"{'size':>6} {'frames':>7} {'analysed (atoms, counts)':>25} {'errors':>7} {'RSS warm MB':>12} "
          f"{'RSS end MB':>11} {'growth':>7} {'longest UI pass s':>18} {'kept on Abort':>14} {'s':>6}")
    for r in rows:
        print(f"{r['n']:>4}^2 {r['frames']:>7} {str(tuple(r['done'])):>25} {r['errors']:>7} {r['rss_warm']:>12.0f} "
              f"{r['rss_end']:>11.0f} {r['growth']:>6.1%} {r['longest_s']:>18.3f} {str(r['kept']):>14} "
              f"{r['seconds']:>6.0f}")
        print(f"       overlay after Abort: {r['title']}")
    print("targets: no errors, RSS growth <= 5 %, longest UI pass <= 0.25 s, last good result kept on Abort")


if __name__ == "__main__":
    main()
