"""``NionInstrument``: atomsmith's :class:`~atomsmith.instrument.Instrument` over Swift's scan
hardware source, STEM controller and (optional) EELS camera, so code written for the twin runs on
the twin in Swift (:mod:`.swift_twin`), on usim and on a Nion microscope.

Devices are given by id (or as native objects): the defaults are the twin's
``"atomsmith_twin_scan"`` / ``"atomsmith_twin_stem_controller"``; usim's are
``"usim_scan_device"`` / ``"usim_stem_controller"`` / ``"usim_eels_camera"``; a Nion microscope's
scan is ``"superscan"`` (its STEM controller is then taken from the scan hardware source).

Positions are nm in a field of ``field_nm`` whose centre is Swift's scan centre (0, 0):
instrument (x, y) = Swift's scan coordinate (x, y) + field / 2, so every position is
non-negative, as on the twin.

* :meth:`subscan` sets the frame parameters (size, ``fov_nm``, ``center_nm``, ``pixel_time_us``,
  no rotation), unblanks (``C_Blank`` = 0) and takes exactly one frame (``record_immediate``;
  ``grab_next_to_start`` on scan sources without it), then blanks again. The frame becomes
  Swift's scan context. The :class:`~atomsmith.instrument.ScanFrame` is calibrated from the
  parameters: ``pixel_size_nm`` = fov / rows, ``origin_nm`` = pixel (0, 0)'s centre.
* :meth:`park_probe` checks the position against the field and the current scan context (the
  last full frame) and raises :class:`~atomsmith.instrument.OutOfFieldError` before any beam
  action; then sets the probe position (fractional (y, x) of the scan context), unblanks, waits
  the dwell (times ``time_scale``) and blanks: the probe stays parked there, beam off.
* :meth:`blank` sets ``C_Blank`` = 1 and stops any running scan (probe parked).
* Every beam action runs in :meth:`beam_action`: any error leaves the probe parked and the beam
  blanked; ``with NionInstrument(...) as ins:`` blanks on exit as well.
* :attr:`dose_e_per_A2` counts the exposures it made: beam current (Swift's ``BeamCurrent``
  control, A, when present, else the ``beam_current_pA`` given) times dwell, spread over each
  scanned frame or put at the parked position.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing

import numpy as np

from atomsmith.instrument.protocol import OutOfFieldError, ScanFrame, Spectrum
from atomsmith.instrument.safety import PARK_CHUNK_MS

_E_CHARGE = 1.602176634e-19
TWIN_SCAN_ID = "atomsmith_twin_scan"
TWIN_STEM_ID = "atomsmith_twin_stem_controller"


def _hardware_source(hs: typing.Any) -> typing.Any:
    if not isinstance(hs, str):
        return getattr(hs, "_hardware_source", hs)  # a Facade HardwareSource -> the native one
    from nion.instrumentation import HardwareSource

    found = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(hs)
    if found is None:
        raise RuntimeError(f"no hardware source '{hs}' in Swift (is the instrument connected?)")
    return found


def _stem_controller(stem: typing.Any, scan: typing.Any) -> typing.Any:
    if stem is not None and not isinstance(stem, str):
        return getattr(stem, "_instrument", stem)  # a Facade Instrument -> the native one
    if isinstance(stem, str):
        from nion.instrumentation import HardwareSource

        found = HardwareSource.HardwareSourceManager().get_instrument_by_id(stem)
        own = getattr(scan, "stem_controller", None)
        if found is None and own is not None and getattr(own, "instrument_id", None) == stem:
            found = own
        if found is not None:
            return found
    own = getattr(scan, "stem_controller", None)  # the STEM controller the scan device was built with
    if own is not None:
        return own
    from nion.utils import Registry

    found = Registry.get_component("stem_controller")
    if found is None:
        raise RuntimeError(f"no STEM controller '{stem}' in Swift")
    return found


class NionInstrument:
    """The Instrument protocol over Swift's devices.

    Args:
        scan: scan hardware source id (or the native/Facade object); default the twin's.
        stem_controller: STEM controller id (or object); default the twin's; a missing id falls
            back to the scan source's own STEM controller.
        eels_camera_id: EELS camera hardware source id for :meth:`acquire_spectrum` (None: none).
        ronchigram_camera_id: diffraction camera id for :meth:`acquire_diffraction` (None: none;
            usim's is ``"usim_ronchigram_camera"``).
        field_nm: (width, height) of the field positions may lie in, centred on Swift's (0, 0).
        beam_current_pA: beam current when the STEM controller has no ``BeamCurrent`` control.
        dose_cell_nm: cell of :attr:`dose_e_per_A2`.
        time_scale: wall-clock seconds waited per second of dwell (< 1 only on a simulator whose
            beam clock runs faster, e.g. the twin started with ``time_scale`` = 1 / this).
        grab_timeout_s: limit for one frame.
        frame_aligned: camera exposures (spectra, diffraction) with the beam on for one
            exposure: the beam goes on when a frame finishes in the dark and off one exposure
            later (the frame read misses the few ms before the unblank). False for a camera that
            renders a frame from the beam state at its start (usim's own simulators: such a frame
            would be dark): the beam is then on for the rest of the running frame and the whole
            next one (1-2 exposures). None (default): False for usim's cameras (ids starting
            ``usim_``), True for all others (a camera integrates what arrives in its frame).
            Exposures under ``MIN_ALIGNED_EXPOSURE_MS`` (20 ms) are never aligned: on a loaded
            machine the delay before the unblank can be a whole short frame.
    """

    def __init__(self, scan: typing.Any = TWIN_SCAN_ID, stem_controller: typing.Any = TWIN_STEM_ID, *,
                 eels_camera_id: str | None = None, ronchigram_camera_id: str | None = None,
                 field_nm: tuple[float, float] = (6.0, 6.0),
                 beam_current_pA: float = 20.0, dose_cell_nm: float = 0.1, time_scale: float = 1.0,
                 grab_timeout_s: float = 60.0, frame_aligned: bool | None = None) -> None:
        self.frame_aligned = frame_aligned
        self.scan_device = _hardware_source(scan)
        self.stem = _stem_controller(stem_controller, self.scan_device)
        self.eels_camera_id = eels_camera_id
        self.ronchigram_camera_id = ronchigram_camera_id
        self.field_nm = (float(field_nm[0]), float(field_nm[1]))
        if not beam_current_pA > 0:
            raise ValueError(f"beam_current_pA={beam_current_pA} must be > 0")
        self._beam_current_pA = float(beam_current_pA)
        self.time_scale = float(time_scale)
        self.grab_timeout_s = float(grab_timeout_s)
        self.dose_cell_nm = float(dose_cell_nm)
        ny = max(1, int(np.ceil(self.field_nm[1] / dose_cell_nm)))
        nx = max(1, int(np.ceil(self.field_nm[0] / dose_cell_nm)))
        self._dose = np.zeros((ny, nx))  # electrons per cell
        self.total_electrons = 0.0
        self._t0 = time.perf_counter()
        #: set by any thread (the UI's Stop) to end a park between its 20 ms pieces
        self.abort_event = threading.Event()
        self._beam_lock = threading.RLock()
        self._on_since: float | None = None  # perf_counter when this instrument unblanked
        self._beam_on_s = 0.0

    @classmethod
    def from_registry(cls, *, scan_id: str = TWIN_SCAN_ID, stem_id: str | None = None,
                      **kwargs: typing.Any) -> NionInstrument:
        """The instrument around Swift's scan device ``scan_id`` and its STEM controller."""
        return cls(scan_id, stem_id, **kwargs)

    @classmethod
    def for_data_item(cls, api: typing.Any, data_item: typing.Any, **kwargs: typing.Any) -> NionInstrument:
        """The instrument that acquired ``data_item`` (a Facade DataItem from a scan device).

        The scan device comes from the item's hardware-source metadata and the field from its
        calibration (:func:`field_from_frame`: large enough for the frame wherever it lies
        around the scan centre). Refused with a message naming what is missing: no
        hardware-source metadata (an image from a file, a processed item), a calibration not in
        length units, or a scan rotation (the beam actions work in unrotated scans).
        """
        md = data_item.metadata or {}
        title = getattr(data_item, "title", "the selected image")
        scan_id = (md.get("hardware_source") or {}).get("hardware_source_id")
        if not scan_id:
            raise ValueError(f"'{title}' has no hardware-source metadata (metadata['hardware_source']"
                             "['hardware_source_id']): select a frame acquired from the scan device, not an "
                             "image from a file or a processed item")
        rotation = float((md.get("scan") or {}).get("rotation", 0.0) or 0.0)
        if abs(rotation) > 1e-6:
            raise ValueError(f"'{title}' was scanned with a rotation of {np.rad2deg(rotation):.1f} degrees; the beam "
                             "actions work in unrotated scans: set the scan rotation to 0 and acquire again")
        kwargs.setdefault("field_nm", field_from_frame(data_item.xdata))
        return cls(scan_id, None, **kwargs)

    # ----------------------------------------------------------------- state and bookkeeping
    @property
    def beam_current_pA(self) -> float:
        """Swift's ``BeamCurrent`` control (A -> pA) when present, else the constructor's value."""
        try:
            ok, amps = self.stem.TryGetVal("BeamCurrent")
        except Exception:  # noqa: BLE001  (no such control)
            ok, amps = False, None
        return float(amps) * 1e12 if ok and amps and amps > 0 else self._beam_current_pA

    @property
    def electrons_per_us(self) -> float:
        return self.beam_current_pA * 1e-12 / _E_CHARGE * 1e-6

    @property
    def dose_e_per_A2(self) -> np.ndarray:
        """(ny, nx) dose this instrument delivered over the field, e/A^2 (cells of ``dose_cell_nm``)."""
        return self._dose / (self.dose_cell_nm * 10.0) ** 2

    @property
    def blanked(self) -> bool:
        ok, v = self.stem.TryGetVal("C_Blank")
        return bool(ok and v is not None and v > 0.5)

    @property
    def beam_blanked(self) -> bool:
        """Whether Swift's STEM controller reports the beam blanked (``C_Blank``)."""
        return self.blanked

    @property
    def beam_on_s(self) -> float:
        """Cumulative time this instrument had the beam unblanked, in instrument seconds (wall
        time / ``time_scale``): from each unblank to the blank that follows."""
        with self._beam_lock:
            on = self._beam_on_s
            if self._on_since is not None:
                on += time.perf_counter() - self._on_since
        return on / self.time_scale if self.time_scale > 0 else on

    def _deposit_point(self, xy_nm: np.ndarray, electrons: float) -> None:
        ny, nx = self._dose.shape
        ix = int(np.clip(xy_nm[0] / self.dose_cell_nm, 0, nx - 1))
        iy = int(np.clip(xy_nm[1] / self.dose_cell_nm, 0, ny - 1))
        self._dose[iy, ix] += electrons
        self.total_electrons += electrons

    def _deposit_frame(self, origin_nm: np.ndarray, px_nm: float, shape: tuple[int, int], e_per_px: float) -> None:
        h, w = shape
        xs = origin_nm[0] + np.arange(w) * px_nm
        ys = origin_nm[1] + np.arange(h) * px_nm
        ix = np.floor(xs / self.dose_cell_nm).astype(int)
        iy = np.floor(ys / self.dose_cell_nm).astype(int)
        ny, nx = self._dose.shape
        cx = np.bincount(ix[(ix >= 0) & (ix < nx)], minlength=nx)[:nx]
        cy = np.bincount(iy[(iy >= 0) & (iy < ny)], minlength=ny)[:ny]
        add = np.outer(cy, cx) * e_per_px
        self._dose += add
        self.total_electrons += float(add.sum())

    def _check(self, xy_nm: typing.Any, name: str) -> np.ndarray:
        p = np.asarray(xy_nm, float).reshape(-1)
        if p.shape != (2,) or not np.all(np.isfinite(p)):
            raise ValueError(f"{name}={xy_nm!r} must be two finite numbers (x, y) in nm")
        w, h = self.field_nm
        if not (0.0 <= p[0] <= w and 0.0 <= p[1] <= h):
            raise OutOfFieldError(f"{name}=({p[0]:.3f}, {p[1]:.3f}) nm is outside the field x in [0, {w:g}], "
                                  f"y in [0, {h:g}] nm")
        return p

    def calibrated_to_instrument_nm(self, xy_nm: typing.Any) -> np.ndarray:
        """Swift's calibrated scan coordinates (x, y) nm (0 at the scan centre) -> this field's nm."""
        return np.asarray(xy_nm, float) + np.asarray(self.field_nm) / 2.0

    def instrument_to_calibrated_nm(self, xy_nm: typing.Any) -> np.ndarray:
        """This field's (x, y) nm -> Swift's calibrated scan coordinates."""
        return np.asarray(xy_nm, float) - np.asarray(self.field_nm) / 2.0

    def scan_context_rect_nm(self) -> tuple[np.ndarray, np.ndarray]:
        """(top-left edge, (width, height)) of Swift's scan context in this field's nm."""
        ctx = self.stem.scan_context
        h, w = int(ctx.size.height), int(ctx.size.width)
        px = float(ctx.fov_nm) / max(h, 1)  # Swift: fov_nm spans the frame height
        size = np.array([w * px, h * px])
        centre = self.calibrated_to_instrument_nm((float(ctx.center_nm.x), float(ctx.center_nm.y)))
        return centre - size / 2.0, size

    # ----------------------------------------------------------------- safety
    def blank(self) -> None:
        """Beam off the sample (``C_Blank`` = 1) and any running scan stopped (probe parked).

        Thread-safe: the UI's Stop calls it while a worker parks. Raises when the controller
        does not confirm the blank (a failed blank is an alarm, never a success)."""
        try:
            self._blank_beam()
        finally:
            if self.scan_device.is_playing:
                self.scan_device.abort_playing(sync_timeout=5.0)

    def _blank_beam(self) -> float:
        """Blank; returns the wall seconds the beam had been on since the unblank (0: it was off)."""
        closed = 0.0
        with self._beam_lock:
            ok = self.stem.SetValWait("C_Blank", 1.0, 200)
            if self._on_since is not None and (ok or self.blanked):
                closed = time.perf_counter() - self._on_since
                self._beam_on_s += closed
                self._on_since = None
        if not ok and not self.blanked:
            raise RuntimeError("the STEM controller did not confirm C_Blank = 1")
        return closed

    def _unblank(self) -> None:
        with self._beam_lock:
            if not self.stem.SetValWait("C_Blank", 0.0, 200):
                raise RuntimeError("the STEM controller refused C_Blank = 0")
            if self._on_since is None:
                self._on_since = time.perf_counter()

    @contextlib.contextmanager
    def beam_action(self) -> typing.Iterator[None]:
        """Run a beam action; on any error (or interrupt) the probe is left parked and blanked."""
        try:
            yield
        except BaseException:
            try:
                self.blank()
            except Exception:  # noqa: BLE001  (the original error matters)
                pass
            raise

    def __enter__(self) -> NionInstrument:
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        self.blank()

    # ----------------------------------------------------------------- the protocol
    def scan(self, shape_px: tuple[int, int], fov_nm: float, dwell_us: float) -> ScanFrame:
        """Scan a square of side ``fov_nm`` centred on the field."""
        return self.subscan((self.field_nm[0] / 2, self.field_nm[1] / 2), shape_px, fov_nm, dwell_us)

    def subscan(self, center_nm: typing.Any, shape_px: tuple[int, int], fov_nm: float, dwell_us: float) -> ScanFrame:
        """Scan a square of side ``fov_nm`` centred at ``center_nm`` (it must lie in the field)."""
        from nion.utils import Geometry

        c = self._check(center_nm, "center_nm")
        h, w = int(shape_px[0]), int(shape_px[1])
        if h < 2 or w < 2 or not fov_nm > 0 or not dwell_us > 0:
            raise ValueError(f"shape_px={shape_px}, fov_nm={fov_nm}, dwell_us={dwell_us}: need >= 2 px, > 0")
        px = float(fov_nm) / max(h, w)
        half = np.array([w, h]) * px / 2.0
        for corner in (c - half, c + half):
            self._check(corner, "scan corner")
        with self.beam_action():
            if self.scan_device.is_playing:
                self.scan_device.abort_playing(sync_timeout=5.0)
            fp = self.scan_device.get_current_frame_parameters()
            fp.pixel_size = Geometry.IntSize(height=h, width=w)
            fp.fov_nm = px * h  # Swift: fov_nm spans the frame height
            sc = self.instrument_to_calibrated_nm(c)
            fp.center_nm = Geometry.FloatPoint(y=float(sc[1]), x=float(sc[0]))
            fp.pixel_time_us = float(dwell_us)
            fp.rotation_rad = 0.0
            for name in ("subscan_pixel_size", "subscan_fractional_size", "subscan_fractional_center"):
                if getattr(fp, name, None) is not None:
                    setattr(fp, name, None)
            self.scan_device.set_current_frame_parameters(fp)  # also Swift's scan context now
            start = time.perf_counter() - self._t0
            self._unblank()
            try:
                if hasattr(self.scan_device, "record_immediate"):
                    xds = self.scan_device.record_immediate(fp, sync_timeout=self.grab_timeout_s)
                else:
                    try:
                        xds = self.scan_device.grab_next_to_start(timeout=self.grab_timeout_s)
                    finally:
                        self.scan_device.abort_playing(sync_timeout=5.0)
            finally:
                wall_on = self._blank_beam()
            # a frame counts its nominal frame time as beam-on time: the wall time around
            # record_immediate also holds the device's set-up and, on the twin, the rendering
            with self._beam_lock:
                self._beam_on_s += h * w * float(dwell_us) * 1e-6 * self.time_scale - wall_on
            xd = xds[0] if xds else None
            if xd is None:
                raise RuntimeError("the scan device returned no frame")
            image = np.asarray(xd.data, np.float32)
            if image.shape != (h, w):
                raise RuntimeError(f"the scan device returned a {image.shape} frame, not {(h, w)}")
            origin_edge = c - half
            e_per_px = self.electrons_per_us * dwell_us
            self._deposit_frame(origin_edge + px / 2.0, px, (h, w), e_per_px)
            return ScanFrame(image=image, pixel_size_nm=px, origin_nm=tuple(float(v) for v in origin_edge + px / 2.0),
                             time_s=start, dwell_us=float(dwell_us),
                             metadata={"beam_current_pA": self.beam_current_pA,
                                       "dose_e_per_A2": e_per_px / (px * 10.0) ** 2,
                                       "scan_device": getattr(self.scan_device, "hardware_source_id", None)})

    def _probe_fraction(self, p: np.ndarray) -> tuple[float, float]:
        edge, size = self.scan_context_rect_nm()
        frac = (p - edge) / size
        if not np.all((frac >= 0.0) & (frac <= 1.0)):
            raise OutOfFieldError(
                f"({p[0]:.3f}, {p[1]:.3f}) nm is outside Swift's scan context x in [{edge[0]:.3f}, "
                f"{edge[0] + size[0]:.3f}], y in [{edge[1]:.3f}, {edge[1] + size[1]:.3f}] nm (scan there first)")
        return float(frac[1]), float(frac[0])

    def park_probe(self, xy_nm: typing.Any, dwell_ms: float) -> float:
        """Probe at ``xy_nm`` with the beam on for ``dwell_ms``, then blanked (probe stays parked there).

        The dwell runs in pieces of at most ``PARK_CHUNK_MS`` (instrument time); between them
        :attr:`abort_event` is looked at, and when it is set the beam is blanked at once.
        Returns the milliseconds the beam was on (measured); the dose counts those."""
        from nion.utils import Geometry

        p = self._check(xy_nm, "xy_nm")
        if not dwell_ms >= 0:
            raise ValueError(f"dwell_ms={dwell_ms} must be >= 0")
        fy, fx = self._probe_fraction(p)
        with self.beam_action():
            if self.scan_device.is_playing:
                self.blank()
            if self.abort_event.is_set():
                return 0.0
            self.scan_device.probe_position = Geometry.FloatPoint(y=fy, x=fx)
            on0 = self.beam_on_s
            self._unblank()
            try:
                t_end = time.perf_counter() + dwell_ms * 1e-3 * self.time_scale
                while not self.abort_event.is_set():
                    left = t_end - time.perf_counter()
                    if left <= 0:
                        break
                    self.abort_event.wait(min(left, PARK_CHUNK_MS * 1e-3 * self.time_scale))
            finally:
                self._blank_beam()
            on_ms = (self.beam_on_s - on0) * 1e3
            self._deposit_point(p, self.electrons_per_us * on_ms * 1e3)
            return on_ms

    def _parked_camera_frame(self, camera_id: str | None, what: str, xy_nm: typing.Any,
                             exposure_ms: float) -> tuple[typing.Any, np.ndarray, float, float]:
        """Park at ``xy_nm``, unblank, read one frame of camera ``camera_id``, blank; returns
        (xdata, position nm, start time s, ms of the frame the beam lit). Refusals come before
        any beam action."""
        from nion.utils import Geometry

        if camera_id is None:
            raise RuntimeError(f"no {what} camera configured ({what}_camera_id)")
        if not exposure_ms > 0:
            raise ValueError(f"exposure_ms={exposure_ms} must be > 0")
        p = self._check(xy_nm, "xy_nm")
        fy, fx = self._probe_fraction(p)
        cam = _hardware_source(camera_id)
        start = time.perf_counter() - self._t0
        with self.beam_action():
            if self.scan_device.is_playing:
                self.blank()
            self.scan_device.probe_position = Geometry.FloatPoint(y=fy, x=fx)
            fp = cam.get_current_frame_parameters()
            fp.exposure_ms = float(exposure_ms)  # (Swift clears "sum_project" in view mode: summed by the caller)
            cam.set_current_frame_parameters(fp)
            # the camera is armed (playing) with the beam off, so its start-up is dark. A frame
            # that finishes in the dark marks the start of the next one: the beam goes on then
            # for one exposure, timed here (Swift hands a frame over ~10 ms after it ends; waiting
            # for that would keep the beam on), while a reader thread waits for that next frame.
            # The frame misses the few ms between its start and the unblank, the next one
            # (never read) gets as much; the dose counts the beam-on time, ~1.0 exposure.
            # ``frame_aligned=False``: the beam goes on before the next frame starts and stays
            # on until it is read (1-2 exposures), for a camera that renders a frame from the
            # beam at its start (usim's own simulators)
            timeout = max(10.0, 5 * exposure_ms * 1e-3)
            aligned = (not str(camera_id).startswith("usim_")) if self.frame_aligned is None else bool(self.frame_aligned)
            # below MIN_ALIGNED_EXPOSURE_MS the few ms a loaded machine takes between a frame's
            # hand-over and the unblank can be the whole next frame (read dark): the old way
            aligned = aligned and exposure_ms >= MIN_ALIGNED_EXPOSURE_MS
            cam.start_playing(sync_timeout=5.0)
            try:
                frame_start = _next_frame_start(cam, exposure_ms, timeout) if aligned else None
                aligned = frame_start is not None
                if aligned:
                    got: dict[str, typing.Any] = {}

                    def read() -> None:
                        try:
                            got["xd"] = cam.grab_next_to_finish(timeout=timeout)[0]
                        except BaseException as exc:  # noqa: BLE001  (re-raised by the caller)
                            got["error"] = exc

                    reader = threading.Thread(target=read, name="atomsmith-camera-read", daemon=True)
                    reader.start()
                on0 = self.beam_on_s
                self._unblank()
                t_unblank = time.perf_counter()
                try:
                    if aligned:
                        self.abort_event.wait(exposure_ms * 1e-3)  # Stop blanks at once
                    else:
                        xd = cam.grab_next_to_start(timeout=timeout)[0]
                finally:
                    self._blank_beam()
                lit_ms = float(exposure_ms)  # the part of the frame read that the beam lit
                if aligned:
                    reader.join(timeout)
                    if "error" in got:
                        raise got["error"]
                    xd = got.get("xd")
                    # it began at or after the frame before it ended (``frame_start``) and ended
                    # at or before its own timestamp: the middle of the two bounds
                    read_lag = _frame_lag_s([xd]) if xd is not None else None
                    low = exposure_ms - (t_unblank - frame_start) * 1e3
                    high = exposure_ms if read_lag is None else (time.perf_counter() - read_lag - t_unblank) * 1e3
                    lit_ms = float(np.clip(0.5 * (low + min(high, exposure_ms)), 0.0, exposure_ms))
            finally:
                cam.abort_playing(sync_timeout=5.0)
            beam_us = (self.beam_on_s - on0) * 1e6  # the beam-on time measured, not the exposure asked
            self._deposit_point(p, self.electrons_per_us * beam_us)
        if xd is None:
            raise RuntimeError(f"the {what} camera '{camera_id}' returned no frame")
        return xd, p, start, lit_ms

    def acquire_spectrum(self, xy_nm: typing.Any, exposure_ms: float) -> Spectrum:
        """Park at ``xy_nm`` and read one EEL spectrum from ``eels_camera_id`` (one frame summed over
        the non-dispersive axis; energy axis from its calibration); beam blanked afterwards."""
        xd, p, start, lit_ms = self._parked_camera_frame(self.eels_camera_id, "eels", xy_nm, exposure_ms)
        data = np.asarray(xd.data, float)
        data = data.reshape(-1, data.shape[-1]).sum(axis=0)  # sum the non-dispersive axis
        cal = xd.dimensional_calibrations[-1]
        energy = cal.offset + cal.scale * np.arange(data.size)
        return Spectrum(energy_eV=energy, counts=data, xy_nm=(float(p[0]), float(p[1])),
                        exposure_ms=float(exposure_ms), time_s=start, beam_ms=lit_ms)

    def acquire_diffraction(self, xy_nm: typing.Any, exposure_ms: float) -> np.ndarray:
        """Park at ``xy_nm`` and read one frame of ``ronchigram_camera_id`` (a diffraction /
        Ronchigram camera): the 2D pattern in the camera's counts; beam blanked afterwards."""
        xd, _, _, _ = self._parked_camera_frame(self.ronchigram_camera_id, "ronchigram", xy_nm, exposure_ms)
        data = np.asarray(xd.data, np.float32)
        if data.ndim != 2:
            raise RuntimeError(f"the ronchigram camera returned a {data.shape} frame, not a 2D pattern")
        return data


#: the largest delay (fraction of the exposure) between a camera frame's end and its arrival
#: for which the next frame is taken as begun at that end (see ``frame_aligned``)
MAX_FRAME_LAG = 0.3
#: dark frames tried for one handed over in time (a camera's first frames after it starts are late)
SYNC_FRAMES = 4
#: the shortest exposure (ms) taken frame-aligned (see ``frame_aligned``)
MIN_ALIGNED_EXPOSURE_MS = 20.0


def _next_frame_start(cam: typing.Any, exposure_ms: float, timeout: float) -> float | None:
    """Wait, in the dark, for a frame of the playing camera ``cam`` handed over within
    ``MAX_FRAME_LAG`` exposures of its end; returns when the next frame began (perf_counter s),
    or None when none of ``SYNC_FRAMES`` was (a frame handed over late leaves the next one
    nearly over) or a frame has no timestamp."""
    for _ in range(SYNC_FRAMES):
        lag = _frame_lag_s(cam.grab_next_to_finish(timeout=timeout))
        if lag is None:
            return None
        if lag <= MAX_FRAME_LAG * exposure_ms * 1e-3:
            return time.perf_counter() - lag
    return None


def _frame_lag_s(frames: typing.Any) -> float | None:
    """Seconds between the end of a grabbed frame (its timestamp, UTC) and now; None when it has
    no timestamp."""
    import datetime

    try:
        ts = frames[0].timestamp
        now = datetime.datetime.now(datetime.UTC)
        if ts.tzinfo is None:  # Swift's timestamps: naive UTC
            now = now.replace(tzinfo=None)
        return max(0.0, (now - ts).total_seconds())
    except Exception:  # noqa: BLE001  (no frame, no timestamp: not aligned)
        return None


_TO_NM = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "pm": 1e-3, "um": 1e3, "µm": 1e3}


def field_from_frame(xdata: typing.Any, *, minimum_nm: float = 6.0, margin: float = 0.1) -> tuple[float, float]:
    """The instrument field (nm) for beam actions in a calibrated scan frame.

    The instrument frame is centred on Swift's scan centre (0, 0); the field must hold the frame
    wherever it lies: twice the frame's farthest edge from the centre on each axis, plus
    ``margin`` of it, and at least ``minimum_nm``. Raises ValueError for a frame whose spatial
    calibration is not a length (nm, Å, pm, µm).
    """
    cals = list(xdata.dimensional_calibrations)[-2:]
    shape = xdata.data.shape[-2:]
    half = []
    for cal, n in zip(cals[::-1], shape[::-1], strict=True):  # x (columns), then y (rows)
        unit = (cal.units or "").strip()
        if unit not in _TO_NM:
            raise ValueError(f"the frame's calibration is in {unit!r}, not a length: calibrate its axes in nm "
                             "(Inspector > Calibrations) so that positions can be sent to the instrument")
        lo = cal.offset * _TO_NM[unit]
        hi = (cal.offset + cal.scale * n) * _TO_NM[unit]
        half.append(max(abs(lo), abs(hi)))
    return tuple(float(max(minimum_nm, 2.0 * h * (1.0 + margin))) for h in half)  # type: ignore[return-value]


def find_eels_camera() -> str | None:
    """The twin's EELS camera when registered, else the first hardware source with "eels" in its id."""
    try:
        from nion.instrumentation import HardwareSource

        from .swift_twin import TWIN_EELS_ID

        manager = HardwareSource.HardwareSourceManager()
        if manager.get_hardware_source_for_hardware_source_id(TWIN_EELS_ID) is not None:
            return TWIN_EELS_ID
        for hs in manager.hardware_sources:
            if "eels" in str(getattr(hs, "hardware_source_id", "")).lower():
                return hs.hardware_source_id
    except Exception:  # noqa: BLE001
        pass
    return None


def instrument_for(api: typing.Any, data_item: typing.Any,
                   factory: typing.Callable[[typing.Any], typing.Any] | None = None,
                   kwargs: dict[str, typing.Any] | None = None, *, eels: bool = False) -> typing.Any:
    """The instrument behind a scan data item: ``factory(data_item)`` when given, else the
    :class:`NionInstrument` of the scan device that took it (:meth:`NionInstrument.for_data_item`
    with ``kwargs``; ``eels``: the EELS camera defaults to :func:`find_eels_camera`)."""
    if factory is not None:
        return factory(data_item)
    kwargs = dict(kwargs or {})
    if eels:
        kwargs.setdefault("eels_camera_id", find_eels_camera())
    return NionInstrument.for_data_item(api, data_item, **kwargs)
