"""The digital twin: STEM data with exact ground truth.

Crystals in projection (:func:`build_crystal`, :data:`MATERIALS`), point defects
(:func:`add_vacancies`, :func:`substitute`, :func:`remove_atoms`, :func:`add_adatoms`) and HAADF
image formation (:func:`render_haadf`) with a physical probe (:class:`Probe`) and detector
cross-sections (:func:`haadf_cross_section_A2`).
"""

from .crystal import build_crystal
from .defects import add_adatoms, add_vacancies, choose_sites, remove_atoms, substitute
from .eels import EELSSpectrum, EELSSpectrumImage, EELSTruth, eels_spectrum, simulate_eels_si
from .elements import atomic_number, element_symbol
from .fourd import (
    DiffractionPattern,
    FourDSTEM,
    FourDSTEMTruth,
    PotentialMaps,
    diffraction_pattern,
    projected_potential,
    simulate_4dstem,
)
from .haadf import HAADFImage, ScanSettings, column_cross_sections_A2, render_haadf
from .materials import MATERIALS, Material, Sublattice, get_material, perovskite
from .probe import Probe, interaction_constant, wavelength_A
from .scattering import Detector, haadf_cross_section_A2
from .structure import ColumnKind, Structure
from .truth import ColumnTruth

__all__ = [
    "MATERIALS", "ColumnKind", "ColumnTruth", "Detector", "HAADFImage", "Material", "Probe",
    "ScanSettings", "Structure", "Sublattice", "add_adatoms", "add_vacancies", "atomic_number",
    "build_crystal", "choose_sites", "column_cross_sections_A2", "element_symbol", "get_material",
    "haadf_cross_section_A2", "interaction_constant", "perovskite", "remove_atoms", "render_haadf",
    "substitute", "wavelength_A",
    "DiffractionPattern", "FourDSTEM", "FourDSTEMTruth", "PotentialMaps", "diffraction_pattern",
    "projected_potential", "simulate_4dstem",
    "EELSSpectrum", "EELSSpectrumImage", "EELSTruth", "eels_spectrum", "simulate_eels_si",
]
