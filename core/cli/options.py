"""Checked argument types and shared options for the command line."""

from __future__ import annotations

import argparse

import numpy as np

from ..simulate.materials import MATERIALS, get_material


def ranged(lo: float | None, hi: float | None, unit: str = "", *, lo_open: bool = False, integer: bool = False):
    """An argparse type accepting numbers in [lo, hi] (``lo_open``: lo excluded); the error names the range."""

    def parse(text: str):
        try:
            v = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if integer else ''}number") from None
        bad = (not np.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
               or (hi is not None and v > hi))
        if bad:
            left = "(" if lo_open else "["
            rng = f"{left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
            raise argparse.ArgumentTypeError(f"{text} is outside the allowed range {rng}{' ' + unit if unit else ''}")
        return v

    return parse


def material_name(text: str) -> str:
    """argparse type: a built-in material name."""
    try:
        return get_material(text).name
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown material {text!r}; allowed: {', '.join(MATERIALS)}") from None


def species_count(text: str) -> tuple[str, int]:
    """argparse type ``SPECIES[:N]`` (e.g. ``Si:2``)."""
    from ..simulate.elements import atomic_number

    sym, _, n = text.partition(":")
    try:
        atomic_number(sym)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        count = int(n) if n else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: count after ':' must be a whole number") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: count must be >= 0")
    return sym, count


def check_pixel_size_resolves(material: str, pixel_size_nm: float, option: str = "--pixel-size-nm") -> None:
    """Refuse a pixel size coarser than half the smallest column spacing (Nyquist)."""
    mat = get_material(material)
    d_nm = mat.nearest_column_distance_A / 10.0
    limit = d_nm / 2.0
    if pixel_size_nm > limit:
        raise ValueError(
            f"{option} {pixel_size_nm:g} cannot resolve {mat.name} (nearest column spacing {d_nm:.3f} nm); "
            f"allowed range (0, {limit:.4f}] nm")


def default_pixel_size_nm(material: str) -> float:
    """About 8 pixels per nearest-neighbour column spacing, rounded to 0.1 pm."""
    d_nm = get_material(material).nearest_column_distance_A / 10.0
    return float(np.round(d_nm / 8.0, 4))


def add_probe_options(p: argparse.ArgumentParser) -> None:
    """Beam energy, convergence semi-angle and probe broadening options."""
    g = p.add_argument_group("probe")
    g.add_argument("--energy-kev", type=ranged(1, 1000, "keV"), default=60.0, help="beam energy (default 60)")
    g.add_argument("--semiangle-mrad", type=ranged(0.5, 200, "mrad"), default=30.0,
                   help="convergence semi-angle (default 30)")
    g.add_argument("--defocus-a", type=ranged(-1e4, 1e4, "A"), default=0.0, help="defocus in angstrom")
    g.add_argument("--source-fwhm-a", type=ranged(0, 10, "A"), default=0.0, help="effective source size FWHM")
    g.add_argument("--probe-fwhm-a", type=ranged(0, 20, "A", lo_open=True), default=None,
                   help="use a Gaussian probe of this FWHM instead of the optics")


def probe_from(args):
    """A :class:`Probe` from parsed probe options."""
    from ..simulate.probe import Probe

    return Probe(energy_keV=args.energy_kev, semiangle_mrad=args.semiangle_mrad, defocus_A=args.defocus_a,
                 source_fwhm_A=args.source_fwhm_a, gaussian_fwhm_A=args.probe_fwhm_a)
