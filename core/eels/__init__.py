"""EELS spectrum-image analysis: power-law backgrounds, edge maps, white-line ratios, peak fits
and PCA/NMF denoising.

Everything works on numpy arrays of shape (..., n_channels) with an evenly spaced energy axis
``energy_eV`` (n_channels,) of channel centres in eV, and returns numpy arrays or small
dataclasses of maps. The background fit, edge maps, peak fits and white-line maps also take dask
arrays (navigation chunks, energy axis whole) and return lazy dask arrays. No HyperSpy here: the
HyperSpy front-end is a thin adapter over these functions.
"""

from .background import PowerLawFit, fit_power_law, power_law, subtract_background
from .denoise import denoise_nmf, denoise_pca
from .edges import default_pre_edge, edge_map, edge_maps
from .peaks import PeakFit, fit_peak
from .white_lines import WhiteLineRatio, element_white_line_ratio, white_line_ratio

__all__ = [
    "PeakFit", "PowerLawFit", "WhiteLineRatio", "default_pre_edge", "denoise_nmf", "denoise_pca",
    "edge_map", "edge_maps", "element_white_line_ratio", "fit_peak", "fit_power_law", "power_law",
    "subtract_background", "white_line_ratio",
]
