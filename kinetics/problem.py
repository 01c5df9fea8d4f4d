"""Moved to :mod:`kinetics.fitting.problem`; this old import path stays as a re-export."""

from .fitting.problem import Condition, FitProblem, load_fit_spec, load_petab

__all__ = ["Condition", "FitProblem", "load_fit_spec", "load_petab"]
