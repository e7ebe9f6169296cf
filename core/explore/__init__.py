"""Automated experiments: GP / deep-kernel-learning surrogates, acquisitions, the loop that
steers the beam over an :class:`~atomsmith.instrument.Instrument`, hypothesis learning and
lattice-model (Ising) fitting. See docs/explore.md.

JAX (with gpax's pins: jax 0.7.2, numpyro 0.19.0) is needed for the surrogates;
``pip install atomsmith[explore]``.
"""

from .acquisition import ACQUISITIONS, acquire, ei, select_batch, travel_penalty, ucb, ue
from .criteria import EdgeIntegral, EdgeRatio, WindowIntegral, criterion_from
from .ising import (
    LatticeModelFit,
    fit_lattice_model,
    monte_carlo,
    neighbourhood_histogram,
    pseudo_likelihood_fit,
    statistical_distance,
)
from .learner import ActiveLearner, ExperimentInterrupted, ExperimentResult, local_maxima_yx
from .loop import ActiveLearningResult, Budget, active_learning, standardize_features
from .scenes import PropertyScene, cut_patches, dopant_scene
from .storage import Measurement, MeasurementLog

#: JAX-backed names, imported from their module on first access (``import atomsmith.explore`` stays light)
_LAZY = {
    "PHASE_TRANSITION_MODELS": "hypothesis", "Hypothesis": "hypothesis", "HypothesisResult": "hypothesis",
    "first_order_transition": "hypothesis", "hypothesis_learning": "hypothesis",
    "second_order_transition": "hypothesis",
    "DKLRegressor": "models", "GPRegressor": "models", "StructuredGP": "models", "make_model": "models",
    "MultiTaskDKLRegressor": "multitask", "MultiTaskGPRegressor": "multitask",
}

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


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'atomsmith.explore' has no attribute {name!r}")
