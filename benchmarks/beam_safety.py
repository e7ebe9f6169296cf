"""Beam safety figures: the fault-injection matrix, Stop-to-blank latency, beam-on / exposure.

1. Fault matrix (bare twin, ``SimulatedInstrument``): ``move_atom`` on a 2-hop task and an
   ``ActiveLearner`` run (8 spectra), each with a wrapper that raises before or after the k-th
   call of one method (scan/subscan, park_probe, acquire_spectrum, blank; ``blank`` every
   time in the last rows). Per row: how the run ended, whether the twin's beam is blanked, the
   items kept (steps / stored spectra, also those of the failing step), electrons counted over
   electrons the twin delivered, and for the learner what a resume did (spectra added, repeats).
2. Stop-to-blank latency in a headless Swift with the twin's devices, through ``NionInstrument``:
   a 5 s park in a worker thread, Stop (abort event + blank from another thread) after 0.2 s;
   time until ``C_Blank`` reads 1, time until the park returned, beam-on time counted. 10 trials.
3. Beam on / exposure for spectra through the twin's Swift EELS camera (20 and 100 ms), from the
   adapter's beam-on clock.
4. The same through usim's own EELS camera (usim's devices, no twin), with the default for
   usim's cameras (``frame_aligned`` off: they render a frame from the blanker's state at its
   start) and with ``frame_aligned=True``, and whether the spectra differ (usim's EELS
   simulator ignores the blanker).

Usage: ``python benchmarks/beam_safety.py`` (about a minute on 2 cores; runs Swift headless in a
temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
import warnings

import numpy as np

from atomsmith.instrument import BeamSafetyError, SimulatedInstrument
from atomsmith.instrument.faults import FaultyInstrument as Faulty
from atomsmith.manipulate import ManipulationError, move_atom, plan_path


def _move_task():
    ins = SimulatedInstrument(seed=0)
    xy = ins.sample.xy_A / 10.0
    si = int(np.flatnonzero(ins.sample.species == "Si")[0])
    d = np.hypot(*(xy - xy[si]).T)
    cand = [c for c in np.flatnonzero((d > 0.1) & (d < 0.6)) if len(plan_path(xy, si, c)) - 1 == 2]
    return ins, xy[si], xy[cand[0]]


def move_rows():
    rows = []
    for method, k, when in [("subscan", 1, "before"), ("subscan", 2, "after"), ("park_probe", 1, "before"),
                            ("park_probe", 1, "after"), ("park_probe", 2, "before"), ("blank", 1, "before"),
                            ("blank", None, "before")]:
        ins, start, target = _move_task()
        f = Faulty(ins, method, k, when)
        seen = []
        try:
            r = move_atom(f, start, target, dwell_ms=500.0, on_step=seen.append)
            end = f"{r.reason}"
        except ManipulationError as exc:
            r, end = exc.result, "ManipulationError"
        except BeamSafetyError as exc:
            r, end = exc.result, "BeamSafetyError (alarm)"
        delivered = ins.beam_on_s * 1e6 * ins.electrons_per_us
        rows.append(("move_atom", f"{method} #{k or 'every'} {when}", end, ins.beam_blanked,
                     f"{len(r.steps)} steps ({len(seen)} to on_step)",
                     r.electrons / delivered if delivered > 0 else float("nan"), "-"))
    return rows


def learner_rows(tmp):
    from atomsmith.explore import ActiveLearner, Budget, ExperimentInterrupted
    from atomsmith.simulate import build_crystal, substitute

    def scene():
        s = substitute(build_crystal("graphene", (30.0, 30.0)), "Si", 3, min_separation_A=5.0, edge_margin_A=4.0,
                       seed=1)
        return SimulatedInstrument(s, field_nm=(3.0, 3.0), swap_cross_sections_barn={}, seed=0)

    kw = dict(survey_shape_px=(32, 32), survey_fov_nm=2.9, candidates="pixels", patch_px=6, n_seed=4,
              exposure_ms=10.0, model="random", seed=0)

    def counts(spec):
        return float(spec.counts.sum())

    rows = []
    cases = [("acquire_spectrum", 3, "before"), ("acquire_spectrum", 3, "after"), ("scan", 1, "before"),
             ("criterion", 3, "raises"), ("blank", None, "before")]
    for n, (method, k, when) in enumerate(cases):
        ins = scene()
        run_dir = os.path.join(tmp, f"learner{n}")
        calls = {"n": 0}

        def criterion(spec, k=k, method=method, calls=calls):
            calls["n"] += 1
            if method == "criterion" and calls["n"] == k:
                raise RuntimeError("criterion bug")
            return counts(spec)

        inst = ins if method == "criterion" else Faulty(ins, method, k, when)
        try:
            res = ActiveLearner(inst, criterion, run_dir, budget=Budget(points=8), **kw).run()
            end, kept = res.stop_reason, len(res.measurements)
        except ExperimentInterrupted as exc:
            end, kept = "ExperimentInterrupted", len(exc.measurements)
        except BeamSafetyError as exc:
            end, kept = "BeamSafetyError (alarm)", len(exc.result or [])
        resume = "-"
        if end == "ExperimentInterrupted":
            on0 = ins.beam_on_s
            try:
                r2 = ActiveLearner.resume(run_dir, ins, counts, budget=Budget(points=8), n_seed=4, model="random",
                                          seed=0).run()
                new = round((ins.beam_on_s - on0) / 0.010)
                resume = (f"{len(r2.measurements)} stored, {new} new spectra, "
                          f"{len(r2.indices) - len(set(r2.indices.tolist()))} repeated")
            except Exception as exc:  # noqa: BLE001
                resume = f"failed: {type(exc).__name__}: {exc}"
        rows.append(("ActiveLearner", f"{method} #{k or 'every'} {when}", end, ins.beam_blanked,
                     f"{kept} spectra stored", float("nan"), resume))
    return rows


def swift_figures(tmp):
    from nion.swift import Facade
    from nion.swift.test import TestContext

    from nionswift_plugin.atomsmith.swift_twin import twin_test_context

    os.chdir(tmp)
    Facade.initialize()
    setup = TestContext.TestSetup(set_global=True)  # noqa: F841  (keeps the event loop alive)
    ctx = twin_test_context(os.path.join(tmp, "test_data"), seed=3, with_eels=True)
    try:
        ins = ctx.handles.nion_instrument()
        ins.scan((32, 32), 1.0, 2.0)
        lat_blank, lat_return, on_ms = [], [], []
        for _ in range(10):
            ins.abort_event.clear()
            out = {}
            worker = threading.Thread(target=lambda out=out: out.setdefault("ms", ins.park_probe((3.0, 3.0), 5000.0)))
            worker.start()
            deadline = time.perf_counter() + 5.0
            while ins.blanked and time.perf_counter() < deadline:
                time.sleep(0.001)
            time.sleep(0.2)
            t0 = time.perf_counter()
            ins.abort_event.set()
            ins.blank()
            lat_blank.append((time.perf_counter() - t0) * 1e3)
            worker.join(5.0)
            lat_return.append((time.perf_counter() - t0) * 1e3)
            on_ms.append(out.get("ms", float("nan")))
        ins.abort_event.clear()
        ratios = {}
        for exposure in (20.0, 100.0):
            r = []
            for _ in range(3):
                on0 = ins.beam_on_s
                ins.acquire_spectrum((3.0, 3.0), exposure)
                r.append((ins.beam_on_s - on0) / (exposure * 1e-3))
            ratios[exposure] = r
        return lat_blank, lat_return, on_ms, ratios, ins.blanked
    finally:
        ctx.close()
        asyncio.set_event_loop(asyncio.new_event_loop())


def usim_figures(tmp: str) -> dict:
    """Beam on / exposure through usim's own EELS camera: {(frame_aligned, exposure ms): [ratios]},
    and the spectra's total counts per setting."""
    from nion.instrumentation.test import AcquisitionTestContext
    from nion.swift import Facade
    from nion.swift.test import TestContext
    from nion.usim_device import DeviceConfiguration

    from nionswift_plugin.atomsmith.instrument_adapter import NionInstrument

    os.chdir(tmp)
    Facade.initialize()
    setup = TestContext.TestSetup(set_global=True)  # noqa: F841  (owns the event loop)
    cfg = DeviceConfiguration.AcquisitionContextConfiguration(sample_index=1)
    ctx = AcquisitionTestContext.AcquisitionTestContext(cfg, is_app=True)
    out: dict = {}
    try:
        for aligned in (None, True):
            ins = NionInstrument("usim_scan_device", "usim_stem_controller", eels_camera_id="usim_eels_camera",
                                 frame_aligned=aligned)
            for exposure in (20.0, 100.0):
                for _ in range(3):
                    on0 = ins.beam_on_s
                    spectrum = ins.acquire_spectrum((1.0, 1.0), exposure)
                    out.setdefault((aligned, exposure), []).append(
                        ((ins.beam_on_s - on0) / (exposure * 1e-3), float(spectrum.counts.sum())))
    finally:
        ctx.close()
        asyncio.set_event_loop(asyncio.new_event_loop())
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = move_rows() + learner_rows(tmp)
        print("1. fault matrix (bare twin; electrons: counted / delivered by the twin)")
        print(f"{'loop':<14} {'fault':<28} {'ended':<24} {'blanked':<8} {'kept':<26} {'e ratio':>7}  resume")
        for loop, fault, end, blanked, kept, ratio, resume in rows:
            er = "-" if not np.isfinite(ratio) else f"{ratio:.3f}"
            print(f"{loop:<14} {fault:<28} {end:<24} {str(blanked):<8} {kept:<26} {er:>7}  {resume}")
        cwd = os.getcwd()
        try:
            lat_blank, lat_return, on_ms, ratios, blanked = swift_figures(tmp)
            usim = usim_figures(tmp)
        finally:
            os.chdir(cwd)
    print("\n2. Stop during a 5 s park (headless Swift, the twin's devices, NionInstrument), 10 trials")
    print(f"   Stop -> C_Blank = 1: median {statistics.median(lat_blank):.1f} ms, max {max(lat_blank):.1f} ms "
          "(target <= 50 ms)")
    print(f"   Stop -> park returned: median {statistics.median(lat_return):.1f} ms, max {max(lat_return):.1f} ms; "
          f"beam on counted {statistics.median(on_ms):.0f} ms of the 200 ms before Stop; blanked at the end: {blanked}")
    print("\n3. beam on / exposure, spectra through the twin's Swift EELS camera (3 each)")
    for exposure, r in ratios.items():
        print(f"   {exposure:.0f} ms: " + ", ".join(f"{v:.2f}" for v in r) + " (goal <= 1.2)")
    print("\n4. beam on / exposure through usim's own EELS camera (3 each; mean total counts)")
    for (aligned, exposure), r in usim.items():
        how = "default for usim (not frame-aligned)" if aligned is None else "frame_aligned=True"
        print(f"   {how:<38} {exposure:>4.0f} ms: " + ", ".join(f"{v:.2f}" for v, _ in r)
              + f"; counts {np.mean([c for _, c in r]):.4g}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
