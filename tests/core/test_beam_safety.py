"""Beam safety under injected instrument faults: the beam ends blanked (or the run says it may
not be), every item that cost dose is kept, and the dose is what the instrument delivered."""

import threading

import numpy as np
import pytest

from atomsmith.instrument import BeamSafetyError, SimulatedInstrument, blank_or_raise
from atomsmith.instrument.faults import FaultyInstrument
from atomsmith.manipulate import ManipulationError, move_atom, plan_path


def Faulty(inner, method, k, when="before"):  # noqa: N802  (reads as the class it returns)
    return FaultyInstrument(inner, method, k, when)


def _task(seed=0, hops=2):
    ins = SimulatedInstrument(seed=seed)
    xy = ins.sample.xy_A / 10.0
    si = int(np.flatnonzero(ins.sample.species == "Si")[0])
    d = np.hypot(*(xy - xy[si]).T)
    cand = [c for c in np.flatnonzero((d > 0.1) & (d < 0.6)) if len(plan_path(xy, si, c)) - 1 == hops]
    return ins, xy[si], xy[cand[0]]


def _electrons(ins: SimulatedInstrument) -> float:
    return ins.beam_on_s * 1e6 * ins.electrons_per_us


@pytest.mark.parametrize("method,k,when", [("subscan", 1, "before"), ("subscan", 2, "after"),
                                           ("park_probe", 1, "before"), ("park_probe", 1, "after"),
                                           ("park_probe", 2, "before")])
def test_move_atom_fault_matrix_blanks_and_keeps_every_step(method, k, when):
    ins, start, target = _task()
    faulty = Faulty(ins, method, k, when)
    seen = []
    with pytest.raises(ManipulationError, match="injected|failed") as err:
        move_atom(faulty, start, target, dwell_ms=500.0, on_step=seen.append)
    res = err.value.result
    assert ins.beam_blanked and res.beam_safe and not res.success
    # every step that cost dose reached on_step and the result, in order
    assert [s.index for s in res.steps] == [s.index for s in seen]
    # electrons: what the twin delivered (its beam-on time), within 1 %
    assert res.electrons == pytest.approx(_electrons(ins), rel=0.01)
    if method == "park_probe":
        failed = res.steps[-1]
        assert "park failed" in failed.note and failed.frame.image.size > 0
        assert np.all(np.isfinite(failed.dopant_nm))  # the dopant seen in that step's frame is kept


def test_a_blank_that_fails_once_is_retried():
    ins, start, target = _task()
    faulty = Faulty(ins, "blank", 1, "before")
    res = move_atom(faulty, start, target, dwell_ms=500.0, max_steps=2)
    assert res.beam_safe and ins.beam_blanked and faulty.calls >= 2


def test_a_blank_that_always_fails_is_an_alarm_never_a_success():
    ins, start, target = _task()
    faulty = Faulty(ins, "blank", None, "before")
    with pytest.raises(BeamSafetyError, match="could not be blanked") as err:
        move_atom(faulty, start, target, dwell_ms=500.0, max_steps=3)
    res = err.value.result
    assert res is not None and res.beam_safe is False and res.success is False
    assert res.reason == "beam not blanked" and len(res.steps) >= 1


def test_blank_or_raise_reads_the_beam_state_back():
    class Stuck:
        beam_blanked = False

        def blank(self):
            pass

    with pytest.raises(BeamSafetyError, match="reports the beam on"):
        blank_or_raise(Stuck(), retries=1, wait_s=0.0)


def test_the_twin_blanks_after_every_action_and_counts_beam_on_time():
    ins = SimulatedInstrument(seed=0)
    assert ins.beam_blanked and ins.beam_on_s == 0.0
    ins.subscan((3.0, 3.0), (32, 32), 1.0, 4.0)
    assert ins.beam_blanked and ins.beam_on_s == pytest.approx(32 * 32 * 4e-6)
    got = ins.park_probe((3.0, 3.0), 55.0)
    assert got == pytest.approx(55.0) and ins.beam_blanked
    assert ins.beam_on_s == pytest.approx(32 * 32 * 4e-6 + 0.055)
    ins.park_probe((3.0, 3.0), 10.0, keep_beam_on=True)
    assert not ins.beam_blanked
    ins.blank()
    assert ins.beam_blanked


def test_an_abort_stops_a_park_and_the_loop_with_the_beam_off():
    ins, start, target = _task()
    stop = threading.Event()

    class AbortDuringPark:
        """Stop pressed while the probe is parked (the event the UI sets)."""

        def __getattr__(self, name):
            return getattr(ins, name)

        def park_probe(self, xy, dwell_ms, **kw):
            ins.abort_event.set()
            stop.set()
            return ins.park_probe(xy, dwell_ms, **kw)

    res = move_atom(AbortDuringPark(), start, target, dwell_ms=3000.0, abort=stop)
    assert res.reason == "aborted" and not res.success and ins.beam_blanked
    assert "park stopped after 0 ms" in res.steps[-1].note
    assert res.park_time_s == 0.0 and res.electrons == pytest.approx(_electrons(ins), rel=0.01)


def test_learner_keeps_a_spectrum_whose_criterion_raised_and_rescores_it_on_resume(tmp_path):
    from atomsmith.explore import ActiveLearner, Budget, ExperimentInterrupted
    from atomsmith.explore.storage import MeasurementLog
    from atomsmith.simulate import build_crystal, substitute

    s = substitute(build_crystal("graphene", (30.0, 30.0)), "Si", 3, min_separation_A=5.0, edge_margin_A=4.0, seed=1)
    inst = SimulatedInstrument(s, field_nm=(3.0, 3.0), swap_cross_sections_barn={}, seed=0)
    calls = {"n": 0}

    def flaky(spec) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("criterion bug")
        return float(spec.counts.sum())

    kw = dict(survey_shape_px=(32, 32), survey_fov_nm=2.9, candidates="pixels", patch_px=6, n_seed=4,
              exposure_ms=10.0, model="random", seed=0)
    with pytest.raises(ExperimentInterrupted, match="criterion bug"):
        ActiveLearner(inst, flaky, tmp_path / "run", budget=Budget(points=8), **kw).run()
    assert inst.beam_blanked
    stored = MeasurementLog(tmp_path / "run").read()
    assert len(stored) == 3 and np.isnan(stored[-1].value)  # the spectrum that cost dose is kept
    e, c = MeasurementLog(tmp_path / "run").spectrum(2)
    assert c.sum() > 0
    beam_on = inst.beam_on_s

    res = ActiveLearner.resume(tmp_path / "run", inst, lambda spec: float(spec.counts.sum()),
                               budget=Budget(points=8), n_seed=4, model="random", seed=0).run()
    assert len(res.measurements) == 8 and len(set(res.indices.tolist())) == 8  # nothing repeated
    assert inst.beam_on_s == pytest.approx(beam_on + 5 * 0.010)  # five new spectra, no more
    assert inst.beam_blanked


def test_move_atom_logs_as_it_goes_and_resumes_with_the_budget_spent(tmp_path):
    from atomsmith.manipulate.log import ManipulationLog

    ins, start, target = _task(seed=1, hops=3)
    with pytest.raises(ManipulationError):
        move_atom(Faulty(ins, "park_probe", 2, "before"), start, target, dwell_ms=500.0, log=tmp_path / "run")
    written = ManipulationLog(tmp_path / "run").read_steps()
    assert len(written) == 2 and "park failed" in written[-1].note
    assert written[0].frame.image.shape == written[-1].frame.image.shape
    spent = written[-1].electrons
    before_on = ins.beam_on_s
    res = move_atom(ins, start, target, dwell_ms=500.0, resume=tmp_path / "run")
    assert [s.index for s in res.steps] == list(range(len(res.steps)))  # the numbering goes on
    assert res.steps[1].note == written[1].note  # the earlier steps come first
    new_e = (ins.beam_on_s - before_on) * 1e6 * ins.electrons_per_us
    assert res.electrons == pytest.approx(spent + new_e, rel=0.01)
    assert len(ManipulationLog(tmp_path / "run").read_steps()) == len(res.steps)
    assert (tmp_path / "run" / "result.json").exists() and ins.beam_blanked
    with pytest.raises(ValueError, match="nothing to resume"):
        move_atom(ins, start, target, resume=tmp_path / "empty")
