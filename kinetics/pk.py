"""Moved to :mod:`kinetics.analysis.pk`; this old import path stays as a re-export."""

from .analysis.pk import PKSummary, pk_summary

__all__ = ["pk_summary", "PKSummary"]
