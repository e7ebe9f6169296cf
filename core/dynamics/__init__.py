"""Defect dynamics from movies: tracks, diffusion coefficients and Markov transition matrices.

- :func:`link`: per-frame (x, y) positions -> tracks of (frame, x, y) (one-to-one assignment,
  gating, gaps, optional drift removal).
- :func:`diffusion`: D (nm^2/s) with a 95 % interval from tracks (covariance estimator).
- :func:`transition_matrix`: class-to-class matrix with 95 % intervals and the stationary state.
- :func:`subimage_stack`, :func:`defect_classes`: crops around defects, PCA + GMM classes (BIC).
- :func:`normal_modes`: PCA of the distortions of the neighbourhood of each defect class.
- :func:`analyse_movie`: the whole chain on a movie (find, classify, track, Markov, diffusion).
"""

from .classes import DefectClasses, class_counts, defect_classes, subimage_stack
from .diffusion import DiffusionResult, diffusion, diffusion_by_class, split_by_class
from .markov import TransitionMatrix, stationary_distribution, transition_matrix
from .normal_modes import (
           NormalModes,
           align_neighbourhoods,
           neighbourhoods,
           normal_modes,
           shell_size,
)
from .pipeline import MovieDynamics, analyse_movie, find_movie_defects
from .tracking import estimate_drift, link

__all__ = ["DefectClasses", "class_counts", "MovieDynamics", "NormalModes", "align_neighbourhoods", "neighbourhoods", "normal_modes", "shell_size", "analyse_movie", "defect_classes", "find_movie_defects", "subimage_stack",
           "DiffusionResult", "TransitionMatrix", "diffusion", "diffusion_by_class", "split_by_class", "estimate_drift", "link", "stationary_distribution",
           "transition_matrix"]
