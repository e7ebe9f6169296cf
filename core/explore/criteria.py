"""Physics criteria for automated experiments: one number from one EEL spectrum.

A criterion is any ``criterion(spectrum) -> float`` (``spectrum`` an
:class:`atomsmith.instrument.Spectrum`); the learner maximises it. The classes here are the
common ones, shared by the Swift panel and the HyperSpy replay:

* :class:`EdgeIntegral`: background-subtracted edge integral of one element (counts), e.g. where
  is the Si dopant;
* :class:`EdgeRatio`: ratio of two elements' edge integrals, e.g. N / C for a substitution map;
* :class:`WindowIntegral`: plain counts in an energy window (no background), e.g. a plasmon or
  a low-loss feature.

Each has :meth:`map` for a whole spectrum image (vectorised; used to score a replay against the
full grid). :func:`criterion_from` turns a short text (``"Si"``, ``"N/C"``, ``"280-300"``) into one.
"""

from __future__ import annotations

import re
import typing

import numpy as np

#: Default width of an edge's integration window above its onset, eV.
DEFAULT_EDGE_WIDTH_EV = 40.0


def _onset(element: str) -> float:
    from ..simulate.eels import EDGES

    if element not in EDGES:
        raise ValueError(f"unknown element {element!r}; atomsmith's edge table has {', '.join(EDGES)}")
    return float(EDGES[element].onset_eV)


class EdgeIntegral:
    """Background-subtracted edge integral of ``element`` (counts).

    The onset comes from atomsmith's edge table (:data:`atomsmith.simulate.eels.EDGES`); a power
    law is fitted over the default pre-edge window (:func:`atomsmith.eels.edge_map`). NaN when the
    fit fails or the spectrum does not reach the window.

    Args:
        element: element symbol, e.g. ``"Si"``, ``"N"``, ``"Ti"``.
        width_eV: integration width above the onset, eV.
    """

    def __init__(self, element: str = "Si", width_eV: float = DEFAULT_EDGE_WIDTH_EV) -> None:
        self.element = str(element)
        self.onset_eV = _onset(self.element)
        self.width_eV = float(width_eV)
        if not (np.isfinite(self.width_eV) and self.width_eV > 0):
            raise ValueError(f"width_eV={width_eV} must be > 0")

    def map(self, data: typing.Any, energy_eV: typing.Any) -> np.ndarray:
        """The criterion of every spectrum of a (..., n) spectrum image (NaN where the fit fails)."""
        from ..eels import edge_map

        return np.asarray(edge_map(data, energy_eV, self.onset_eV, self.width_eV), float)

    def __call__(self, spectrum: typing.Any) -> float:
        counts = np.asarray(spectrum.counts, float)[None]
        try:
            return float(self.map(counts, spectrum.energy_eV).ravel()[0])
        except ValueError:  # the spectrum does not cover the windows
            return float("nan")

    def __repr__(self) -> str:
        return f"{self.element} edge integral ({self.onset_eV:g} + {self.width_eV:g} eV)"


class EdgeRatio:
    """Ratio of two edge integrals, ``numerator / denominator`` (dimensionless).

    NaN where the denominator's integral is not positive or either fit fails.

    Args:
        numerator, denominator: element symbols, e.g. ``"N"`` and ``"C"``.
        width_eV: integration width above each onset, eV.
    """

    def __init__(self, numerator: str, denominator: str, width_eV: float = DEFAULT_EDGE_WIDTH_EV) -> None:
        self.numerator = EdgeIntegral(numerator, width_eV)
        self.denominator = EdgeIntegral(denominator, width_eV)

    def map(self, data: typing.Any, energy_eV: typing.Any) -> np.ndarray:
        """The ratio for every spectrum of a (..., n) spectrum image."""
        a, b = self.numerator.map(data, energy_eV), self.denominator.map(data, energy_eV)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)

    def __call__(self, spectrum: typing.Any) -> float:
        try:
            return float(self.map(np.asarray(spectrum.counts, float)[None], spectrum.energy_eV).ravel()[0])
        except ValueError:
            return float("nan")

    def __repr__(self) -> str:
        return f"{self.numerator.element}/{self.denominator.element} edge ratio"


class WindowIntegral:
    """Counts summed over channels with centres in ``[lo_eV, hi_eV)`` (no background removed)."""

    def __init__(self, lo_eV: float, hi_eV: float) -> None:
        self.lo_eV, self.hi_eV = float(lo_eV), float(hi_eV)
        if not (np.isfinite(self.lo_eV) and np.isfinite(self.hi_eV) and self.hi_eV > self.lo_eV):
            raise ValueError(f"window ({lo_eV}, {hi_eV}) eV must be finite with hi > lo")

    def map(self, data: typing.Any, energy_eV: typing.Any) -> np.ndarray:
        """The window sum for every spectrum of a (..., n) spectrum image."""
        e = np.asarray(energy_eV, float)
        sel = (e >= self.lo_eV) & (e < self.hi_eV)
        if not sel.any():
            raise ValueError(f"the window {self.lo_eV:g}-{self.hi_eV:g} eV holds no channel of the "
                             f"{e.min():g}-{e.max():g} eV axis")
        return np.asarray(np.asarray(data, float)[..., sel].sum(-1), float)

    def __call__(self, spectrum: typing.Any) -> float:
        try:
            return float(self.map(np.asarray(spectrum.counts, float), spectrum.energy_eV))
        except ValueError:
            return float("nan")

    def __repr__(self) -> str:
        return f"counts {self.lo_eV:g}-{self.hi_eV:g} eV"


def evaluate(criterion: typing.Callable[[typing.Any], float], spectrum: typing.Any) -> float:
    """``criterion(spectrum)`` as a float; NaN when it raises ArithmeticError or ValueError (a
    failed fit, a window the spectrum does not reach)."""
    try:
        return float(criterion(spectrum))
    except (ArithmeticError, ValueError):
        return float("nan")


Criterion = EdgeIntegral | EdgeRatio | WindowIntegral
_NUM = r"[-+]?\d+(?:\.\d*)?"


def criterion_from(text: str, width_eV: float = DEFAULT_EDGE_WIDTH_EV) -> Criterion:
    """A criterion from a short text: ``"Si"`` (edge integral), ``"N/C"`` (edge ratio) or
    ``"280-300"`` (counts in that window, eV).

    Raises:
        ValueError: the text matches none of these, or names an element without an edge in the table.
    """
    s = str(text).strip().replace(" ", "")
    m = re.fullmatch(rf"({_NUM})(?:-|:|to)({_NUM})(?:eV)?", s)
    if m:
        return WindowIntegral(float(m.group(1)), float(m.group(2)))
    if "/" in s:
        num, _, den = s.partition("/")
        return EdgeRatio(num, den, width_eV)
    if re.fullmatch(r"[A-Z][a-z]?", s):
        return EdgeIntegral(s, width_eV)
    raise ValueError(f"criterion {text!r}: give an element (\"Si\"), a ratio of two (\"N/C\") or an energy "
                     f"window in eV (\"280-300\")")
