"""Atomsmith > Automated Experiment in a headless Swift, on the digital twin's Swift devices
(scan device, STEM controller, EELS camera) through NionInstrument: the run measures the budget,
draws the points and the predicted map live, stops on request with the beam blanked and the
measurements on disk, and refuses bad input with a clear error."""

import time
import types

import numpy as np
import pytest

pytest.importorskip("nion.usim_device")
pytest.importorskip("nion.swift")
pytest.importorskip("jax")

from atomsmith.explore import MeasurementLog  # noqa: E402


@pytest.fixture(autouse=True)
def _data_in_tmp(tmp_path, monkeypatch):
    """The experiments' logs go to the test's folder."""
    monkeypatch.setenv("ATOMSMITH_DATA", str(tmp_path))


SURVEY_PX, SURVEY_FOV_NM = 40, 2.0  # 0.05 nm per pixel, centred on the twin's field


def _survey(ctx, ext, show, px=SURVEY_PX):
    """A survey taken by Swift's scan of the twin (it becomes Swift's scan context), shown and selected."""
    from nionswift_plugin.atomsmith.swift_twin import record_frame

    xd = record_frame(ctx, px, SURVEY_FOV_NM, 8.0)
    di = ext.api.library.create_data_item_from_data_and_metadata(xd, "survey")
    return di, show(ctx.document_controller, ext.api, di)


def _pump(dc, runner, timeout_s=90.0):
    """Process Swift's queued UI tasks while the run goes on; returns how often the map changed."""
    seen, last = 0, None
    t0 = time.perf_counter()
    while runner.running and time.perf_counter() - t0 < timeout_s:
        dc.periodic()
        item = runner.predicted_item
        if item is not None and item.xdata is not None:
            n = item.xdata.metadata["atomsmith"]["n_points"]
            if n != last:
                seen, last = seen + 1, n
        time.sleep(0.02)
    runner.thread.join(5.0)
    dc.periodic()
    return seen


def _extension(ctx, twin):
    from nion.swift.model import PlugInManager

    from nionswift_plugin.atomsmith.extension import AtomsmithExtension

    ext = AtomsmithExtension(PlugInManager.APIBroker())
    runner = ext.handlers["automated_experiment"]
    runner.instrument_kwargs = {"time_scale": 1.0 / 10.0, "field_nm": twin.field_nm}
    return ext, runner


@pytest.fixture
def explore(twin_swift, show):
    """``explore(seed, survey_px=SURVEY_PX, **twin_kwargs)``: the twin's Swift with the extension
    (closed after the test) and, unless ``survey_px`` is None, a survey shown and selected; a
    namespace of ctx, twin, dc, ext, runner, di, win."""
    made = []

    def start(seed, survey_px=SURVEY_PX, **twin_kwargs):
        ctx = twin_swift(seed=seed, with_eels=True, **twin_kwargs)
        twin = ctx.handles.twin
        ext, runner = _extension(ctx, twin)
        made.append(ext)
        di, win = _survey(ctx, ext, show, survey_px) if survey_px is not None else (None, None)
        return types.SimpleNamespace(ctx=ctx, twin=twin, dc=ctx.document_controller, ext=ext, runner=runner,
                                     di=di, win=win)

    yield start
    for ext in made:
        ext.close()


def _beam_safe(ctx):
    """The beam is blanked and the probe parked."""
    assert ctx.instrument.GetVal("C_Blank") == 1.0 and ctx.scan_hardware_source.probe_state == "parked"


def _si_after(n, action):
    """The Si edge integral as criterion; ``action()`` runs while the ``n``-th spectrum is evaluated."""
    from atomsmith.explore.criteria import EdgeIntegral as EdgeCriterion

    si, calls = EdgeCriterion("Si"), []

    def criterion(spectrum):
        calls.append(1)
        if len(calls) == n:
            action()
        return si(spectrum)

    return criterion


def test_automated_experiment_on_the_twins_swift_devices(explore):
    e = explore(6, time_scale=10.0)
    ctx, twin, runner, di, win = e.ctx, e.twin, e.runner, e.di, e.win
    runner.budget = 12
    runner.learner_kwargs = {"n_seed": 5, "exposure_ms": 10.0, "patch_px": 8, "seed": 0}
    t0 = time.perf_counter()
    runner.start(win)
    assert runner.running, runner.error
    updates = _pump(e.dc, runner)
    elapsed = time.perf_counter() - t0
    assert runner.error is None, runner.error
    res = runner.result
    assert res is not None and res.stop_reason == "points" and len(res.measurements) == 12
    assert len(set(res.indices.tolist())) == 12
    # the measured points are point graphics on the survey, at the measured positions
    graphics = [g for g in di.graphics if g.graphic_type == "point-graphic"]
    assert len(graphics) == len(runner.point_graphics) == 12
    px = SURVEY_FOV_NM / SURVEY_PX
    edge = np.asarray(twin.field_nm) / 2 - SURVEY_FOV_NM / 2  # the survey's outer edge in twin nm
    for g, m in zip(runner.point_graphics, res.measurements, strict=True):
        fy, fx = g.position
        assert (fx * SURVEY_PX * px + edge[0], fy * SURVEY_PX * px + edge[1]) == pytest.approx(m.xy_nm, abs=1e-6)
    # the predicted map: the survey's shape and calibration, updated while points arrived
    pm = runner.predicted_item.xdata
    assert pm.data_shape == (SURVEY_PX, SURVEY_PX) and np.all(np.isfinite(pm.data)) and pm.data.std() > 0
    assert [c.scale for c in pm.dimensional_calibrations] == pytest.approx([px, px])
    assert pm.metadata["atomsmith"]["n_points"] == 12 and updates >= 2
    # the map ranks the measured points as the criterion did
    yx = np.rint([[(m.xy_nm[1] - edge[1]) / px - 0.5, (m.xy_nm[0] - edge[0]) / px - 0.5]
                  for m in res.measurements]).astype(int)
    r = np.corrcoef(pm.data[yx[:, 0], yx[:, 1]], res.values)[0, 1]
    assert r > 0.5, r
    # on disk and beam safe
    assert len(MeasurementLog(runner.run_dir).read()) == 12
    _beam_safe(ctx)
    si = twin.sample.xy_A[twin.sample.species == "Si"] / 10.0
    d_best = float(np.min(np.hypot(*(si - np.asarray(res.best.xy_nm)).T)))
    print(f"12 points in {elapsed:.1f} s, {updates} map updates, best {res.best.value:.3g} at {d_best:.3f} nm "
          f"from the Si, r = {r:.2f}")


def test_stop_mid_run_blanks_the_beam_and_keeps_the_measurements(explore):
    e = explore(6, time_scale=10.0)
    runner, win = e.runner, e.win
    stop = e.ext.handlers["stop_automated_experiment"]
    # the user presses Stop while the 7th spectrum is evaluated
    runner.criterion = _si_after(7, lambda: stop.menu_item_execute(win))
    runner.budget = 40
    runner.learner_kwargs = {"n_seed": 5, "exposure_ms": 10.0, "patch_px": 8}
    runner.start(win)
    _pump(e.dc, runner)
    assert runner.stopped and runner.error is None and runner.result is None
    stored = MeasurementLog(runner.run_dir).read()
    assert len(stored) == len(runner.measurements) == 7  # the 7th finished, nothing after
    assert [m.index for m in stored] == [m.index for m in runner.measurements]
    assert (runner.run_dir / "spectra" / "000006.npz").exists()
    _beam_safe(e.ctx)
    assert len(runner.point_graphics) == 7
    stop.menu_item_execute(win)  # nothing running: a notification, no error


def test_a_fault_mid_run_is_shown_with_the_beam_blanked_and_the_data_kept(explore):
    e = explore(2, time_scale=10.0)
    runner = e.runner

    def fault():  # e.g. a spectrometer fault surfacing in the user's function
        raise RuntimeError("injected fault")

    runner.criterion, runner.budget = _si_after(4, fault), 12
    runner.learner_kwargs = {"n_seed": 5, "exposure_ms": 10.0}
    runner.start(e.win)
    _pump(e.dc, runner)
    assert runner.error and "injected fault" in runner.error and not runner.stopped
    # the 4th spectrum cost dose: kept, with no value (scored again on resume)
    stored = MeasurementLog(runner.run_dir).read()
    assert len(stored) == len(runner.measurements) == 4 and np.isnan(stored[-1].value)
    _beam_safe(e.ctx)


def test_a_non_2d_data_item_is_refused_clearly(explore, show):
    from nion.data import Calibration, DataAndMetadata

    e = explore(1, survey_px=None)
    api, dc, runner = e.ext.api, e.dc, e.runner
    xd = DataAndMetadata.new_data_and_metadata(np.ones(256, np.float32),
                                               dimensional_calibrations=[Calibration.Calibration(80, 0.5, "eV")])
    di = api.library.create_data_item_from_data_and_metadata(xd, "a spectrum")
    win = show(dc, api, di)
    runner.start(win)  # reported, never raised into Swift
    assert runner.error and "2D survey image" in runner.error and "1D" in runner.error
    assert runner.thread is None and runner.predicted_item is None
    uncal = api.library.create_data_item_from_data_and_metadata(
        DataAndMetadata.new_data_and_metadata(np.ones((32, 32), np.float32)), "uncalibrated")
    show(dc, api, uncal)
    runner.start(win)
    assert "calibrated in nm" in runner.error and runner.thread is None


def _panel_view(ext, win):
    """Atomsmith > Automated Experiment shows the panel; its content in this window."""
    ext.handlers["automated_experiment"].menu_item_execute(win)
    view = ext.explore_panel.view_for(win)
    assert view is not None, "the menu item did not show the panel"
    return view


def test_the_panel_runs_stops_and_resumes_an_experiment(explore):
    e = explore(6, time_scale=10.0)
    ctx, ext, runner, dc, di = e.ctx, e.ext, e.runner, e.dc, e.di
    other = ext.api.library.create_data_item_from_data_and_metadata(di.xdata, "another image")
    view = _panel_view(ext, e.win)
    # the survey list holds the 2D images; "Selected" picks the selected one
    titles = [d.title for d in view.survey_combo.items]
    assert "survey" in titles and "another image" in titles
    view._select_survey(other)
    view.use_selected()
    assert view.survey.uuid == di.uuid
    view.criterion_edit.text, view.budget_edit.text, view.seeds_edit.text = "Si", "20", "5"
    # Start from the panel; the user presses Stop while the 8th spectrum is evaluated
    assert view.start(), view.status_label.text
    assert runner.running and runner.criterion == "Si" and runner.budget == 20
    t0 = time.perf_counter()
    while runner.running and runner.n_measured < 8 and time.perf_counter() - t0 < 60:
        dc.periodic()
        time.sleep(0.01)
    view.stop()
    _pump(dc, runner)
    assert runner.stopped and runner.error is None, (runner.state, runner.error)
    n_stopped = len(MeasurementLog(runner.run_dir).read())
    assert 8 <= n_stopped < 20
    assert view.status_label.text.startswith("stopped") and view.progress.value == n_stopped
    _beam_safe(ctx)
    run_dir = runner.run_dir
    assert view.run_dir_edit.text == str(run_dir)
    first = [m.index for m in MeasurementLog(run_dir).read()]
    # Resume from the panel: the stored points count, none is measured again
    assert view.resume(), view.status_label.text
    _pump(dc, runner)
    assert runner.state == "finished" and runner.error is None, (runner.state, runner.error)
    stored = MeasurementLog(run_dir).read()
    idx = [m.index for m in stored]
    assert len(stored) == 20 and idx[:n_stopped] == first and len(set(idx)) == 20
    assert runner.result.stop_reason == "points" and len(runner.point_graphics) == 20
    # the survey shows each point once (the first run's points are not drawn again on top)
    from nionswift_plugin.atomsmith.automated_experiment import EXPLORE_GRAPHIC_ID

    drawn = [g for g in di.graphics if g.get_property("graphic_id") == EXPLORE_GRAPHIC_ID]
    assert len(drawn) == 20
    assert view.status_label.text.startswith("finished: 20/20") and view.progress.value == 20
    assert "best" in view.status_label.text
    pm = runner.predicted_item.xdata
    assert pm.metadata["atomsmith"]["n_points"] == 20 and np.all(np.isfinite(pm.data)) and pm.data.std() > 0


def test_the_panel_refuses_bad_fields_before_touching_the_beam(explore):
    e = explore(1)
    runner = e.runner
    view = _panel_view(e.ext, e.win)
    for field, text, message in [(view.budget_edit, "many", "budget"), (view.budget_edit, "1", "budget"),
                                 (view.time_edit, "soon", "time limit"), (view.dose_edit, "-1", "peak dose"),
                                 (view.criterion_edit, "Xq", "criterion"),
                                 (view.width_edit, "-5", "edge width"), (view.stride_edit, "0", "stride")]:
        old = field.text
        field.text = text
        assert not view.start()
        assert view.status_label.text.startswith("refused") and message in view.status_label.text, \
            view.status_label.text
        assert runner.thread is None and runner.predicted_item is None
        field.text = old
    view.run_dir_edit.text = "/nonexistent/run"
    assert not view.resume() and "no automated experiment to resume" in view.status_label.text


def test_the_panel_probes_the_atomic_columns_found_in_the_survey(explore):
    """Candidates "atoms": every spectrum is taken on a column of the twin's sample."""
    e = explore(6, survey_px=96, time_scale=10.0)  # ~0.02 nm per pixel: the columns are resolved
    twin, runner = e.twin, e.runner
    view = _panel_view(e.ext, e.win)
    view.budget_edit.text, view.seeds_edit.text = "10", "4"
    view.candidates_combo.current_index = 1
    assert view.start(), view.status_label.text
    _pump(e.dc, runner)
    assert runner.state == "finished" and runner.error is None, (runner.state, runner.error)
    res = runner.result
    assert len(res.measurements) == 10
    atoms_nm = twin.sample.xy_A / 10.0
    d = [float(np.min(np.hypot(*(atoms_nm - np.asarray(m.xy_nm)).T))) for m in res.measurements]
    assert max(d) < 0.04, d  # on a column (graphene bond 0.142 nm)
    # the predicted map fills each column's Voronoi cell
    pm = runner.predicted_item.xdata.data
    assert pm.shape == (96, 96) and np.all(np.isfinite(pm)) and len(np.unique(pm)) > 10
    si = atoms_nm[twin.sample.species == "Si"]
    d_si = float(np.min(np.hypot(*(si - np.asarray(res.best.xy_nm)).T)))
    print(f"{len(res.candidates_xy_nm)} columns found; spectra within {max(d) * 1000:.0f} pm of a column; "
          f"best point {d_si:.3f} nm from the Si")


def test_the_panels_time_limit_ends_the_run(explore):
    e = explore(6, time_scale=10.0)
    runner = e.runner
    view = _panel_view(e.ext, e.win)
    view.budget_edit.text, view.time_edit.text, view.model_combo.current_index = "1000", "4", 1  # gp
    assert view.start(), view.status_label.text
    assert runner.budget.time_s == 4.0 and runner.budget.points == 1000
    _pump(e.dc, runner)
    assert runner.state == "finished" and runner.result.stop_reason == "time", (runner.state, runner.error)
    n = len(MeasurementLog(runner.run_dir).read())
    assert 1 <= n < 1000 and view.status_label.text.startswith(f"finished: {n}/1000")
    assert e.ctx.instrument.GetVal("C_Blank") == 1.0


@pytest.mark.parametrize("method,k,when", [("acquire_spectrum", 3, "before"), ("acquire_spectrum", 3, "after"),
                                           ("blank", None, "before")])
def test_fault_matrix_through_the_automated_experiment_runner(explore, method, k, when):
    # Swift's NionInstrument over the twin's devices, failing before or after the k-th call:
    # the error reaches the user (an alarm for a blank that fails), the beam ends blanked, and
    # every spectrum that reached the loop is on disk
    from atomsmith.instrument.faults import FaultyInstrument
    from nionswift_plugin.atomsmith.instrument_adapter import instrument_for

    e = explore(2, time_scale=10.0)
    runner = e.runner
    made = []

    def factory(data_item):
        inner = instrument_for(runner.api, data_item, None, runner.instrument_kwargs, eels=True)
        made.append(FaultyInstrument(inner, method, k, when))
        return made[-1]

    runner.instrument_factory = factory
    runner.budget = 8
    runner.learner_kwargs = {"n_seed": 4, "exposure_ms": 10.0, "patch_px": 8}
    runner.start(e.win)
    _pump(e.dc, runner)
    assert made and made[0].calls >= 1 and runner.error, runner.error
    if method == "blank":
        assert "BEAM NOT BLANKED" in runner.error or "BeamSafetyError" in runner.error
    else:
        assert "failed (call 3" in runner.error
        _beam_safe(e.ctx)
        assert len(runner.measurements) == 2  # the spectra before the failing call
    stored = MeasurementLog(runner.run_dir).read() if runner.run_dir is not None else []
    assert len(stored) == len(runner.measurements)
    if not stored:
        return  # (the blank before the first spectrum: nothing to resume; a new run starts over)
    # resume with a working instrument: the stored spectra count, none is measured again, and
    # the run ends at its budget with the beam blanked
    first = [m.index for m in stored]
    runner.instrument_factory = lambda data_item: instrument_for(runner.api, data_item, None,
                                                                 runner.instrument_kwargs, eels=True)
    assert runner.start(e.win, resume_dir=runner.run_dir), runner.error
    _pump(e.dc, runner)
    assert runner.state == "finished" and runner.error is None, (runner.state, runner.error)
    idx = [m.index for m in MeasurementLog(runner.run_dir).read()]
    assert len(idx) == 8 and idx[:len(first)] == first and len(set(idx)) == 8
    _beam_safe(e.ctx)
