"""The one boundary between algorithms that steer a beam and a microscope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class OutOfFieldError(ValueError):
    """A requested probe position or scan area lies outside the sample field."""


@dataclass(frozen=True, eq=False)
class ScanFrame:
    """One scanned image with its calibration.

    Attributes:
        image: (H, W) float32 detector signal (electrons per pixel on the twin).
        pixel_size_nm: nm per pixel (square pixels).
        origin_nm: instrument-frame position (x, y) of pixel (0, 0)'s centre, nm.
        time_s: instrument clock when the frame started, seconds.
        dwell_us: dwell time per pixel, microseconds.
        truth: ground truth of the columns (the twin only; ``None`` on a microscope).
    """

    image: np.ndarray
    pixel_size_nm: float
    origin_nm: tuple[float, float]
    time_s: float
    dwell_us: float
    truth: object | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape_px(self) -> tuple[int, int]:
        """(rows, columns)."""
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def fov_nm(self) -> tuple[float, float]:
        """Field of view (width, height) in nm."""
        h, w = self.image.shape
        return (w * self.pixel_size_nm, h * self.pixel_size_nm)

    def pixel_to_nm(self, xy_px: np.ndarray) -> np.ndarray:
        """Convert (x, y) pixel coordinates of this frame to instrument-frame nm."""
        return np.asarray(self.origin_nm) + np.asarray(xy_px, float) * self.pixel_size_nm

    def nm_to_pixel(self, xy_nm: np.ndarray) -> np.ndarray:
        """Convert instrument-frame nm to (x, y) pixel coordinates of this frame."""
        return (np.asarray(xy_nm, float) - np.asarray(self.origin_nm)) / self.pixel_size_nm

    def to_dict(self) -> dict:
        """Arrays and calibration as a dict."""
        return {"image": self.image, "pixel_size_nm": self.pixel_size_nm, "origin_nm": self.origin_nm,
                "time_s": self.time_s, "dwell_us": self.dwell_us, "metadata": self.metadata}


@dataclass(frozen=True, eq=False)
class Spectrum:
    """An EEL spectrum taken at one probe position.

    Attributes:
        energy_eV: (n,) energy-loss axis, eV.
        counts: (n,) electrons per channel.
        xy_nm: probe position, nm.
        exposure_ms: exposure, ms.
        time_s: instrument clock at the start of the exposure, s.
        beam_ms: the part of the exposure the beam lit, ms, where an instrument knows it is less
            than ``exposure_ms`` (a camera frame that began a few ms before the unblank);
            None: all of it. Counts per unit dose scale with this, not with ``exposure_ms``.
    """

    energy_eV: np.ndarray
    counts: np.ndarray
    xy_nm: tuple[float, float]
    exposure_ms: float
    time_s: float
    beam_ms: float | None = None

    def to_dict(self) -> dict:
        """Arrays and parameters as a dict."""
        return {"energy_eV": self.energy_eV, "counts": self.counts, "xy_nm": self.xy_nm,
                "exposure_ms": self.exposure_ms, "time_s": self.time_s, "beam_ms": self.beam_ms}


@runtime_checkable
class Instrument(Protocol):
    """What every beam-steering algorithm may ask of a microscope (the twin or a real one).

    Positions are in nm in the instrument frame; ``fov_nm`` is the side of a square scan.
    Implementations refuse positions outside their field with :class:`OutOfFieldError`.

    Beam safety (the contract every implementation keeps; :mod:`atomsmith.instrument.safety`):

    - every beam action (scan, sub-scan, park, exposure) ends with the beam blanked unless the
      caller asks to keep it on (``keep_beam_on=True`` where an implementation offers it);
    - ``blank()`` is thread-safe and may be called from any thread (the UI's Stop) at any time;
    - ``abort_event`` (a ``threading.Event``, optional): any thread may set it; a park runs in
      pieces of at most ``safety.PARK_CHUNK_MS`` and stops, blanked, when it is set (it stays
      set, and later parks deliver nothing, until the caller clears it);
    - ``beam_blanked`` (bool, optional): whether the beam is off now, read back after a blank;
    - ``beam_on_s`` (float, optional): cumulative beam-on time the instrument delivered, seconds:
      the dose ledger counts this, not the time that was asked for.
    Callers end every loop with :func:`atomsmith.instrument.safety.blank_or_raise`, which retries
    and raises :class:`~atomsmith.instrument.safety.BeamSafetyError` when the beam cannot be
    confirmed off.
    """

    def scan(self, shape_px: tuple[int, int], fov_nm: float, dwell_us: float) -> ScanFrame:
        """Scan the whole field of view centred on the field, return the frame."""
        ...

    def subscan(self, center_nm: tuple[float, float], shape_px: tuple[int, int], fov_nm: float,
                dwell_us: float) -> ScanFrame:
        """Scan a square of side ``fov_nm`` centred at ``center_nm``."""
        ...

    def park_probe(self, xy_nm: tuple[float, float], dwell_ms: float) -> float | None:
        """Put the probe at ``xy_nm`` for ``dwell_ms`` milliseconds (in pieces that stop on the
        abort event), then blank; returns the milliseconds the beam was on (None: not known)."""
        ...

    def acquire_spectrum(self, xy_nm: tuple[float, float], exposure_ms: float) -> Spectrum:
        """An EEL spectrum with the probe at ``xy_nm``."""
        ...

    def acquire_diffraction(self, xy_nm: tuple[float, float], exposure_ms: float) -> np.ndarray:
        """A diffraction pattern (2D array) with the probe at ``xy_nm``."""
        ...

    def blank(self) -> None:
        """Take the beam off the sample; always safe to call, from any thread; raises when it cannot."""
        ...

    @property
    def dose_e_per_A2(self) -> np.ndarray:
        """Cumulative dose delivered so far, per region of the field (2D map), e/A^2."""
        ...
