"""Moved to :mod:`kinetics.fitting.optimize`; this old import path stays as a re-export."""

from .fitting.optimize import CHI2_95, FitResult, fit

__all__ = ["fit", "FitResult", "CHI2_95"]
