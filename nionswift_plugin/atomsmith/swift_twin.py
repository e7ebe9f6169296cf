"""The digital twin as a Swift STEM: nionswift-usim's instrument and scan device, with frames
rendered from atomsmith's twin (atoms, defects, dose) instead of usim's atom-less sample.

usim builds its instrument around a scan data generator (``generate_scan_data(instrument,
frame_parameters)``); :func:`use_twin` swaps in :class:`TwinScanDataGenerator`, which renders the
twin's sample (a :class:`atomsmith.instrument.SimulatedInstrument`) at the frame's field of view,
centre, size and pixel time, with Poisson noise at the dose the twin's beam current gives. Swift's
scan centre (0, 0) is the centre of the twin's field. Beam-induced hops: Swift's frame generator
cannot see how long the probe stays parked, so :class:`~.instrument_adapter.NionInstrument` tells
the twin after each park (``probe_parked``); a real microscope has no such hook and needs none.
The usim cameras keep usim's sample. ``use_twin`` works on a usim ``AcquisitionContextConfiguration``
(tests) or on the configuration the usim plug-in builds.
"""

from __future__ import annotations

import threading
import typing

import numpy as np


class TwinScanDataGenerator:
    """usim scan data generator that renders the twin; also the twin's beam-dose hook."""

    def __init__(self, twin: typing.Any, usim_generator: typing.Any = None) -> None:
        self.twin = twin  # atomsmith.instrument.SimulatedInstrument
        self._usim = usim_generator
        self.lock = threading.Lock()
        self.frames = 0

    @property
    def sample(self) -> typing.Any:  # the usim cameras read features from usim's sample
        return getattr(self._usim, "sample", None)

    def __getattr__(self, name: str) -> typing.Any:  # anything else usim asks of its generator
        usim = self.__dict__.get("_usim")
        if usim is None:
            raise AttributeError(name)
        return getattr(usim, name)

    def frame_origin_nm(self, center_swift_nm: tuple[float, float], shape: tuple[int, int], px_nm: float) -> np.ndarray:
        """Twin-field (x, y) nm of pixel (0, 0)'s centre for a frame centred at Swift's (x, y) nm."""
        h, w = shape
        c = np.asarray(self.twin.field_nm, float) / 2.0 + np.asarray(center_swift_nm, float)
        return c - np.array([w, h]) * px_nm / 2.0 + px_nm / 2.0

    def generate_scan_data(self, instrument: typing.Any, scan_frame_parameters: typing.Any) -> np.ndarray:
        from atomsmith.simulate.haadf import render_haadf

        size = scan_frame_parameters.size
        h, w = int(size.height), int(size.width)
        fov = scan_frame_parameters.fov_size_nm
        px_nm = float(fov.width) / w
        centre = scan_frame_parameters.center_nm
        dwell_us = float(scan_frame_parameters.pixel_time_us)
        with self.lock:
            twin = self.twin
            origin = self.frame_origin_nm((float(centre.x), float(centre.y)), (h, w), px_nm)
            electrons_per_px = twin.electrons_per_us * dwell_us
            dose = electrons_per_px / (px_nm * 10.0) ** 2
            img = render_haadf(twin.sample, (h, w), px_nm, origin_nm=tuple(origin), probe=twin.probe,
                               detector=twin.detector, dose_e_per_A2=dose, background=twin.background,
                               seed=twin.rng)
            inside = self._inside(origin, (h, w), px_nm)
            if inside:
                twin._deposit(origin + np.array([w, h]) * px_nm / 2.0 - px_nm / 2.0, electrons_per_px * h * w)
            twin.time_s += h * w * dwell_us * 1e-6
            self.frames += 1
        return np.asarray(img.image, np.float32)

    def _inside(self, origin, shape, px_nm) -> bool:
        h, w = shape
        c = origin + np.array([w, h]) * px_nm / 2.0
        return bool(0 <= c[0] <= self.twin.field_nm[0] and 0 <= c[1] <= self.twin.field_nm[1])

    def probe_parked(self, xy_swift_nm: tuple[float, float], dwell_ms: float) -> None:
        """The probe sat at Swift's (x, y) nm for ``dwell_ms``: the twin takes the dose (and may hop)."""
        p = np.asarray(self.twin.field_nm, float) / 2.0 + np.asarray(xy_swift_nm, float)
        with self.lock:
            self.twin.park_probe((float(p[0]), float(p[1])), float(dwell_ms))
            self.twin.blanked = True


def _install(instrument: typing.Any, scan_device: typing.Any, twin: typing.Any) -> TwinScanDataGenerator:
    if twin is None:
        from atomsmith.instrument import SimulatedInstrument

        twin = SimulatedInstrument(seed=0)
    ok, amps = instrument.TryGetVal("BeamCurrent") if hasattr(instrument, "TryGetVal") else (False, None)
    if ok and amps:  # the twin's beam is the instrument's (usim: 200 pA)
        twin.beam_current_pA = float(amps) * 1e12
    current = instrument.scan_data_generator
    gen = TwinScanDataGenerator(twin, getattr(current, "_usim", current))
    # usim keeps the generator private in two places (the instrument, and the scan box simulator
    # its scan device was built with); there is no public setter in usim 5.4
    instrument._Instrument__scan_data_generator = gen
    scan_device._Device__scan_simulator._ScanBoxSimulator__scan_data_generator = gen
    return gen


def use_twin(configuration: typing.Any, twin: typing.Any = None) -> TwinScanDataGenerator:
    """Make a usim configuration's instrument render the twin (default: graphene with one Si).
    Returns the generator (its ``twin`` is the :class:`~atomsmith.instrument.SimulatedInstrument`)."""
    return _install(configuration._instrument, configuration.scan_module.device, twin)


def use_twin_in_running_usim(twin: typing.Any = None) -> TwinScanDataGenerator:
    """The same for the usim that Swift's usim plug-in started (Atomsmith > Use Digital Twin Sample)."""
    from nion.instrumentation import HardwareSource
    from nion.utils import Registry

    hs = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id("usim_scan_device")
    instrument = Registry.get_component("stem_controller")
    if hs is None or instrument is None or not hasattr(instrument, "scan_data_generator"):
        raise RuntimeError("no usim instrument in this Swift (install nionswift-usim)")
    return _install(instrument, hs.scan_device, twin)
