"""Beam manipulation of single atoms: plan a path along lattice sites, park the probe, check, repeat.

Everything here talks to a microscope only through :class:`atomsmith.instrument.Instrument`, so
the same call runs on the digital twin (:class:`~atomsmith.instrument.SimulatedInstrument`), on
Nion Swift's usim and on a Nion microscope (``nionswift_plugin.atomsmith``'s adapter).
"""

from .move import ManipulationError, ManipulationResult, ManipulationStep, find_dopant, move_atom
from .path import lattice_graph, plan_path

__all__ = ["ManipulationError", "ManipulationResult", "ManipulationStep", "find_dopant", "lattice_graph",
           "move_atom", "plan_path"]
