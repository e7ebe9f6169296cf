"""The atomsmith plug-in in a headless Nion Swift (nion.ui's test UI): menus, Find Atoms, live
atom finding on completed frames only, training on a frame with cancel."""

import time

import numpy as np
import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.instrumentation")

from nion.data import Calibration, DataAndMetadata  # noqa: E402

import atomsmith.simulate as sim  # noqa: E402
from atomsmith.atoms.metrics import match_positions  # noqa: E402

PX_NM = 0.0234


def _frame(n=192, dose=2e5, seed=0, valid_rows=None):
    s = sim.build_crystal("graphene", (n * PX_NM * 10, n * PX_NM * 10), rotation_deg=10, shift_A=(0.3, 0.2))
    s = sim.substitute(s, "Si", 3, seed=1)
    im = sim.render_haadf(s, (n, n), PX_NM, dose_e_per_A2=dose, seed=seed)
    md = {} if valid_rows is None else {"hardware_source": {"valid_rows": valid_rows}}
    xd = DataAndMetadata.new_data_and_metadata(
        im.image.astype(np.float32), dimensional_calibrations=[Calibration.Calibration(0, PX_NM, "nm")] * 2,
        metadata=md)
    return im, xd


def test_menu_items_are_in_the_atomsmith_menu(swift):
    dc, ext, api = swift
    menu = dc.get_or_create_menu("atomsmith_menu", "Atomsmith", "window_menu")
    titles = [getattr(a, "title", None) for a in menu.items]
    for name in ("Find Atoms", "Live Atom Finding", "Train on This Frame", "Stop Training"):
        assert name in titles


def test_find_atoms_marks_the_dopants_and_counts_all_columns(swift, show):
    dc, ext, api = swift
    im, xd = _frame()
    di = api.library.create_data_item_from_data_and_metadata(xd, "graphene")
    win = show(dc, api, di)
    h = ext.handlers["find_atoms"]
    h.menu_item_execute(win)
    h.last_thread.join(60)
    dc.periodic()  # runs the queued commit on the "UI thread"
    truth = im.truth.select(im.truth.occupied)
    m = match_positions(h.last_table.xy, truth.xy, 0.35 * 1.42 / (PX_NM * 10), shape_px=(192, 192), border_px=5)
    assert m.f1 >= 0.98
    md = di.metadata["atomsmith"]
    assert md["n_columns"] == len(h.last_table) and md["pixel_size_nm"] == pytest.approx(PX_NM)
    # more columns than graphics allow: the Si dopants are marked, all columns are in the overlay
    si = truth.xy[truth.species == "Si"]
    marks = [g for g in di.graphics if g.get_property("graphic_id") == "atomsmith.atom"]
    assert len(marks) == 3
    pos = np.array([[g.position[1] * 192 - 0.5, g.position[0] * 192 - 0.5] for g in marks])
    d = np.hypot(*(pos[:, None, :] - si[None, :, :]).transpose(2, 0, 1))
    assert d.min(axis=1).max() < 1.0  # each mark within 1 px of a true Si
    assert h.last_overlay is not None and h.last_overlay.xdata.data_shape == (192, 192, 3)


def test_find_atoms_without_a_selection_is_refused_not_raised(swift):
    dc, ext, api = swift
    win = api.application.document_windows[0]
    dc.selected_display_panel = None
    ext.handlers["find_atoms"].menu_item_execute(win)  # a notification, no exception


def _settle(dc, computation):
    """Run Swift's computations, wait for the live worker, then let the UI thread store its result."""
    from nionswift_plugin.atomsmith import live

    dc.document_model.recompute_all()
    ls = live.live_source(computation)
    assert ls is not None and ls.wait_idle(60)
    dc.periodic()
    return ls


def test_live_atom_finding_skips_partial_frames(swift, show):
    dc, ext, api = swift
    im, xd = _frame(n=128)
    di = api.library.create_data_item_from_data_and_metadata(xd, "live HAADF")
    win = show(dc, api, di)
    h = ext.handlers["live_atom_finding"]
    h.menu_item_execute(win)
    ls = _settle(dc, h.computation)
    out = h.computation.get_result("overlay")
    assert out is not None and out.xdata.data_shape == (128, 128, 3)
    n_full = out.xdata.metadata["atomsmith"]["n_columns"]
    truth = im.truth.select(im.truth.occupied)
    assert abs(n_full - len(truth.xy)) <= 0.05 * len(truth.xy)
    assert out.title == f"Atoms ({n_full} columns)" and ls.done == 1
    # a partial frame (the scan is at row 40 of 128) is not searched: the result stays
    _, partial = _frame(n=128, seed=5, valid_rows=40)
    di.set_data_and_metadata(partial)
    _settle(dc, h.computation)
    assert out.xdata.metadata["atomsmith"]["n_columns"] == n_full and ls.done == 1
    # the next completed frame is, once, though both the data item's event and the computation see it
    im2, full2 = _frame(n=128, seed=6)
    di.set_data_and_metadata(full2)
    _settle(dc, h.computation)
    md = out.xdata.metadata["atomsmith"]
    assert md["latency_ms"] > 0 and abs(md["n_columns"] - len(truth.xy)) <= 0.05 * len(truth.xy)
    assert md["skipped"] is None and md["frames"]["good"] == 2  # its own result, not the first one kept
    assert ls.done == 2 and ls.dropped == 0


@pytest.mark.slow
def test_train_on_this_frame_then_stop(swift, show):
    from nionswift_plugin.atomsmith.state import STATE

    dc, ext, api = swift
    im, xd = _frame(n=128)
    di = api.library.create_data_item_from_data_and_metadata(xd, "train me")
    win = show(dc, api, di)
    trainer = ext.handlers["train_on_frame"]
    trainer.steps = 2000
    trainer.menu_item_execute(win)
    t0 = time.perf_counter()
    while trainer.progress[0] < 5 and time.perf_counter() - t0 < 60:
        time.sleep(0.05)
    ext.handlers["stop_training"].menu_item_execute(win)
    trainer.thread.join(60)
    dc.periodic()
    assert trainer.error is None
    assert 5 <= trainer.progress[0] < 2000  # stopped well before the end
    assert trainer.result_path is not None and trainer.result_path.exists()
    assert trainer.result_path.parent == STATE.models_dir()
    assert STATE.finder is not None and STATE.model_path == trainer.result_path
