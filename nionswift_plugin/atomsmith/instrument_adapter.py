"""``NionInstrument``: atomsmith's :class:`~atomsmith.instrument.Instrument` over Swift's scan device
and STEM controller, so scripts written for the twin run on usim and on a Nion microscope.

Positions are nm in a square field of side ``field_nm`` whose centre is Swift's scan centre
(0, 0): instrument (x, y) = Swift's scan coordinate (x, y) + field / 2, so every position is
non-negative, as on the twin. Sub-scans set the scan device's frame parameters (size, field of
view, centre, pixel time) and grab the next frame; parking sets the scan device's probe position
(fractional (y, x) within the last frame, its scan context) and unblanks (``C_Blank`` = 0) for
the dwell; :meth:`blank` sets ``C_Blank`` = 1 and sends the probe to its idle position. Every
position is checked against the field (:class:`~atomsmith.instrument.OutOfFieldError`) before
the beam moves. Dose is counted from the beam current (the ``BeamCurrent`` control, in A, when
the instrument has one) and the dwell times.

Example for Swift's Python console (a Nion microscope: ``scan_id="superscan"``)::

    from nionswift_plugin.atomsmith.instrument_adapter import NionInstrument
    from atomsmith.manipulate import move_atom
    ins = NionInstrument.from_registry(scan_id="usim_scan_device", field_nm=(6.0, 6.0))
    frame = ins.subscan((3.0, 3.0), (128, 128), 2.0, 16.0)     # nm, px, nm, us
    result = move_atom(ins, dopant_xy_nm, target_xy_nm)          # beam blanked at the end
"""

from __future__ import annotations

import time
import typing

import numpy as np

from atomsmith.instrument.protocol import OutOfFieldError, ScanFrame

_E_CHARGE = 1.602176634e-19


class NionInstrument:
    """The Instrument protocol over a Swift scan hardware source and STEM controller (native objects)."""

    def __init__(self, scan_hardware_source: typing.Any, stem_controller: typing.Any, *,
                 field_nm: tuple[float, float] = (6.0, 6.0), beam_current_pA: float | None = None,
                 dose_cell_nm: float = 0.1, time_scale: float = 1.0, grab_timeout_s: float = 60.0,
                 eels_camera_id: str = "usim_eels_camera") -> None:
        self.scan_device = scan_hardware_source
        self.stem = stem_controller
        self.eels_camera_id = eels_camera_id
        self.field_nm = (float(field_nm[0]), float(field_nm[1]))
        if beam_current_pA is None:
            ok, amps = stem_controller.TryGetVal("BeamCurrent") if hasattr(stem_controller, "TryGetVal") else (False, None)
            beam_current_pA = float(amps) * 1e12 if ok and amps else 20.0
        self.beam_current_pA = float(beam_current_pA)
        self.time_scale = float(time_scale)  # < 1 only for simulations: dwell times pass faster
        self.grab_timeout_s = grab_timeout_s
        self.dose_cell_nm = float(dose_cell_nm)
        ny = max(1, int(np.ceil(self.field_nm[1] / dose_cell_nm)))
        nx = max(1, int(np.ceil(self.field_nm[0] / dose_cell_nm)))
        self._dose = np.zeros((ny, nx))  # electrons per cell
        self._last: tuple[np.ndarray, float, tuple[int, int]] | None = None  # origin edge, px, shape
        self._t0 = time.perf_counter()

    @classmethod
    def from_registry(cls, *, scan_id: str = "usim_scan_device", **kwargs: typing.Any) -> NionInstrument:
        """The instrument around Swift's scan device ``scan_id`` and the registered STEM controller."""
        from nion.instrumentation import HardwareSource
        from nion.utils import Registry

        hs = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(scan_id)
        if hs is None:
            raise RuntimeError(f"no scan device '{scan_id}' in Swift (is the instrument connected?)")
        stem = Registry.get_component("stem_controller")
        if stem is None:
            raise RuntimeError("no STEM controller registered in Swift")
        return cls(hs, stem, **kwargs)

    @classmethod
    def for_data_item(cls, api: typing.Any, data_item: typing.Any, **kwargs: typing.Any) -> NionInstrument:
        """The instrument that acquired ``data_item`` (a Facade DataItem from a scan device)."""
        md = data_item.metadata or {}
        scan_id = md.get("hardware_source", {}).get("hardware_source_id") or "usim_scan_device"
        return cls.from_registry(scan_id=scan_id, **kwargs)

    # ----------------------------------------------------------------- checks and bookkeeping
    @property
    def electrons_per_us(self) -> float:
        return self.beam_current_pA * 1e-12 / _E_CHARGE * 1e-6

    @property
    def dose_e_per_A2(self) -> np.ndarray:
        """(ny, nx) dose map over the field, e/A^2 (cells of ``dose_cell_nm``)."""
        return self._dose / (self.dose_cell_nm * 10.0) ** 2

    def _check(self, xy_nm: typing.Any, name: str) -> np.ndarray:
        p = np.asarray(xy_nm, float).reshape(-1)
        if p.shape != (2,) or not np.all(np.isfinite(p)):
            raise ValueError(f"{name}={xy_nm!r} must be two finite numbers (x, y) in nm")
        w, h = self.field_nm
        if not (0.0 <= p[0] <= w and 0.0 <= p[1] <= h):
            raise OutOfFieldError(f"{name}=({p[0]:.3f}, {p[1]:.3f}) nm is outside the field x in [0, {w:g}], "
                                  f"y in [0, {h:g}] nm")
        return p

    def _deposit(self, xy_nm: np.ndarray, electrons: float) -> None:
        ny, nx = self._dose.shape
        ix = int(np.clip(xy_nm[0] / self.dose_cell_nm, 0, nx - 1))
        iy = int(np.clip(xy_nm[1] / self.dose_cell_nm, 0, ny - 1))
        self._dose[iy, ix] += electrons

    def _swift_xy(self, p: np.ndarray) -> np.ndarray:
        return p - np.asarray(self.field_nm) / 2.0

    def calibrated_to_instrument_nm(self, xy_nm: typing.Any) -> np.ndarray:
        """Swift's calibrated scan coordinates (x, y) nm (0 at the scan centre) -> this field's nm."""
        return np.asarray(xy_nm, float) + np.asarray(self.field_nm) / 2.0

    def instrument_to_calibrated_nm(self, xy_nm: typing.Any) -> np.ndarray:
        """This field's (x, y) nm -> Swift's calibrated scan coordinates."""
        return self._swift_xy(np.asarray(xy_nm, float))

    # ----------------------------------------------------------------- the protocol
    def scan(self, shape_px: tuple[int, int], fov_nm: float, dwell_us: float) -> ScanFrame:
        return self.subscan((self.field_nm[0] / 2, self.field_nm[1] / 2), shape_px, fov_nm, dwell_us)

    def subscan(self, center_nm: typing.Any, shape_px: tuple[int, int], fov_nm: float, dwell_us: float) -> ScanFrame:
        from nion.utils import Geometry

        c = self._check(center_nm, "center_nm")
        h, w = int(shape_px[0]), int(shape_px[1])
        if h < 2 or w < 2 or not fov_nm > 0 or not dwell_us > 0:
            raise ValueError(f"shape_px={shape_px}, fov_nm={fov_nm}, dwell_us={dwell_us}: need >= 2 px, > 0")
        px = float(fov_nm) / max(h, w)
        half = np.array([w, h]) * px / 2.0
        for corner in (c - half, c + half):
            self._check(corner, "scan corner")
        fp = self.scan_device.get_current_frame_parameters()
        fp.size = Geometry.IntSize(height=h, width=w)
        fp.fov_nm = float(fov_nm)
        sc = self._swift_xy(c)
        fp.center_nm = Geometry.FloatPoint(y=float(sc[1]), x=float(sc[0]))
        fp.pixel_time_us = float(dwell_us)
        fp.rotation_rad = 0.0
        start = time.perf_counter() - self._t0
        self.stem.SetValWait("C_Blank", 0.0, 200)
        self.scan_device.set_current_frame_parameters(fp)
        self.scan_device.start_playing()
        try:
            xd = self.scan_device.grab_next_to_start(timeout=self.grab_timeout_s)[0]
        finally:
            self.scan_device.stop_playing(sync_timeout=10)
        if xd is None:
            raise RuntimeError("the scan device returned no frame")
        electrons = self.electrons_per_us * dwell_us * h * w
        self._deposit(c, electrons)
        origin_edge = c - half
        self._last = (origin_edge, px, (h, w))
        return ScanFrame(image=np.asarray(xd.data, np.float32), pixel_size_nm=px,
                         origin_nm=tuple(origin_edge + px / 2.0), time_s=start, dwell_us=float(dwell_us),
                         metadata={"beam_current_pA": self.beam_current_pA, "scan_device": getattr(
                             self.scan_device, "hardware_source_id", None)})

    def park_probe(self, xy_nm: typing.Any, dwell_ms: float) -> None:
        from nion.utils import Geometry

        p = self._check(xy_nm, "xy_nm")
        if not dwell_ms >= 0:
            raise ValueError(f"dwell_ms={dwell_ms} must be >= 0")
        if self._last is None:
            raise RuntimeError("scan first: the probe is placed within the last scanned frame")
        origin_edge, px, (h, w) = self._last
        frac = (p - origin_edge) / (np.array([w, h]) * px)
        if not np.all((frac >= 0) & (frac <= 1)):
            raise OutOfFieldError(f"xy_nm=({p[0]:.3f}, {p[1]:.3f}) nm is outside the last scanned frame")
        self.scan_device.probe_position = Geometry.FloatPoint(y=float(frac[1]), x=float(frac[0]))
        self.stem.SetValWait("C_Blank", 0.0, 200)
        time.sleep(dwell_ms * 1e-3 * self.time_scale)
        self._deposit(p, self.electrons_per_us * dwell_ms * 1e3)
        hook = getattr(getattr(self.stem, "scan_data_generator", None), "probe_parked", None)
        if hook is not None:  # the twin in Swift: it takes the dose and may hop
            hook(tuple(self._swift_xy(p)), dwell_ms)

    def blank(self) -> None:
        """Beam off the sample (``C_Blank`` = 1) and the probe to its idle position."""
        try:
            self.stem.SetValWait("C_Blank", 1.0, 200)
        finally:
            try:
                self.scan_device.probe_position = None
            except Exception:  # noqa: BLE001  (blanking is what matters)
                pass

    @property
    def blanked(self) -> bool:
        ok, v = self.stem.TryGetVal("C_Blank")
        return bool(ok and v and v > 0.5)

    def acquire_spectrum(self, xy_nm: typing.Any, exposure_ms: float) -> typing.Any:
        """Park at ``xy_nm`` and read one EEL spectrum from the camera ``eels_camera_id`` (summed
        over the camera's non-dispersive axis), energy axis from its calibration."""
        from nion.instrumentation import HardwareSource

        from atomsmith.instrument.protocol import Spectrum

        if not exposure_ms > 0:
            raise ValueError(f"exposure_ms={exposure_ms} must be > 0")
        cam = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(self.eels_camera_id)
        if cam is None:
            raise RuntimeError(f"no EELS camera '{self.eels_camera_id}' in Swift")
        start = time.perf_counter() - self._t0
        self.park_probe(xy_nm, 0.0)  # checks the position; the exposure is the dwell
        fp = cam.get_current_frame_parameters()
        fp.exposure_ms = float(exposure_ms)
        fp.processing = "sum_project"
        cam.set_current_frame_parameters(fp)
        cam.start_playing(sync_timeout=5.0)
        try:
            xd = cam.grab_next_to_finish(timeout=max(10.0, 5 * exposure_ms * 1e-3))[0]
        finally:
            cam.stop_playing(sync_timeout=5.0)
        p = np.asarray(xy_nm, float)
        self._deposit(p, self.electrons_per_us * exposure_ms * 1e3)
        data = np.asarray(xd.data, float).reshape(-1)
        cal = xd.dimensional_calibrations[-1]
        energy = cal.offset + cal.scale * np.arange(data.size)
        return Spectrum(energy_eV=energy, counts=data, xy_nm=(float(p[0]), float(p[1])),
                        exposure_ms=float(exposure_ms), time_s=start)

    def acquire_diffraction(self, xy_nm: typing.Any, exposure_ms: float) -> np.ndarray:
        raise NotImplementedError("diffraction through Swift's cameras is not wired yet")
