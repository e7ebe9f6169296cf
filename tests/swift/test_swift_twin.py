"""The twin as a Swift STEM (``swift_twin.start_twin``: its own scan device and STEM controller
rendering atomsmith's twin) and ``NionInstrument`` over it: atoms in the frames, parked-probe hops,
blanking, refusals. Each test runs in a temporary directory (Swift's instrumentation writes
./test_data) and stops every thread it started."""

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("nion.usim_device")
pytest.importorskip("nion.swift")

from atomsmith import find_atoms  # noqa: E402
from atomsmith.atoms.metrics import match_positions  # noqa: E402
from atomsmith.instrument import OutOfFieldError  # noqa: E402


def _si_and_neighbours(twin):
    xy = twin.sample.xy_A / 10.0
    si = int(np.flatnonzero(twin.sample.species == "Si")[0])
    d = np.hypot(*(xy - xy[si]).T)
    return xy, si, np.flatnonzero((d > 0.1) & (d < 0.16))


def test_twin_scan_device_frames_show_the_twins_columns(twin_swift):
    ctx = twin_swift(seed=0)
    twin, hs = ctx.handles.twin, ctx.scan_hardware_source
    assert hs.hardware_source_id == "atomsmith_twin_scan"
    assert ctx.instrument.instrument_id == "atomsmith_twin_stem_controller"
    # Swift's own route: frame parameters, then one frame (128 px over 2.56 nm, 16 us, 20 pA)
    from nion.utils import Geometry

    fp = hs.get_current_frame_parameters()
    fp.pixel_size, fp.fov_nm, fp.pixel_time_us = Geometry.IntSize(128, 128), 2.56, 16.0
    fp.center_nm = Geometry.FloatPoint(y=0.0, x=0.0)
    hs.set_current_frame_parameters(fp)
    image = np.asarray(hs.record_immediate(fp)[0].data)
    assert image.shape == (128, 128) and ctx.handles.generator.frames == 1
    px, origin = 0.02, np.array([3.0, 3.0]) - 1.28 + 0.01  # frame centred on the field's centre
    table = find_atoms(image, pixel_size_nm=px)
    truth = (twin.sample.xy_A / 10.0 - origin) / px
    inside = np.all((truth > -1) & (truth < 128), axis=1)
    m = match_positions(table.xy, truth[inside], 0.35 * 7.1, shape_px=(128, 128), border_px=4)
    assert m.f1 >= 0.95, m
    assert twin.dose_e_per_A2.sum() > 0 and twin.time_s > 0  # the twin's own bookkeeping


def test_nion_instrument_scan_is_calibrated(twin_swift):
    ctx = twin_swift(seed=1)
    ins = ctx.handles.nion_instrument()
    frame = ins.scan((64, 64), 1.28, 4.0)
    assert frame.pixel_size_nm == pytest.approx(1.28 / 64) and frame.shape_px == (64, 64)
    assert frame.origin_nm == pytest.approx((3.0 - 0.64 + 0.01, 3.0 - 0.64 + 0.01))
    sub = ins.subscan((2.0, 3.5), (50, 50), 1.5, 2.0)
    assert sub.pixel_size_nm == pytest.approx(1.5 / 50) and sub.origin_nm == pytest.approx((1.265, 2.765))
    assert ins.blanked  # the beam is off between actions
    assert ctx.handles.generator.frames == 2  # one render per frame, none cached across frames
    ctx_rect = ins.scan_context_rect_nm()  # the last frame is Swift's scan context
    assert ctx_rect[0] == pytest.approx((1.25, 2.75)) and ctx_rect[1] == pytest.approx((1.5, 1.5))
    assert ins.dose_e_per_A2.sum() == pytest.approx(ctx.handles.twin.dose_e_per_A2.sum(), rel=1e-6)


def test_parking_on_a_carbon_next_to_the_si_makes_it_hop(twin_swift):
    # 200 pA (1.4 hops/s with the probe on a C neighbour) and a beam clock 20x the wall clock
    ctx = twin_swift(seed=3, beam_current_pA=200.0, time_scale=20.0)
    twin = ctx.handles.twin
    ins = ctx.handles.nion_instrument()
    assert ins.time_scale == pytest.approx(0.05) and ins.beam_current_pA == pytest.approx(200.0)
    xy, si, neighbours = _si_and_neighbours(twin)
    c = xy[neighbours[0]]
    ins.subscan(tuple(xy[si]), (64, 64), 1.28, 4.0)
    assert not twin.events
    parks = 0
    while not twin.events and parks < 15:
        ins.park_probe(tuple(c), 1000.0)  # 1 s of beam, 50 ms of wall clock
        parks += 1
    assert twin.events, "no hop after 15 s of beam on the C neighbour"
    ev = twin.events[0]
    assert ev.kind == "swap (parked probe)" and ev.species == "Si"
    assert np.hypot(*(np.asarray(ev.from_nm) - xy[si])) < 1e-6 and np.hypot(*(np.asarray(ev.to_nm) - c)) < 1e-6
    si_now = twin.sample.xy_A[twin.sample.species == "Si"][0] / 10.0
    assert np.hypot(*(si_now - np.asarray(twin.events[-1].to_nm))) < 1e-6  # (a 2nd hop is rare: 0.02/s)
    assert ctx.handles.generator.parked_ms == pytest.approx(1000.0 * parks, rel=0.5)
    assert ins.blanked and ctx.scan_hardware_source.probe_position is not None  # parked there, beam off
    frame = ins.subscan(tuple(xy[si]), (64, 64), 1.28, 4.0)  # the next frame shows the Si where it went
    col, row = np.round(frame.nm_to_pixel(si_now)).astype(int)
    assert frame.image[row - 1:row + 2, col - 1:col + 2].mean() > 1.3 * np.median(frame.image)
    print(f"hop after {parks} park(s) of 1000 ms at 200 pA; events {twin.events}")


def test_parking_by_hand_in_swift_doses_the_twin_unless_blanked(twin_swift):
    from nion.utils import Geometry

    ctx = twin_swift(seed=2, time_scale=10.0)
    twin, hs, gen = ctx.handles.twin, ctx.scan_hardware_source, ctx.handles.generator
    ins = ctx.handles.nion_instrument()
    ins.scan((32, 32), 1.0, 2.0)
    e0 = twin.total_electrons
    hs.probe_position = Geometry.FloatPoint(y=0.5, x=0.5)  # parked by hand, beam blanked
    ins.blank()
    assert ctx.instrument.GetVal("C_Blank") == 1.0 and hs.probe_state == "parked"
    time.sleep(0.2)
    gen.settle()
    assert twin.total_electrons == e0  # blanked: no dose
    ctx.instrument.SetVal("C_Blank", 0.0)  # the user unblanks: the parked beam doses the twin
    time.sleep(0.2)
    ctx.instrument.SetVal("C_Blank", 1.0)
    got = twin.total_electrons - e0
    expect = twin.electrons_per_us * 0.2e6 * 10.0
    assert 0.8 * expect < got < 3.0 * expect  # (the upper bound allows for a loaded machine)
    assert twin.probe_position_nm == pytest.approx((3.0, 3.0))  # the context centre
    e1 = twin.total_electrons
    time.sleep(0.1)
    gen.settle()
    assert twin.total_electrons == e1


def test_out_of_field_park_is_refused_before_any_beam_action(twin_swift):
    ctx = twin_swift(seed=4)
    twin, hs = ctx.handles.twin, ctx.scan_hardware_source
    ins = ctx.handles.nion_instrument()
    ins.subscan((3.0, 3.0), (64, 64), 1.28, 4.0)
    e_twin, e_ins, pos = twin.total_electrons, ins.dose_e_per_A2.sum(), hs.probe_position
    with pytest.raises(OutOfFieldError):
        ins.park_probe((7.0, 3.0), 100.0)  # outside the field
    with pytest.raises(OutOfFieldError):
        ins.park_probe((4.5, 3.0), 100.0)  # inside the field, outside Swift's scan context
    with pytest.raises(OutOfFieldError):
        ins.subscan((5.8, 3.0), (64, 64), 1.28, 4.0)  # the frame would leave the field
    ctx.handles.generator.settle()
    assert twin.total_electrons == e_twin and ins.dose_e_per_A2.sum() == e_ins
    assert hs.probe_position == pos and ins.blanked and not twin.events


def test_errors_leave_the_beam_blanked_and_the_probe_parked(twin_swift):
    ctx = twin_swift(seed=5)
    ins = ctx.handles.nion_instrument()
    ins.scan((32, 32), 1.0, 2.0)
    with pytest.raises(RuntimeError):
        with ins.beam_action():
            ins._unblank()
            raise RuntimeError("injected fault")
    assert ins.blanked and ctx.scan_hardware_source.probe_state == "parked"
    with ins:
        ctx.instrument.SetVal("C_Blank", 0.0)
    assert ins.blanked


def test_move_atom_through_swift_moves_the_twins_si(twin_swift):
    """atomsmith.manipulate.move_atom on NionInstrument over the twin's Swift devices: the Si
    reaches a site 3 hops away; the beam ends blanked."""
    from atomsmith.manipulate import move_atom, plan_path

    ctx = twin_swift(seed=2, beam_current_pA=200.0, time_scale=20.0)
    twin = ctx.handles.twin
    ins = ctx.handles.nion_instrument()
    xy, si, _ = _si_and_neighbours(twin)
    d = np.hypot(*(xy - xy[si]).T)
    target = xy[[c for c in np.flatnonzero((d > 0.1) & (d < 0.7)) if len(plan_path(xy, si, c)) - 1 == 3][0]]
    t0 = time.perf_counter()
    r = move_atom(ins, xy[si], target, dwell_ms=300.0, max_dwell_ms=2000.0)
    elapsed = time.perf_counter() - t0
    si_now = twin.sample.xy_A[twin.sample.species == "Si"][0] / 10.0
    assert r.success and r.n_hops >= 3, r.reason
    assert np.hypot(*(si_now - target)) < 0.05  # the twin's truth
    assert ins.blanked and ctx.scan_hardware_source.probe_state == "parked"
    print(f"move_atom through Swift: {r.n_hops} hops, {len(r.steps)} frames, {elapsed:.1f} s")


def test_spectrum_through_the_twins_eels_camera(twin_swift):
    """Spectra through Swift's camera come from the twin's atoms: the Si L2,3 edge (99 eV) on the
    Si column, not on a C column three sites away; the C K edge (284 eV) on both."""
    ctx = twin_swift(seed=6, with_eels=True, time_scale=10.0)
    twin = ctx.handles.twin
    ins = ctx.handles.nion_instrument()
    assert ins.eels_camera_id == "atomsmith_twin_eels_camera"
    xy, si, _ = _si_and_neighbours(twin)
    d = np.hypot(*(xy - xy[si]).T)
    far_c = xy[np.flatnonzero((d > 0.35) & (d < 0.45))[0]]
    ins.subscan(tuple(xy[si]), (64, 64), 1.28, 4.0)
    e0, t0 = ins.dose_e_per_A2.sum(), twin.total_electrons
    on_si = ins.acquire_spectrum(tuple(xy[si]), 20.0)
    on_c = ins.acquire_spectrum(tuple(far_c), 20.0)
    e = on_si.energy_eV
    assert on_si.counts.ndim == 1 and on_si.counts.size == e.size >= 512  # (the camera may bin)
    assert np.all(np.diff(e) > 0) and e[0] == pytest.approx(80.0) and on_si.counts.sum() > 0

    def jump(counts, edge):  # counts just above the edge over counts just below
        return counts[(e > edge + 3) & (e < edge + 25)].sum() / counts[(e > edge - 15) & (e < edge - 3)].sum()

    si_jump, c_jump = jump(on_si.counts, 99.0), jump(on_c.counts, 99.0)
    print(f"Si L2,3 jump ratio: {si_jump:.2f} on the Si, {c_jump:.2f} on a C; "
          f"C K: {jump(on_si.counts, 284.0):.2f} / {jump(on_c.counts, 284.0):.2f}")
    assert si_jump > 1.5 * c_jump
    assert jump(on_si.counts, 284.0) > 1.0 and jump(on_c.counts, 284.0) > 1.0
    assert ins.dose_e_per_A2.sum() > e0 and twin.total_electrons > t0 and ins.blanked
    with pytest.raises(OutOfFieldError):
        ins.acquire_spectrum((xy[si][0] + 1.5, xy[si][1]), 20.0)  # outside the scan context


def test_use_twin_in_usims_own_devices(tmp_path, monkeypatch):
    """The other route: usim's scan device and STEM controller render the twin (use_twin)."""
    monkeypatch.chdir(tmp_path)
    from nion.instrumentation.test import AcquisitionTestContext
    from nion.swift import Facade
    from nion.swift.test import TestContext
    from nion.usim_device import DeviceConfiguration

    from atomsmith.instrument import SimulatedInstrument
    from nionswift_plugin.atomsmith.instrument_adapter import NionInstrument
    from nionswift_plugin.atomsmith.swift_twin import use_twin

    Facade.initialize()
    setup = TestContext.TestSetup(set_global=True)
    cfg = DeviceConfiguration.AcquisitionContextConfiguration(sample_index=1)
    gen = use_twin(cfg, SimulatedInstrument(seed=3), time_scale=20.0)
    ctx = AcquisitionTestContext.AcquisitionTestContext(cfg, is_app=True)
    try:
        ins = NionInstrument("usim_scan_device", "usim_stem_controller", time_scale=0.05)
        assert ins.stem is cfg.instrument and gen.twin.beam_current_pA == pytest.approx(200.0)  # usim's beam
        xy, si, neighbours = _si_and_neighbours(gen.twin)
        frame = ins.subscan(tuple(xy[si]), (64, 64), 1.28, 4.0)
        col, row = np.round(frame.nm_to_pixel(xy[si])).astype(int)
        assert gen.frames == 1 and frame.image[row, col] > 1.3 * np.median(frame.image)  # the Si column
        for _ in range(15):
            ins.park_probe(tuple(xy[neighbours[0]]), 1000.0)
            if gen.twin.events:
                break
        assert gen.twin.events and gen.twin.events[0].species == "Si"
    finally:
        gen.detach()
        ctx.close()
        del setup
        asyncio.set_event_loop(asyncio.new_event_loop())


def test_move_dopant_menu_on_the_twins_swift_scan(twin_swift, tmp_path, monkeypatch):
    """Atomsmith > Move Dopant with the default instrument: NionInstrument.for_data_item finds the
    twin's scan device from the frame's metadata; positions come from point graphics in Swift's
    calibrated coordinates; every sub-scan lands in the library; the beam ends blanked."""
    from nion.swift.model import PlugInManager

    from atomsmith.manipulate import plan_path
    from nionswift_plugin.atomsmith.extension import AtomsmithExtension
    from nionswift_plugin.atomsmith.swift_twin import record_frame

    monkeypatch.setenv("ATOMSMITH_DATA", str(tmp_path))
    ctx = twin_swift(seed=4, beam_current_pA=200.0, time_scale=20.0)
    twin, hs = ctx.handles.twin, ctx.scan_hardware_source
    ext = AtomsmithExtension(PlugInManager.APIBroker())
    try:
        api, dc = ext.api, ctx.document_controller
        xd = record_frame(ctx, 150, 3.0, 16.0)  # Swift's own frame: 150 px over 3 nm at the field centre
        assert xd.metadata["hardware_source"]["hardware_source_id"] == "atomsmith_twin_scan"
        di = api.library.create_data_item_from_data_and_metadata(xd, "HAADF")
        xy = twin.sample.xy_A / 10.0
        si = int(np.flatnonzero(twin.sample.species == "Si")[0])
        d = np.hypot(*(xy - xy[si]).T)
        target = xy[[c for c in np.flatnonzero((d > 0.1) & (d < 0.7)) if len(plan_path(xy, si, c)) - 1 == 3][1]]
        px, edge = 0.02, np.array([1.5, 1.5])  # the frame's pixel and its outer edge in twin nm
        for p in (xy[si], target):
            col, row = (p - edge) / px - 0.5
            di.add_point_region((row + 0.5) / 150, (col + 0.5) / 150)
        panel = dc.workspace_controller.display_panels[0]
        panel.set_display_panel_display_item(dc.document_model.get_display_item_for_data_item(di._data_item))
        dc.selected_display_panel = panel
        mover = ext.handlers["move_dopant"]
        mover.move_kwargs = {"dwell_ms": 300.0, "max_dwell_ms": 2000.0}
        mover.instrument_kwargs = {"time_scale": 1.0 / 20.0, "field_nm": twin.field_nm}
        mover.menu_item_execute(api.application.document_windows[0])
        mover.thread.join(120)
        dc.periodic()
        assert mover.error is None, mover.error
        assert mover.result.success, mover.result.reason
        si_now = twin.sample.xy_A[twin.sample.species == "Si"][0] / 10.0
        assert np.hypot(*(si_now - target)) < 0.05  # the twin's truth
        assert len(mover.recorded) == len(mover.result.steps)
        assert ctx.instrument.GetVal("C_Blank") == 1.0 and hs.probe_state == "parked"
    finally:
        ext.close()


@pytest.mark.slow
def test_twenty_seeded_manipulations_through_the_twins_swift_devices(twin_swift):
    """The issue's target in Swift: >= 18 of 20 seeded trials move the Si 3 sites, through the
    twin's Swift scan device and STEM controller and NionInstrument (a fresh twin per seed)."""
    from atomsmith.instrument import SimulatedInstrument
    from atomsmith.manipulate import move_atom, plan_path

    ctx = twin_swift(seed=0, beam_current_pA=200.0, time_scale=50.0)
    gen = ctx.handles.generator
    ins = ctx.handles.nion_instrument()
    ok, t0 = 0, time.perf_counter()
    for seed in range(20):
        fresh = SimulatedInstrument(seed=seed, beam_current_pA=200.0)
        with gen.lock:
            gen.twin = fresh
        xy, si, _ = _si_and_neighbours(fresh)
        d = np.hypot(*(xy - xy[si]).T)
        cand = [c for c in np.flatnonzero((d > 0.1) & (d < 0.7)) if len(plan_path(xy, si, c)) - 1 == 3]
        target = xy[np.random.default_rng(seed).choice(cand)]
        r = move_atom(ins, xy[si], target, dwell_ms=300.0, max_dwell_ms=2000.0)
        si_now = fresh.sample.xy_A[fresh.sample.species == "Si"][0] / 10.0
        ok += bool(r.success and np.hypot(*(si_now - target)) < 0.05)
        assert ins.blanked
    print(f"{ok} of 20 trials reached the target through the twin's Swift devices "
          f"({time.perf_counter() - t0:.0f} s)")
    assert ok >= 18, ok


def test_start_digital_twin_menu_beside_usim(tmp_path, monkeypatch):
    """Atomsmith > Start Digital Twin in a Swift that runs usim: the twin's scan device appears
    beside usim's (usim stays the default STEM controller) and scans atoms; closing the
    extension unregisters it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATOMSMITH_DATA", str(tmp_path))
    from nion.instrumentation import HardwareSource
    from nion.instrumentation.test import AcquisitionTestContext
    from nion.swift import Facade
    from nion.swift.model import PlugInManager
    from nion.swift.test import TestContext
    from nion.usim_device import DeviceConfiguration
    from nion.utils import Registry

    from nionswift_plugin.atomsmith.extension import AtomsmithExtension

    Facade.initialize()
    setup = TestContext.TestSetup(set_global=True)
    cfg = DeviceConfiguration.AcquisitionContextConfiguration(sample_index=1)
    ctx = AcquisitionTestContext.AcquisitionTestContext(cfg, is_app=True)
    ext = AtomsmithExtension(PlugInManager.APIBroker())
    manager = HardwareSource.HardwareSourceManager()
    try:
        item = ext.handlers["start_digital_twin"]
        item.menu_item_execute(ext.api.application.document_windows[0])
        assert item.handles is not None, "the menu item failed (see the log)"
        hs = manager.get_hardware_source_for_hardware_source_id("atomsmith_twin_scan")
        assert hs is not None and manager.get_hardware_source_for_hardware_source_id("atomsmith_twin_eels_camera")
        assert Registry.get_component("stem_controller") is cfg.instrument  # usim stays the default
        ins = item.handles.nion_instrument()
        frame = ins.scan((96, 96), 1.92, 8.0)
        table = find_atoms(frame.image, pixel_size_nm=frame.pixel_size_nm)
        assert 40 < len(table.xy) < 200 and ins.blanked  # graphene: ~100 columns in 1.92 nm square
        item.menu_item_execute(ext.api.application.document_windows[0])  # a second start: refused, kept
        assert manager.get_hardware_source_for_hardware_source_id("atomsmith_twin_scan") is hs
    finally:
        ext.close()
        ctx.close()
        del setup
        asyncio.set_event_loop(asyncio.new_event_loop())
    assert manager.get_hardware_source_for_hardware_source_id("atomsmith_twin_scan") is None


def test_diffraction_through_the_twins_ronchigram_camera(twin_swift):
    """acquire_diffraction through Swift's camera gives the twin's pattern at the probe (the
    same physics as the bare twin's, up to noise) with the beam's electrons; blanked after."""
    ctx = twin_swift(seed=7, with_ronchigram=True, time_scale=10.0)
    twin = ctx.handles.twin
    ins = ctx.handles.nion_instrument()
    assert ins.ronchigram_camera_id == "atomsmith_twin_ronchigram_camera"
    xy, si, _ = _si_and_neighbours(twin)
    ins.subscan(tuple(xy[si]), (64, 64), 1.28, 4.0)
    e0 = twin.total_electrons
    pattern = ins.acquire_diffraction(tuple(xy[si]), 20.0)
    assert pattern.ndim == 2 and pattern.shape[0] == pattern.shape[1] >= 64 and ins.blanked
    beam_e = twin.total_electrons - e0  # what the twin's beam clock delivered while the camera ran
    exposure_e = twin.electrons_per_us * 20e3 * 10.0  # 20 ms of exposure on a beam clock 10x the wall clock
    # the camera integrates what arrives during its frame: the beam goes on a few ms after the
    # frame began (the adapter waits for a frame to finish in the dark, then unblanks), so the
    # pattern holds most of the exposure's electrons, never more than the beam delivered
    assert 0.6 * exposure_e <= pattern.sum() <= 1.02 * exposure_e
    assert pattern.sum() <= 1.02 * beam_e
    k = pattern.shape[0] // 64
    small = pattern.reshape(64, k, 64, k).sum(axis=(1, 3))
    reference = twin.diffraction_at(tuple(xy[si]), float(small.sum()))
    r = np.corrcoef(small.ravel(), reference.ravel())[0, 1]
    print(f"pattern {pattern.shape}, {pattern.sum():.3g} counts, {exposure_e:.3g} exposure electrons, "
          f"{beam_e:.3g} beam electrons; r = {r:.3f}")
    assert r > 0.95
    with pytest.raises(RuntimeError):
        ctx.handles.nion_instrument(ronchigram_camera_id=None).acquire_diffraction(tuple(xy[si]), 20.0)


def test_live_atom_finding_follows_the_twins_live_scan(twin_swift, tmp_path, monkeypatch):
    """Live Atom Finding on the data item of a continuous scan of the twin's scan device: the
    result follows the scan frame by frame (partial frames skipped, each completed frame found
    once), with the twin's column count."""
    from nion.swift.model import PlugInManager
    from nion.utils import Geometry

    from nionswift_plugin.atomsmith import live
    from nionswift_plugin.atomsmith.extension import AtomsmithExtension

    monkeypatch.setenv("ATOMSMITH_DATA", str(tmp_path))
    ctx = twin_swift(seed=8, beam_current_pA=200.0)
    hs, dc, twin = ctx.scan_hardware_source, ctx.document_controller, ctx.handles.twin
    ext = AtomsmithExtension(PlugInManager.APIBroker())
    try:
        fp = hs.get_current_frame_parameters()  # 192^2 over 3.84 nm at 8 us: 0.3 s frames, partial updates
        fp.pixel_size, fp.fov_nm, fp.pixel_time_us = Geometry.IntSize(192, 192), 3.84, 8.0
        fp.center_nm = Geometry.FloatPoint(y=0.0, x=0.0)
        hs.set_current_frame_parameters(fp)
        ctx.instrument.SetVal("C_Blank", 0.0)
        hs.start_playing()
        hs.get_next_xdatas_to_finish(10.0)
        dc.periodic()
        items = [d for d in dc.document_model.data_items if d.xdata is not None and d.xdata.data_shape == (192, 192)]
        assert items, "the scan made no data item"
        comp = live.attach(ext.api, ext.api._new_api_object(items[0]))
        # results until six frames have one (however long the analyses take on this machine;
        # the deadline only stops a scan that never delivers)
        deadline = time.perf_counter() + 120.0
        seen = set()
        while len({f for f, _ in seen}) < 6 and time.perf_counter() < deadline:
            dc.periodic()
            out = comp.get_result("overlay")
            if out is not None and out.xdata is not None:
                md = out.xdata.metadata["atomsmith"]
                seen.add((md["frame_index"], md["n_columns"]))
            time.sleep(0.01)
        hs.abort_playing(sync_timeout=5.0)
        ctx.instrument.SetVal("C_Blank", 1.0)
        ls = live.live_source(comp)
        assert ls is not None
        frames = sorted(f for f, _ in seen if f is not None)
        print(f"live results for frames {frames}; analysed {ls.done}, dropped {ls.dropped}")
        assert len(frames) >= 5 and frames == sorted(set(frames))  # one result per frame
        analysed = [fid[4] for fid in ls.analysed]  # (device, source, channel, scan id, frame index, ...)
        assert len(analysed) == len(set(ls.analysed)) and analysed == sorted(analysed)  # each frame once
        truth = twin.sample.xy_A / 10.0
        inside = np.all(np.abs(truth - 3.0) < 1.92, axis=1).sum()  # the twin's columns in the frame
        n = np.median([c for _, c in seen])
        print(f"{n:.0f} columns found per frame, {inside} in the frame")
        assert 0.95 * inside <= n <= 1.05 * inside
    finally:
        ext.close()


def test_stop_blanks_a_long_park_at_once(twin_swift):
    """Stop during a 5 s park through NionInstrument over the twin's Swift devices: the beam is
    blanked by the Stop itself (from another thread) and the park returns within a 20 ms piece."""
    import threading

    ctx = twin_swift(seed=3)
    ins = ctx.handles.nion_instrument()
    ins.scan((32, 32), 1.0, 2.0)  # the scan context the park must lie in
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("ms", ins.park_probe((3.0, 3.0), 5000.0)))
    worker.start()
    deadline = time.perf_counter() + 5.0
    while ins.blanked and time.perf_counter() < deadline:
        time.sleep(0.002)
    assert not ins.blanked  # parked, beam on
    time.sleep(0.2)
    t0 = time.perf_counter()
    ins.abort_event.set()
    ins.blank()
    to_blank = time.perf_counter() - t0
    worker.join(5.0)
    to_return = time.perf_counter() - t0
    print(f"Stop -> beam blanked {to_blank * 1e3:.1f} ms; park returned after {to_return * 1e3:.1f} ms; "
          f"beam on {out['ms']:.0f} ms of 5000")
    assert ins.blanked and not worker.is_alive()
    assert to_blank < 0.05 and to_return < 0.25  # (2-core CI: generous on the thread's return)
    assert 150.0 < out["ms"] < 1000.0  # the dose counts what was delivered
    assert ins.beam_on_s == pytest.approx(out["ms"] * 1e-3 + 32 * 32 * 2e-6, abs=0.05)


def test_spectrum_beam_on_time_is_close_to_the_exposure(twin_swift):
    """The camera is armed with the beam off; the beam goes on when a frame finishes in the dark
    and off when the next is read: on for about one exposure (goal <= 1.2x), and the spectrum
    says how long the beam lit the frame read (``beam_ms``, checked against the twin camera's own
    record) and holds the electrons of that time. Three spectra per exposure, medians: one stall
    of a loaded machine (a few ms) is 15 % of a 20 ms frame."""
    ctx = twin_swift(seed=6, with_eels=True)
    ins = ctx.handles.nion_instrument()
    frames = ctx.handles.generator.frame_lit_log  # the twin camera's frames: (start s, end s, lit ms)
    xy = (3.0, 3.0)
    ins.subscan(xy, (32, 32), 1.0, 2.0)
    ratios, per_ms, errors_ms = [], [], []
    for exposure_ms in (20.0, 100.0):
        r, c, e = [], [], []
        for _ in range(3):
            on0, t0 = ins.beam_on_s, time.perf_counter()
            spectrum = ins.acquire_spectrum(xy, exposure_ms)
            r.append((ins.beam_on_s - on0) / (exposure_ms * 1e-3))
            # the frame began a few ms before the unblank: the spectrum says how much of it was lit
            assert spectrum.beam_ms is not None and 0.6 * exposure_ms <= spectrum.beam_ms <= exposure_ms
            c.append(spectrum.counts.sum() / spectrum.beam_ms)
            lit = [f[2] for f in list(frames) if f[0] >= t0 and f[2] > 0]  # the first lit frame is the one read
            e.append(spectrum.beam_ms - lit[0])
        ratios.append(float(np.median(r)))
        per_ms.append(float(np.median(c)))
        errors_ms.append(float(np.median(np.abs(e))))
    print("beam on / exposure on the twin's Swift camera:", [f"{r:.2f}" for r in ratios],
          "counts per lit ms:", [f"{c:.3g}" for c in per_ms], "beam_ms error, ms:", [f"{e:.2f}" for e in errors_ms])
    assert all(e <= 0.1 * x + 1.0 for e, x in zip(errors_ms, (20.0, 100.0), strict=True))
    assert per_ms[0] == pytest.approx(per_ms[1], rel=0.15)  # the counts follow the lit time
    # (benchmarks/beam_safety.py measures it: 1.05-1.15; generous here for a loaded CI machine;
    # before the beam was timed to one exposure: 1.4-2.5)
    assert ins.blanked and all(0.9 < r < 1.5 for r in ratios)
