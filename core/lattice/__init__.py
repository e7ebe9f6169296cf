"""Local crystallography from atom positions (x, y) in pixels, and sliding-window FFTs.

- :func:`find_neighbours`: k nearest / within-radius neighbours (KD-tree), edge atoms flagged.
- :func:`radius_vector_descriptors`: neighbour vectors sorted by angle (Belianinov et al. 2015).
- :func:`local_crystallography`, :func:`choose_n_classes`: PCA, k-means and GMM classes.
- :func:`fit_reference_lattice`: Bravais lattice + basis by neighbour-vector modes and least squares.
- :func:`local_strain`, :func:`strain_map`: per-atom strain and rotation, smooth maps.
- :func:`polarization`: B-site displacement from the centre of the four A sites (perovskites).
- :func:`sliding_fft`: windowed local FFTs decomposed by PCA or NMF.

All functions take pixel units and an optional ``pixel_size_nm`` calibration.
"""

from .classify import ClassSelection, LocalCrystallography, choose_n_classes, local_crystallography
from .descriptors import Descriptors, radius_vector_descriptors
from .fft_windows import SlidingFFT, local_ffts, sliding_fft
from .neighbours import Neighbours, border_distance_px, find_neighbours
from .polarization import Polarization, polarization
from .reference import ReferenceLattice, fit_reference_lattice
from .strain import StrainMap, StrainResult, local_strain, strain_map

__all__ = [
    "ClassSelection", "Descriptors", "LocalCrystallography", "Neighbours", "Polarization",
    "ReferenceLattice", "SlidingFFT", "StrainMap", "StrainResult", "border_distance_px",
    "choose_n_classes", "find_neighbours", "fit_reference_lattice", "local_crystallography",
    "local_ffts", "local_strain", "polarization", "radius_vector_descriptors", "sliding_fft",
    "strain_map",
]
