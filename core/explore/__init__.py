"""Automated experiments: GP / deep-kernel-learning surrogates, acquisitions, the loop that
steers the beam over an :class:`~atomsmith.instrument.Instrument`, hypothesis learning and
lattice-model (Ising) fitting. See docs/explore.md.

JAX (with gpax's pins: jax 0.7.2, numpyro 0.19.0) is needed for the surrogates;
``pip install atomsmith[explore]``.
"""

from .acquisition import ACQUISITIONS, acquire, ei, select_batch, travel_penalty, ucb, ue
from .criteria import EdgeIntegral, EdgeRatio, WindowIntegral, criterion_from
from .hypothesis import (
    PHASE_TRANSITION_MODELS,
    Hypothesis,
    HypothesisResult,
    first_order_transition,
    hypothesis_learning,
    second_order_transition,
)
from .ising import (
    LatticeModelFit,
    fit_lattice_model,
    monte_carlo,
    neighbourhood_histogram,
    pseudo_likelihood_fit,
    statistical_distance,
)
from .learner import ActiveLearner, ExperimentInterrupted, ExperimentResult, local_maxima_yx
from .loop import ActiveLearningResult, Budget, active_learning
from .models import DKLRegressor, GPRegressor, StructuredGP, make_model, standardize_features
from .multitask import MultiTaskDKLRegressor, MultiTaskGPRegressor
from .scenes import PropertyScene, cut_patches, dopant_scene
from .storage import Measurement, MeasurementLog

__all__ = [
    "ACQUISITIONS", "ActiveLearner", "ActiveLearningResult", "Budget", "DKLRegressor", "EdgeIntegral", "EdgeRatio",
    "ExperimentInterrupted", "ExperimentResult", "GPRegressor", "Hypothesis", "HypothesisResult",
    "LatticeModelFit", "Measurement", "MeasurementLog", "MultiTaskDKLRegressor", "MultiTaskGPRegressor", "PHASE_TRANSITION_MODELS", "PropertyScene",
    "StructuredGP", "WindowIntegral", "acquire", "criterion_from", "active_learning", "cut_patches", "dopant_scene", "ei",
    "first_order_transition", "fit_lattice_model", "hypothesis_learning", "local_maxima_yx",
    "make_model", "monte_carlo", "neighbourhood_histogram", "pseudo_likelihood_fit",
    "second_order_transition", "select_batch", "standardize_features", "statistical_distance",
    "travel_penalty", "ucb", "ue",
]
