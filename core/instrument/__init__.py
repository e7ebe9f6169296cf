"""The :class:`Instrument` protocol and the digital twin that implements it."""

from .protocol import Instrument, OutOfFieldError, ScanFrame, Spectrum
from .simulated import SimulatedInstrument

__all__ = ["Instrument", "OutOfFieldError", "ScanFrame", "SimulatedInstrument", "Spectrum"]
