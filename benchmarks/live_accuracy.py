"""Live atom finding in Nion Swift on the twin's frames: how many frames get a result, and how
right is what the user sees?

Runs a headless Swift (nion.ui's test UI) with the atomsmith plug-in, attaches "Live Atom
Finding" to a data item and streams frames of the twin into it (``SimulatedInstrument``: graphene
with a Si dopant, 20 pA, a 3 nm field of view as in the twin's Fast/Slow scan modes) at the frame
rate of each dwell time (256^2 at 1 us: 66 ms per frame; 512^2 at 8 us: 2.1 s), the dose per
pixel growing with the dwell (beam current x dwell). Frames are written into the data item as a
live scan writes a completed frame (with its hardware-source frame index); every
``--blank-every``-th frame is all zero (a blanked beam / an aborted scan), which must be ignored.
The UI loop idles as in Swift (one event-loop pass and Swift's periodic tasks per millisecond).

Per size and dwell it prints, for the real-time stream:
- processed: the fraction of (non-blank) frames whose own result was shown (it passed its
  checks); the others were skipped (a result that failed its checks: the last good result
  stays) or dropped (a newer frame came while the worker was busy); this depends on the CPU;
- ignored: blank frames ignored unanalysed, of those streamed;
- F1 shown: for every frame, F1 of the result on screen when the next frame arrives against the
  twin's truth of that frame (0 while nothing is shown yet): what the user sees;
and then for ``--paced`` more frames of the same kind, each sent when the worker is idle (every
frame analysed, so these numbers do not depend on the CPU's speed):
- skipped: frames whose result failed its checks, and why (the two commonest reasons);
- find ms: median time to find one frame's columns;
- F1 good / F1 skipped: mean F1 of the shown results against their own frame's truth, and of the
  results that were skipped (what would have been shown without the checks).
F1: found and true columns matched one-to-one within 0.3 nearest-column distances; a border of
one column distance is not scored (atomsmith.atoms.metrics.match_positions).

Run: ``python benchmarks/live_accuracy.py [--sizes 256 512] [--dwells 1 2 4 8] [--seconds 10]``
(about 4 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the plug-in from the source tree


def frame_pool(n: int, dwell_us: float, count: int, *, fov_nm: float, current_pA: float, seed: int) -> list:
    """``count`` twin frames (image, true column positions px) of one size and dwell."""
    from atomsmith.instrument import SimulatedInstrument

    twin = SimulatedInstrument(seed=seed, beam_current_pA=current_pA)
    centre = (twin.field_nm[0] / 2, twin.field_nm[1] / 2)
    out = []
    for _ in range(count):
        f = twin.subscan(centre, (n, n), fov_nm, dwell_us)
        truth = f.truth.select(f.truth.occupied).xy
        out.append((np.asarray(f.image, np.float32), truth, f.pixel_size_nm))
    return out


def f1_of(table, truth: np.ndarray, shape: tuple[int, int]) -> float:
    from atomsmith.atoms.metrics import match_positions
    from atomsmith.atoms.quality import nearest_distance

    if table is None:
        return 0.0
    nn = nearest_distance(truth)
    return float(match_positions(np.asarray(table.xy).reshape(-1, 2), truth, 0.3 * nn, border_px=nn,
                                 shape_px=shape).f1)


def f1_shown(comp, records: dict, run: int, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """F1 of the result the computation shows now (0 when none: nothing yet, or the frame itself)."""
    out = comp.get_result("overlay")
    xd = out.xdata if out is not None else None
    md = ((xd.metadata if xd is not None else None) or {}).get("atomsmith", {})
    table = None
    if md and md.get("problem") is None and md.get("frame_index") is not None:
        table = records.get((run, md["frame_index"]), (None, None))[1]
    return f1_of(table, truth, shape)


def weights_note() -> str:
    """Which generic U-Net weights ran: the file atomsmith loads, its SHA-256 (first 12 digits) and,
    in a git checkout, its last commit (and whether the file differs from it)."""
    import hashlib

    import atomsmith

    w = Path(atomsmith.__file__).resolve().parent / "atoms" / "weights" / "generic_unet.pt"
    if not w.exists():
        return f"{w} (missing)"
    sha = hashlib.sha256(w.read_bytes()).hexdigest()[:12]
    try:
        log = subprocess.run(["git", "log", "-1", "--format=%h %ad", "--date=short", "--", w.name], cwd=w.parent,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", w.name], cwd=w.parent, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        log, dirty = "", ""
    git = f", last commit {log}{' (file modified since)' if dirty else ''}" if log else ""
    return f"{w} (sha256 {sha}{git})"


class Harness:
    """A headless Swift with the plug-in, whose live analyses are recorded per frame."""

    def __init__(self) -> None:
        from nion.swift import Facade
        from nion.swift.model import PlugInManager
        from nion.swift.test import TestContext

        from nionswift_plugin.atomsmith import live
        from nionswift_plugin.atomsmith.extension import AtomsmithExtension

        self.live = live
        self.records: dict[tuple, tuple] = {}  # (run, frame index) -> (problem, table, find ms)
        self.run = 0
        analyse = live.analyse_frame

        import inspect

        with_reference = "reference" in inspect.signature(analyse).parameters  # (older plug-ins: without)

        def recording(xdata, source_key=None, reference=None):
            res = analyse(xdata, source_key, reference) if with_reference else analyse(xdata, source_key)
            problem = res.get("problem", res["md"].get("error"))  # (older plug-ins show every result)
            self.records[(self.run, res["md"]["frame_index"])] = (problem, res["table"], res["md"]["latency_ms"])
            return res

        live.analyse_frame = recording
        Facade.initialize()
        self.setup = TestContext.TestSetup(set_global=True)
        self.context = TestContext.create_memory_context()
        tc = self.context.__enter__()
        self.dc = tc.create_document_controller_with_application()
        self.ext = AtomsmithExtension(PlugInManager.APIBroker())
        self.api = self.ext.api
        self.loop = self.dc.document_model.event_loop

    def idle(self) -> None:
        """One pass of an idle UI loop, as in Swift: the event loop and Swift's periodic tasks."""
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.dc.periodic()

    def close(self) -> None:
        self.ext.close()
        self.context.__exit__(None, None, None)

    def measure(self, n: int, dwell: float, pool: list, args) -> dict:
        """Stream ``pool``'s frames (cycled) at the dwell's frame rate, then ``len(pool)`` frames
        paced by the analysis; returns the row of the table."""
        from nion.data import Calibration, DataAndMetadata

        live, api = self.live, self.api
        self.run += 1
        run = self.run
        cal = [Calibration.Calibration(0, pool[0][2], "nm")] * 2
        frame_s = n * n * dwell * 1e-6
        count = max(args.min_frames, int(round(args.seconds / frame_s)))
        blank = np.zeros((n, n), np.float32)
        di = api.library.create_data_item_from_data_and_metadata(
            DataAndMetadata.new_data_and_metadata(blank, dimensional_calibrations=cal), f"live {n} {dwell:g} us")
        comp = live.attach(api, di)
        self.dc.document_model.recompute_all()  # the computation starts listening (a blank frame: ignored)
        ls = live.live_source(comp)
        ls.wait_idle(60)
        self.idle()
        ignored0 = getattr(ls, "ignored", 0)

        def put(k: int, img: np.ndarray) -> None:
            di.set_data_and_metadata(DataAndMetadata.new_data_and_metadata(
                img, dimensional_calibrations=cal, metadata={"hardware_source": {"frame_index": k}}))

        # 1. real time: frame k arrives at k x frame time, whatever the worker is doing
        shown, blanks, real = [], 0, {}
        t_start = time.perf_counter()
        k, newest = 0, None
        while k < count or time.perf_counter() - t_start < (count + 1) * frame_s:
            if k < count and time.perf_counter() - t_start >= k * frame_s:  # the scan completes frame k
                if newest is not None:  # what was on screen while frame k - 1 was the newest
                    shown.append(f1_shown(comp, self.records, run, pool[newest][1], (n, n)))
                    newest = None
                if args.blank_every > 0 and k % args.blank_every == args.blank_every - 1:
                    put(k, blank)
                    blanks += 1
                else:
                    newest = real[k] = k % len(pool)
                    put(k, pool[newest][0])
                k += 1
            self.idle()
            time.sleep(0.001)
        if newest is not None:
            shown.append(f1_shown(comp, self.records, run, pool[newest][1], (n, n)))
        ls.wait_idle(300)
        self.idle()
        rt = {fi: rec for (r, fi), rec in self.records.items() if r == run and fi in real}
        good = [fi for fi, rec in rt.items() if rec[0] is None]
        row = {"n": n, "dwell": dwell, "frame_ms": frame_s * 1e3, "frames": len(real),
               "processed": len(good) / max(1, len(real)), "analysed": len(rt) / max(1, len(real)),
               "ignored": getattr(ls, "ignored", 0) - ignored0, "blanks": blanks,
               "f1_shown": float(np.mean(shown)) if shown else float("nan")}
        # 2. paced: every frame analysed (the next one comes when the worker is idle): the skip rate
        #    and the accuracy of each result, whatever the CPU's speed
        paced = {}
        for j in range(args.paced):
            k = count + j
            paced[k] = j % len(pool)
            put(k, pool[paced[k]][0])
            self.dc.document_model.recompute_all()
            ls.wait_idle(300)
            self.idle()
        pc = {fi: rec for (r, fi), rec in self.records.items() if r == run and fi in paced}
        f1_good = [f1_of(rec[1], pool[paced[fi]][1], (n, n)) for fi, rec in pc.items() if rec[0] is None]
        f1_bad = [f1_of(rec[1], pool[paced[fi]][1], (n, n)) for fi, rec in pc.items() if rec[0] is not None]
        reasons = collections.Counter(rec[0].split(" (")[0][:100] for rec in list(rt.values()) + list(pc.values())
                                      if rec[0] is not None)
        row.update(paced=len(pc), paced_skipped=len(f1_bad),
                   f1_good=float(np.mean(f1_good)) if f1_good else float("nan"),
                   f1_bad=float(np.mean(f1_bad)) if f1_bad else float("nan"),
                   find_ms=float(np.median([rec[2] for rec in pc.values()])) if pc else float("nan"),
                   reasons=reasons, skipped_rt=len(rt) - len(good))
        ls.close()
        return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--dwells", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--seconds", type=float, default=10.0, help="real-time streaming per size and dwell, s")
    ap.add_argument("--min-frames", type=int, default=6, help="at least this many frames per size and dwell")
    ap.add_argument("--pool", type=int, default=6, help="distinct twin frames per size and dwell (cycled)")
    ap.add_argument("--paced", type=int, default=None, help="frames analysed one by one after the stream "
                    "(default: the pool)")
    ap.add_argument("--blank-every", type=int, default=8, help="every n-th streamed frame is all zero (0: none)")
    ap.add_argument("--fov", type=float, default=3.0, help="field of view, nm")
    ap.add_argument("--current", type=float, default=20.0, help="beam current, pA")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.paced is None:
        args.paced = args.pool
    warnings.filterwarnings("ignore")
    logging.getLogger("nionswift_plugin.atomsmith.live").setLevel(logging.WARNING)  # (a line per skipped frame)
    os.environ.setdefault("ATOMSMITH_DATA", tempfile.mkdtemp())
    os.chdir(tempfile.mkdtemp())
    import torch

    t0 = time.perf_counter()
    h = Harness()
    print(f"nionswift headless, torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPU "
          f"cores, load average {os.getloadavg()[0]:.1f}; twin graphene + Si, {args.current:g} pA, "
          f"{args.fov:g} nm field of view; model weights {weights_note()}")
    warm = frame_pool(128, 4.0, 1, fov_nm=args.fov * 0.25, current_pA=args.current, seed=0)[0]
    h.live.find_columns(warm[0], warm[2])  # loads the model (not timed)
    print(f"{'':>13} {'real time':-^53}  {'paced (every frame analysed)':-^44}")
    print(f"{'size':>6} {'dwell':>6} {'frame ms':>9} {'frames':>7} {'processed':>10} {'skipped':>8} {'ignored':>8} "
          f"{'F1 shown':>9}  {'frames':>6} {'skipped':>8} {'find ms':>8} {'F1 good':>8} {'F1 skipped':>11}  "
          "skipped because")
    rows = []
    for n in args.sizes:
        for dwell in args.dwells:
            pool = frame_pool(n, dwell, args.pool, fov_nm=args.fov, current_pA=args.current,
                              seed=args.seed + 100 * len(rows))
            r = h.measure(n, dwell, pool, args)
            rows.append(r)
            why = "; ".join(f"{c}x {w}" for w, c in r["reasons"].most_common(2)) or "-"
            print(f"{n:>4}^2 {dwell:>4g}us {r['frame_ms']:>9.0f} {r['frames']:>7d} {r['processed']:>10.2f} "
                  f"{r['skipped_rt']:>8d} {r['ignored']:>4d}/{r['blanks']:<3d} {r['f1_shown']:>9.3f}  {r['paced']:>6d} "
                  f"{r['paced_skipped']:>8d} {r['find_ms']:>8.0f} {r['f1_good']:>8.3f} {r['f1_bad']:>11.3f}  {why}",
                  flush=True)
    h.close()
    print(f"\n{time.perf_counter() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.1f}; blank frames "
          f"ignored: {sum(r['ignored'] for r in rows)} of {sum(r['blanks'] for r in rows)}; real time: "
          f"{np.mean([r['processed'] for r in rows]):.2f} of frames processed, "
          f"{sum(r['skipped_rt'] for r in rows)} skipped, F1 shown "
          f"{np.nanmean([r['f1_shown'] for r in rows]):.3f}; paced: "
          f"{sum(r['paced_skipped'] for r in rows)} of {sum(r['paced'] for r in rows)} frames skipped, F1 of the "
          f"shown results {np.nanmean([r['f1_good'] for r in rows]):.3f}")
    os._exit(0)  # Swift's worker threads would keep the interpreter alive


if __name__ == "__main__":
    raise SystemExit(main())
