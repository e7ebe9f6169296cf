"""The digital twin as a Swift STEM: a scan device and STEM controller whose frames are rendered
from atomsmith's twin (atoms, defects, dose, beam-induced hops) instead of usim's atom-less sample.

Route (decided): the twin gets **its own ids**. :func:`start_twin` builds nionswift-usim's
instrument (``nion.usim_device.InstrumentDevice.Instrument``, its value manager with the
``BeamCurrent`` and ``C_Blank`` controls) and device_kit's scan device around a
:class:`TwinScanDataGenerator`, then registers them with Swift:

* STEM controller ``"atomsmith_twin_stem_controller"`` (:data:`TWIN_STEM_ID`): a Registry
  ``"stem_controller"`` / ``"instrument_controller"`` component with priority 10 (usim's is 20, so
  where usim runs too it stays Swift's default STEM controller), which instrumentation registers
  with the hardware-source manager under that id (``api.get_instrument_by_id`` finds it; Swift's
  probe and subscan graphics follow it); with ``register_stem_controller=False`` only the latter;
* scan hardware source ``"atomsmith_twin_scan"`` (:data:`TWIN_SCAN_ID`), through a
  ``"scan_module"`` component, which Swift's instrumentation plug-in turns into a scan hardware
  source (its ``scan_base.run`` listener must be running: it is in the Swift application and in
  :func:`twin_test_context`);
* optionally (``with_eels=True``) an EELS camera ``"atomsmith_twin_eels_camera"``
  (:data:`TWIN_EELS_ID`, device_kit's camera device): with the probe parked and the beam on, each
  frame is the twin's spectrum of the atoms under the probe (PSF-weighted amounts, core-loss
  edges, Poisson noise; :meth:`atomsmith.instrument.SimulatedInstrument.spectrum_at`) for the
  electrons of the part of the exposure the beam was on (rendered at the frame's end, as a
  camera integrates), 1 eV per channel from the twin's first energy; blanked, it is dark;
* optionally (``with_ronchigram=True``) a diffraction camera ``"atomsmith_twin_ronchigram_camera"``
  (:data:`TWIN_RONCHIGRAM_ID`): the twin's convergent-beam pattern under the parked probe.

:func:`stop_twin` undoes all of it (scan aborted, listeners closed, components unregistered).
Injecting the twin into usim's own devices remains possible (:func:`use_twin` for a usim
``AcquisitionContextConfiguration``, :func:`use_twin_in_running_usim` for the usim plug-in, used
by Atomsmith > Use Digital Twin Sample); there usim's private generator slots are replaced.

Frames: each frame is rendered by :meth:`atomsmith.instrument.SimulatedInstrument.subscan` (so
Poisson noise at the dose the beam current and pixel time give, dose map, scan-induced swaps and
the twin's clock all stay in core) at the frame's size, field of view, centre and pixel time.
Swift's scan centre (0, 0) is the centre of the twin's field: twin (x, y) nm = field / 2 +
Swift's ``center_nm`` (x, y). Frames may reach outside the field (vacuum there, no dose counted).
A scan with the beam blanked (``C_Blank`` = 1) gives an empty frame and no dose.

Beam-induced dynamics: the generator listens to the STEM controller's ``probe_state_changed_event``
(parking, moving the parked probe, scan start/stop) and ``property_changed_event``
(``is_blanked`` from ``C_Blank``). On each such change, at each frame and on :meth:`settle`, the
time the beam spent parked and unblanked since the last change is handed to the twin as
``SimulatedInstrument.park_probe(position, elapsed_ms * time_scale)`` at the probe position
(fractional (y, x) of the scan context, converted to twin nm), which delivers the dose and may
make the Si hop. So any park, made by :class:`~.instrument_adapter.NionInstrument` or by hand in
Swift, drives the twin. A parked probe with no position (Swift's idle position) delivers no dose.
``time_scale`` (beam seconds per wall-clock second, default 1) lets tests run dwell times faster.
The beam current is Swift's ``BeamCurrent`` control; :func:`start_twin` sets it to the twin's.

Limits: scan rotation and Swift's sub-scan rectangles are ignored when rendering (the frame is
rendered unrotated at its centre); the stage position and usim's drift are ignored; all enabled
channels of one frame get the same image (rendered once per frame). With :func:`use_twin` the
usim cameras still see usim's sample.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import typing

import numpy as np

TWIN_SCAN_ID = "atomsmith_twin_scan"
TWIN_STEM_ID = "atomsmith_twin_stem_controller"
TWIN_EELS_ID = "atomsmith_twin_eels_camera"
TWIN_RONCHIGRAM_ID = "atomsmith_twin_ronchigram_camera"

log = logging.getLogger(__name__)


class TwinScanDataGenerator:
    """usim/device_kit scan data generator that renders the twin, and the twin's beam-dose clock.

    Args:
        twin: the :class:`atomsmith.instrument.SimulatedInstrument` to image and expose.
        usim_generator: usim's own generator (only for usim's cameras, which read its ``sample``).
        time_scale: beam seconds per wall-clock second for parked-probe dose (tests: > 1).
    """

    def __init__(self, twin: typing.Any, usim_generator: typing.Any = None, *, time_scale: float = 1.0) -> None:
        self.twin = twin
        self._usim = usim_generator
        self.time_scale = float(time_scale)
        self.lock = threading.RLock()
        self.frames = 0
        self.last_render_s = 0.0
        self.parked_ms = 0.0  # beam time delivered by parking, total (beam ms)
        self.last_lit_at: np.ndarray | None = None  # twin nm of the last parked beam that dosed
        #: (start, end) wall-clock intervals (perf_counter s) of the parked beam's dose, the latest
        self.lit_log: collections.deque = collections.deque(maxlen=256)
        self.frame_lit_log: collections.deque = collections.deque(maxlen=256)  # camera frames: (start s, end s, lit ms)
        self.instrument: typing.Any = None
        self._listeners: list[typing.Any] = []
        self._beam_at: np.ndarray | None = None  # twin nm where the parked, unblanked beam sits
        self._since = time.perf_counter()
        self._frame_serial = 0  # bumped by the scan box at each new frame (see _TwinScanBox)
        self._cache: tuple[typing.Any, int, np.ndarray] | None = None

    # ------------------------------------------------------------------ usim compatibility
    @property
    def sample(self) -> typing.Any:
        """usim's sample (usim's cameras read ``sample.features``); the twin's is ``twin.sample``."""
        if self._usim is None:
            from nion.usim_device import InstrumentDevice

            self._usim = InstrumentDevice.ScanDataGenerator(sample_index=0)
        return self._usim.sample

    def __getattr__(self, name: str) -> typing.Any:  # anything else usim asks of its generator
        usim = self.__dict__.get("_usim")
        if usim is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(usim, name)

    # ------------------------------------------------------------------ coordinates
    def swift_to_twin_nm(self, xy_swift_nm: typing.Any) -> np.ndarray:
        """Swift's scan coordinates (x, y) nm (0 at the scan centre) -> the twin's field nm."""
        return np.asarray(self.twin.field_nm, float) / 2.0 + np.asarray(xy_swift_nm, float)

    def twin_to_swift_nm(self, xy_nm: typing.Any) -> np.ndarray:
        """The twin's field nm -> Swift's scan coordinates (x, y) nm."""
        return np.asarray(xy_nm, float) - np.asarray(self.twin.field_nm, float) / 2.0

    def context_fraction_to_twin_nm(self, scan_context: typing.Any, probe_position: typing.Any) -> np.ndarray:
        """Fractional (y, x) probe position in ``scan_context`` -> twin (x, y) nm (rotation ignored)."""
        h, w = int(scan_context.size.height), int(scan_context.size.width)
        px = float(scan_context.fov_nm) / max(h, 1)  # Swift: fov_nm is the frame height
        c = scan_context.center_nm
        centre = self.swift_to_twin_nm((float(c.x), float(c.y)))
        return centre + np.array([(probe_position.x - 0.5) * w * px, (probe_position.y - 0.5) * h * px])

    # ------------------------------------------------------------------ the beam clock
    def attach(self, instrument: typing.Any, *, sync_beam_current: bool = True) -> None:
        """Follow ``instrument``'s probe state and blanking (its parked beam doses the twin)."""
        self.detach()
        self.instrument = instrument
        if sync_beam_current:
            try:
                instrument.SetVal("BeamCurrent", self.twin.beam_current_pA * 1e-12)
            except Exception:  # noqa: BLE001  (an instrument without the control keeps the twin's)
                pass
        self._listeners = [instrument.probe_state_changed_event.listen(self._on_probe_state_changed),
                           instrument.property_changed_event.listen(self._on_property_changed)]
        with self.lock:
            self._since = time.perf_counter()
            self._beam_at = self._beam_position()

    def detach(self) -> None:
        """Stop following the instrument (the time parked so far is delivered first)."""
        if self.instrument is not None:
            self.settle()
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        self.instrument = None
        self._beam_at = None

    def _on_probe_state_changed(self, *args: typing.Any) -> None:
        self.settle()

    def _on_property_changed(self, name: str, *args: typing.Any) -> None:
        if name in ("is_blanked", "probe_position", "probe_state"):
            self.settle()

    def _read_beam_current(self) -> None:
        ins = self.instrument
        if ins is None:
            return
        try:
            ok, amps = ins.TryGetVal("BeamCurrent")
        except Exception:  # noqa: BLE001
            return
        if ok and amps and amps > 0:
            self.twin.beam_current_pA = float(amps) * 1e12

    def _beam_blanked(self) -> bool:
        ins = self.instrument
        if ins is None:
            return bool(getattr(self.twin, "blanked", False))
        ok, v = ins.TryGetVal("C_Blank")
        return bool(ok and v is not None and v > 0.5)

    def _beam_position(self) -> np.ndarray | None:
        """Twin nm of a parked, unblanked beam with a position; else None (no dose)."""
        ins = self.instrument
        if ins is None or ins.probe_state != "parked" or self._beam_blanked():
            return None
        pos = ins.probe_position
        if pos is None:
            return None
        return self.context_fraction_to_twin_nm(ins.scan_context, pos)

    def settle(self) -> float:
        """Deliver the parked beam's dose since the last change to the twin; returns beam ms delivered."""
        from atomsmith.instrument import OutOfFieldError

        with self.lock:
            now = time.perf_counter()
            dt_ms = (now - self._since) * 1e3 * self.time_scale
            self._since = now
            at, self._beam_at = self._beam_at, self._beam_position()
            if at is None or dt_ms <= 0:
                return 0.0
            self._read_beam_current()
            try:
                self.twin.park_probe((float(at[0]), float(at[1])), dt_ms, keep_beam_on=True)
            except OutOfFieldError:  # the beam is off the twin's field: no dose counted
                return 0.0
            self.parked_ms += dt_ms
            self.last_lit_at = at
            self.lit_log.append((now - dt_ms * 1e-3 / self.time_scale, now))
            if self._beam_at is None:  # the beam went off: the twin's beam is off too
                self.twin.blanked = True
            return dt_ms

    # ------------------------------------------------------------------ frames
    def new_frame(self) -> None:
        """The scan device starts a frame (its channels are rendered once per frame)."""
        self._frame_serial += 1

    def generate_scan_data(self, instrument: typing.Any, scan_frame_parameters: typing.Any) -> np.ndarray:
        """One frame of the twin at the frame parameters (called by the scan device per channel)."""
        size = scan_frame_parameters.size
        h, w = int(size.height), int(size.width)
        px_nm = float(scan_frame_parameters.fov_nm) / h  # Swift: fov_nm spans the frame height
        c = scan_frame_parameters.center_nm
        dwell_us = float(scan_frame_parameters.pixel_time_us)
        key = (h, w, px_nm, float(c.x), float(c.y), dwell_us)
        self.settle()
        with self.lock:
            cached = self._cache
            if cached is not None and cached[0] == key and cached[1] == self._frame_serial:
                return cached[2].copy()  # another channel of the same frame
            t0 = time.perf_counter()
            if self._beam_blanked():
                img = np.zeros((h, w), np.float32)  # blanked: no electrons, no dose
            else:
                self._read_beam_current()
                centre = self.swift_to_twin_nm((float(c.x), float(c.y)))
                frame = self.twin.subscan((float(centre[0]), float(centre[1])), (h, w), px_nm * max(h, w), dwell_us,
                                          clip_to_field=True, keep_beam_on=True)
                img = np.asarray(frame.image, np.float32)
                self.twin.blanked = True  # the scan is over; a park or the next scan turns it on
            self.last_render_s = time.perf_counter() - t0
            self.frames += 1
            self._cache = (key, self._frame_serial, img)
            return img.copy()


def _twin_scan_box(generator: TwinScanDataGenerator) -> typing.Any:
    """usim's scan box simulator around ``generator`` that tells it when a frame starts."""
    from nion.usim_device import ScanDevice as UsimScanDevice

    class _TwinScanBox(UsimScanDevice.ScanBoxSimulator):
        def reset_frame(self) -> None:
            super().reset_frame()
            generator.new_frame()

    return _TwinScanBox(generator)


def _install(instrument: typing.Any, scan_device: typing.Any, twin: typing.Any,
             time_scale: float = 1.0) -> TwinScanDataGenerator:
    """Put a twin generator into usim's instrument and scan device (usim keeps the generator private)."""
    if twin is None:
        from atomsmith.instrument import SimulatedInstrument

        twin = SimulatedInstrument(seed=0)
    current = instrument.scan_data_generator
    if isinstance(current, TwinScanDataGenerator):
        current.detach()
        current = current._usim
    ok, amps = instrument.TryGetVal("BeamCurrent")
    if ok and amps:  # usim's beam is the twin's (usim: 200 pA)
        twin.beam_current_pA = float(amps) * 1e12
    gen = TwinScanDataGenerator(twin, current, time_scale=time_scale)
    # no public setter in usim 5.4: the instrument and the scan box simulator hold it privately
    instrument._Instrument__scan_data_generator = gen
    box = _twin_scan_box(gen)
    box.flyback_pixels = getattr(scan_device._Device__scan_simulator, "flyback_pixels", box.flyback_pixels)
    scan_device._Device__scan_simulator = box
    gen.attach(instrument, sync_beam_current=False)
    return gen


def use_twin(configuration: typing.Any, twin: typing.Any = None, *, time_scale: float = 1.0) -> TwinScanDataGenerator:
    """Make a usim ``AcquisitionContextConfiguration``'s scan device render the twin (default:
    graphene with one Si); its parked probe doses the twin. Returns the generator (``.twin``)."""
    return _install(configuration._instrument, configuration.scan_module.device, twin, time_scale)


def use_twin_in_running_usim(twin: typing.Any = None, *, time_scale: float = 1.0) -> TwinScanDataGenerator:
    """The same for the usim that Swift's usim plug-in started (Atomsmith > Use Digital Twin Sample)."""
    from nion.instrumentation import HardwareSource

    hs = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id("usim_scan_device")
    instrument = getattr(hs, "stem_controller", None)
    if hs is None or instrument is None or not hasattr(instrument, "scan_data_generator"):
        raise RuntimeError("no usim instrument in this Swift (install nionswift-usim)")
    return _install(instrument, hs.scan_device, twin, time_scale)


# ---------------------------------------------------------------------- own ids: start/stop
@dataclasses.dataclass
class TwinHandles:
    """What :func:`start_twin` registered; pass it to :func:`stop_twin`."""

    twin: typing.Any  # atomsmith.instrument.SimulatedInstrument
    generator: TwinScanDataGenerator
    instrument: typing.Any  # usim InstrumentDevice.Instrument (the STEM controller)
    scan_module: typing.Any
    camera_modules: list[typing.Any]
    scan_id: str = TWIN_SCAN_ID
    stem_id: str = TWIN_STEM_ID
    eels_id: str | None = None
    ronchigram_id: str | None = None
    registered_stem_controller: bool = True
    stopped: bool = False

    @property
    def scan_hardware_source(self) -> typing.Any:
        """Swift's (native) scan hardware source of the twin."""
        from nion.instrumentation import HardwareSource

        return HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(self.scan_id)

    def nion_instrument(self, **kwargs: typing.Any) -> typing.Any:
        """A :class:`~.instrument_adapter.NionInstrument` over the twin (time scales matched)."""
        from .instrument_adapter import NionInstrument

        kwargs.setdefault("field_nm", self.twin.field_nm)
        kwargs.setdefault("time_scale", 1.0 / self.generator.time_scale)
        kwargs.setdefault("eels_camera_id", self.eels_id)
        kwargs.setdefault("ronchigram_camera_id", self.ronchigram_id)
        return NionInstrument(self.scan_id, self.stem_id, **kwargs)


class _TwinScanModule:
    """A ``scan_module`` component (scan_base.ScanModule protocol) for the twin's scan device."""

    panel_type = None
    panel_delegate_type = None
    data_channel_delegate = None

    def __init__(self, instrument: typing.Any, generator: TwinScanDataGenerator, scan_id: str,
                 field_nm: tuple[float, float]) -> None:
        import gettext

        from nion.device_kit import ScanDevice as KitScanDevice
        from nion.instrumentation import scan_base

        _ = gettext.gettext
        self.stem_controller_id = instrument.instrument_id
        self.device = KitScanDevice.Device(scan_id, _("Atomsmith Twin Scan"), instrument, _twin_scan_box(generator))
        self.priority = 10
        fov = float(min(field_nm))
        P = KitScanDevice.ScanFrameParameters
        modes = (
            scan_base.ScanSettingsMode(_("Fast"), "fast", P(pixel_size=(256, 256), pixel_time_us=2, fov_nm=fov * 0.5)),
            scan_base.ScanSettingsMode(_("Slow"), "slow", P(pixel_size=(512, 512), pixel_time_us=4, fov_nm=fov * 0.5)),
            scan_base.ScanSettingsMode(_("Record"), "record", P(pixel_size=(1024, 1024), pixel_time_us=4, fov_nm=fov)),
        )
        self.settings = scan_base.ScanSettings(scan_id, modes, lambda d: KitScanDevice.ScanFrameParameters(d), 0, 2)


def start_twin(sample: typing.Any = None, seed: int | None = 0, *, twin: typing.Any = None,
               time_scale: float = 1.0, scan_id: str = TWIN_SCAN_ID, stem_id: str = TWIN_STEM_ID,
               with_eels: bool = False, eels_id: str = TWIN_EELS_ID, with_ronchigram: bool = False,
               ronchigram_id: str = TWIN_RONCHIGRAM_ID, ronchigram_px: int = 256, register_stem_controller: bool = True,
               **twin_kwargs: typing.Any) -> TwinHandles:
    """Register the twin in Swift as a STEM controller and scan device (and optionally an EELS camera).

    Args:
        sample: the twin's sample (:class:`atomsmith.simulate.Structure`); default graphene + one Si.
        seed: seed of the twin's noise and beam events.
        twin: an existing :class:`~atomsmith.instrument.SimulatedInstrument` (then ``sample``,
            ``seed`` and ``twin_kwargs`` are unused).
        time_scale: beam seconds per wall-clock second while the probe is parked.
        scan_id, stem_id, eels_id: Swift ids of the devices.
        with_eels: also register an EELS camera whose spectra come from the twin's atoms.
        with_ronchigram, ronchigram_id, ronchigram_px: also register a diffraction (Ronchigram)
            camera of ``ronchigram_px`` square whose patterns come from the twin's atoms.
        register_stem_controller: also register the instrument as a Registry ``stem_controller``.
        twin_kwargs: passed to ``SimulatedInstrument`` (``field_nm``, ``beam_current_pA``, ...).

    Swift's instrumentation plug-in must be running (the application, or :func:`twin_test_context`).
    """
    from nion.instrumentation import HardwareSource
    from nion.usim_device import InstrumentDevice
    from nion.utils import Registry

    from atomsmith.instrument import SimulatedInstrument

    manager = HardwareSource.HardwareSourceManager()
    if manager.get_hardware_source_for_hardware_source_id(scan_id) is not None or manager.get_instrument_by_id(stem_id):
        raise RuntimeError(f"a device '{scan_id}' or instrument '{stem_id}' is already registered (stop_twin first)")
    if twin is None:
        twin = SimulatedInstrument(sample, seed=seed, **twin_kwargs)
    generator = TwinScanDataGenerator(twin, time_scale=time_scale)
    instrument = InstrumentDevice.Instrument(stem_id, InstrumentDevice.ValueManager(), InstrumentDevice.AxisManager(),
                                             generator)
    instrument.priority = 10  # below usim's 20: where usim runs too, it stays the default STEM controller
    generator.attach(instrument)
    if register_stem_controller:  # instrumentation's listener also registers it with the manager by id
        Registry.register_component(instrument, {"instrument_controller", "stem_controller"})
    if manager.get_instrument_by_id(stem_id) is None:
        manager.register_instrument(stem_id, instrument)
    camera_modules: list[typing.Any] = []
    handles = TwinHandles(twin, generator, instrument, None, camera_modules, scan_id, stem_id,
                          eels_id if with_eels else None, ronchigram_id if with_ronchigram else None,
                          register_stem_controller)
    try:
        if with_eels:
            camera_modules.append(_eels_camera_module(instrument, generator, eels_id, stem_id))
            Registry.register_component(camera_modules[-1], {"camera_module"})
        if with_ronchigram:
            from nion.utils import Geometry

            # usim's instrument keeps the sensor shapes private (2048^2 Ronchigram); the twin's
            # patterns are 64^2, so a smaller sensor saves the upsampling
            instrument._Instrument__ronchigram_shape = Geometry.IntSize(int(ronchigram_px), int(ronchigram_px))
            camera_modules.append(_ronchigram_camera_module(instrument, generator, ronchigram_id, stem_id))
            Registry.register_component(camera_modules[-1], {"camera_module"})
        handles.scan_module = _TwinScanModule(instrument, generator, scan_id, twin.field_nm)
        Registry.register_component(handles.scan_module, {"scan_module"})
        hs = handles.scan_hardware_source
        if hs is None:
            raise RuntimeError("Swift's instrumentation plug-in is not running (no scan_base.run listener): "
                               "the twin's scan module did not become a hardware source")
        instrument.set_scan_controller(hs)  # pin: the twin's STEM controller drives the twin's scan
    except BaseException:
        stop_twin(handles)
        raise
    return handles


def _twin_camera_simulator(instrument: typing.Any, generator: TwinScanDataGenerator, camera_type: str,
                           sensor: typing.Any, render: typing.Callable, energy_axis: typing.Callable | None = None
                           ) -> typing.Any:
    """usim's camera-simulator interface around the twin: each frame is
    ``render(twin, position_nm, electrons, (rows, cols))`` for the electrons of the time within
    the exposure that the probe was parked with the beam on (the dose itself is delivered by the
    generator's beam clock; the frame is rendered at its end, as a camera integrates); blanked,
    scanning or off the field all through, a dark frame. ``energy_axis(n)`` gives the
    channel energies (eV) of a spectrometer's dispersive axis."""
    from nion.data import Calibration, DataAndMetadata
    from nion.usim_device import CameraSimulator

    from atomsmith.instrument import OutOfFieldError

    class _TwinCameraSimulator(CameraSimulator.CameraSimulator):
        depends_on: list[str] = []

        def get_dimensional_calibrations(self, readout_area: typing.Any, binning_shape: typing.Any) -> list:
            if energy_axis is None:
                return [Calibration.Calibration(), Calibration.Calibration()]
            e = energy_axis(int(self._sensor_dimensions.width))
            return [Calibration.Calibration(), Calibration.Calibration(offset=float(e[0]), scale=float(e[1] - e[0]),
                                                                       units="eV")]

        def get_frame_data(self, readout_area: typing.Any, binning_shape: typing.Any, exposure_s: float,
                           scan_context: typing.Any, parked_probe_position: typing.Any) -> typing.Any:
            # usim asks for a frame at its start; a real camera integrates what arrives during the
            # exposure. So the frame is rendered at its end, for the electrons of the time the
            # beam was parked and on during it (the generator's beam clock): a beam that goes on
            # after the frame began lights only the rest of it
            shape = (int(self._sensor_dimensions.height), int(self._sensor_dimensions.width))
            data = np.zeros(shape, np.float32)
            t_start = time.perf_counter()
            t_end = t_start + max(float(exposure_s), 0.0)
            time.sleep(max(float(exposure_s), 0.0))
            with generator.lock:
                generator.settle()
                # the beam-on time within the frame's nominal window (a sleep overruns it)
                lit_s = sum(max(0.0, min(b, t_end) - max(a, t_start)) for a, b in generator.lit_log)
                lit_ms = lit_s * 1e3 * generator.time_scale
                at = generator.last_lit_at
                generator.frame_lit_log.append((t_start, t_end, lit_ms))
            # rendered outside the lock: a blank or a probe move at this moment (its listener
            # settles the beam clock under the lock) must not wait for the render
            if at is not None and lit_ms > 0:
                twin = generator.twin
                electrons = twin.electrons_per_us * lit_ms * 1e3
                try:
                    data[:] = render(twin, (float(at[0]), float(at[1])), electrons, shape)
                except (OutOfFieldError, ValueError):
                    pass
            data = self._get_binned_data(data, binning_shape)
            return DataAndMetadata.new_data_and_metadata(
                data, intensity_calibration=Calibration.Calibration(units="counts"),
                dimensional_calibrations=self.get_dimensional_calibrations(readout_area, binning_shape))

    return _TwinCameraSimulator(instrument, camera_type, sensor, instrument.counts_per_electron)


def _twin_eels_simulator(instrument: typing.Any, generator: TwinScanDataGenerator, sensor: typing.Any) -> typing.Any:
    """The twin's spectrometer: the spectrum of the atoms under the probe
    (:meth:`SimulatedInstrument.spectrum_at`), spread evenly over the sensor rows (summing the
    rows gives the spectrum), channels from the twin's first energy at >= its dispersion."""

    def energy_axis(n: int) -> np.ndarray:
        e = np.asarray(generator.twin.spectrometer_energy_eV, float)
        step = max(float(e[1] - e[0]), float(e[-1] - e[0] + (e[1] - e[0])) / n)
        return float(e[0]) + step * np.arange(n)

    def render(twin: typing.Any, at: tuple[float, float], electrons: float, shape: tuple[int, int]) -> np.ndarray:
        spectrum = twin.spectrum_at(at, electrons, energy_axis(shape[1]))
        return (spectrum / shape[0])[None, :]

    return _twin_camera_simulator(instrument, generator, "eels", sensor, render, energy_axis)


def _twin_ronchigram_simulator(instrument: typing.Any, generator: TwinScanDataGenerator, sensor: typing.Any) -> typing.Any:
    """The twin's diffraction camera: the convergent-beam pattern of the atoms under the probe
    (:meth:`SimulatedInstrument.diffraction_at`), block-upsampled to the sensor."""

    def render(twin: typing.Any, at: tuple[float, float], electrons: float, shape: tuple[int, int]) -> np.ndarray:
        pattern = twin.diffraction_at(at, electrons)
        ky, kx = max(1, shape[0] // pattern.shape[0]), max(1, shape[1] // pattern.shape[1])
        up = np.kron(pattern, np.ones((ky, kx), np.float32)) / (ky * kx)
        out = np.zeros(shape, np.float32)
        out[:up.shape[0], :up.shape[1]] = up[:shape[0], :shape[1]]
        return out

    return _twin_camera_simulator(instrument, generator, "ronchigram", sensor, render)


def _ronchigram_camera_module(instrument: typing.Any, generator: TwinScanDataGenerator, camera_id: str,
                              stem_id: str) -> typing.Any:
    import gettext

    from nion.device_kit import CameraDevice
    from nion.utils import Geometry

    size = Geometry.IntSize.make(instrument.camera_sensor_dimensions("ronchigram"))
    sim = _twin_ronchigram_simulator(instrument, generator, size)
    device = CameraDevice.Camera(camera_id, "ronchigram", gettext.gettext("Atomsmith Twin Ronchigram"), sim, instrument)
    return CameraDevice.CameraModule(stem_id, device, CameraDevice.CameraSettings(camera_id))


def _eels_camera_module(instrument: typing.Any, generator: TwinScanDataGenerator, eels_id: str, stem_id: str) -> typing.Any:
    import gettext

    from nion.device_kit import CameraDevice
    from nion.utils import Geometry

    size = Geometry.IntSize.make(instrument.camera_sensor_dimensions("eels"))
    sim = _twin_eels_simulator(instrument, generator, size)
    device = CameraDevice.Camera(eels_id, "eels", gettext.gettext("Atomsmith Twin EELS"), sim, instrument)
    device.camera_panel_type = "eels"
    instrument.value_manager.eels_camera = device
    return CameraDevice.CameraModule(stem_id, device, CameraDevice.CameraSettings(eels_id))


def stop_twin(handles: TwinHandles) -> None:
    """Abort the twin's acquisitions and unregister everything :func:`start_twin` registered."""
    from nion.instrumentation import HardwareSource
    from nion.utils import Registry

    if handles.stopped:
        return
    handles.stopped = True
    manager = HardwareSource.HardwareSourceManager()
    ids = [handles.scan_id] + [i for i in (handles.eels_id, handles.ronchigram_id) if i]
    for hs_id in ids:
        hs = manager.get_hardware_source_for_hardware_source_id(hs_id)
        if hs is not None:
            try:
                hs.abort_playing(sync_timeout=5.0)
            except Exception:  # noqa: BLE001  (closing goes on)
                log.exception("atomsmith twin: aborting %s", hs_id)
    try:
        handles.instrument.SetVal("C_Blank", 1.0)
    except Exception:  # noqa: BLE001
        pass
    handles.generator.detach()
    for module in handles.camera_modules:
        Registry.unregister_component(module, {"camera_module"})
    if handles.scan_module is not None:
        Registry.unregister_component(handles.scan_module, {"scan_module"})
        handles.scan_module.device.close()
    handles.instrument.set_scan_controller(None)
    if handles.registered_stem_controller:
        Registry.unregister_component(handles.instrument, {"instrument_controller", "stem_controller"})
    if manager.get_instrument_by_id(handles.stem_id) is handles.instrument:
        manager.unregister_instrument(handles.stem_id)
    handles.instrument.close()


# ---------------------------------------------------------------------- headless tests
class _TwinConfiguration:
    """An ``AcquisitionTestContextConfigurationLike`` whose run/stop start and stop the twin."""

    def __init__(self, configuration_location: str, **start_kwargs: typing.Any) -> None:
        self.configuration_location = configuration_location
        self.start_kwargs = start_kwargs
        self.instrument_id = start_kwargs.get("stem_id", TWIN_STEM_ID)
        self.handles: TwinHandles | None = None
        self.instrument: typing.Any = None
        self.scan_module = type("_Ids", (), {})()
        self.scan_module.device = type("_Ids", (), {})()
        self.scan_module.device.scan_device_id = start_kwargs.get("scan_id", TWIN_SCAN_ID)
        self.ronchigram_camera_device_id = start_kwargs.get("ronchigram_id", TWIN_RONCHIGRAM_ID)
        self.eels_camera_device_id = start_kwargs.get("eels_id", TWIN_EELS_ID)
        self.ronchigram_camera_device = self.eels_camera_device = None
        self.ronchigram_camera_settings = self.eels_camera_settings = None

    def run(self) -> None:
        self.handles = start_twin(**self.start_kwargs)
        self.instrument = self.handles.instrument
        self.scan_module = self.handles.scan_module

    def stop(self) -> None:
        if self.handles is not None:
            stop_twin(self.handles)


def twin_test_context(configuration_location: typing.Any = None, *, is_app: bool = True,
                      **start_kwargs: typing.Any) -> typing.Any:
    """A headless Swift with the twin (usim's ``AcquisitionTestContext`` around :func:`start_twin`).

    Use as ``with twin_test_context(seed=1) as ctx:``; ``ctx.handles`` is the :class:`TwinHandles`,
    ``ctx.scan_hardware_source`` the twin's scan, ``ctx.instrument`` its STEM controller. Closing
    stops the twin and the instrumentation plug-in. Needs ``Facade.initialize()`` and a kept-alive
    ``TestContext.TestSetup`` (see tests/swift); ``configuration_location`` defaults to
    ``./test_data`` (created; not deleted), so run from a temporary directory.
    """
    import pathlib

    from nion.instrumentation.test import AcquisitionTestContext

    loc = pathlib.Path(configuration_location) if configuration_location else pathlib.Path.cwd() / "test_data"
    loc.mkdir(parents=True, exist_ok=True)
    cfg = _TwinConfiguration(str(loc), **start_kwargs)
    ctx = AcquisitionTestContext.AcquisitionTestContext(cfg, is_app=is_app)
    ctx.handles = cfg.handles
    return ctx


def record_frame(ctx: typing.Any, size_px: int, fov_nm: float, dwell_us: float = 8.0) -> typing.Any:
    """One frame from the context's scan device (``size_px`` square, ``fov_nm`` wide, centred on
    the field), beam unblanked only for the frame; it becomes Swift's scan context. Returns the
    first channel's ``DataAndMetadata`` (calibrated in nm)."""
    from nion.utils import Geometry

    hs = ctx.scan_hardware_source
    fp = hs.get_current_frame_parameters()
    fp.pixel_size, fp.fov_nm, fp.pixel_time_us = Geometry.IntSize(int(size_px), int(size_px)), float(fov_nm), float(dwell_us)
    fp.center_nm = Geometry.FloatPoint(y=0.0, x=0.0)
    hs.set_current_frame_parameters(fp)
    ctx.instrument.SetVal("C_Blank", 0.0)
    try:
        return hs.record_immediate(fp)[0]
    finally:
        ctx.instrument.SetVal("C_Blank", 1.0)
