"""Atomsmith > Move Dopant in a headless Swift, on the digital twin: the dopant reaches its
target, every sub-scan lands in the library, errors and aborts blank the beam and keep frames."""

import numpy as np
import pytest

pytest.importorskip("nion.swift")

from nion.data import Calibration, DataAndMetadata  # noqa: E402

from atomsmith.instrument import SimulatedInstrument  # noqa: E402
from atomsmith.manipulate import plan_path  # noqa: E402


def _setup(dc, api, ins, hops=3, seed=0, labels=None):
    """A scan of the twin shown in Swift, with point graphics on the Si and a target ``hops`` away."""
    frame = ins.subscan((3.0, 3.0), (150, 150), 3.0, 16.0)
    edge = np.asarray(frame.origin_nm) - frame.pixel_size_nm / 2  # Swift: offset = pixel 0's edge
    cal = [Calibration.Calibration(edge[1], frame.pixel_size_nm, "nm"),
           Calibration.Calibration(edge[0], frame.pixel_size_nm, "nm")]
    di = api.library.create_data_item_from_data_and_metadata(
        DataAndMetadata.new_data_and_metadata(frame.image, dimensional_calibrations=cal), "twin scan")
    xy = ins.sample.xy_A / 10.0
    si = int(np.flatnonzero(ins.sample.species == "Si")[0])
    d = np.hypot(*(xy - xy[si]).T)
    cand = [c for c in np.flatnonzero((d > 0.1) & (d < 0.7)) if len(plan_path(xy, si, c)) - 1 == hops]
    target = xy[np.random.default_rng(seed).choice(cand)]
    for k, p in enumerate((xy[si], target)):
        col, row = frame.nm_to_pixel(p)
        g = di.add_point_region((row + 0.5) / 150, (col + 0.5) / 150)
        if labels:
            g.set_property("label", labels[k])
    panel = dc.workspace_controller.display_panels[0]
    panel.set_display_panel_display_item(dc.document_model.get_display_item_for_data_item(di._data_item))
    dc.selected_display_panel = panel
    return api.application.document_windows[0], target


def _finish(dc, mover):
    mover.thread.join(120)
    dc.periodic()  # the queued "add frame to the library" tasks


def test_move_dopant_reaches_the_target_and_records_every_frame(swift):
    dc, ext, api = swift
    ins = SimulatedInstrument(seed=4)
    win, target = _setup(dc, api, ins, labels=("dopant", "target"))
    mover = ext.handlers["move_dopant"]
    mover.instrument_factory = lambda data_item: ins
    mover.menu_item_execute(win)
    _finish(dc, mover)
    assert mover.error is None and mover.result.success and mover.result.n_hops >= 3
    si = ins.sample.xy_A[ins.sample.species == "Si"][0] / 10.0
    assert np.hypot(*(si - target)) < 0.05  # the twin's truth
    assert ins.blanked
    assert len(mover.recorded) == len(mover.result.steps) >= 4
    md = mover.recorded[-1].metadata["atomsmith"]
    assert md["step"] == len(mover.result.steps) - 1 and "target" in md["note"]


class _FailOnThird:
    def __init__(self, ins):
        self.ins, self.calls = ins, 0
        self.field_nm, self.beam_current_pA = ins.field_nm, ins.beam_current_pA

    def subscan(self, *a, **k):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("injected fault")
        return self.ins.subscan(*a, **k)

    def park_probe(self, *a, **k):
        return self.ins.park_probe(*a, **k)

    def blank(self):
        self.ins.blank()


def test_a_fault_mid_loop_blanks_the_beam_and_keeps_the_frames(swift):
    dc, ext, api = swift
    ins = SimulatedInstrument(seed=5)
    win, _ = _setup(dc, api, ins, seed=5)
    mover = ext.handlers["move_dopant"]
    mover.instrument_factory = lambda data_item: _FailOnThird(ins)
    mover.menu_item_execute(win)  # the error is reported, never raised into Swift
    _finish(dc, mover)
    assert "injected fault" in mover.error and ins.blanked
    assert len(mover.recorded) == 2 == len(mover.result.steps)


def test_a_target_outside_the_field_is_refused_with_no_dose(swift):
    dc, ext, api = swift
    ins = SimulatedInstrument(seed=6)
    win, _ = _setup(dc, api, ins, seed=6)
    di = win.target_data_item
    g = [g for g in di.graphics if g.graphic_type == "point-graphic"][1]
    g.position = (0.5, 0.999)  # then move the target far beyond the field via the calibration
    cal = di.xdata.dimensional_calibrations
    xd = DataAndMetadata.new_data_and_metadata(di.xdata.data, dimensional_calibrations=[
        cal[0], Calibration.Calibration(cal[1].offset + 5.0, cal[1].scale, "nm")])
    di.set_data_and_metadata(xd)
    dose_before = ins.dose_e_per_A2.sum()
    mover = ext.handlers["move_dopant"]
    mover.instrument_factory = lambda data_item: ins
    mover.menu_item_execute(win)
    _finish(dc, mover)
    assert "OutOfFieldError" in mover.error and ins.blanked
    assert ins.dose_e_per_A2.sum() == dose_before and mover.recorded == []


def test_stop_manipulation_aborts(swift):
    dc, ext, api = swift
    ins = SimulatedInstrument(seed=7)
    win, _ = _setup(dc, api, ins, seed=7)
    mover = ext.handlers["move_dopant"]
    stop = ext.handlers["stop_manipulation"]
    mover.instrument_factory = lambda data_item: ins
    original = ins.park_probe

    def park_then_stop(*a, **k):  # the user presses Stop during the first dwell
        original(*a, **k)
        stop.menu_item_execute(win)

    ins.park_probe = park_then_stop
    mover.menu_item_execute(win)
    _finish(dc, mover)
    assert mover.result.reason == "aborted" and ins.blanked and len(mover.recorded) == len(mover.result.steps)


def test_an_image_without_hardware_source_metadata_is_refused_with_no_dose(swift):
    dc, ext, api = swift
    ins = SimulatedInstrument(seed=8)
    win, _ = _setup(dc, api, ins, seed=8)  # a plain data item: no hardware-source metadata
    dose_before = ins.dose_e_per_A2.sum()
    mover = ext.handlers["move_dopant"]
    mover.instrument_factory = None  # the default: the instrument named by the image
    with pytest.raises(ValueError, match="no hardware-source metadata"):
        mover.execute(win)  # (the menu reports it in a notification and never raises into Swift)
    mover.menu_item_execute(win)
    assert mover.thread is None or not mover.thread.is_alive()
    assert ins.dose_e_per_A2.sum() == dose_before and mover.recorded == []


def test_the_field_follows_the_frame_calibration():
    from nionswift_plugin.atomsmith.instrument_adapter import field_from_frame

    def frame(offset_x_nm, size_px, scale, units="nm"):
        cal = [Calibration.Calibration(-size_px * scale / 2, scale, units),
               Calibration.Calibration(offset_x_nm, scale, units)]
        return DataAndMetadata.new_data_and_metadata(np.zeros((size_px, size_px), np.float32),
                                                     dimensional_calibrations=cal)

    # a 20 nm frame centred on the scan centre: a 22 nm field (not the old fixed 6 nm)
    assert field_from_frame(frame(-10.0, 200, 0.1)) == pytest.approx((22.0, 22.0))
    # a 2 nm frame 4 nm off centre: the field reaches it
    fx, fy = field_from_frame(frame(4.0, 100, 0.02))
    assert fx >= 2 * 6.0 and fy == pytest.approx(6.0)
    assert field_from_frame(frame(-100.0, 200, 1.0, "Å")) == pytest.approx((22.0, 22.0))
    with pytest.raises(ValueError, match="not a length"):
        field_from_frame(frame(0.0, 10, 1.0, ""))


@pytest.mark.parametrize("method,k,when", [("subscan", 1, "before"), ("subscan", 2, "after"),
                                           ("park_probe", 1, "before"), ("park_probe", 2, "after"),
                                           ("blank", None, "before")])
def test_fault_matrix_through_the_move_dopant_runner(swift, method, k, when):
    # the Swift runner, not only the core loop: after a fault before or after the k-th call the
    # beam is blanked (or the run raises the alarm), every frame the loop took is in the library
    # (one per step the result holds), and the error reaches the user, never Swift
    from atomsmith.instrument.faults import FaultyInstrument

    dc, ext, api = swift
    ins = SimulatedInstrument(seed=5)
    win, _ = _setup(dc, api, ins, seed=5)
    faulty = FaultyInstrument(ins, method, k, when)
    mover = ext.handlers["move_dopant"]
    mover.instrument_factory = lambda data_item: faulty
    mover.menu_item_execute(win)
    _finish(dc, mover)
    assert faulty.calls >= 1 and mover.error is not None
    if method == "blank":
        assert mover.error.startswith("BEAM NOT BLANKED")  # the alarm, not a success
    else:
        assert "failed (call" in mover.error and ins.blanked
    steps = [] if mover.result is None else mover.result.steps
    assert len(mover.recorded) == len(steps)
    assert mover.result is None or not mover.result.success
    # every step is on disk as it happened; resume (a working instrument) continues from there:
    # the earlier steps come first, none is taken again, and the electrons spent count
    from atomsmith.manipulate.log import ManipulationLog

    run_dir = mover.run_dir
    on_disk = ManipulationLog(run_dir).read_steps()
    assert [st.index for st in on_disk] == [st.index for st in steps]
    if not steps:
        with pytest.raises(FileNotFoundError, match="no manipulation step"):
            mover.resume(win)
        return
    ins.blanked = True  # (the blank fault left the twin's beam on; a working instrument now)
    mover.instrument_factory = lambda data_item: ins
    ext.handlers["resume_manipulation"].menu_item_execute(win)  # Atomsmith > Resume Manipulation
    _finish(dc, mover)
    assert mover.error is None, mover.error
    again = mover.result.steps
    assert [st.index for st in again[:len(steps)]] == [st.index for st in steps]
    new_idx = [st.index for st in again[len(steps):]]
    assert new_idx == list(range(steps[-1].index + 1, steps[-1].index + 1 + len(new_idx)))
    assert len(mover.recorded) == len(new_idx)  # only the new steps' frames are added to the library
    assert mover.result.electrons >= steps[-1].electrons and ins.blanked
    assert [st.index for st in ManipulationLog(run_dir).read_steps()] == [st.index for st in again]
    print(f"{method} #{k} {when}: {len(steps)} steps kept; resumed: {len(new_idx)} new steps, "
          f"{mover.result.reason}, {mover.result.electrons:.3g} electrons in all")
