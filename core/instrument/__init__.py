"""The :class:`Instrument` protocol and the digital twin that implements it."""

from .protocol import Instrument, OutOfFieldError, ScanFrame, Spectrum
from .safety import PARK_CHUNK_MS, BeamSafetyError, beam_on_s, blank_or_raise
from .simulated import SimulatedInstrument

__all__ = ["PARK_CHUNK_MS", "BeamSafetyError", "Instrument", "OutOfFieldError", "ScanFrame", "SimulatedInstrument",
           "Spectrum", "beam_on_s", "blank_or_raise"]
