"""Beam safety: a blank that must succeed, and the beam-on time an instrument reports.

The beam is the user's sample. Every loop that steers the beam ends with
:func:`blank_or_raise`: ``instrument.blank()`` is tried up to ``1 + retries`` times and, where the
instrument can say so (a ``beam_blanked`` attribute), the blank is confirmed; when it cannot be
done a :class:`BeamSafetyError` is raised, never swallowed, and no run reports success with the
beam possibly on. Dose is counted from :func:`beam_on_s`, the beam-on time the instrument
itself reports (``beam_on_s`` attribute), not from the time that was asked for.
"""

from __future__ import annotations

import time

#: longest piece (ms) an instrument parks the probe for before it looks at its abort event again
PARK_CHUNK_MS = 20.0


class BeamSafetyError(RuntimeError):
    """The beam could not be confirmed blanked: the sample may still be under the beam.

    Attributes:
        result: what the interrupted run had produced (steps, measurements), if any.
    """

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


def blank_or_raise(instrument: object, *, retries: int = 2, wait_s: float = 0.01) -> None:
    """Blank the beam, and make sure: retry a failing or unconfirmed blank, then raise.

    Args:
        instrument: anything with ``blank()``; with a ``beam_blanked`` attribute it is read back.
        retries: further tries after the first.
        wait_s: pause between tries, seconds.

    Raises:
        BeamSafetyError: every try raised or left ``beam_blanked`` False; the message names the
            last failure.
    """
    last = "no try made"
    for attempt in range(1 + max(0, int(retries))):
        try:
            instrument.blank()
        except Exception as exc:  # noqa: BLE001  (any failure of the blank is the alarm below)
            last = f"blank() raised {type(exc).__name__}: {exc}"
        else:
            state = getattr(instrument, "beam_blanked", None)
            if state is None or bool(state):
                return
            last = "blank() returned but the instrument reports the beam on"
        if attempt < retries:
            time.sleep(wait_s)
    raise BeamSafetyError(f"the beam could not be blanked after {1 + max(0, int(retries))} tries ({last}); "
                          "blank it at the microscope now")


def beam_on_s(instrument: object) -> float | None:
    """The instrument's cumulative beam-on time (s), or None when it does not report one."""
    value = getattr(instrument, "beam_on_s", None)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
