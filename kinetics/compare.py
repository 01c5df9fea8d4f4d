"""Moved to :mod:`kinetics.analysis.compare`; this old import path stays as a re-export."""

from .analysis.compare import Comparison, akaike_weights, compare

__all__ = ["compare", "Comparison", "akaike_weights"]
