"""Fault injection: an instrument wrapper whose k-th call of one method fails.

``FaultyInstrument(instrument, "park_probe", k=2, when="before")`` behaves as ``instrument``
except that the second ``park_probe`` raises :class:`InjectedFault` before acting (``when=
"after"``: after the instrument acted, as a fault in the read-back would). ``k=None`` makes every
call fail (a blank that never works). Used by the beam-safety tests and benchmark to check that
every loop ends with the beam blanked and keeps what cost dose.
"""

from __future__ import annotations

import typing


class InjectedFault(RuntimeError):
    """The fault a :class:`FaultyInstrument` raises."""


class FaultyInstrument:
    """``inner`` with the ``k``-th call (1-based; None: every call) of ``method`` failing.

    Attributes:
        calls: how many times ``method`` was called so far.
    """

    def __init__(self, inner: typing.Any, method: str, k: int | None, when: str = "before") -> None:
        if when not in ("before", "after"):
            raise ValueError(f"when={when!r}: use 'before' or 'after'")
        if k is not None and (isinstance(k, bool) or int(k) < 1):
            raise ValueError(f"k={k!r} must be a call number >= 1 or None (every call)")
        self.inner, self.method, self.k, self.when, self.calls = inner, method, k, when, 0

    def __getattr__(self, name: str) -> typing.Any:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def wrapped(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            self.calls += 1
            hit = self.k is None or self.calls == self.k
            if hit and self.when == "before":
                raise InjectedFault(f"{name} failed (call {self.calls}, before acting)")
            out = attr(*args, **kwargs)
            if hit:
                raise InjectedFault(f"{name} failed (call {self.calls}, after acting)")
            return out

        return wrapped
