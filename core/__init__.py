"""atomsmith: machine learning and a digital twin for atomic-resolution STEM.

The core package holds models and algorithms only; it never imports a GUI, HyperSpy or
Nion Swift. See ``atomsmith.simulate`` for the digital twin and ``atomsmith.instrument`` for
the :class:`~atomsmith.instrument.Instrument` protocol.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atomsmith")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["AtomFinder", "AtomTable", "__version__", "find_atoms", "find_defects", "refine_positions"]

_LAZY = {"AtomFinder", "AtomTable", "find_atoms", "find_defects", "refine_positions"}


def __getattr__(name: str):
    """Top-level shortcuts, imported on first use so ``import atomsmith`` stays light."""
    if name in _LAZY:
        from . import atoms

        return getattr(atoms, name)
    raise AttributeError(f"module 'atomsmith' has no attribute {name!r}")
